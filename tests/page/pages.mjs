// Every view loads without a console error; the grid's cells equal
// `cairn status --json` state for state; keyboard, pivot and the back
// button work; a screenshot of each view is saved when asked.
//
// node tests/page/pages.mjs URL TOKEN STATUS_JSONL SHOTS_DIR|-
import { readFileSync } from 'node:fs';
import { argv, run, visit, check, screenshot, api } from './lib.mjs';

const { url, token, args } = argv();
const [statusFile, shotsArg] = args;
const shots = shotsArg && shotsArg !== '-' ? shotsArg : null;
const status = new Map(readFileSync(statusFile, 'utf8').split('\n').filter(Boolean)
  .map((line) => JSON.parse(line)).map((line) => [line.ref, line.state]));

async function gridCells(page) {
  return page.$$eval('#grid td.cell', (cells) => cells.map((td) => ({ ref: td.dataset.ref, state: td.dataset.state, label: td.getAttribute('aria-label') })));
}

await run({ token }, async ({ page }) => {
  const { datasets } = await api(url, token, 'GET', '/v1/datasets');

  // The datasets, with their counts by state.
  await visit(page, url, '/', datasets.length ? '#datasets' : 'main h1');
  if (datasets.length) {
    await page.waitForFunction(() => [...document.querySelectorAll('td[data-counts]')].every((td) => !td.textContent.includes('…')));
    const names = await page.$$eval('#datasets tbody tr td:first-child', (tds) => tds.map((td) => td.textContent));
    check(JSON.stringify(names) === JSON.stringify(datasets.map((d) => d.name)), `datasets listed ${names}, API ${datasets.map((d) => d.name)}`);
  }
  if (datasets.length) {
    // The graph overview: a node per dataset (its counts as the table's)
    // and per job, and the edges of the whole plan of every dataset.
    await page.waitForSelector('#graph[data-ready]');
    const expected = new Set();
    for (const dataset of datasets) {
      const plan = await api(url, token, 'GET', `/v1/plan?ref=${encodeURIComponent(dataset.pattern)}`);
      for (const action of plan.actions) {
        for (const input of action.inputs) expected.add(`${input.ref.split('/')[0]} -> @${action.job}`);
        for (const out of action.outputs) expected.add(`@${action.job} -> ${out.split('/')[0]}`);
      }
    }
    const edges = new Set(await page.$$eval('#graph-svg .edge', (ps) => ps.map((p) => `${p.dataset.from} -> ${p.dataset.to}`)));
    check(JSON.stringify([...edges].sort()) === JSON.stringify([...expected].sort()), `graph edges ${[...edges].sort()}, the plans' ${[...expected].sort()}`);
    const shown = await page.$$eval('#graph-svg .dataset', (as) => as.map((a) => a.dataset.dataset));
    check(JSON.stringify(shown.sort()) === JSON.stringify(datasets.map((d) => d.name).sort()), `graph datasets ${shown}`);
    // Each dataset's version (the graph file's), on its node and in the table.
    for (const dataset of datasets) {
      const node = await page.$eval(`#graph-svg .dataset[data-dataset="${dataset.name}"]`, (a) => [a.dataset.version, a.querySelector('text.name').textContent]);
      check(node[0] === (dataset.version || ''), `${dataset.name}: the node's version ${node[0]}, the API's ${dataset.version}`);
      check(!dataset.version || node[1] === `${dataset.name} v${dataset.version}`, `${dataset.name}: the node reads ${node[1]}`);
    }
    const versions = await page.$$eval('#datasets tbody tr td.version', (tds) => tds.map((td) => td.textContent));
    check(JSON.stringify(versions) === JSON.stringify(datasets.map((d) => d.version || '—')), `the table's versions ${versions}`);
  }
  await screenshot(page, shots, 'datasets');

  // Each dataset's grid equals `cairn status --json`, state for state.
  for (const dataset of datasets) {
    await visit(page, url, `/ui/datasets/${encodeURIComponent(dataset.name)}`, '#grid td.cell[data-state]');
    const cells = await gridCells(page);
    const expected = [...status].filter(([ref]) => ref.startsWith(`${dataset.name}/`) || ref === dataset.name);
    check(cells.length === expected.length, `${dataset.name}: ${cells.length} cells, status lists ${expected.length}`);
    const seen = new Set();
    for (const cell of cells) {
      check(!seen.has(cell.ref), `${cell.ref} drawn twice`);
      seen.add(cell.ref);
      check(status.has(cell.ref), `cell ${cell.ref} is not in cairn status`);
      check(status.get(cell.ref) === cell.state, `${cell.ref}: the grid says ${cell.state}, cairn status says ${status.get(cell.ref)}`);
      check(cell.label === `${cell.ref}: ${cell.state}`, `${cell.ref}: accessible name ${cell.label}`);
    }
    console.log(`grid ${dataset.name}: ${cells.length} cells equal cairn status`);
  }

  if (datasets.length) {
    const first = datasets[0];
    const dims = first.dimensions.map((d) => d.name);
    await visit(page, url, `/ui/datasets/${encodeURIComponent(first.name)}`, '#grid td.cell[data-state]');
    await page.hover('#grid td.cell[data-row="0"][data-col="0"]');
    await page.waitForSelector('#hover .reason');
    await screenshot(page, shots, 'grid');

    if (dims.length >= 2) {
      // Keyboard: arrows move along the row, Enter opens the partition.
      await page.focus('#grid td.cell[data-row="0"][data-col="0"]');
      await page.keyboard.press('ArrowRight');
      await page.keyboard.press('ArrowDown');
      const focused = await page.evaluate(() => ({ row: document.activeElement.dataset.row, col: document.activeElement.dataset.col, ref: document.activeElement.dataset.ref }));
      check(focused.row === '1' && focused.col === '1', `arrow keys moved to ${JSON.stringify(focused)}`);
      await page.keyboard.press('Enter');
      await page.waitForSelector('#state .state');
      check(decodeURIComponent(new URL(page.url()).pathname) === `/ui/partitions/${focused.ref}`, `Enter opened ${page.url()}`);
      // The back button returns to the grid.
      await page.goBack();
      await page.waitForSelector('#grid td.cell[data-state]');
      check(new URL(page.url()).pathname === `/ui/datasets/${first.name}`, `back went to ${page.url()}`);

      // Pivot: rows and columns swapped by the select; the URL says so.
      await page.selectOption('select[name=rows]', dims[1]);
      await page.waitForURL((u) => u.searchParams.get('rows') === dims[1]);
      // The view is drawn again once the grid is fetched: wait for it.
      await page.waitForFunction((label) => document.getElementById('grid')?.getAttribute('aria-label').endsWith(label), `${dims[1]} by ${dims[0]}`);
      const pivoted = await gridCells(page);
      const rowValues = await page.$$eval('#grid tbody th', (ths) => ths.map((th) => th.textContent));
      check(JSON.stringify(rowValues) === JSON.stringify(first.dimensions[1].values), `pivoted rows ${rowValues}`);
      for (const cell of pivoted) check(status.get(cell.ref) === cell.state, `pivoted ${cell.ref}: ${cell.state}`);

      // The state filter dims the other cells, by URL.
      const someState = pivoted[0].state;
      await page.goto(`${url}/ui/datasets/${encodeURIComponent(first.name)}?state=${someState}`);
      await page.waitForSelector('#grid td.cell[data-state]');
      const dimmed = await page.$$eval('#grid td.cell', (cells) => cells.map((td) => [td.dataset.state, td.classList.contains('dim')]));
      for (const [state, dim] of dimmed) check(dim === (state !== someState), `filter ${someState}: a ${state} cell dim=${dim}`);
    }

    // A partition: a failed one if there is one.
    const failed = [...status].find(([, state]) => state === 'failed');
    const ref = failed ? failed[0] : [...status.keys()][0];
    await visit(page, url, `/ui/partitions/${encodeURIComponent(ref)}`, '#state .state');
    const shownState = await page.getAttribute('#state .state', 'data-state');
    check(shownState === status.get(ref), `${ref}: page says ${shownState}, status ${status.get(ref)}`);
    await page.waitForSelector('#history');
    await screenshot(page, shots, 'partition');
  }

  await visit(page, url, '/ui/operations', '#operations, #no-operations');
  await screenshot(page, shots, 'operations');

  await visit(page, url, '/ui/events', '#events');
  await page.waitForFunction(() => !document.getElementById('event-count').textContent.startsWith('waiting'));
  if (status.size && [...status.values()].some((s) => s !== 'missing')) {
    await page.waitForSelector('#events tbody tr');
  }
  await screenshot(page, shots, 'events');

  // The event log's filters, by URL: a kind (the API's), a time range
  // (the page's), and a bad time said as such.
  if ([...status.values()].includes('failed')) {
    await visit(page, url, '/ui/events?kind=ActionFailed', '#events tbody tr');
    const kinds = await page.$$eval('#events tbody tr', (trs) => trs.map((tr) => tr.dataset.kind));
    check(kinds.every((k) => k === 'ActionFailed'), `kind filter: ${kinds}`);
    const today = new Date().toISOString().slice(0, 10);
    await visit(page, url, `/ui/events?kind=ActionFailed&from=${today}`, '#events tbody tr');
    await visit(page, url, '/ui/events?to=2000-01-01', '#events');
    await page.waitForFunction(() => document.getElementById('event-count').textContent.startsWith('No event matches'));
    check(await page.$$eval('#events tbody tr', (trs) => trs.length) === 0, 'nothing before 2000');
  }
  await visit(page, url, '/ui/events?from=banana', '#event-problem');
  check((await page.textContent('#event-problem')).includes('YYYY-MM-DD'), 'a bad time is said as such');

  // An unknown view says so (and logs no error).
  await visit(page, url, '/ui/nowhere', 'main h1');
  check((await page.textContent('main h1')) === 'Not found', 'unknown view');
});
