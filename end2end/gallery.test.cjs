// The neuron gallery: layer grid (filter, pagination, jump to unit), neuron page with every
// method's labels side by side, keyboard navigation between units.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { BASE_URL, launch, waitForHydration } = require('./browser.cjs');

const MODEL = '/m/efficientnet-lite0';

// Imports a label file with the `dnd` command line into the running server's database.
function importLabels(csv, args) {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dnd-e2e-')), 'labels.csv');
  fs.writeFileSync(file, csv);
  return execFileSync('target/release/dnd', ['import-labels', '--model', 'efficientnet-lite0', file, ...args], {
    env: { ...process.env, DND__STORAGE__DATA_DIR: process.env.DND_E2E_DATA },
    encoding: 'utf8',
  });
}

test('the classifier layer lists its units with class names, filterable and paginated', async () => {
  let html = await (await fetch(`${BASE_URL}${MODEL}/classifier`)).text();
  assert.match(html, /1000 of 1000 neurons/);
  assert.match(html, /page 1 of 17/);
  assert.match(html, /tench/);
  html = await (await fetch(`${BASE_URL}${MODEL}/classifier?q=espresso`)).text();
  // "espresso" and "espresso maker".
  assert.match(html, /2 of 1000 neurons/);
  assert.match(html, /unit 550/);
  assert.match(html, /unit 967/);
  html = await (await fetch(`${BASE_URL}${MODEL}/classifier?page=2`)).text();
  assert.match(html, /unit 60</);
  const missing = await fetch(`${BASE_URL}${MODEL}/no-such-layer`);
  assert.equal(missing.status, 404);
});

test('imported labels appear side by side on the neuron page', async () => {
  const out = importLabels(
    'layer,unit,description,similarity\nclassifier,967,"coffee, cups and mugs",0.31\nclassifier,968,cups,0.2\n',
    ['--method', 'clip-dissect'],
  );
  assert.match(out, /imported 2 labels for 2 neurons/);
  importLabels('Neuron ID,Label 1,Label 2,Label 3\n967,espresso drinks,coffee cups,\n', ['--layer', 'classifier']);
  const html = await (await fetch(`${BASE_URL}${MODEL}/classifier/967`)).text();
  assert.match(html, /Ground-truth class: <strong>espresso<\/strong>/);
  const rows = [...html.matchAll(/<tr data-method="([a-z-]+)"><td>([^<]+)<\/td><td>(\d)<\/td><td>([^<]+)<\/td><td>([^<]+)<\/td>/g)]
    .map((m) => [m[2], m[3], m[4], m[5]]);
  assert.deepEqual(rows, [
    ['DnD', '1', 'espresso drinks', '—'],
    ['DnD', '2', 'coffee cups', '—'],
    ['CLIP-Dissect', '1', 'coffee, cups and mugs', '0.3100'],
  ]);
  // The layer grid can now be filtered by label text.
  const grid = await (await fetch(`${BASE_URL}${MODEL}/classifier?q=mugs`)).text();
  assert.match(grid, /1 of 1000 neurons/);
  // … and to the labelled neurons, with the filter kept in the pager's links.
  const labelled = await (await fetch(`${BASE_URL}${MODEL}/classifier?labelled=1`)).text();
  assert.match(labelled, /2 of 1000 neurons(<!>)? \(labelled only\)/);
  assert.deepEqual([...labelled.matchAll(/>unit (\d+)</g)].map((m) => m[1]), ['967', '968']);
  assert.match(labelled, /id="labelled-only" checked/);
});

test('concept search lists the neurons whose labels of any method mean a concept', async () => {
  // From the test above: unit 967 has DnD "espresso drinks" / "coffee cups" and CLIP-Dissect
  // "coffee, cups and mugs"; unit 968 has CLIP-Dissect "cups".
  const hitsOf = (html) => [...html.matchAll(/<li data-layer="([^"]+)" data-unit="(\d+)"/g)].map((m) => `${m[1]}/${m[2]}`);
  const html = await (await fetch(`${BASE_URL}${MODEL}?concept=${encodeURIComponent('a cup of coffee')}`)).text();
  assert.deepEqual(hitsOf(html).slice(0, 2), ['classifier/967', 'classifier/968']);
  assert.match(html, /all-MiniLM-L6-v2 cosine over 4 labels of 2 neurons/);
  const missing = await fetch(`${BASE_URL}/m/no-such-model?concept=dog`);
  assert.equal(missing.status, 404);

  // In the browser: type a concept, search, follow the best hit to its neuron page.
  const b = await launch();
  try {
    const page = await b.context.newPage();
    await page.goto(`${BASE_URL}${MODEL}`);
    await waitForHydration(page);
    await page.fill('input[name=concept]', 'mugs');
    await page.click('form:has(input[name=concept]) button');
    await page.waitForURL(/\?concept=mugs$/);
    const first = page.locator('#concept-hits li').first();
    await first.waitFor();
    assert.equal(await first.getAttribute('data-unit'), '967');
    assert.match(await first.textContent(), /CLIP-Dissect: coffee, cups and mugs/);
    await first.locator('a.unit').click();
    await page.waitForURL(/\/classifier\/967$/);
    assert.deepEqual(b.errors.map(String), []);
  } finally {
    await b.close();
  }
});

test('a malformed label file is refused with its line number and stores nothing', async () => {
  assert.throws(
    () => importLabels('layer,unit,description\nclassifier,5,ok\nclassifier,1000,too far\n', []),
    (e) => /line 3: unit 1000 is outside layer `classifier`/.test(String(e.stderr)),
  );
  const html = await (await fetch(`${BASE_URL}${MODEL}/classifier/5`)).text();
  assert.match(html, /No method has labelled this neuron yet/);
});

test('jump to unit, and arrow keys move between units once hydrated', async () => {
  const b = await launch();
  try {
    const page = await b.context.newPage();
    await page.goto(`${BASE_URL}${MODEL}/classifier`);
    await waitForHydration(page);
    await page.fill('input[name=unit]', '42');
    await page.click('form:has(input[name=unit]) button');
    await page.waitForURL(/\/classifier\/42$/);
    await page.locator('h1', { hasText: 'unit 42' }).waitFor();
    await waitForHydration(page);
    await page.keyboard.press('ArrowRight');
    await page.waitForURL(/\/classifier\/43$/);
    await page.locator('h1', { hasText: 'unit 43' }).waitFor();
    await page.keyboard.press('ArrowLeft');
    await page.keyboard.press('ArrowLeft');
    await page.waitForURL(/\/classifier\/41$/);
    assert.deepEqual(b.errors.map(String), []);
  } finally {
    await b.close();
  }
});

test('labels export as JSON and in the method\'s CSV format, and re-import', async () => {
  importLabels('layer,unit,description\nclassifier,3,"sharks, in water"\n', ['--method', 'milan', '--source', 'export-test']);
  const base = `${BASE_URL}/export/efficientnet-lite0/classifier?method=milan&source=export-test`;
  // The layer page links this source's export (a named source is not the method's default one).
  const layerPage = await (await fetch(`${BASE_URL}/m/efficientnet-lite0/classifier`)).text();
  assert.ok(layerPage.includes('/export/efficientnet-lite0/classifier?method=milan&amp;source=export-test&amp;format=json'));
  const json = await (await fetch(`${base}&format=json`)).json();
  assert.equal(json.labels.length, 1);
  assert.deepEqual([json.labels[0].unit, json.labels[0].text], [3, 'sharks, in water']);
  assert.match(json.labels[0].origin, /^import #\d+ \(labels\.csv\)$/);
  const res = await fetch(`${base}&format=milan`);
  // The file is named by its source too, so a layer's exports never overwrite each other.
  assert.match(res.headers.get('content-disposition'), /filename="efficientnet-lite0_classifier_milan_export-test\.csv"/);
  const csv = await res.text();
  assert.equal(csv, 'layer,unit,description\nclassifier,3,"sharks, in water"\n');
  assert.match(importLabels(csv, ['--method', 'milan', '--source', 'reimport']), /imported 1 labels/);
  assert.equal((await fetch(`${base}&format=xml`)).status, 400);
  assert.equal((await fetch(`${BASE_URL}/export/efficientnet-lite0/classifier?method=falcon`)).status, 404);
});
