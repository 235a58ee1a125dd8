// A build started from the test turns the grid's cells running, then
// built, without a reload (the page follows /v1/events).
//
// node tests/page/live.mjs URL TOKEN DATASET PATTERN
import { argv, run, visit, check, api } from './lib.mjs';

const { url, token, args } = argv();
const [dataset, pattern] = args;

await run({ token }, async ({ page }) => {
  await visit(page, url, `/ui/datasets/${encodeURIComponent(dataset)}`, '#grid td.cell[data-state]');
  await page.waitForFunction(() => document.getElementById('live').textContent === 'live');
  const before = await page.$$eval('#grid td.cell', (cells) => cells.map((td) => td.dataset.state));
  check(before.every((state) => state !== 'built'), `nothing is built yet: ${before}`);
  // Every state each cell shows, in order; and a mark a reload would lose.
  await page.evaluate(() => {
    window.notReloaded = true;
    window.seen = {};
    for (const td of document.querySelectorAll('#grid td.cell')) window.seen[td.dataset.ref] = [td.dataset.state];
    new MutationObserver((records) => {
      for (const record of records) {
        const td = record.target;
        const states = window.seen[td.dataset.ref];
        if (states && states[states.length - 1] !== td.dataset.state) states.push(td.dataset.state);
      }
    }).observe(document.getElementById('grid'), { subtree: true, attributes: true, attributeFilter: ['data-state'] });
  });

  const op = await api(url, token, 'POST', '/v1/builds', { refs: [pattern] });
  check(op.id && !op.done, `a running operation: ${JSON.stringify(op)}`);
  await page.waitForFunction(() => [...document.querySelectorAll('#grid td.cell')].every((td) => td.dataset.state === 'built'), null, { timeout: 120_000 });
  const seen = await page.evaluate(() => ({ seen: window.seen, notReloaded: window.notReloaded }));
  check(seen.notReloaded === true, 'the page was not reloaded');
  for (const [ref, states] of Object.entries(seen.seen)) {
    const running = states.indexOf('running');
    check(running > 0 && states.lastIndexOf('built') > running, `${ref} went ${states.join(' → ')}, not running then built`);
  }
  const done = await api(url, token, 'GET', `/v1/operations/${op.id}`);

  // The operation's page: its timeline has a bar per action, all executed.
  await page.click('header nav a[href="/ui/operations"]');
  await page.click(`#operations tr[data-id="${op.id}"] a`);
  await page.waitForSelector('#op-state[data-state="succeeded"]');
  await page.waitForFunction(() => document.querySelectorAll('#timeline .bar').length === 9);
  const outcomes = await page.$$eval('#timeline .bar', (bars) => bars.map((bar) => bar.dataset.outcome));
  check(outcomes.every((o) => o === 'executed'), `timeline outcomes ${outcomes}`);
  console.log(`${Object.keys(seen.seen).length} cells went running then built; operation ${op.id} ${done.state}`);
});
