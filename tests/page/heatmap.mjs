// A grid larger than the view's limit (`?max=`) rolls up into blocks
// whose counts add up to `cairn status`; a block's click zooms into its
// partitions, cell by cell; the back button returns to the blocks.
//
// node tests/page/heatmap.mjs URL TOKEN STATUS_JSONL DATASET MAX
import { readFileSync } from 'node:fs';
import { argv, run, visit, check } from './lib.mjs';

const { url, token, args } = argv();
const [statusFile, dataset, max] = args;
const status = new Map(readFileSync(statusFile, 'utf8').split('\n').filter(Boolean)
  .map((line) => JSON.parse(line)).filter((line) => line.ref.startsWith(`${dataset}/`)).map((line) => [line.ref, line.state]));

await run({ token }, async ({ page }) => {
  const path = `/ui/datasets/${encodeURIComponent(dataset)}?max=${max}`;
  await visit(page, url, path, '#grid[data-aggregated] td.cell[data-counts]');
  const blocks = await page.$$eval('#grid td.cell', (tds) => tds.map((td) => ({ counts: JSON.parse(td.dataset.counts), state: td.dataset.state, label: td.getAttribute('aria-label') })));
  check(blocks.length <= Number(max), `${blocks.length} blocks, at most ${max}`);
  const total = {};
  for (const block of blocks) for (const [state, n] of Object.entries(block.counts)) total[state] = (total[state] || 0) + n;
  const expected = {};
  for (const state of status.values()) expected[state] = (expected[state] || 0) + 1;
  check(JSON.stringify(Object.entries(total).sort()) === JSON.stringify(Object.entries(expected).sort()), `blocks count ${JSON.stringify(total)}, cairn status ${JSON.stringify(expected)}`);
  // The worst state of a block is its glyph: a block with a failure reads failed.
  for (const block of blocks) if (block.counts.failed) check(block.state === 'failed', `a block with a failure reads ${block.state}`);

  // Zoom into the block holding the failure: its cells, one by one.
  await page.click('#grid td.cell[data-state="failed"]');
  await page.waitForSelector('#grid:not([data-aggregated]) td.cell[data-ref]');
  const query = new URL(page.url()).searchParams;
  check(query.has('rr') && query.has('cr'), `zoomed by URL: ${page.url()}`);
  const cells = await page.$$eval('#grid td.cell', (tds) => tds.map((td) => [td.dataset.ref, td.dataset.state]));
  check(cells.length > 0 && cells.length <= Number(max), `${cells.length} cells in the zoomed block`);
  check(cells.some(([, state]) => state === 'failed'), 'the zoomed block shows the failed cell');
  for (const [ref, state] of cells) check(status.get(ref) === state, `zoomed ${ref}: ${state}, status ${status.get(ref)}`);
  await page.goBack();
  await page.waitForSelector('#grid[data-aggregated]');
  console.log(`${blocks.length} blocks add up to cairn status; zoom and back work`);
});
