// The neuron page's DnD run on real data: `dnd dissect` labels unit 0 of stage6 with the embedded
// (substitute) components into the running server's data folder, and fails unit 2 on purpose by
// pointing the LLM at a closed port. Then the page must show the substitutes, D_top, the
// candidate concepts and the failure, and serve every image through /img/{sha256}; the heatmap
// toggle lays each D_top image's stored activation map (/heatmap/{key}) over its whole image.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFile, execFileSync } = require('node:child_process');
const { BASE_URL, launch, waitForHydration } = require('./browser.cjs');

const LAYER = `${BASE_URL}/m/efficientnet-lite0/stage6`;

function dissect(units, env = {}) {
  return execFileSync('target/release/dnd', ['dissect', '--layer', 'stage6', '--neurons', units], {
    env: { ...process.env, DND__STORAGE__DATA_DIR: process.env.DND_E2E_DATA, ...env },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 1 << 26,
  });
}

// `dnd dissect` in the background; resolves with its output.
function dissectInBackground(units) {
  return new Promise((resolve, reject) => {
    execFile('target/release/dnd', ['dissect', '--layer', 'stage6', '--neurons', units], {
      env: { ...process.env, DND__STORAGE__DATA_DIR: process.env.DND_E2E_DATA },
      encoding: 'utf8',
      maxBuffer: 1 << 26,
    }, (e, stdout, stderr) => (e ? reject(new Error(`${e.message}\n${stderr}`)) : resolve(stdout)));
  });
}

test.before(async () => {
  // One neuron with the embedded pipeline (about a minute on 2 cores: recording + the local LLM),
  // started in a terminal while /jobs is open in a browser: the run shows there, tagged as the
  // command line's, and finishes there, with no reload.
  const b = await launch();
  try {
    const page = await b.context.newPage();
    await page.goto(`${BASE_URL}/jobs`);
    await waitForHydration(page);
    const before = await page.locator('#jobs tr[data-job]').evaluateAll((rows) => rows.map((r) => r.dataset.job));
    await page.evaluate(() => { window.__stayed = true; });
    const run = dissectInBackground('0');
    run.catch(() => {}); // awaited below; a failure then fails the hook at once, not unhandled
    const handle = await page.waitForFunction(
      (known) => [...document.querySelectorAll('#jobs tr[data-job]')]
        .find((r) => !known.includes(r.dataset.job) && r.querySelector('.from-command-line'))?.dataset.job,
      before,
      { timeout: 120000 },
    );
    const id = await handle.jsonValue();
    await page.waitForSelector(`#jobs tr[data-job="${id}"][data-status="done"]`, { timeout: 600000 });
    assert.match(await run, /unit {4}0: /);
    assert.equal(await page.evaluate(() => window.__stayed), true, 'the page followed the terminal without a reload');
    assert.deepEqual(b.errors.map(String), []);
  } finally {
    await b.close();
  }
  // Port 9 on loopback is closed: the LLM stage fails after its retries, in seconds.
  const failed = dissect('2', { DND__SERVICES__LLM__URL: 'http://127.0.0.1:9/v1', DND__SERVICES__LLM__MODEL: 'none' });
  assert.match(failed, /unit {4}2: FAILED at candidates/);
});

test('the server-rendered page lists the run: substitutes, D_top and candidates', async () => {
  const res = await fetch(`${LAYER}/0`);
  assert.equal(res.status, 200);
  const html = await res.text();
  assert.match(html, /id="substitute-banner"/);
  assert.match(html, /Not the paper(&#x27;|')s set-up: 5 of the 5 components/);
  assert.equal([...html.matchAll(/<li [^>]*class="top-image"/g)].length, 10);
  assert.equal([...html.matchAll(/<tr[^>]*data-role=/g)].length, 5);
  // The run facts say which split D_top was drawn from.
  assert.match(html, /drawn from \d+ probe-split images \(\d+ held out as the concept pool, \d+ for evaluation\)/);
  // stage6 is a conv layer and the run stored its maps: the heatmap toggle is offered, no note.
  assert.match(html, /id="show-heatmap"/);
  assert.doesNotMatch(html, /id="no-heatmaps"/);
  // A unit no run has covered says so.
  assert.match(await (await fetch(`${LAYER}/1`)).text(), /No DnD run has covered this neuron yet/);
});

test('the neuron page shows the run, its images load, and the crop toggle shows whole images', async () => {
  const b = await launch();
  try {
    const page = await b.context.newPage();
    await page.goto(`${LAYER}/0`);
    await waitForHydration(page);
    await page.locator('#substitute-banner').waitFor({ state: 'visible' });
    assert.match(await page.locator('#substitute-banner').innerText(), /substitutes/);
    assert.equal(await page.locator('#provenance tr.substitute').count(), 5);

    const items = page.locator('#top-images > li');
    assert.equal(await items.count(), 10);
    const allLoaded = () => page.waitForFunction(() => {
      const imgs = [...document.querySelectorAll('#top-images img')];
      return imgs.length === 10 && imgs.every((i) => i.complete && i.naturalWidth > 0);
    }, null, { timeout: 30000 });
    await allLoaded();
    for (let i = 0; i < 10; i++) {
      const caption = (await items.nth(i).locator('.caption-simplified, .caption-raw').allInnerTexts()).join(' ');
      assert.ok(caption.trim().length > 0, `rank ${i + 1} has a caption`);
      assert.match(await items.nth(i).locator('.activation').innerText(), /mean act\. -?\d+\.\d{3}/);
    }

    // Four scoring functions, one selected concept: the DnD rank-1 label above.
    assert.equal(await page.locator('#candidates thead th.score').count(), 4);
    const selected = page.locator('#candidates tbody tr.selected');
    assert.equal(await selected.count(), 1);
    const best = (await page.locator('#comparison tr[data-method="dnd"]').first().locator('td').nth(2).innerText()).trim();
    assert.equal((await selected.locator('td.concept').innerText()).replace('selected', '').trim(), best);

    // Crops show as crops; the toggle shows their whole images with the region outlined.
    const crops = page.locator('#top-images > li[data-crop="true"]');
    const n = await crops.count();
    assert.ok(n > 0, 'unit 0 has attention crops in D_top');
    const src = () => crops.first().locator('img').getAttribute('src');
    assert.match(await src(), /\?crop=\d+,\d+,\d+,\d+&w=320$/);
    assert.equal(await page.locator('#top-images .region-box').count(), 0);
    await page.getByLabel('Show crop regions').check();
    await page.locator('#top-images .region-box').first().waitFor();
    assert.equal(await page.locator('#top-images .region-box').count(), n);
    assert.match(await src(), /^\/img\/[0-9a-f]{64}\?w=320$/);
    await allLoaded();
    await page.getByLabel('Show crop regions').uncheck();
    await page.locator('#top-images .region-box').first().waitFor({ state: 'detached' });
    assert.match(await src(), /crop=/);

    // The heatmap toggle: every D_top entry shows its whole image with the unit's activation map
    // on top (crops outlined too); the overlays load at the thumbnail's size and go away again.
    const heatmaps = page.locator('#top-images img.heatmap');
    assert.equal(await heatmaps.count(), 0);
    await page.getByLabel('Show activation heatmap').check();
    await page.waitForFunction(() => {
      const heat = [...document.querySelectorAll('#top-images img.heatmap')];
      const all = [...document.querySelectorAll('#top-images img')];
      return heat.length === 10 && all.every((i) => i.complete && i.naturalWidth > 0);
    }, null, { timeout: 30000 });
    const overlays = await heatmaps.evaluateAll((imgs) => imgs.map((i) => ({
      src: i.getAttribute('src'),
      size: [i.naturalWidth, i.naturalHeight],
      under: [i.previousElementSibling.naturalWidth, i.previousElementSibling.naturalHeight],
      box: [i.getBoundingClientRect().width, i.getBoundingClientRect().height],
      underBox: [i.previousElementSibling.getBoundingClientRect().width, i.previousElementSibling.getBoundingClientRect().height],
    })));
    for (const o of overlays) {
      assert.match(o.src, /^\/heatmap\/[0-9a-f]{64}\?w=320$/);
      assert.deepEqual(o.size, o.under, 'the overlay is drawn at the thumbnail size');
      assert.deepEqual(o.box, o.underBox, 'and laid exactly over it');
    }
    assert.equal(await page.locator('#top-images .region-box').count(), n, 'crops stay outlined');
    assert.match(await crops.first().locator('img.whole').getAttribute('src'), /^\/img\/[0-9a-f]{64}\?w=320$/);
    const png = await fetch(BASE_URL + overlays[0].src);
    assert.equal(png.status, 200);
    assert.equal(png.headers.get('content-type'), 'image/png');
    assert.equal(png.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    await png.arrayBuffer(); // read whole: an unread body holds its connection open

    // The view is in the URL: a reload (or a shared link) shows the heatmaps from the server's
    // first HTML on, and the toggle is still checked once the page is interactive.
    await page.waitForURL(/[?&]heatmap=true/);
    const linked = await (await fetch(page.url())).text();
    assert.match(linked, /class="heatmap"/);
    await page.reload();
    await waitForHydration(page);
    await heatmaps.first().waitFor();
    assert.equal(await page.getByLabel('Show activation heatmap').isChecked(), true);
    await page.getByLabel('Show activation heatmap').uncheck();
    await page.waitForURL((u) => !u.search.includes('heatmap'));
    await heatmaps.first().waitFor({ state: 'detached' });
    assert.equal(await heatmaps.count(), 0);
    assert.match(await src(), /crop=/);
    await allLoaded();
    assert.deepEqual(b.errors.map(String), []);
  } finally {
    await b.close();
  }
});

test('a failed neuron shows its stage and error', async () => {
  const html = await (await fetch(`${LAYER}/2`)).text();
  assert.match(html, /id="run-failed"/);
  assert.match(html, /failed on this neuron at stage “candidates”/);
  assert.match(html, /127\.0\.0\.1:9/);
});

test('the layer grid shows each dissected neuron\'s top image, served immutable by content hash', async () => {
  const html = await (await fetch(LAYER)).text();
  const all = [...html.matchAll(/<img src="(\/img\/[0-9a-f]{64}[^"]*)"[^>]*data-from="(run|recording)"/g)];
  const thumbs = all.filter((m) => m[2] === 'run').map((m) => m[1].replaceAll('&amp;', '&'));
  assert.equal(thumbs.length, 1, 'only unit 0 is done');
  // The others show the recording's top probing image (whole: no crop).
  const recorded = all.filter((m) => m[2] === 'recording').map((m) => m[1]);
  assert.equal(recorded.length + 1, Math.min(60, (html.match(/class="neuron-card"/g) || []).length));
  assert.ok(recorded.every((src) => !src.includes('crop=')), recorded.join(' '));
  assert.match(thumbs[0], /w=96$/);
  const res = await fetch(BASE_URL + thumbs[0]);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'image/jpeg');
  assert.equal(res.headers.get('cache-control'), 'public, max-age=31536000, immutable');
  const etag = res.headers.get('etag');
  assert.ok(etag);
  await res.arrayBuffer(); // read whole: an unread body keeps this file's process from exiting
  assert.equal((await fetch(BASE_URL + thumbs[0], { headers: { 'if-none-match': etag } })).status, 304);
  const bad = await fetch(`${BASE_URL}/img/not-a-hash`);
  assert.equal(bad.status, 400);
  assert.match(await bad.text(), /sha256/);
  const missing = await fetch(`${BASE_URL}/img/${'0'.repeat(64)}`);
  assert.equal(missing.status, 404);
  await missing.arrayBuffer();
});
