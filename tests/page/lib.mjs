// Shared by the browser tests of the page of `cairn serve` (docs/web.md):
// Playwright's core driving Debian's Chromium (/usr/bin/chromium, or
// $CAIRN_CHROMIUM), in a fresh profile, with the flags that work on a
// machine without a network. Nothing here downloads a browser.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CHROMIUM = process.env.CAIRN_CHROMIUM || '/usr/bin/chromium';

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** `node tests/page/X.mjs URL TOKEN [ARGS...]` → { url, token, args }. */
export function argv() {
  const [url, token, ...args] = process.argv.slice(2);
  if (!url || !token) {
    console.error('usage: node tests/page/TEST.mjs URL TOKEN [ARGS...]');
    process.exit(2);
  }
  return { url: url.replace(/\/$/, ''), token, args };
}

/**
 * Starts Chromium in a fresh profile (a new --user-data-dir) and opens a
 * page that has the token (as the page keeps it: sessionStorage) and that
 * records every console error and uncaught exception.
 */
export async function open({ token, colorScheme = 'light', viewport = { width: 1280, height: 800 }, allowed = [] } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'cairn-page-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    colorScheme,
    viewport,
    timeout: 60_000,
  });
  if (token) {
    await context.addInitScript((value) => sessionStorage.setItem('cairn.token', value), token);
  }
  const page = context.pages()[0] || await context.newPage();
  const errors = [];
  page.on('console', (message) => {
    if (message.type() === 'error' && !allowed.some((re) => re.test(message.text()))) errors.push(`console error: ${message.text()} (${JSON.stringify(message.location())})`);
  });
  page.on('pageerror', (error) => errors.push(`uncaught: ${error.stack || error.message}`));
  page.setDefaultTimeout(20_000);
  return {
    page,
    errors,
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Fails (exit 1) with `message`, after closing the browser. */
export async function fail(session, message) {
  console.error(`FAILED: ${message}`);
  if (session) {
    console.error(`errors seen: ${JSON.stringify(session.errors, null, 1)}`);
    await session.close().catch(() => {});
  }
  process.exit(1);
}

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** Runs `body(session)`; any exception or console error fails the test. */
export async function run(options, body) {
  let session;
  try {
    session = await open(options);
    await body(session);
    if (session.errors.length) throw new Error(`the page logged errors:\n${session.errors.join('\n')}`);
    await session.close();
    console.log('ok');
  } catch (error) {
    await fail(session, error.stack || String(error));
  }
}

/** Goes to `path` and waits until the view has drawn (no "Loading…"). */
export async function visit(page, url, path, ready) {
  await page.goto(url + path);
  await page.waitForSelector(ready);
  await drawn(page);
}

/** The view shows no half-drawn value (an object where text belongs). */
export async function drawn(page) {
  const text = await page.textContent('main');
  if (/\[object |undefined|NaN/.test(text)) throw new Error(`${page.url()} shows a broken value: ${text.slice(0, 2000)}`);
}

/** A /v1 request from the test itself (not the page). */
export async function api(url, token, method, path, body) {
  const response = await fetch(url + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

export async function screenshot(page, dir, name, fullPage = false) {
  await drawn(page);
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`), fullPage });
}
