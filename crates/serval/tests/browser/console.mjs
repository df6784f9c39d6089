// The console in real headless Chromium against a real server (run by crates/serval/tests/it/
// console.rs, which sets the service up and passes, in the environment:
//   CONSOLE_URL        the server's base url
//   CONSOLE_SERVAL        the serval binary (for a CLI change while the page is open)
//   CONSOLE_HOME      its home (the same store)
//   CONSOLE_MODEL      the id of a registered model to add as a new version
//   CONSOLE_EXPECTED   {"body", "label", "probabilities"}: a row and the library's own prediction
//   CONSOLE_ARTIFACTS  where screenshots go
//   SERVAL_BROWSER_MODULES, SERVAL_CHROMIUM).
// Exits non-zero with a message at the first failed check.
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
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
const origin = new URL(base).origin;
const expected = JSON.parse(env('CONSOLE_EXPECTED'));
const artifacts = env('CONSOLE_ARTIFACTS');
mkdirSync(artifacts, { recursive: true });
// Generous: waits end as soon as the page shows what is expected.
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
  // Every request the page makes is recorded; one to anywhere but the server is refused.
  const requests = [];
  const outside = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    requests.push(url);
    if (new URL(url).origin !== origin && !url.startsWith('data:')) {
      outside.push(url);
      return route.abort();
    }
    return route.continue();
  });
  page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => { if (m.type() === 'error') problems.push('console error: ' + m.text()); });
  let navigations = 0;
  page.on('framenavigated', (frame) => { if (frame === page.mainFrame()) navigations += 1; });

  // ---- overview ----
  await page.goto(base + '/ui');
  await page.waitForSelector('body[data-loaded=true]', WAIT);
  const row = (url) => page.locator(`[data-testid=endpoints] tr[data-url="${url}"]`);
  await row('iris/1').waitFor(WAIT);
  check(await row('iris/1').getAttribute('data-state') === 'loaded', 'iris/1 is listed as loaded');
  check(await row('iris/2').getAttribute('data-state') === 'loaded', 'iris/2 is listed as loaded');
  check((await row('iris/1').innerText()).includes('xgboost'), 'iris/1 shows its engine');
  check((await row('iris/1').innerText()).includes('iris-xgboost'), 'iris/1 shows its model name');
  check((await row('iris/2').innerText()).includes('native'), 'iris/2 runs natively');
  check(await row('broken').getAttribute('data-state') === 'failed', 'the broken endpoint is listed as failed');
  const brokenError = await row('broken').locator('[data-testid=error]').innerText();
  check(brokenError.includes("not a model the 'xgboost' engine loads"), `the failed endpoint shows its error: ${brokenError}`);
  const service = await page.locator('[data-testid=service-name]').innerText();
  check(service === 'console-demo', 'the service name is shown');
  check(await page.locator('[data-testid=instances] tbody tr').count() === 1, 'one instance is listed');

  // Canary split: segments in the configured proportions, weights as text.
  const canary = page.locator('.canary[data-url="iris_canary"]');
  await canary.waitFor(WAIT);
  const segments = canary.locator('.segment');
  check(await segments.count() === 2, 'the canary split has two parts');
  const shares = {};
  for (let i = 0; i < 2; i++) {
    const seg = segments.nth(i);
    shares[await seg.getAttribute('data-url')] = Number(await seg.getAttribute('data-share'));
  }
  check(Math.abs(shares['iris/1'] - 0.25) < 1e-6 && Math.abs(shares['iris/2'] - 0.75) < 1e-6,
    `the split gives iris/1 25 % and iris/2 75 % (${JSON.stringify(shares)})`);
  const widths = [];
  for (let i = 0; i < 2; i++) widths.push((await segments.nth(i).boundingBox()).width);
  check(Math.abs(widths[1] / widths[0] - 3) < 0.2, `the parts are drawn 1:3 wide (${widths.join(' : ')})`);
  const weights = await canary.locator('[data-testid=weights]').innerText();
  check(weights.includes('0.25 / 0.75') && weights.includes('iris/2 75.0 %'), `the weights are written out: ${weights}`);

  // The rollout: its steps with the current one marked, and its events.
  const rollout = page.locator('.rollout[data-canary="iris_roll"]');
  await rollout.waitFor(WAIT);
  check(await rollout.getAttribute('data-state') === 'running', 'the rollout is shown running');
  check(await rollout.locator('.chip.step').count() === 3, 'the rollout shows its three steps');
  check(await rollout.locator('.chip.step.current').getAttribute('data-step') === '1', 'the first step is marked current');
  const rolloutEvents = await rollout.locator('[data-testid=events] tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.kind));
  check(rolloutEvents.includes('started') && rolloutEvents.includes('step'), `the rollout's events are listed (${rolloutEvents.join(', ')})`);

  // Auto-update: the rule and the version it serves.
  const rule = page.locator('[data-testid=auto-update] tr[data-endpoint="auto_iris"]');
  await rule.locator('[data-testid=versions] a', { hasText: 'v1' }).waitFor(WAIT);
  check(true, 'the auto-update rule shows the version it serves (v1)');
  await page.screenshot({ path: join(artifacts, 'overview.png'), fullPage: true });

  // ---- counters move after requests (the page is not reloaded) ----
  await page.evaluate(() => { window.__sameDocument = true; });
  const count = async () => Number((await row('iris/1').locator('[data-testid=requests]').innerText()).replace('–', '0'));
  const before = await count();
  for (let i = 0; i < 6; i++) {
    const r = await fetch(base + '/serve/iris/1', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(expected.body) });
    check(r.status === 200, `request ${i + 1} to iris/1 answered 200`);
  }
  await page.waitForFunction(([n]) => {
    const cell = document.querySelector('[data-testid=endpoints] tr[data-url="iris/1"] [data-testid=requests]');
    return cell && Number(cell.textContent) >= n;
  }, [before + 6], WAIT);
  check(true, `the request counter moved from ${before} to ${await count()}`);
  await page.waitForFunction(() => {
    const cell = document.querySelector('[data-testid=endpoints] tr[data-url="iris/1"] [data-testid=rate]');
    return cell && Number(cell.textContent) > 0;
  }, null, WAIT);
  check(true, 'the request rate of iris/1 is above zero: ' + await row('iris/1').locator('[data-testid=rate]').innerText());
  check((await row('iris/1').locator('[data-testid=p50]').innerText()).endsWith('ms'), 'p50 latency is shown');

  // ---- the shadow pair: iris/1's requests copied to iris/2 and compared ----
  const shadow = page.locator('[data-testid=shadows] .shadow[data-endpoint="iris/1"][data-target="iris/2"]');
  await shadow.waitFor(WAIT);
  await page.waitForFunction(() => {
    const cell = document.querySelector('.shadow[data-endpoint="iris/1"] [data-testid=compared]');
    return cell && Number(cell.textContent.split(' ')[0]) >= 6;
  }, null, WAIT);
  const agreement = await shadow.locator('[data-testid=agreement]').innerText();
  check(/^[0-9.]+ %$/.test(agreement), `the shadow's agreement is shown (${agreement})`);
  check((await shadow.locator('[data-testid=latency]').innerText()).includes('ms'), 'both latencies are shown side by side');
  check(await shadow.locator('[data-testid=minutes] .minute').count() >= 1, 'agreement by minute is drawn');

  // ---- drift: iris/1's live inputs (the same row, six times) against its reference ----
  const drift = page.locator('[data-testid=drift] .drift[data-endpoint="iris/1"]');
  await drift.waitFor(WAIT);
  await page.waitForFunction(() => {
    const cell = document.querySelector('.drift[data-endpoint="iris/1"] tr[data-feature=f0] [data-testid=psi]');
    return cell && Number.isFinite(Number(cell.textContent));
  }, null, WAIT);
  const features = await drift.locator('tbody tr').evaluateAll((rows) => rows.map((r) => [r.dataset.feature, r.dataset.status]));
  check(features.map((f) => f[0]).join(',') === 'f0,f1,f2,f3', `every feature of the reference is listed (${features.map((f) => f[0])})`);
  check(features.every((f) => f[1] === 'drift'), `one repeated row drifts from a spread reference on every feature (${features.map((f) => f[1])})`);
  check(await drift.locator('tr[data-feature=f0] .badge.drift-drift').count() === 1, 'the drift status is coloured');
  const binBars = drift.locator('tr[data-feature=f0] [data-testid=bins]');
  check(await binBars.locator('.bar.reference').count() === 10 && await binBars.locator('.bar.live').count() === 10,
    'the reference and live shares of each of the ten bins are drawn side by side');
  const liveHeights = await binBars.locator('.bar.live').evaluateAll((bs) => bs.map((b) => parseInt(b.style.height, 10)));
  check(liveHeights.filter((x) => x > 0).length === 1, `the live share sits in one bin (${liveHeights})`);

  // ---- a CLI change shows up by itself ----
  execFileSync(env('CONSOLE_SERVAL'), ['model', 'add', '--engine', 'lightgbm', '--endpoint', 'iris', '--version', '3', '--model-id', env('CONSOLE_MODEL')],
    { env: { PATH: process.env.PATH, SERVAL_HOME: env('CONSOLE_HOME') }, stdio: 'pipe' });
  await page.waitForSelector('[data-testid=endpoints] tr[data-url="iris/3"][data-state=loaded]', WAIT);
  check(await page.evaluate(() => window.__sameDocument === true) && navigations === 1,
    'iris/3, added with the CLI, appeared without reloading the page');
  await page.screenshot({ path: join(artifacts, 'overview-after-change.png'), fullPage: true });

  // ---- endpoint page and "try it" ----
  await row('iris/1').locator('a').first().click();
  await page.waitForSelector('#try-body', WAIT);
  await page.waitForFunction(() => document.querySelector('#try-body').value.includes('instances'), null, WAIT);
  const inputs = await page.locator('[data-testid=metadata]').innerText();
  check(inputs.includes('FP32') && inputs.includes('[-1, 4]'), 'the endpoint page shows the input metadata');
  check((await page.locator('[data-testid=metric-rule]').innerText()).includes('x0 (scalar)'), 'the metric rule is listed');
  await page.locator('.variable[data-variable=x0] canvas').waitFor(WAIT);
  check(true, 'the x0 histogram is drawn');
  // The prefilled example is valid as it is.
  await page.click('#try-send');
  const reply = page.locator('[data-testid=reply]');
  await reply.waitFor(WAIT);
  check(await reply.getAttribute('data-status') === '200', 'the prefilled example is answered 200');
  // A row with the library's own prediction.
  await page.fill('#try-body', JSON.stringify(expected.body));
  await page.evaluate(() => document.querySelector('#try-result').replaceChildren());
  await page.click('#try-send');
  await reply.waitFor(WAIT);
  const answer = JSON.parse(await reply.innerText());
  check(answer.y[0] === expected.label, `try it: label ${answer.y[0]} is the model's (${expected.label})`);
  const maxDiff = Math.max(...answer.probabilities[0].map((p, i) => Math.abs(p - expected.probabilities[i])));
  check(maxDiff < 1e-5, `try it: probabilities match XGBoost's own within 1e-5 (max diff ${maxDiff})`);
  const latency = await page.locator('[data-testid=latency]').innerText();
  check(/^[0-9.]+ ms$/.test(latency), `try it shows the latency (${latency})`);
  // Explained: the contributions of the predicted class as bars, largest first.
  await page.check('#try-explain');
  await page.evaluate(() => document.querySelector('#try-result').replaceChildren());
  await page.click('#try-send');
  const bars = page.locator('[data-testid=contributions] .contribution');
  await bars.first().waitFor(WAIT);
  check(await bars.count() === 4, 'try it with "explain" draws one bar per feature (4)');
  const magnitudes = [];
  for (let i = 0; i < 4; i++) magnitudes.push(Math.abs(Number(await bars.nth(i).getAttribute('data-value'))));
  check(magnitudes.every((m, i) => i === 0 || magnitudes[i - 1] >= m), `the bars are sorted by magnitude (${magnitudes.join(', ')})`);
  check((await bars.first().locator('.bar').boundingBox()).width > 0, 'the largest contribution has a visible bar');
  const why = await page.locator('[data-testid=why]').innerText();
  check(why.includes(`class ${expected.label}`), `the chart explains the predicted class (${expected.label})`);
  await page.uncheck('#try-explain');
  await page.screenshot({ path: join(artifacts, 'endpoint.png'), fullPage: true });

  // ---- the failed endpoint's page ----
  await page.goto(base + '/ui/#/endpoint/broken');
  await page.locator('[data-testid=info] [data-testid=error]').waitFor(WAIT);
  check((await page.locator('[data-testid=info] [data-testid=error]').innerText()).includes('unknown format'), 'the failed endpoint page shows its error');

  // ---- nothing left the server ----
  check(requests.length > 0 && requests.every((u) => u.startsWith(origin + '/')), `all ${requests.length} requests of the page went to the server`);
  check(outside.length === 0, 'no request to anywhere else: ' + outside.join(', '));
  check(requests.some((u) => u.endsWith('/ui/uPlot.iife.min.js')), 'the chart library came from the server');
  check(problems.length === 0, 'no script errors: ' + problems.join('; '));
  console.log('all console checks passed');
} catch (err) {
  if (page) await page.screenshot({ path: join(artifacts, 'failure.png'), fullPage: true }).catch(() => {});
  console.error(err.stack || String(err));
  process.exitCode = 1;
} finally {
  await browser.close();
}
