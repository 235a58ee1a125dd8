// The token: asked for once when the server wants it (then kept for the
// tab), taken from the URL's fragment, or not needed with --public-read.
//
// node tests/page/token.mjs URL TOKEN asked|public
import { argv, run, visit, check, drawn } from './lib.mjs';

const { url, token, args } = argv();
const [mode] = args;

if (mode === 'public') {
  // `cairn serve --public-read`: every view reads without a token.
  await run({}, async ({ page }) => {
    await visit(page, url, '/', '#datasets');
    await visit(page, url, '/ui/datasets/clean', '#grid td.cell[data-state]');
    await visit(page, url, '/ui/events', '#events');
    check(await page.evaluate(() => sessionStorage.getItem('cairn.token')) === null, 'no token was asked for');
  });
} else {
  // The only errors allowed: the browser's own line for the 401 that
  // made the page ask.
  await run({ allowed: [/status of 401/] }, async ({ page, errors }) => {
    await page.goto(`${url}/ui/datasets/clean?rows=station`);
    await page.waitForSelector('form.token input#token');
    await drawn(page);
    await page.fill('#token', token);
    await page.click('form.token button[type=submit]');
    await page.waitForSelector('#grid td.cell[data-state]');
    check(new URL(page.url()).searchParams.get('rows') === 'station', 'the asked-for view, with its query');
    // Kept for the tab: the next views need no asking.
    await visit(page, url, '/ui/operations', '#operations, #no-operations');
    check(errors.length === 0, `errors: ${errors}`);
  });
  // A link that carries the token in its fragment (never sent to a server).
  await run({}, async ({ page }) => {
    await page.goto(`${url}/ui/datasets/clean#token=${token}`);
    await page.waitForSelector('#grid td.cell[data-state]');
    await drawn(page);
    check(new URL(page.url()).hash === '', `the token left the address bar: ${page.url()}`);
    check(await page.evaluate(() => sessionStorage.getItem('cairn.token')) === token, 'the token is kept for the tab');
  });
}
