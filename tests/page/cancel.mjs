// A running operation shows on the operations page; its page updates
// live; Cancel (confirmed) cancels it, and the page shows it cancelled.
//
// node tests/page/cancel.mjs URL TOKEN PATTERN
import { argv, run, visit, check, api } from './lib.mjs';

const { url, token, args } = argv();
const [pattern] = args;

await run({ token }, async ({ page }) => {
  await visit(page, url, '/ui/operations', '#operations, #no-operations');
  await page.waitForFunction(() => document.getElementById('live').textContent === 'live');
  const op = await api(url, token, 'POST', '/v1/builds', { refs: [pattern] });
  // The list learns of it from the event stream, without a reload.
  const row = page.locator(`#operations tr[data-id="${op.id}"]`);
  await row.waitFor();
  await row.locator('a').click();
  await page.waitForSelector('#op-state');
  check(new URL(page.url()).pathname === `/ui/operations/${op.id}`, `opened ${page.url()}`);
  await page.waitForSelector('#op-state[data-state="running"]');
  // The events of the operation stream in.
  await page.waitForSelector('#op-events tbody tr[data-kind="ActionStarted"]');
  await page.click('[data-action="cancel"]');
  await page.click('[data-action="confirm-cancel"]');
  await page.waitForSelector('#op-state[data-state="cancelled"]', { timeout: 60_000 });
  const after = await api(url, token, 'GET', `/v1/operations/${op.id}`);
  check(after.state === 'cancelled' && after.done, `the API says ${after.state}`);
  // Back to the list: the operation reads cancelled there too.
  await page.goBack();
  await page.waitForSelector(`#operations tr[data-id="${op.id}"][data-state="cancelled"]`);
  console.log(`operation ${op.id} cancelled from the page`);
});
