// The console's changes in real headless Chromium (run by crates/serval/tests/it/console.rs
// against `serve --require-auth`, whose console demo service it set up). Environment:
//   CONSOLE_URL           the server's base url
//   CONSOLE_ADMIN_KEY     an admin key (serval auth create-key --role admin)
//   CONSOLE_VIEWER_KEY    an inference key
//   CONSOLE_ARTIFACTS     where screenshots go
//   SERVAL_BROWSER_MODULES, SERVAL_CHROMIUM.
// With the inference key the page offers no change and the server refuses one; with the admin
// key the page changes canary weights, pauses and aborts a rollout, publishes a model and removes
// an endpoint, each only after its confirmation is accepted. Exits non-zero at the first failed check.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const require = createRequire(env('SERVAL_BROWSER_MODULES') + '/');
const { chromium } = require('playwright-core');

const base = env('CONSOLE_URL');
const admin = env('CONSOLE_ADMIN_KEY');
const viewer = env('CONSOLE_VIEWER_KEY');
const artifacts = env('CONSOLE_ARTIFACTS');
mkdirSync(artifacts, { recursive: true });
const WAIT = { timeout: 60_000 };

function check(condition, message) {
  if (!condition) throw new Error('check failed: ' + message);
  console.log('ok:', message);
}

const browser = await chromium.launch({
  executablePath: process.env.SERVAL_CHROMIUM || '/usr/bin/chromium',
  args: ['--disable-background-networking', '--disable-component-update', '--no-first-run',
    '--disable-sync', '--disable-default-apps', '--disable-quic'],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  // Confirmations: answered as `answer` says, and recorded.
  let answer = false;
  const questions = [];
  page.on('dialog', async (dialog) => {
    questions.push(dialog.message());
    if (answer) await dialog.accept(); else await dialog.dismiss();
  });
  const canary = () => page.locator('.canary[data-url="iris_canary"]');
  const shares = async () => {
    const segments = canary().locator('.segment');
    const out = {};
    for (let i = 0; i < await segments.count(); i++) {
      out[await segments.nth(i).getAttribute('data-url')] = Number(await segments.nth(i).getAttribute('data-share'));
    }
    return out;
  };

  // ---- an inference key: nothing to change, and the server refuses a change ----
  await page.goto(base + '/ui');
  await page.waitForSelector('#auth:not([hidden])', WAIT);
  await page.fill('#auth-key', viewer);
  await page.click('#auth-form button');
  await page.waitForSelector('body[data-loaded=true]', WAIT);
  await canary().waitFor(WAIT);
  check(await page.locator('[data-testid=weights-form]').count() === 0, 'with an inference key the canary has no weights form');
  const service = await page.locator('[data-testid=service-id]').innerText();
  const refused = await page.evaluate(async ([svc, key]) => {
    const r = await fetch(`/api/v1/services/${svc}/canaries/iris_canary`, {
      method: 'PUT',
      headers: { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json' },
      body: JSON.stringify({ weights: [0, 1], input_endpoints: ['iris/1', 'iris/2'] }),
    });
    return [r.status, (await r.json()).detail];
  }, [service, viewer]);
  check(refused[0] === 403, `the server refuses a change with the inference key (${refused[0]}: ${refused[1]})`);
  await page.goto(base + '/ui/#/endpoint/iris/1');
  await page.locator('[data-testid=info]').waitFor(WAIT);
  await page.waitForFunction(() => document.querySelector('[data-testid=info] dd'), null, WAIT);
  check(await page.locator('[data-testid=actions]').isHidden(), 'with an inference key the endpoint page offers no change');
  await page.goto(base + '/ui/#/');
  await canary().waitFor(WAIT);
  check(await page.locator('[data-testid=recent-changes]').isHidden(), 'with an inference key the audit trail is not shown');

  // ---- an admin key ----
  await page.evaluate((k) => sessionStorage.setItem('serval-key', k), admin);
  await page.goto(base + '/ui/#/');
  await page.reload();
  await page.waitForSelector('body[data-loaded=true]', WAIT);
  const form = canary().locator('[data-testid=weights-form]');
  await form.waitFor(WAIT);
  check(true, 'with an admin key the canary has a weights form');
  const before = await shares();
  check(Math.abs(before['iris/1'] - 0.25) < 1e-6, `the canary starts at 25/75 (${JSON.stringify(before)})`);
  const inputs = form.locator('[data-testid=weight-input]');
  await inputs.nth(0).fill('0');
  await inputs.nth(1).fill('1');
  // Declined: nothing is sent.
  answer = false;
  await form.locator('[data-testid=save-weights]').click();
  await page.waitForFunction(() => true);
  check(questions.length === 1 && questions[0].includes('/serve/iris_canary') && questions[0].includes('0 / 1'),
    `saving asks first: "${questions[0]}"`);
  await page.evaluate(() => window.servalConsole.refresh());
  check(Math.abs((await shares())['iris/1'] - 0.25) < 1e-6, 'a declined change changes nothing');
  // Accepted: saved, and the split follows once the server has reloaded.
  answer = true;
  await canary().locator('[data-testid=weight-input]').nth(0).fill('0');
  await canary().locator('[data-testid=weight-input]').nth(1).fill('1');
  await canary().locator('[data-testid=save-weights]').click();
  await page.waitForFunction(() => {
    const notice = document.querySelector('[data-testid=notice]');
    return notice && notice.textContent.startsWith('Saved');
  }, null, WAIT);
  check(true, 'the page says: ' + await page.locator('[data-testid=notice]').innerText());
  await page.waitForFunction(() => {
    const segment = document.querySelector('.canary[data-url="iris_canary"] .segment[data-url="iris/2"]');
    return segment && Number(segment.dataset.share) === 1;
  }, null, WAIT);
  check(true, 'the canary now sends everything to iris/2');
  await page.screenshot({ path: join(artifacts, 'admin-weights.png'), fullPage: true });

  // The rollout: paused, then aborted (each asked first); the buttons follow its state.
  const rollout = () => page.locator('.rollout[data-canary="iris_roll"]');
  await rollout().locator('[data-testid=rollout-pause]').click();
  await page.waitForFunction(() => document.querySelector('.rollout[data-canary="iris_roll"]')?.dataset.state === 'paused', null, WAIT);
  check(questions.at(-1).startsWith('Pause the rollout of /serve/iris_roll'), 'pausing the rollout asked first, then it shows paused');
  await rollout().locator('[data-testid=rollout-resume]').waitFor(WAIT);
  check(await rollout().locator('[data-testid=rollout-pause]').count() === 0, 'a paused rollout offers resume, not pause');
  await rollout().locator('[data-testid=rollout-abort]').click();
  await page.waitForFunction(() => document.querySelector('.rollout[data-canary="iris_roll"]')?.dataset.state === 'aborted', null, WAIT);
  check(questions.at(-1).includes('Abort the rollout of /serve/iris_roll'), 'aborting asked first, then it shows aborted');
  check(await rollout().locator('[data-testid=rollout-actions]').count() === 0, 'an ended rollout offers no action');

  // Publish the model of iris/1.
  await page.goto(base + '/ui/#/endpoint/iris/1');
  const publish = page.locator('[data-testid=publish-model]');
  await publish.waitFor({ state: 'visible', ...WAIT });
  await publish.click();
  await page.waitForFunction(() => document.querySelector('[data-testid=publish-model]').hidden, null, WAIT);
  check(questions.at(-1).startsWith('Publish model'), 'publishing asked first, then the button went away (published)');

  // Remove the broken endpoint.
  await page.goto(base + '/ui/#/endpoint/broken');
  const remove = page.locator('[data-testid=remove-endpoint]');
  await remove.waitFor({ state: 'visible', ...WAIT });
  await remove.click();
  await page.waitForFunction(() => location.hash === '#/', null, WAIT);
  await page.waitForFunction(() => !document.querySelector('[data-testid=endpoints] tr[data-url="broken"]')
    && document.querySelector('[data-testid=endpoints] tr[data-url="iris/1"]'), null, WAIT);
  check(questions.at(-1).includes('Remove the endpoint /serve/broken'), 'removing asked first, and the endpoint is gone');
  // The last changes, newest first, under the admin key's name.
  await page.waitForSelector('[data-testid=recent-changes] tr[data-operation="endpoint.remove"]', WAIT);
  const changes = await page.locator('[data-testid=recent-changes] tbody').innerText();
  check(changes.includes('ops') && changes.includes('canary.put') && changes.includes('model.publish'),
    'the overview lists the recent changes with the key that made them');
  await page.screenshot({ path: join(artifacts, 'admin-after.png'), fullPage: true });
  check(problems.length === 0, 'no script errors: ' + problems.join('; '));
  console.log('all admin console checks passed');
} catch (err) {
  if (page) await page.screenshot({ path: join(artifacts, 'admin-failure.png'), fullPage: true }).catch(() => {});
  console.error(err.stack || String(err));
  process.exitCode = 1;
} finally {
  await browser.close();
}
