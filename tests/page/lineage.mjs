// A partition's lineage graph: its upstream nodes and edges are those of
// `cairn plan --format json REF`; downstream it shows the partitions
// built directly from it; each node opens its partition.
//
// node tests/page/lineage.mjs URL TOKEN REF PLAN_JSON DOWNSTREAM_REF
import { readFileSync } from 'node:fs';
import { argv, run, visit, check, drawn } from './lib.mjs';

const { url, token, args } = argv();
const [ref, planFile, downstreamRef] = args;
const plan = JSON.parse(readFileSync(planFile, 'utf8'));

// The plan's partitions upstream of REF, and its edges.
const producedBy = new Map();
for (const action of plan.actions) for (const out of action.outputs) producedBy.set(out, action);
const expectedNodes = new Set([ref]);
const expectedEdges = new Set();
const walk = [ref];
while (walk.length) {
  const at = walk.pop();
  for (const input of (producedBy.get(at) || { inputs: [] }).inputs) {
    expectedEdges.add(`${input.ref} -> ${at}`);
    if (!expectedNodes.has(input.ref)) {
      expectedNodes.add(input.ref);
      walk.push(input.ref);
    }
  }
}

const sorted = (set) => JSON.stringify([...set].sort());

await run({ token }, async ({ page }) => {
  await visit(page, url, `/ui/partitions/${encodeURIComponent(ref)}`, '#lineage[data-ready]');
  await drawn(page);
  const nodes = new Set(await page.$$eval('#lineage-graph .node', (as) => as.map((a) => a.dataset.ref)));
  const edges = new Set(await page.$$eval('#lineage-graph .edge', (ps) => ps.map((p) => `${p.dataset.from} -> ${p.dataset.to}`)));
  const upstreamNodes = new Set([...nodes].filter((n) => n !== downstreamRef));
  const upstreamEdges = new Set([...edges].filter((e) => !e.startsWith(`${ref} -> `)));
  check(sorted(upstreamNodes) === sorted(expectedNodes), `lineage nodes ${sorted(upstreamNodes)}, cairn plan ${sorted(expectedNodes)}`);
  check(sorted(upstreamEdges) === sorted(expectedEdges), `lineage edges ${sorted(upstreamEdges)}, cairn plan ${sorted(expectedEdges)}`);
  check(nodes.has(downstreamRef) && edges.has(`${ref} -> ${downstreamRef}`), `downstream ${downstreamRef} in ${sorted(nodes)}`);
  // Node states are cairn status's (the test's status is in the grid test);
  // here: each node carries one, and a click opens that partition.
  const states = await page.$$eval('#lineage-graph .node', (as) => as.map((a) => a.dataset.state));
  check(states.every((s) => ['built', 'stale', 'missing', 'failed', 'running'].includes(s)), `states ${states}`);
  await page.click(`#lineage-graph .node[data-ref="${downstreamRef}"]`);
  await page.waitForFunction((r) => document.querySelector('main h1')?.textContent === r, downstreamRef);
  check(decodeURIComponent(new URL(page.url()).pathname) === `/ui/partitions/${downstreamRef}`, `the node opened ${page.url()}`);
  await page.waitForSelector('#lineage[data-ready]');
  const back = await page.$$eval('#lineage-graph .node', (as) => as.map((a) => a.dataset.ref));
  check(back.includes(ref), `${downstreamRef}'s lineage shows ${ref} upstream: ${back}`);
  console.log(`lineage of ${ref}: ${nodes.size} nodes, ${edges.size} edges, as cairn plan says`);
});
