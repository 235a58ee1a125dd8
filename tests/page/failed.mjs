// A click on a failed cell opens the partition, which shows its stderr
// (apart from stdout), and offers the whole log as a download.
//
// node tests/page/failed.mjs URL TOKEN DATASET REF STDERR_TEXT
import { readFileSync } from 'node:fs';
import { argv, run, visit, check, drawn, api } from './lib.mjs';

const { url, token, args } = argv();
const [dataset, ref, text] = args;

await run({ token }, async ({ page }) => {
  await visit(page, url, `/ui/datasets/${encodeURIComponent(dataset)}`, '#grid td.cell[data-state]');
  const cell = page.locator(`#grid td.cell[data-ref="${ref}"]`);
  check(await cell.getAttribute('data-state') === 'failed', `${ref} is drawn failed`);
  await cell.click();
  await page.waitForSelector('#log-stderr pre');
  await drawn(page);
  check(decodeURIComponent(new URL(page.url()).pathname) === `/ui/partitions/${ref}`, `the click opened ${page.url()}`);
  check(await page.getAttribute('#state .state', 'data-state') === 'failed', 'the partition reads failed');
  const stderr = await page.textContent('#log-stderr pre');
  check(stderr.includes(text), `stderr shows ${JSON.stringify(stderr)}`);
  const stdout = await page.textContent('#log-stdout');
  check(!stdout.includes(text), `stdout is apart from stderr: ${JSON.stringify(stdout)}`);
  const failure = await page.locator('#history tr[data-type="failure"]').count();
  check(failure >= 1, 'the history lists the failure');

  const logs = await api(url, token, 'GET', `/v1/partitions/${encodeURIComponent(ref)}/logs`);
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.click('#log-stderr button'),
  ]);
  const saved = readFileSync(await download.path(), 'utf8');
  check(saved === logs.stderr, `the download is the whole stderr: ${JSON.stringify(saved)}`);
  console.log(`${ref}: stderr shown and downloaded`);
});
