// A selection (the cells the filters show) is invalidated with a reason,
// after a confirmation, then built again, each with one action.
//
// node tests/page/selection.mjs URL TOKEN
import { argv, run, visit, check, api } from './lib.mjs';

const { url, token } = argv();
const refs = ['raw/day=mon/station=S01', 'raw/day=mon/station=S02', 'raw/day=mon/station=S03'];

await run({ token }, async ({ page }) => {
  await visit(page, url, `/ui/datasets/raw?q=${encodeURIComponent('day=mon/')}`, '#grid td.cell[data-state]');
  await page.waitForFunction(() => document.getElementById('live').textContent === 'live');
  check((await page.textContent('#selection')).includes('the 3 partitions the filters show'), await page.textContent('#selection'));

  // Invalidate: asks for a reason, and changes nothing until confirmed.
  await page.click('#selection [data-action="invalidate"]');
  await page.click('#selection [data-action="confirm-invalidate"]');
  check(await page.$('#selection-reason:invalid') !== null, 'an empty reason is refused');
  await page.fill('#selection-reason', 'sensor recalibrated');
  await page.click('#selection [data-action="confirm-invalidate"]');
  await page.waitForSelector('#selection [data-done="invalidate"]');
  const status = (await api(url, token, 'GET', `/v1/status?${refs.map((r) => `ref=${encodeURIComponent(r)}`).join('&')}`)).partitions;
  check(status.length === 3 && status.every((line) => line.state === 'stale'), `invalidated: ${JSON.stringify(status)}`);
  // The grid follows (the invalidation's events), without a reload.
  await page.waitForFunction((wanted) => wanted.every((ref) => document.querySelector(`#grid td.cell[data-ref="${ref}"]`).dataset.state === 'stale'), refs);
  const others = await page.$$eval('#grid td.cell', (tds) => tds.filter((td) => !td.dataset.ref.includes('day=mon/')).map((td) => td.dataset.state));
  check(others.every((state) => state === 'built'), `only the selection was invalidated: ${others}`);

  // Build them again: one operation, the cells turn built.
  await page.click('#selection [data-action="build"]');
  await page.fill('#selection-reason', 'rebuild after recalibration');
  await page.click('#selection [data-action="confirm-build"]');
  await page.waitForSelector('#selection [data-done="build"] a');
  await page.waitForFunction((wanted) => wanted.every((ref) => document.querySelector(`#grid td.cell[data-ref="${ref}"]`).dataset.state === 'built'), refs, { timeout: 60_000 });
  const history = await api(url, token, 'GET', `/v1/partitions/${encodeURIComponent(refs[0])}/history`);
  check(history.entries.some((e) => e.type === 'invalidation' && e.reason === 'sensor recalibrated' && e.by === 'the web page via cairn serve'), `the history records the reason and who: ${JSON.stringify(history.entries.map((e) => [e.type, e.reason, e.by]))}`);
  // The build carries its reason and who submitted it: the API and the
  // operation's page say them.
  const listed = (await api(url, token, 'GET', '/v1/operations')).operations;
  check(listed.length === 1 && listed[0].reason === 'rebuild after recalibration' && listed[0].submitted_by === 'the web page', `the operation's reason and submitter: ${JSON.stringify(listed)}`);
  await page.click('#selection [data-done="build"] a');
  await page.waitForSelector('#op-state[data-state="succeeded"]');
  check(await page.textContent('#op-reason') === 'rebuild after recalibration', await page.textContent('#op-reason'));
  check(await page.textContent('#op-by') === 'the web page', await page.textContent('#op-by'));
  await visit(page, url, '/ui/operations', '#operations tbody tr');
  const row = await page.$eval('#operations tbody tr', (tr) => [tr.querySelector('td.by').textContent, tr.querySelector('td.reason').textContent]);
  check(row[0] === 'the web page' && row[1] === 'rebuild after recalibration', `the operations list: ${row}`);
  console.log('a selection invalidated with its reason, then built with one, both saying who');
});
