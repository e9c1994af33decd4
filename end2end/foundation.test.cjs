// The foundation: server-side rendering, hydration, navigation to a model page.
const test = require('node:test');
const assert = require('node:assert/strict');
const { BASE_URL, launch, waitForHydration } = require('./browser.cjs');

test('the home page is rendered on the server', async () => {
  const res = await fetch(BASE_URL + '/');
  assert.equal(res.status, 200);
  const html = await res.text();
  // Without running any JavaScript the HTML already lists the built-in model and probing set.
  assert.match(html, /EfficientNet-Lite0/);
  assert.match(html, /Built-in probing set/);
  assert.match(html, /\/pkg\/dnd_studio\.js/);
  // A fresh install says what to do first: recording is the next step, nothing is done yet.
  assert.match(html, /id="first-run"/);
  assert.match(html, /<li(?=[^>]*data-step="record")(?=[^>]*class="step next")/);
  assert.doesNotMatch(html, /class="step done"/);
});

test('healthz answers ok', async () => {
  const res = await fetch(BASE_URL + '/healthz');
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { status: 'ok' });
});

test('an unknown page answers 404 with a way back', async () => {
  const res = await fetch(BASE_URL + '/no/such/page');
  assert.equal(res.status, 404);
  assert.match(await res.text(), /Page not found/);
});

test('the page hydrates: the filter box hides non-matching cards in the browser', async () => {
  const b = await launch();
  try {
    const page = await b.context.newPage();
    await page.goto(BASE_URL + '/');
    await waitForHydration(page);
    const model = page.locator('#models li', { hasText: 'EfficientNet-Lite0' });
    await model.waitFor({ state: 'visible' });
    await page.fill('#filter', 'zzz-no-such-thing');
    // Only the wasm front end can apply the filter: the server sent every card visible.
    await model.waitFor({ state: 'hidden', timeout: 10000 });
    await page.fill('#filter', 'lite0');
    await model.waitFor({ state: 'visible', timeout: 10000 });
    assert.deepEqual(b.errors.map(String), []);
  } finally {
    await b.close();
  }
});

test('navigating to a model page shows its layers', async () => {
  const b = await launch();
  try {
    const page = await b.context.newPage();
    await page.goto(BASE_URL + '/');
    await waitForHydration(page);
    await page.click('#models a:has-text("EfficientNet-Lite0")');
    await page.waitForURL(/\/m\/efficientnet-lite0$/);
    await page.locator('h1', { hasText: 'EfficientNet-Lite0' }).waitFor();
    const rows = await page.locator('table.layers tbody tr').allTextContents();
    assert.ok(rows.some((r) => r.includes('classifier') && r.includes('1000')), rows.join('\n'));
    assert.ok(rows.some((r) => r.startsWith('stem')), rows.join('\n'));
  } finally {
    await b.close();
  }
});
