// A new user's whole first run, on a server of its own with a fresh data folder: the home page
// says what to do first; the admin starts a dissection from the browser (which records the layer),
// watches it finish; the run's labels and its scoring-function variants are two offline label
// sources, so a study comparing them is created through the form with no file written by hand;
// a rater answers every task with the keyboard only; the results show those answers; and the
// home page's list is then walked to its end.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { launch, waitForHydration } = require('./browser.cjs');

const MODEL = 'efficientnet-lite0';
const LAYER = 'stage6';
const UNITS = '3,4';
// Two label sources every DnD run writes: the paper's Table 4 compares the scoring functions.
const SOURCES = ['dnd--mean_scoring', 'dnd--topk-squared-image-products_scoring'];

const server = { proc: null, url: null, data: null, log: '' };

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

test.before(async () => {
  server.data = fs.mkdtempSync(path.join(os.tmpdir(), 'dnd-e2e-first-run-'));
  const port = await freePort();
  server.url = `http://127.0.0.1:${port}`;
  server.proc = spawn('target/release/dnd', ['serve'], {
    env: { ...process.env, DND__SERVER__BIND: `127.0.0.1:${port}`, DND__STORAGE__DATA_DIR: server.data },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server.proc.stdout.on('data', (d) => { server.log += d; });
  server.proc.stderr.on('data', (d) => { server.log += d; });
  for (let i = 0; i < 300; i++) {
    if (server.proc.exitCode !== null) throw new Error(`the server exited during start-up:\n${server.log}`);
    try {
      if ((await fetch(`${server.url}/healthz`)).ok) return;
    } catch (_) { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the server did not answer /healthz:\n${server.log}`);
});

test.after(() => {
  if (server.proc) server.proc.kill();
  fs.rmSync(server.data, { recursive: true, force: true });
});

function secret() {
  const m = server.log.match(/Admin secret \(generated at first start; shown once[^)]*\): ([0-9a-f]{64})/);
  assert.ok(m, `the server printed no admin secret:\n${server.log}`);
  return m[1];
}

async function home() {
  return (await fetch(`${server.url}/`)).text();
}

function stepIs(html, step, state) {
  return new RegExp(`<li(?=[^>]*data-step="${step}")(?=[^>]*class="step ${state}")`).test(html);
}

test('from a fresh install to a finished study, with no file written by hand', async () => {
  assert.ok(stepIs(await home(), 'record', 'next'), 'a fresh install starts with recording');

  const b = await launch();
  try {
    // The admin logs in from the jobs page and describes two neurons (the job records the layer).
    const page = await b.context.newPage();
    await page.goto(`${server.url}/admin?next=%2Fjobs`);
    await waitForHydration(page);
    await page.fill('#admin-secret', secret());
    await page.click('#admin-login');
    await page.waitForURL(/\/jobs$/);
    await page.locator('#start-job').waitFor();
    await page.selectOption('#job-model', MODEL);
    await page.selectOption('#job-layer', LAYER);
    await page.fill('#job-neurons', UNITS);
    await page.click('#start-job-button');
    await page.locator('#job-started').waitFor();
    const id = (await page.locator('#job-started a').innerText()).replace('job #', '');
    await page.waitForSelector(`#jobs tr[data-job="${id}"][data-status="done"]`, { timeout: 900000 });

    // Recorded, described, and already two label sources per neuron: the study is next.
    const after = await home();
    for (const step of ['record', 'describe', 'compare']) assert.ok(stepIs(after, step, 'done'), `${step} is done`);
    assert.ok(stepIs(after, 'study', 'next'), 'the study is the next step');
    const neuron = await (await fetch(`${server.url}/m/${MODEL}/${LAYER}/3`)).text();
    assert.match(neuron, /DnD \(mean scoring\)/);

    // The study form offers the run's sources; two of them make a study.
    await page.goto(`${server.url}/admin`);
    await waitForHydration(page);
    await page.locator('#new-study').waitFor();
    await page.fill('#study-name', 'First run');
    const row = page.locator(`#study-layers tr[data-layer="${LAYER}"]`);
    await row.waitFor();
    for (const key of SOURCES) assert.equal(await row.locator(`.label-count[data-method="${key}"]`).count(), 1, key);
    await page.check(`#layer-${LAYER}`);
    await page.fill(`#units-${LAYER}`, UNITS);
    for (const key of SOURCES) await page.check(`#method-${key}`);
    await page.fill('#study-raters', '1');
    await page.click('#create-study');
    await page.waitForURL(/\/admin\/studies\/\d+$/);
    await page.click('#open-study');
    await page.locator('#study-status', { hasText: 'open' }).waitFor();
    await page.fill('#invite-count', '1');
    await page.click('#invite');
    const link = await page.locator('#invite-links .rater-link').first().innerText();

    // The rater uses the keyboard only: rate the highlighted description, pick it, move on,
    // rate the next, send.
    const rater = await b.context.newPage();
    await rater.goto(link);
    await waitForHydration(rater);
    for (let k = 0; k < 2; k++) {
      const task = rater.locator('#task');
      await task.waitFor();
      const assignment = await task.getAttribute('data-assignment');
      assert.equal(await rater.locator('#task-progress').innerText(), `Task ${k + 1} of 2`);
      assert.equal(await rater.locator('#descriptions .description-text').count(), 2);
      await rater.keyboard.press('4');
      await rater.keyboard.press('b');
      await rater.keyboard.press('ArrowDown');
      await rater.keyboard.press('4');
      assert.equal(await rater.isChecked('#best-0'), true);
      await rater.keyboard.press('Enter');
      await rater.locator(`#task[data-assignment="${assignment}"]`).waitFor({ state: 'detached', timeout: 20000 });
    }
    await rater.locator('#rater-done').waitFor();

    // The results: two valid responses, each source rated 4 by this rater.
    await page.waitForFunction(
      (layer) => document.querySelector(`#results td[data-layer="${layer}"][data-stat="valid"]`)?.textContent === '2 / 2 valid',
      LAYER,
      { timeout: 20000 },
    );
    for (const key of SOURCES) {
      const mean = await page.locator(`#results td[data-layer="${LAYER}"][data-method="${key}"][data-stat="mean"]`).innerText();
      assert.equal(mean, '4.00 ± 0.00', key);
    }
    assert.doesNotMatch(await home(), /id="first-run"/, 'the first-run list is walked to its end');
    assert.deepEqual(b.errors.map(String), []);
  } finally {
    await b.close();
  }
});
