// Two overlapping operations: the second joins the first's runs; its
// page marks those actions joined (timeline and counts), and a
// partition's history says it was not built twice.
//
// node tests/page/joined.mjs URL TOKEN PATTERN REF...  (the refs PATTERN names)
import { argv, run, visit, check, api } from './lib.mjs';

const { url, token, args } = argv();
const [pattern, ...refs] = args;

await run({ token }, async ({ page }) => {
  const first = await api(url, token, 'POST', '/v1/builds', { refs: [pattern] });
  // Wait until the first is running its actions, then ask for the same.
  for (let i = 0; i < 200; i += 1) {
    const now = await api(url, token, 'GET', `/v1/operations/${first.id}`);
    if (now.running && now.running.length) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const second = await api(url, token, 'POST', '/v1/builds', { refs: [pattern] });
  await visit(page, url, `/ui/operations/${second.id}`, '#op-state');
  await page.waitForSelector('#op-state[data-state="succeeded"]', { timeout: 60_000 });
  await page.waitForSelector('#timeline .bar.joined');
  const done = await api(url, token, 'GET', `/v1/operations/${second.id}`);
  check(done.counts.joined > 0, `the API counts joined actions: ${JSON.stringify(done.counts)}`);
  const joinedBars = await page.$$eval('#timeline .bar.joined', (bars) => bars.length);
  check(joinedBars === done.counts.joined, `${joinedBars} joined bars, ${done.counts.joined} joined in the counts`);
  check((await page.textContent('#op-counts')).includes(`${done.counts.joined} joined`), 'the counts say joined');
  // The partitions of the joined actions: their history says so, naming
  // the build whose run they took (either operation may have joined the
  // other's run of an action the other started first).
  const firstBuild = (await api(url, token, 'GET', `/v1/operations/${first.id}`)).build;
  const builds = new Map([[done.build, firstBuild], [firstBuild, done.build]]);
  let seen = 0;
  for (const ref of refs) {
    await visit(page, url, `/ui/partitions/${encodeURIComponent(ref)}`, '#history');
    const rows = await page.$$eval('#history tr[data-type="joined"]', (trs) => trs.map((tr) => [Number(tr.dataset.build), tr.textContent]));
    for (const [build, text] of rows) {
      check(text.includes(`joined build ${builds.get(build)}'s run`), `${ref}: build ${build} joined ${builds.get(build)}: ${text}`);
      seen += 1;
    }
  }
  check(seen > 0, 'a history lists a joined run');
  console.log(`${joinedBars} actions of ${second.id} joined ${first.id}'s runs`);
});
