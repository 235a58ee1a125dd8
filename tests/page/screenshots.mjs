// A screenshot of each view, for the README and docs/web.md:
//   CAIRN_PAGE_SCREENSHOTS=docs/web cargo test --test page screenshots
//
// node tests/page/screenshots.mjs URL TOKEN DIR
import { argv, run, visit, screenshot, api } from './lib.mjs';

const { url, token, args } = argv();
const [dir] = args;

await run({ token }, async ({ page }) => {
  // An operation to list: rebuilding what is built is quick.
  const op = await api(url, token, 'POST', '/v1/builds', { refs: ['raw/day={day}/station={station}'] });
  for (let i = 0; i < 200; i += 1) {
    const now = await api(url, token, 'GET', `/v1/operations/${op.id}`);
    if (now.done) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }

  await visit(page, url, '/', '#datasets');
  await page.waitForSelector('#graph[data-ready]');
  await screenshot(page, dir, 'datasets', true);

  await visit(page, url, '/ui/datasets/clean', '#grid td.cell[data-state]');
  await page.hover('#grid td.cell[data-state="failed"]');
  await page.waitForSelector('#hover .reason');
  await screenshot(page, dir, 'grid');

  await visit(page, url, `/ui/partitions/${encodeURIComponent('clean/day=wed/station=S02')}`, '#log-stderr');
  await page.waitForSelector('#lineage[data-ready]');
  await screenshot(page, dir, 'partition', true);

  // An operation with a failure (the failed partition runs again; the
  // rest is cached), for its page and timeline.
  const failing = await api(url, token, 'POST', '/v1/builds', { refs: ['clean/day={day}/station={station}'], keep_going: true });
  await visit(page, url, '/ui/operations', '#operations');
  await screenshot(page, dir, 'operations');
  await visit(page, url, `/ui/operations/${failing.id}`, '#op-state[data-state="failed"]');
  await page.waitForSelector('#timeline .bar.failed');
  await screenshot(page, dir, 'operation', true);

  await visit(page, url, '/ui/events', '#events tbody tr');
  await screenshot(page, dir, 'events');
});

// The grid again, in the system's dark mode.
await run({ token, colorScheme: 'dark' }, async ({ page }) => {
  await visit(page, url, '/ui/datasets/clean', '#grid td.cell[data-state]');
  await page.focus('#grid td.cell[data-state="failed"]');
  await page.waitForSelector('#hover .reason');
  await screenshot(page, dir, 'grid-dark');
});
