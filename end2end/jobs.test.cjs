// Jobs from the browser: the admin starts a small dissection of the built-in model on /jobs,
// watches it run and finish without reloading (progress arrives over /events/jobs), then finds
// its label on the neuron page and its log on the job's page.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { BASE_URL, launch, waitForHydration, adminPage, adminSecret } = require('./browser.cjs');

const MODEL = 'efficientnet-lite0';
const LAYER = 'stage5';
const UNIT = '5';

test('the queue is public, starting a job is not', async () => {
  const res = await fetch(`${BASE_URL}/jobs`);
  assert.equal(res.status, 200);
  const html = await res.text();
  assert.match(html, /id="jobs-login-hint"/);
  assert.match(html, /href="\/admin\?next=%2Fjobs"/);
  assert.doesNotMatch(html, /id="start-job"/);
  const start = await fetch(`${BASE_URL}/api/jobs/start`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ csrf: 'x', request: { model: MODEL, layer: LAYER, neurons: UNIT, seed: 0, probe_set: 'builtin', summary: 'mean', scoring: 'mean' } }),
  });
  assert.equal(start.status, 403);
  const events = await fetch(`${BASE_URL}/events/jobs`);
  assert.equal(events.headers.get('content-type'), 'text/event-stream');
  await events.body.cancel();
});

test('an admin starts a dissection, watches it finish live, and finds its label', async () => {
  const b = await launch();
  try {
    // The page's own "log in" link brings the admin back to /jobs, with the start form.
    const page = await b.context.newPage();
    await page.goto(`${BASE_URL}/jobs`);
    await waitForHydration(page);
    await page.click('#jobs-login-hint a');
    await page.waitForURL(/\/admin\?next=%2Fjobs$/);
    await waitForHydration(page);
    await page.fill('#admin-secret', adminSecret());
    await page.click('#admin-login');
    await page.waitForURL(/\/jobs$/);
    await page.locator('#start-job').waitFor();
    // The form starts on the model's deepest convolutional layer, not on its stem.
    assert.equal(await page.inputValue('#job-layer'), 'head');
    // Every file field of the upload forms says which file it wants.
    const fileLabels = await page.locator('.register-form label.file-field').allInnerTexts();
    assert.deepEqual(fileLabels.map((t) => t.trim()).sort(), ['Manifest (JSON)', 'TorchScript file', 'Zip of images']);
    await page.selectOption('#job-model', MODEL);
    await page.selectOption('#job-layer', LAYER);

    // A unit outside the layer is refused with the reason; nothing is queued.
    await page.fill('#job-neurons', '0-99999');
    await page.click('#start-job-button');
    await page.locator('#start-job-error').waitFor();
    assert.match(await page.locator('#start-job-error').innerText(), /outside the layer/);
    assert.equal(await page.locator('#jobs tr[data-job]').count(), 0);

    await page.fill('#job-neurons', UNIT);
    await page.click('#start-job-button');
    await page.locator('#job-started').waitFor();
    const id = (await page.locator('#job-started a').innerText()).replace('job #', '');
    // From here on the page is never reloaded: a marker on window would be lost if it were.
    await page.evaluate(() => { window.__stayed = true; });
    const row = page.locator(`#jobs tr[data-job="${id}"]`);
    await row.waitFor();
    // Inside the chunk the message says which step runs (the LLM's take longest) and, once a
    // neuron is done, the time left; the first job loads the models and records the layer first.
    await page.waitForFunction(
      (jobId) => /chunk 1 of 1 \(1 neuron\): LLM/.test(document.querySelector(`#jobs tr[data-job="${jobId}"] .job-message`)?.textContent || ''),
      id,
      { timeout: 600000 },
    );
    await page.waitForSelector(`#jobs tr[data-job="${id}"][data-status="done"]`, { timeout: 600000 });
    assert.equal(await page.evaluate(() => window.__stayed), true, 'updates arrived without a reload');
    assert.match(await row.locator('.job-message').innerText(), /1 neurons in/);
    assert.equal(await row.locator('progress').getAttribute('value'), '100.0');
    assert.equal(b.errors.length, 0, b.errors.join('\n'));

    // The job's page: its log, from queued to done.
    await page.click(`#jobs tr[data-job="${id}"] a[href="/jobs/${id}"]`);
    await page.locator('#job-log').waitFor();
    const log = await page.locator('#job-log').innerText();
    assert.match(log, /queued/);
    assert.match(log, /substitute/);
    assert.match(log, /done: 1 neurons/);

    // The neuron page shows the run the job wrote.
    await page.goto(`${BASE_URL}/m/${MODEL}/${LAYER}/${UNIT}`);
    await waitForHydration(page);
    await page.locator('#substitute-banner').waitFor();
    assert.equal(await page.locator('#top-images > li').count(), 10);

    // The layer grid: the described unit shows its run's top image; the others, recorded by the
    // job but not described, their top probing image from the recording, with its activation.
    const grid = await (await fetch(`${BASE_URL}/m/${MODEL}/${LAYER}`)).text();
    assert.match(grid, /data-from="run"/);
    assert.ok((grid.match(/data-from="recording"/g) || []).length >= 50, 'recording thumbnails on the grid');
    assert.match(grid, /class="meta recorded"[^>]*>act -?\d+\.\d\d</);

    // A neuron no run has covered offers the admin a button that queues it; the job is then
    // cancelled from the queue, before it takes the device from the tests that follow.
    await page.goto(`${BASE_URL}/m/${MODEL}/${LAYER}/6`);
    await waitForHydration(page);
    await page.click('#describe-neuron');
    await page.locator('#describe-queued a').waitFor();
    const queuedId = (await page.locator('#describe-queued a').innerText()).replace('job #', '');
    await page.goto(`${BASE_URL}/jobs`);
    await waitForHydration(page);
    await page.click(`#jobs tr[data-job="${queuedId}"] button.cancel-job`);
    await page.waitForSelector(`#jobs tr[data-job="${queuedId}"][data-status="cancelled"]`, { timeout: 300000 });
    const visitor = await (await fetch(`${BASE_URL}/m/${MODEL}/${LAYER}/7`)).text();
    assert.doesNotMatch(visitor, /describe-neuron/, 'the server never renders the button');
    assert.equal(b.errors.length, 0, b.errors.join('\n'));
  } finally {
    await b.close();
  }
});

// A small zip of the real embedded probing images, written by Python's zipfile.
function probeZip(file) {
  const assets = process.env.DND_ASSETS || path.join(require('node:os').homedir(), '.cache/dnd-studio/assets');
  const dir = path.join(assets, 'probe/builtin/skimage');
  const script = 'import sys, zipfile\n'
    + 'with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:\n'
    + '    for f in sys.argv[2:]: z.write(f, "mugs/" + f.rsplit("/", 1)[1])\n';
  require('node:child_process').execFileSync('python3', ['-c', script, file,
    ...['coffee.png', 'coffee.txt', 'chelsea.png', 'rocket.jpg'].map((f) => path.join(dir, f))]);
}

test('an admin uploads a zip of images and sees its registration finish', async () => {
  const zip = path.join(require('node:os').tmpdir(), `dnd-e2e-upload-${process.pid}.zip`);
  probeZip(zip);
  const b = await launch();
  try {
    const page = await adminPage(b);
    await page.goto(`${BASE_URL}/jobs`);
    await waitForHydration(page);
    await page.locator('#upload-probe-set-form').waitFor();

    // Not a zip: refused with the reason, nothing queued.
    await page.setInputFiles('#upload-probe-set-file', { name: 'broken.zip', mimeType: 'application/zip', buffer: Buffer.from('not a zip at all') });
    await page.click('#upload-probe-set-button');
    await page.locator('#upload-probe-set-error').waitFor();
    assert.match(await page.locator('#upload-probe-set-error').innerText(), /not a readable zip archive/);

    await page.fill('#upload-probe-set-name', 'e2e-upload');
    await page.setInputFiles('#upload-probe-set-file', zip);
    await page.click('#upload-probe-set-button');
    await page.locator('#upload-probe-set-done').waitFor({ timeout: 60000 });
    const id = (await page.locator('#upload-probe-set-done a').innerText()).replace('job #', '');
    const row = page.locator(`#jobs tr[data-job="${id}"]`);
    await page.waitForSelector(`#jobs tr[data-job="${id}"][data-status="done"]`, { timeout: 120000 });
    assert.match(await row.innerText(), /probe set: e2e-upload/);
    assert.match(await row.locator('.job-message').innerText(), /probing set `e2e-upload`: 3 images, 0 files rejected/);
    // The new set is offered for dissections, and the upload's job link stays.
    await page.locator('#job-probe option[value="e2e-upload"]').waitFor({ state: 'attached' });
    assert.equal(await page.locator('#upload-probe-set-done a').getAttribute('href'), `/jobs/${id}`);
    assert.equal(b.errors.length, 0, b.errors.join('\n'));
  } finally {
    await b.close();
    fs.rmSync(zip, { force: true });
  }
});
