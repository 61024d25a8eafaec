// Drives the demo in headless Chromium with playwright-core (tests/test_web.py runs this):
// node drive.mjs URL CHROMIUM OUT.json SCREENSHOT.png SAMPLES
import {chromium} from 'playwright-core';

const [url, executablePath, outJson, shot, samples] = process.argv.slice(2);
const browser = await chromium.launch({executablePath, headless: true,
  args: ['--no-sandbox']});
const page = await browser.newPage({viewport: {width: 1000, height: 560}});
const external = [];
await page.route('**/*', (route) => {
  const u = new URL(route.request().url());
  if (u.hostname !== '127.0.0.1' && u.hostname !== 'localhost') {
    external.push(u.href);
    return route.abort();
  }
  return route.continue();
});
await page.goto(url);
await page.waitForFunction(() => window.aaReady || window.aaError, null, {timeout: 120000});
const error = await page.evaluate(() => window.aaError || null);
const result = {error, external, outputs: {}, order: []};
if (!error) {
  const keys = await page.evaluate(() => window.aaPoints);
  // switch points in a mixed order on the one compiled model
  const order = [...keys, ...keys.slice().reverse()];
  for (const key of order) {
    result.order.push(key);
    const rows = [];
    for (let i = 0; i < Number(samples); i++) {
      rows.push(await page.evaluate(([k, j]) => window.aaRun(k, j), [key, i]));
    }
    result.outputs[key] = rows;
  }
  await page.evaluate((k) => window.aaShow(k), keys[keys.length - 1]);
  await page.screenshot({path: shot});
}
await browser.close();
const fs = await import('fs');
fs.writeFileSync(outJson, JSON.stringify(result));
