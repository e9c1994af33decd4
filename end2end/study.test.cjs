// The rating study end to end: an admin logs in and creates a study of stage6 units 0-3 comparing
// imported MILAN and CLIP-Dissect labels, opens it and invites three raters; the raters answer
// every task in their own browsers (one by keyboard only, two by mouse, one of them leaving an
// invalid response and retrying after a lost acknowledgement); then the results page must show
// exactly the numbers computed here from the answers given, raters must not reach admin data or
// see method names, and the responses export must hold every rating.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { BASE_URL, launch, waitForHydration, adminSecret } = require('./browser.cjs');

const MODEL = 'efficientnet-lite0';
const LAYER = 'stage6';
const UNITS = [0, 1, 2, 3];
// Distinct texts per unit and method; none may hint at the method that wrote it.
const TEXTS = {
  milan: ['striped fur', 'round wheels', 'blue sky above water', 'green leaves', 'red brick wall',
    'human faces', 'wooden planks', 'letters on signs', 'white snow', 'metal grid'],
  'clip-dissect': ['tabby cat', 'sports car', 'ocean horizon', 'forest canopy', 'old building',
    'portrait photo', 'dining table', 'street sign', 'ski slope', 'chain fence'],
};
const METHODS = Object.keys(TEXTS);

// What each rater answers on their k-th task: a rating per method and the method picked as best.
// Rater 3's last answer is invalid on purpose: the best pick is not among its highest ratings.
const PLANS = [
  [{ milan: 5, 'clip-dissect': 2, best: 'milan' }, { milan: 4, 'clip-dissect': 3, best: 'milan' },
    { milan: 4, 'clip-dissect': 1, best: 'milan' }, { milan: 3, 'clip-dissect': 1, best: 'milan' }],
  [{ milan: 4, 'clip-dissect': 4, best: 'clip-dissect' }, { milan: 5, 'clip-dissect': 2, best: 'milan' },
    { milan: 3, 'clip-dissect': 2, best: 'milan' }, { milan: 4, 'clip-dissect': 5, best: 'clip-dissect' }],
  [{ milan: 3, 'clip-dissect': 1, best: 'milan' }, { milan: 5, 'clip-dissect': 2, best: 'milan' },
    { milan: 2, 'clip-dissect': 5, best: 'clip-dissect' }, { milan: 4, 'clip-dissect': 3, best: 'clip-dissect' }],
];

const state = { studyId: null, links: [], records: [], raterIds: [], admin: null, adminPage: null };

function dnd(args) {
  return execFileSync('target/release/dnd', args, {
    env: { ...process.env, DND__STORAGE__DATA_DIR: process.env.DND_E2E_DATA },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 1 << 26,
  });
}

// Which method wrote a description the rater page shows (the page itself never says).
function methodOf(text) {
  for (const m of METHODS) {
    const unit = TEXTS[m].indexOf(text.trim());
    if (unit >= 0) return { method: m, unit };
  }
  throw new Error(`description “${text}” is none of the imported labels`);
}

// The paper's validity rule: the best pick is among the response's highest ratings.
function isValid(plan) {
  const top = Math.max(...METHODS.map((m) => plan[m]));
  return plan[plan.best] === top;
}

// `x` with `digits` decimals. The page rounds exact ties to even (Rust), toFixed away from zero:
// the plans above avoid exact ties, and this says so if an edit brings one in.
function fixed(x, digits) {
  const scaled = x * 10 ** digits;
  assert.ok(Math.abs(scaled - Math.floor(scaled) - 0.5) > 1e-9, `${x} is a rounding tie at ${digits} decimals`);
  return x.toFixed(digits);
}

function meanSem(values) {
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const sd = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1));
  return `${fixed(mean, 2)} ± ${fixed(sd / Math.sqrt(n), 2)}`;
}

// The results table's cells for `records`, computed by hand.
function expectedCells(records) {
  const valid = records.filter((r) => r.valid);
  const cells = { valid: `${valid.length} / ${records.length} valid` };
  for (const m of METHODS) {
    cells[`${m}:mean`] = meanSem(valid.map((r) => r.ratings[m]));
    cells[`${m}:best`] = `${fixed((100 * valid.filter((r) => r.best === m).length) / valid.length, 1)}%`;
  }
  return cells;
}

async function shownCells(page, layer) {
  const cell = (sel) => page.locator(`#results td[data-layer="${layer}"]${sel}`).innerText();
  const cells = { valid: await cell('[data-stat="valid"]') };
  for (const m of METHODS) {
    cells[`${m}:mean`] = await cell(`[data-method="${m}"][data-stat="mean"]`);
    cells[`${m}:best`] = await cell(`[data-method="${m}"][data-stat="best"]`);
  }
  return cells;
}

// Waits until the study page (refreshing itself) shows `valid` in the stage6 row.
async function waitForValidCount(page, text) {
  await page.waitForFunction(
    (t) => document.querySelector('#results td[data-layer="stage6"][data-stat="valid"]')?.textContent === t,
    text,
    { timeout: 20000 },
  );
}

// Minimal RFC 4180 reader (quoted fields, doubled quotes).
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (c === '"') quoted = false; else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field); field = ''; } else if (c === '\n') { row.push(field); rows.push(row); row = []; field = ''; } else if (c !== '\r') field += c;
  }
  if (field || row.length) { row.push(field); rows.push(row); }
  const [header, ...body] = rows;
  return body.map((r) => Object.fromEntries(header.map((h, i) => [h, r[i]])));
}

test.before(() => {
  // Activations of stage6 (the study's images come from them); a cache hit if recorded before.
  dnd(['record', '--layer', LAYER]);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dnd-e2e-study-'));
  const milan = path.join(dir, 'milan.csv');
  fs.writeFileSync(milan, `layer,unit,description\n${TEXTS.milan.map((t, u) => `${LAYER},${u},${t}`).join('\n')}\n`);
  const clip = path.join(dir, 'clip.csv');
  fs.writeFileSync(clip, `layer,unit,description,similarity\n${TEXTS['clip-dissect'].map((t, u) => `${LAYER},${u},${t},0.${20 + u}`).join('\n')}\n`);
  assert.match(dnd(['import-labels', '--model', MODEL, '--method', 'milan', milan]), /imported 10 labels/);
  assert.match(dnd(['import-labels', '--model', MODEL, '--method', 'clip-dissect', clip]), /imported 10 labels/);
});

test.after(async () => {
  if (state.admin) await state.admin.close();
});

test('admin pages and admin server functions refuse visitors without a session; unknown rater links are 404', async () => {
  const page = await fetch(`${BASE_URL}/admin/studies/1`);
  assert.equal(page.status, 403);
  assert.match(await page.text(), /Log in/);
  for (const [endpoint, body] of [['admin/studies', ''], ['admin/study', 'id=1'], ['admin/study-options', '']]) {
    const res = await fetch(`${BASE_URL}/api/${endpoint}`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body,
    });
    assert.equal(res.status, 403, endpoint);
  }
  const study = {
    name: 'x', model: MODEL, layers: [{ layer: LAYER, units: '0-3' }], seed: 1,
    methods: [{ method: 'milan', source: '' }, { method: 'clip-dissect', source: '' }],
    raters_per_item: 3, image_summary: 'mean', images_per_item: 10, instructions: 'q', attention_checks: 0,
  };
  const create = await fetch(`${BASE_URL}/api/admin/create-study`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ csrf: 'x', study }),
  });
  assert.equal(create.status, 403);
  assert.equal((await fetch(`${BASE_URL}/rate/not-a-token`)).status, 404);
  // The login form itself is an ordinary page.
  assert.equal((await fetch(`${BASE_URL}/admin`)).status, 200);
  assert.equal((await fetch(`${BASE_URL}/admin/studies/1/export/responses.csv`)).status, 403);
});

test('the admin logs in, creates a study through the form, opens it and invites three raters', async () => {
  state.admin = await launch();
  const page = await state.admin.context.newPage();
  state.adminPage = page;
  await page.goto(`${BASE_URL}/admin`);
  await waitForHydration(page);
  await page.fill('#admin-secret', 'not the secret at all');
  await page.click('#admin-login');
  await page.locator('[role=alert]').waitFor();
  await page.fill('#admin-secret', adminSecret());
  await page.click('#admin-login');
  await page.locator('#new-study').waitFor();

  await page.fill('#study-name', 'Stage 6 descriptions');
  if ((await page.inputValue('#study-model')) !== MODEL) await page.selectOption('#study-model', MODEL);
  const row = page.locator(`#study-layers tr[data-layer="${LAYER}"]`);
  await row.waitFor();
  assert.equal(await row.locator('.label-count[data-method="milan"]').innerText(), 'MILAN 10');
  assert.equal(await row.locator('.label-count[data-method="clip-dissect"]').innerText(), 'CLIP-Dissect 10');
  assert.equal(await row.locator('.badge').innerText(), 'recorded');
  assert.equal(await page.inputValue('#study-raters'), '3');
  assert.equal(await page.inputValue('#study-images'), '10');
  assert.match(await page.inputValue('#study-instructions'), /Does the description accurately describe/);

  // Refused before sending: one method only. Refused by the server: units outside the layer.
  await page.check(`#layer-${LAYER}`);
  await page.fill(`#units-${LAYER}`, '0-9999');
  await page.check('#method-milan');
  await page.click('#create-study');
  assert.match(await page.locator('#new-study-error').innerText(), /2 to 6 methods/);
  await page.check('#method-clip-dissect');
  await page.click('#create-study');
  await page.locator('#new-study-error', { hasText: 'outside the layer' }).waitFor();

  await page.fill(`#units-${LAYER}`, '0-3');
  await page.fill('#study-raters', '3');
  await page.fill('#study-seed', '1');
  await page.click('#create-study');
  try {
    await page.waitForURL(/\/admin\/studies\/\d+$/);
  } catch (e) {
    const shown = await page.locator('#new-study-error').allInnerTexts();
    throw new Error(`the study was not created: ${shown.join(' ') || e.message}`);
  }
  state.studyId = Number(page.url().match(/(\d+)$/)[1]);
  assert.equal(await page.locator('#study-status').innerText(), 'draft');
  assert.match(await page.locator('#study-settings').innerText(), /stage6 \(0-3\)/);

  await page.click('#open-study');
  await page.locator('#study-status', { hasText: 'open' }).waitFor();
  // Open, the study blinds its layer's public pages: a rater could look a description up there.
  const label = TEXTS.milan[0];
  const publicPage = await (await fetch(`${BASE_URL}/m/${MODEL}/${LAYER}/0`)).text();
  assert.ok(publicPage.includes('id="blinded"') && !publicPage.includes(label), 'the public neuron page shows labels');
  assert.equal((await fetch(`${BASE_URL}/export/${MODEL}/${LAYER}?method=milan`)).status, 403);
  const adminView = await state.admin.context.newPage();
  await adminView.goto(`${BASE_URL}/m/${MODEL}/${LAYER}/0`);
  await adminView.locator('#comparison tr[data-method="milan"]', { hasText: label }).waitFor();
  await adminView.close();
  await page.fill('#invite-count', '3');
  await page.fill('#invite-note', 'e2e');
  await page.click('#invite');
  await page.locator('#invite-links .rater-link').nth(2).waitFor();
  state.links = await page.locator('#invite-links .rater-link').allInnerTexts();
  assert.equal(state.links.length, 3);
  for (const link of state.links) assert.match(link, new RegExp(`^${BASE_URL}/rate/[A-Za-z0-9_-]{16,}$`));

  // The open link hands out rater links.
  await page.click('#make-open-link');
  const open = await page.locator('#open-link').innerText();
  assert.match(open, new RegExp(`^${BASE_URL}/join/[A-Za-z0-9_-]+$`));
  const join = await fetch(open, { redirect: 'manual' });
  assert.ok([302, 303, 307].includes(join.status), `join answered ${join.status}`);
  assert.match(join.headers.get('location'), /^\/rate\/[A-Za-z0-9_-]+$/);

  await page.locator('#raters tr[data-rater]').nth(3).waitFor();
  state.raterIds = (await page.locator('#raters tr[data-rater]').evaluateAll((rows) => rows.map((r) => Number(r.dataset.rater))))
    .slice(0, 3);
  assert.deepEqual(adminErrors(), []);

  // With a study in place the home page's first-run list has been walked to its end and is gone
  // (the cached home page was dropped when the study was created).
  const home = await (await fetch(BASE_URL + '/')).text();
  assert.doesNotMatch(home, /id="first-run"/);
});

function adminErrors() {
  return state.admin.errors.map(String);
}

// Reads the current task: which method and unit each shown description belongs to.
async function readTask(page) {
  const task = page.locator('#task');
  await task.waitFor();
  const assignment = await task.getAttribute('data-assignment');
  const texts = await page.locator('#descriptions .description-text').allInnerTexts();
  assert.equal(texts.length, 2);
  const shown = texts.map(methodOf);
  assert.equal(shown[0].unit, shown[1].unit, 'both descriptions are of one neuron');
  assert.notEqual(shown[0].method, shown[1].method);
  assert.ok(UNITS.includes(shown[0].unit));
  return { assignment, shown, unit: shown[0].unit };
}

async function waitForNextTask(page, assignment) {
  await page.locator(`#task[data-assignment="${assignment}"]`).waitFor({ state: 'detached', timeout: 20000 });
}

async function answerByKeyboard(page, shown, plan, first) {
  const digits = shown.map((s) => String(plan[s.method]));
  const bestIndex = shown.findIndex((s) => s.method === plan.best);
  const focused = () => page.locator('fieldset.description.focused').getAttribute('id');
  assert.equal(await focused(), 'description-0');
  // As the hint says: a key acts on the highlighted description, which stays highlighted, so
  // a digit then `b` rates and picks the same one.
  await page.keyboard.press(digits[0]);
  assert.equal(await focused(), 'description-0', 'a digit rates and keeps the highlight');
  if (bestIndex === 0) await page.keyboard.press('b');
  if (first) {
    // Shift+Tab and the arrows move between descriptions too.
    await page.keyboard.press('ArrowDown');
    assert.equal(await focused(), 'description-1');
    await page.keyboard.press('Shift+Tab');
    assert.equal(await focused(), 'description-0');
  }
  await page.keyboard.press('ArrowDown');
  assert.equal(await focused(), 'description-1');
  await page.keyboard.press(digits[1]);
  assert.equal(await focused(), 'description-1');
  if (bestIndex === 1) {
    assert.equal(await page.isDisabled('#submit-task'), true, 'no best pick yet');
    await page.keyboard.press('b');
  }
  assert.equal(await page.isChecked(`#rate-0-${digits[0]}`), true);
  assert.equal(await page.isChecked(`#rate-1-${digits[1]}`), true);
  assert.equal(await page.isChecked(`#best-${bestIndex}`), true);
  assert.equal(await page.isEnabled('#submit-task'), true);
  await page.keyboard.press('Enter');
}

async function answerByMouse(page, shown, plan) {
  assert.equal(await page.isDisabled('#submit-task'), true);
  for (let i = 0; i < shown.length; i++) await page.check(`#rate-${i}-${plan[shown[i].method]}`);
  assert.equal(await page.isDisabled('#submit-task'), true, 'no best pick yet');
  await page.check(`#best-${shown.findIndex((s) => s.method === plan.best)}`);
  assert.equal(await page.isEnabled('#submit-task'), true);
}

test('three raters answer every task: one by keyboard, two by mouse, with a retried submission', async () => {
  // Server-rendered: the first task is in the HTML before any script runs.
  const token0 = state.links[0].split('/rate/')[1];
  const html = await (await fetch(`${BASE_URL}/rate/${token0}`)).text();
  assert.match(html, /Task 1 of 4/);
  assert.equal([...html.matchAll(/<img src="\/img\/[0-9a-f]{64}[^"]*"/g)].length, 10);
  assert.match(html, /Strongly disagree/);

  for (let r = 0; r < 3; r++) {
    const b = await launch();
    try {
      const page = await b.context.newPage();
      await page.goto(state.links[r]);
      await waitForHydration(page);
      assert.equal(await page.locator('#task-images img').count(), 10);
      await page.waitForFunction(() => [...document.querySelectorAll('#task-images img')]
        .every((i) => i.complete && i.naturalWidth > 0), null, { timeout: 30000 });
      if (r === 1) {
        await page.fill('#worker-id', 'worker-42');
        await page.click('#save-worker-id');
        assert.equal(await page.locator('#worker-id-status').innerText(), 'Saved.');
      }
      for (let k = 0; k < 4; k++) {
        assert.equal(await page.locator('#task-progress').innerText(), `Task ${k + 1} of 4`);
        const { assignment, shown, unit } = await readTask(page);
        const plan = PLANS[r][k];
        if (r === 0) {
          await answerByKeyboard(page, shown, plan, k === 0);
        } else if (r === 2 && k === 1) {
          // The answer is stored but its acknowledgement is lost: the rater sees an error, the
          // answers stay, and the retry (same idempotency key) is taken as the same answer.
          await answerByMouse(page, shown, plan);
          await page.route('**/api/rate/submit', async (route) => {
            await route.fetch();
            await route.abort('failed');
          }, { times: 1 });
          await page.click('#submit-task');
          assert.match(await page.locator('#submit-error').innerText(), /could not be sent/);
          assert.equal(await page.isChecked(`#rate-0-${plan[shown[0].method]}`), true, 'answers are kept');
          await page.click('#submit-task');
        } else {
          await answerByMouse(page, shown, plan);
          await page.click('#submit-task');
        }
        await waitForNextTask(page, assignment);
        state.records.push({
          rater: r, unit, ratings: { milan: plan.milan, 'clip-dissect': plan['clip-dissect'] }, best: plan.best, valid: isValid(plan),
        });
      }
      await page.locator('#rater-done').waitFor();
      assert.match(await page.locator('#task-progress').innerText(), /4 tasks done/);
      assert.deepEqual(b.errors.map(String), []);
    } finally {
      await b.close();
    }
  }
  assert.equal(state.records.length, 12);
  assert.equal(state.records.filter((x) => !x.valid).length, 1, 'exactly one invalid response (rater 3)');
  // Every rater saw each of the four neurons once.
  for (let r = 0; r < 3; r++) {
    assert.deepEqual(state.records.filter((x) => x.rater === r).map((x) => x.unit).sort(), UNITS);
  }
});

test('the results page shows the hand-computed Table 3/4, live, with agreement, chart and raters', async () => {
  const page = state.adminPage;
  // The open study's page refreshes itself: no reload.
  await waitForValidCount(page, '11 / 12 valid');
  const expected = expectedCells(state.records);
  assert.deepEqual(await shownCells(page, 'stage6'), expected);
  assert.deepEqual(await shownCells(page, 'all'), expected);
  assert.equal(await page.locator('#results tbody tr').count(), 2);
  assert.equal(await page.locator('#results tr[data-layer="all"] th').innerText(), 'All layers');

  assert.equal(await page.locator('#results-chart g.bar').count(), 4);
  const titles = await page.locator('#results-chart g.bar title').allTextContents();
  assert.ok(titles.some((t) => t.startsWith('MILAN · stage6: mean') && t.includes(expected['milan:mean'])), titles.join(' | '));

  const alphas = await page.locator('#agreement td[data-stat="alpha"]').allInnerTexts();
  assert.equal(alphas.length, 3);
  for (const a of alphas) assert.match(a, /^(-?\d\.\d{3}|—)$/);

  const rows = page.locator('#raters tr[data-rater]');
  const stat = (id, s) => page.locator(`#raters tr[data-rater="${id}"] td[data-stat="${s}"]`).innerText();
  for (let r = 0; r < 3; r++) {
    const id = state.raterIds[r];
    assert.equal(await stat(id, 'responses'), '4');
    assert.equal(await stat(id, 'invalid'), r === 2 ? '1' : '0');
    assert.equal(await stat(id, 'attention'), '0 / 0');
    assert.match(await stat(id, 'median-time'), /^\d+\.\d s$/);
    assert.equal(await stat(id, 'state'), 'active');
  }
  assert.equal(await stat(state.raterIds[1], 'worker'), 'worker-42');
  assert.equal(await rows.count(), 4, 'three invited raters and one from the open link');
  // A machine rates faster than anyone can read: a median under 2 s per task is flagged.
  for (let r = 0; r < 3; r++) {
    const seconds = parseFloat(await stat(state.raterIds[r], 'median-time'));
    const flags = await stat(state.raterIds[r], 'flags');
    assert.equal(/too fast/.test(flags), seconds < 2, `rater ${r}: ${seconds} s, flags “${flags}”`);
  }

  // Per neuron: each unit's mean per method over its valid responses, linked to its gallery page.
  for (const unit of UNITS) {
    const mine = state.records.filter((x) => x.unit === unit);
    const valid = mine.filter((x) => x.valid);
    const row = page.locator(`#neuron-results tr[data-neuron="${LAYER}/${unit}"]`);
    assert.equal(await row.locator('a').getAttribute('href'), `/m/${MODEL}/${LAYER}/${unit}`);
    for (const m of METHODS) {
      const values = valid.map((x) => x.ratings[m]);
      const expected = values.length > 1 ? meanSem(values) : values.length ? `${fixed(values[0], 2)} ± —` : '—';
      assert.equal(await row.locator(`td[data-method="${m}"]`).innerText(), expected, `unit ${unit} ${m}`);
    }
    assert.equal(await row.locator('td[data-stat="valid"]').innerText(), `${valid.length} / ${mine.length}`);
  }

  // Excluding rater 3 recomputes the table without them; including them restores it.
  const third = page.locator(`#raters tr[data-rater="${state.raterIds[2]}"]`);
  await third.locator('button.exclude').click();
  await waitForValidCount(page, '8 / 8 valid');
  assert.deepEqual(await shownCells(page, 'stage6'), expectedCells(state.records.filter((x) => x.rater !== 2)));
  assert.equal(await stat(state.raterIds[2], 'state'), 'excluded');
  await third.locator('button.include').click();
  await waitForValidCount(page, '11 / 12 valid');
  assert.deepEqual(await shownCells(page, 'stage6'), expected);
  assert.deepEqual(adminErrors(), []);
});

test('raters reach no admin data and see no method names; a revoked link answers 403', async () => {
  const token = state.links[2].split('/rate/')[1];
  const b = await launch();
  try {
    const page = await b.context.newPage();
    await page.goto(state.links[2]);
    await waitForHydration(page);
    // The rater's own browser (its cookies) cannot read the study or call admin functions.
    assert.equal((await page.request.get(`${BASE_URL}/admin/studies/${state.studyId}`)).status(), 403);
    const call = await page.request.post(`${BASE_URL}/api/admin/study`, { form: { id: String(state.studyId) } });
    assert.equal(call.status(), 403);
    assert.equal((await page.request.get(`${BASE_URL}/admin/studies/${state.studyId}/export/responses.csv`)).status(), 403);
  } finally {
    await b.close();
  }

  const html = await (await fetch(`${BASE_URL}/rate/${state.links[0].split('/rate/')[1]}`)).text();
  for (const name of ['milan', 'clip-dissect', 'MILAN', 'CLIP-Dissect']) assert.ok(!html.includes(name), `rater page names ${name}`);
  assert.doesNotMatch(html, /clip.?dissect|milan/i);
  assert.doesNotMatch(html, /href="\/admin/);
  assert.doesNotMatch(html, /href="\/m\//);

  const page = state.adminPage;
  await page.locator(`#raters tr[data-rater="${state.raterIds[2]}"] button.revoke`).click();
  await page.locator(`#raters tr[data-rater="${state.raterIds[2]}"] td[data-stat="state"]`, { hasText: 'revoked' }).waitFor();
  const revoked = await fetch(`${BASE_URL}/rate/${token}`);
  assert.equal(revoked.status, 403);
  assert.match(await revoked.text(), /revoked/);
  // Their answers still count.
  assert.equal(await page.locator('#results td[data-layer="stage6"][data-stat="valid"]').innerText(), '11 / 12 valid');
});

test('the responses export has one row per response and description, matching every rating given', async () => {
  const base = `${BASE_URL}/admin/studies/${state.studyId}/export`;
  const res = await state.adminPage.request.get(`${base}/responses.csv`);
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'], /text\/csv/);
  const rows = parseCsv(await res.text());
  assert.equal(rows.length, 12 * 2);
  const byRater = Object.fromEntries(state.raterIds.map((id, r) => [String(id), r]));
  const seen = new Set();
  for (const row of rows) {
    const r = byRater[row.rater_id];
    const rec = state.records.find((x) => x.rater === r && x.unit === Number(row.unit));
    assert.ok(rec, `a response of rater ${row.rater_id} on unit ${row.unit}`);
    assert.equal(row.layer, LAYER);
    assert.equal(row.description, TEXTS[row.method][rec.unit]);
    assert.equal(Number(row.rating), rec.ratings[row.method]);
    assert.equal(row.picked_best, String(rec.best === row.method));
    assert.equal(row.response_valid, String(rec.valid));
    assert.match(row.client_time_ms, /^\d+$/);
    seen.add(`${r}:${row.unit}:${row.method}`);
  }
  assert.equal(seen.size, 24);
  const results = parseCsv(await (await state.adminPage.request.get(`${base}/results.csv`)).text());
  assert.equal(results.length, 2 * METHODS.length);
  assert.deepEqual(results.map((x) => x.layer), ['stage6', 'stage6', 'all layers', 'all layers']);
  assert.equal((await state.adminPage.request.get(`${base}/results.json`)).status(), 200);
});
