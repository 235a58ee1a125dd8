// A job whose log is large: the partition's page shows its tail and
// offers the whole log as a download.
//
// node tests/page/biglog.mjs URL TOKEN REF BYTES LAST_LINE
import { statSync, readFileSync } from 'node:fs';
import { argv, run, visit, check } from './lib.mjs';

const { url, token, args } = argv();
const [ref, bytes, lastLine] = args;

await run({ token }, async ({ page }) => {
  const started = Date.now();
  await visit(page, url, `/ui/partitions/${encodeURIComponent(ref)}`, '#log-stdout pre');
  const shownIn = Date.now() - started;
  const shown = await page.textContent('#log-stdout pre');
  const lines = shown.split('\n').filter(Boolean);
  check(lines.length <= 400, `the page shows the tail, not ${lines.length} lines`);
  check(lines[lines.length - 1] === lastLine, `the tail ends with the log's last line: ${JSON.stringify(lines[lines.length - 1])}`);
  check((await page.textContent('#log-stdout')).includes(`of ${bytes} bytes`), 'the page says how large the whole log is');
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 60_000 }),
    page.click('#log-stdout button'),
  ]);
  const path = await download.path();
  check(statSync(path).size === Number(bytes), `the download is the whole log: ${statSync(path).size} bytes`);
  const text = readFileSync(path, 'utf8');
  check(text.endsWith(`${lastLine}\n`), 'the download ends with the last line');
  console.log(`a ${bytes}-byte log: the tail shown in ${shownIn} ms, the whole log downloaded`);
});
