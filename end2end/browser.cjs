// Shared browser set-up for the end-to-end tests: Debian's Chromium driven by playwright-core
// (never a downloaded browser), against the server started by scripts/e2e.sh.
const { chromium } = require('playwright-core');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const BASE_URL = process.env.DND_E2E_URL || 'http://127.0.0.1:3000';

async function launch() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dnd-e2e-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const errors = [];
  context.on('page', (p) => {
    p.on('pageerror', (e) => errors.push(e));
    // Whatever the Content-Security-Policy blocks (a script, style or image the page needed)
    // counts as a page error: the tests' checks for none then cover the policy too.
    p.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) errors.push(new Error(m.text())); });
  });
  return { context, errors, close: async () => { await context.close(); fs.rmSync(userDataDir, { recursive: true, force: true }); } };
}

// Resolves once the wasm bundle has hydrated the page (frontend/src/lib.rs marks <body>).
async function waitForHydration(page) {
  await page.waitForSelector('body[data-hydrated="true"]', { timeout: 30000 });
}

// The admin secret of the server under test: generated at its first start and shown once, on
// the stderr scripts/e2e.sh keeps in <data>/server.log (the data folder holds only its digest).
function adminSecret() {
  const log = fs.readFileSync(path.join(process.env.DND_E2E_DATA, 'server.log'), 'utf8');
  const m = log.match(/Admin secret \(generated at first start; shown once[^)]*\): ([0-9a-f]{64})/);
  if (!m) throw new Error('the server log shows no admin secret');
  assert.ok(!fs.existsSync(path.join(process.env.DND_E2E_DATA, 'admin-secret')), 'a plain-text secret was written');
  return m[1];
}

// A new page of `browser` (from launch()) logged in as the admin, on /admin.
async function adminPage(browser) {
  const page = await browser.context.newPage();
  await page.goto(`${BASE_URL}/admin`);
  await waitForHydration(page);
  await page.fill('#admin-secret', adminSecret());
  await page.click('#admin-login');
  await page.locator('#logout').waitFor();
  return page;
}

module.exports = { BASE_URL, launch, waitForHydration, adminSecret, adminPage };
