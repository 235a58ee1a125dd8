// Not a test: measures the grid page (docs/web.md, "Measured").
//   node tests/page/bench.mjs URL TOKEN DATASET [PATTERN]
// prints the time from navigation to a drawn, interactive grid (every
// cell in the DOM with its state, and the main thread free again), the
// page's long tasks (over 50 ms), and the size of the grid's answer;
// with PATTERN, it then submits a build of PATTERN and prints the long
// tasks of the page while it follows the build live, to its end.
import { argv, open } from './lib.mjs';

const { url, token, args } = argv();
const [dataset, pattern] = args;
const session = await open({ token });
const { page } = session;
await page.addInitScript(() => {
  window.longTasks = [];
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.longTasks.push(Math.round(entry.duration));
  }).observe({ type: 'longtask', buffered: true });
});
const grid = await fetch(`${url}/v1/datasets/${encodeURIComponent(dataset)}/grid`, { headers: { Authorization: `Bearer ${token}` } });
const bytes = (await grid.arrayBuffer()).byteLength;
for (let run = 1; run <= 3; run += 1) {
  const started = Date.now();
  await page.goto(`${url}/ui/datasets/${encodeURIComponent(dataset)}`);
  await page.waitForSelector('#grid td.cell[data-state]', { timeout: 60_000 });
  // Interactive: the main thread answers again.
  await page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 0)));
  const drawn = Date.now() - started;
  const cells = await page.$$eval('#grid td.cell', (tds) => tds.length);
  const timing = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const resource = performance.getEntriesByType('resource').find((r) => r.name.includes('/grid'));
    return { grid_request_ms: resource ? Math.round(resource.duration) : null, dom_content_loaded_ms: Math.round(nav.domContentLoadedEventEnd) };
  });
  const longTasks = await page.evaluate(() => window.longTasks);
  console.log(JSON.stringify({ run, dataset, cells, interactive_ms: drawn, ...timing, long_tasks_ms: longTasks, grid_answer_bytes: bytes }));
}
if (pattern) {
  await page.evaluate(() => { window.longTasks = []; });
  const submitted = Date.now();
  const response = await fetch(`${url}/v1/builds`, { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ refs: [pattern], keep_going: true }) });
  const op = await response.json();
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const now = await (await fetch(`${url}/v1/operations/${op.id}`, { headers: { Authorization: `Bearer ${token}` } })).json();
    if (now.done) {
      const longTasks = await page.evaluate(() => window.longTasks);
      const states = await page.$$eval('#grid td.cell', (tds) => tds.map((td) => td.dataset.state));
      console.log(JSON.stringify({ build: op.id, state: now.state, counts: now.counts, seconds: (Date.now() - submitted) / 1000, long_tasks: longTasks.length, longest_task_ms: Math.max(0, ...longTasks), cells_built: states.filter((s) => s === 'built').length }));
      break;
    }
  }
}
await session.close();
