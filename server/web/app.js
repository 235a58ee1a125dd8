// The page of `cairn serve` (docs/web.md): vanilla JavaScript, no
// framework, no build step. It reads only the public /v1 API
// (docs/api.md) and draws one view per URL:
//
//   /                    datasets with their states; the graph of datasets and jobs
//   /ui/datasets/NAME    the partition grid (?rows=&cols=&at.DIM=&state=&q=&rr=&cr=&max=),
//                        a heatmap past MAX_CELLS; build or invalidate a selection
//   /ui/partitions/REF   a partition: state, why, lineage, history, logs
//   /ui/operations       builds and backfills (?state=&kind=), with Cancel
//   /ui/operations/ID    one operation, live: counts, timeline, events, Cancel
//   /ui/events           the event log, streaming (?since=&kind=&partition=&job=&build=&dimension=&from=&to=)
//
// The token is asked for once and kept in sessionStorage (or given in the
// URL's fragment, `#token=...`, which never reaches a server).
'use strict';

const TOKEN_KEY = 'cairn.token';
const STATES = ['built', 'stale', 'missing', 'failed', 'running'];
const GLYPH = { built: '✓', stale: '~', missing: '·', failed: '✗', running: '▶' };
const MAX_CELLS = 60000;
const GRID_REFRESH_MS = 2000;
// At most this many heatmap blocks (each an element, like a cell).
const HEATMAP_BLOCKS = 10000;
const LOG_TAIL_LINES = 400;
const EVENT_ROWS = 2000;

// ------------------------------------------------------------ utilities

/** Builds an element: h('a', {href: '/'}, 'text', child, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith('on') && typeof value === 'function') {
        el.addEventListener(name.slice(2), value);
      } else if (name === 'dataset') {
        Object.assign(el.dataset, value);
      } else {
        el.setAttribute(name, value === true ? '' : String(value));
      }
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function time(value) {
  if (value === null || value === undefined) return '';
  const date = typeof value === 'number' ? new Date(value) : new Date(String(value));
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toISOString().replace('.000Z', 'Z');
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  if (m < 60) return `${m}m ${s}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

function stateBadge(state) {
  return h('span', { class: 'state', 'data-state': state }, state);
}

function partitionLink(ref) {
  return h('a', { href: `/ui/partitions/${encodeURIComponent(ref)}`, class: 'mono' }, ref);
}

function datasetOf(ref) {
  const slash = ref.indexOf('/');
  return slash < 0 ? ref : ref.slice(0, slash);
}

/** The partitions an event (a `cairn log --json` object) is about. */
function eventPartitions(event) {
  if (Array.isArray(event.outputs)) return event.outputs;
  if (typeof event.partition === 'string') return [event.partition];
  if (event.manifest && Array.isArray(event.manifest.outputs)) {
    return event.manifest.outputs.map((output) => output.partition);
  }
  return [];
}

function tailLines(text, lines) {
  let at = text.length;
  for (let i = 0; i < lines && at > 0; i += 1) {
    at = text.lastIndexOf('\n', at - 2);
    if (at < 0) return { text, cut: false };
    at += 1;
  }
  return { text: text.slice(at), cut: at > 0 };
}

// ------------------------------------------------------------------ API

class NeedToken extends Error {
  constructor(message) {
    super(message);
    this.name = 'NeedToken';
  }
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

function authHeaders(extra) {
  const headers = new Headers(extra || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.set('Authorization', `Bearer ${token}`);
  return headers;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) {
    // Not a JSON error body: keep the status line.
  }
  if (response.status === 401) return new NeedToken(message);
  return new ApiError(response.status, message);
}

/** A /v1 request; JSON in and out unless `text` is set. */
async function api(path, options = {}) {
  const headers = authHeaders(options.headers);
  let body;
  if (options.json !== undefined) {
    headers.set('Content-Type', 'application/json');
    body = JSON.stringify(options.json);
  }
  const response = await fetch(path, {
    method: options.method || 'GET',
    headers,
    body,
    signal: options.signal,
  });
  if (!response.ok) throw await failure(response);
  return options.text ? response.text() : response.json();
}

/**
 * Follows a server-sent event stream (docs/api.md, "Server-sent
 * events") with fetch, which can send the token (EventSource cannot).
 * Reconnects with Last-Event-ID, so no event is lost or repeated; stops
 * after `event: done` or when `signal` aborts.
 */
async function follow(path, { signal, onEvent, onOpen }) {
  let lastId = null;
  while (!signal.aborted) {
    try {
      const headers = authHeaders({ Accept: 'text/event-stream' });
      if (lastId !== null) headers.set('Last-Event-ID', lastId);
      const response = await fetch(path, { headers, signal });
      if (!response.ok) throw await failure(response);
      if (onOpen) onOpen();
      setLive('live');
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      let message = { event: 'message', data: [], id: null };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let newline;
        while ((newline = buffer.indexOf('\n')) >= 0) {
          let line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          if (line.endsWith('\r')) line = line.slice(0, -1);
          if (line === '') {
            if (message.data.length > 0) {
              if (message.id !== null) lastId = message.id;
              const data = message.data.join('\n');
              let parsed = data;
              try {
                parsed = JSON.parse(data);
              } catch (_) {
                // Keep the text.
              }
              onEvent(message.event, parsed, message.id);
              if (message.event === 'done') {
                setLive('');
                return;
              }
            }
            message = { event: 'message', data: [], id: null };
          } else if (line.startsWith(':')) {
            // A comment (keep-alive).
          } else {
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            let text = colon < 0 ? '' : line.slice(colon + 1);
            if (text.startsWith(' ')) text = text.slice(1);
            if (field === 'event') message.event = text;
            else if (field === 'data') message.data.push(text);
            else if (field === 'id') message.id = text;
          }
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof NeedToken || error instanceof ApiError) throw error;
    }
    if (signal.aborted) return;
    setLive('reconnecting…');
    await sleep(1500);
  }
}

function setLive(text) {
  document.getElementById('live').textContent = text;
}

// --------------------------------------------------------------- router

/** What the current view started (streams, timers), stopped on leaving it. */
let viewScope = new AbortController();
const view = document.getElementById('view');

function navigate(url, replace) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  route();
}

/** Replaces `element`'s children (nested arrays flattened, nulls left out). */
function fill(element, ...children) {
  element.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

function setView(...children) {
  fill(view, ...children);
  view.removeAttribute('aria-busy');
}

function markNav() {
  const path = location.pathname;
  for (const link of document.querySelectorAll('header.top nav a')) {
    const href = link.getAttribute('href');
    const current = href === '/' ? path === '/' || path.startsWith('/ui/datasets') || path.startsWith('/ui/partitions') : path.startsWith(href);
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

async function route() {
  viewScope.abort();
  viewScope = new AbortController();
  const scope = viewScope.signal;
  setLive('');
  markNav();
  // The old view stays until the new one is drawn; say that it is loading.
  view.setAttribute('aria-busy', 'true');
  const path = location.pathname;
  const query = new URLSearchParams(location.search);
  let match;
  try {
    if (path === '/' || path === '/ui' || path === '/ui/') {
      await showDatasets(scope);
    } else if ((match = path.match(/^\/ui\/datasets\/([^/]+)$/))) {
      await showGrid(decodeURIComponent(match[1]), query, scope);
    } else if ((match = path.match(/^\/ui\/partitions\/(.+)$/))) {
      await showPartition(decodeURIComponent(match[1]), scope);
    } else if (path === '/ui/operations') {
      await showOperations(query, scope);
    } else if ((match = path.match(/^\/ui\/operations\/([^/]+)$/))) {
      await showOperation(decodeURIComponent(match[1]), scope);
    } else if (path === '/ui/events') {
      await showEvents(query, scope);
    } else {
      document.title = 'not found · cairn';
      setView(h('h1', null, 'Not found'), h('p', null, 'No such view: ', h('code', null, path), '. ', h('a', { href: '/' }, 'Datasets')));
    }
  } catch (error) {
    if (scope.aborted) return;
    showError(error);
  }
  if (!scope.aborted) view.removeAttribute('aria-busy');
}

function showError(error) {
  if (error instanceof NeedToken) {
    showTokenForm(error.message);
    return;
  }
  setView(h('h1', null, 'Error'), h('p', { class: 'error', role: 'alert' }, error.message || String(error)));
}

function showTokenForm(message) {
  document.title = 'token · cairn';
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off', spellcheck: 'false', required: true });
  const form = h('form', { class: 'token', onsubmit: (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    route();
  } },
  h('h1', null, 'This server needs its token'),
  h('p', null, 'The token is in ', h('code', null, '.cairn/serve.token'), ' beside the store (`cat .cairn/serve.token`). It is kept for this tab only (sessionStorage).'),
  h('p', { class: 'muted' }, message),
  h('label', { for: 'token' }, 'Token'), ' ', input, ' ',
  h('button', { type: 'submit' }, 'Use it'));
  setView(form);
  input.focus();
}

document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest('a[href]');
  if (!link || link.hasAttribute('download') || link.target) return;
  const url = new URL(link.getAttribute('href'), location.href);
  if (url.origin !== location.origin) return;
  if (!(url.pathname === '/' || url.pathname.startsWith('/ui'))) return;
  event.preventDefault();
  navigate(url.pathname + url.search + url.hash);
});

window.addEventListener('popstate', () => route());

// ------------------------------------------------------------- datasets

/** Decodes a grid's runs into one state index per cell (row-major). */
function decodeRuns(grid) {
  const total = grid.dimensions.reduce((n, d) => n * d.values.length, 1);
  const codes = new Uint8Array(total);
  const names = [];
  const index = new Map();
  let at = 0;
  for (const [state, count] of grid.runs) {
    if (!index.has(state)) {
      index.set(state, names.length);
      names.push(state);
    }
    codes.fill(index.get(state), at, Math.min(total, at + count));
    at += count;
  }
  return { codes, names, index, total };
}

function countStates(grid) {
  const counts = {};
  for (const [state, count] of grid.runs) counts[state] = (counts[state] || 0) + count;
  return counts;
}

function countBadges(counts) {
  const states = [...STATES, ...Object.keys(counts).filter((s) => !STATES.includes(s))];
  return h('span', { class: 'counts' }, states.filter((s) => counts[s]).map((s) => h('span', { class: 'state', 'data-state': s, 'data-count': counts[s] }, `${counts[s]} ${s}`)));
}

/**
 * The graph of datasets and jobs, from one plan per dataset: each
 * dataset's first partition (its dimensions' first values) is planned
 * (`/v1/plan?ref=`), and every planned action adds the edges input
 * dataset → job → output dataset. A job whose actions differ between a
 * dataset's partitions is still one node.
 */
async function datasetGraph(datasets, scope) {
  const edges = new Set();
  const jobs = new Set();
  await Promise.all(datasets.filter((d) => d.dimensions).map(async (d) => {
    const ref = cellRef({ dataset: d.name, dimensions: d.dimensions }, d.dimensions.map(() => 0));
    if (d.dimensions.some((dim) => dim.values.length === 0)) return;
    try {
      const plan = await api(`/v1/plan?ref=${encodeURIComponent(ref)}`, { signal: scope });
      for (const action of plan.actions) {
        jobs.add(action.job);
        for (const input of action.inputs) edges.add(`${datasetOf(input.ref)}\t@${action.job}`);
        for (const out of action.outputs) edges.add(`@${action.job}\t${datasetOf(out)}`);
      }
    } catch (error) {
      if (error instanceof NeedToken) throw error;
      // A dataset that cannot be planned adds no edge.
    }
  }));
  return { jobs: [...jobs], edges: [...edges].map((e) => e.split('\t')) };
}

function drawDatasetGraph(datasets, graph, counts) {
  const nodes = [...datasets.map((d) => d.name), ...graph.jobs.map((j) => `@${j}`)];
  const inputs = new Map(nodes.map((n) => [n, []]));
  for (const [from, to] of graph.edges) if (inputs.has(to) && inputs.has(from)) inputs.get(to).push(from);
  const depth = new Map();
  const depthOf = (node, seen = new Set()) => {
    if (depth.has(node)) return depth.get(node);
    if (seen.has(node)) return 0;
    seen.add(node);
    const ins = inputs.get(node) || [];
    const d = ins.length ? 1 + Math.max(...ins.map((i) => depthOf(i, seen))) : 0;
    depth.set(node, d);
    return d;
  };
  nodes.forEach((n) => depthOf(n));
  const columns = [];
  for (const n of nodes) (columns[depth.get(n)] ||= []).push(n);
  const W = 150;
  const GAP = 36;
  const H = 44;
  const STEP = 60;
  const pos = new Map();
  columns.forEach((column, ci) => column.sort().forEach((n, ri) => pos.set(n, { x: 10 + ci * (W + GAP), y: 10 + ri * STEP })));
  const width = 20 + columns.length * (W + GAP) - GAP;
  const height = 20 + Math.max(1, ...columns.map((c) => c.length)) * STEP;
  const root = svg('svg', { id: 'graph-svg', width, height, viewBox: `0 0 ${width} ${height}`, role: 'group', 'aria-label': `${datasets.length} datasets and ${graph.jobs.length} jobs` });
  for (const [from, to] of graph.edges) {
    const a = pos.get(from);
    const b = pos.get(to);
    if (!a || !b) continue;
    root.append(svg('path', { class: 'edge', 'data-from': from, 'data-to': to, d: `M${a.x + W},${a.y + H / 2} C${a.x + W + GAP / 2},${a.y + H / 2} ${b.x - GAP / 2},${b.y + H / 2} ${b.x},${b.y + H / 2}` }));
  }
  for (const [n, p] of pos) {
    if (n.startsWith('@')) {
      const job = n.slice(1);
      root.append(svg('g', { class: 'job', 'data-job': job, role: 'img', 'aria-label': `job ${job}` },
        svg('rect', { x: p.x, y: p.y + 8, width: W, height: H - 16, rx: 14 }),
        svg('text', { x: p.x + W / 2, y: p.y + H / 2 + 4, 'text-anchor': 'middle' }, `⚙ ${job}`)));
    } else {
      const c = counts.get(n) || {};
      const version = (datasets.find((d) => d.name === n) || {}).version || '';
      const line = STATES.filter((st) => c[st]).map((st) => `${GLYPH[st]}${c[st]}`).join(' ');
      const worst = SEVERITY.find((st) => c[st]) || 'missing';
      root.append(svg('a', { href: `/ui/datasets/${encodeURIComponent(n)}`, class: 'dataset', 'data-dataset': n, 'data-version': version, 'data-state': worst, 'aria-label': `dataset ${n}${version ? ` version ${version}` : ''}: ${STATES.filter((st) => c[st]).map((st) => `${c[st]} ${st}`).join(', ') || 'no partitions'}` },
        svg('title', null, `${n}${version ? ` ${version}` : ''}\n${STATES.filter((st) => c[st]).map((st) => `${c[st]} ${st}`).join(', ')}`),
        svg('rect', { x: p.x, y: p.y, width: W, height: H, rx: 4 }),
        svg('text', { x: p.x + 8, y: p.y + 17, class: 'name' }, n, version ? svg('tspan', { class: 'version' }, ` v${version}`) : null),
        svg('text', { x: p.x + 8, y: p.y + 35, class: 'counts' }, line)));
    }
  }
  return h('div', { class: 'lineage-wrap' }, root);
}

async function showDatasets(scope) {
  document.title = 'datasets · cairn';
  const { datasets } = await api('/v1/datasets', { signal: scope });
  const counts = new Map();
  const rows = datasets.map((dataset) => {
    const cell = h('td', { 'data-counts': dataset.name }, h('span', { class: 'muted' }, '…'));
    return {
      dataset,
      cell,
      row: h('tr', null,
        h('td', null, h('a', { href: `/ui/datasets/${encodeURIComponent(dataset.name)}` }, dataset.name)),
        h('td', { class: 'mono' }, dataset.pattern || ''),
        h('td', { class: 'version' }, dataset.version || '—'),
        h('td', null, (dataset.dimensions || []).map((d) => `${d.name} (${d.values.length})`).join(' × ') || (dataset.error ? h('span', { class: 'error' }, dataset.error) : '—')),
        h('td', { class: 'num' }, dataset.partitions ?? ''),
        cell),
    };
  });
  const graphSection = h('section', { id: 'graph' }, h('p', { class: 'muted' }, 'Loading the graph…'));
  setView(
    h('h1', null, 'Datasets'),
    datasets.length === 0
      ? h('p', null, 'The graph declares no dataset.')
      : [h('table', { class: 'list', id: 'datasets' },
        h('thead', null, h('tr', null, h('th', null, 'dataset'), h('th', null, 'pattern'), h('th', null, 'version'), h('th', null, 'dimensions'), h('th', { class: 'num' }, 'partitions'), h('th', null, 'states'))),
        h('tbody', null, rows.map((r) => r.row))),
      h('h2', null, 'Datasets and jobs'),
      graphSection],
  );
  const graph = datasetGraph(datasets, scope);
  await Promise.all(rows.map(async ({ dataset, cell }) => {
    if (dataset.error || !dataset.dimensions) {
      cell.replaceChildren();
      return;
    }
    try {
      const grid = await api(`/v1/datasets/${encodeURIComponent(dataset.name)}/grid`, { signal: scope });
      counts.set(dataset.name, countStates(grid));
      cell.replaceChildren(countBadges(counts.get(dataset.name)));
    } catch (error) {
      if (scope.aborted) return;
      if (error instanceof NeedToken) throw error;
      cell.replaceChildren(h('span', { class: 'error' }, error.message));
    }
  }));
  if (datasets.length) {
    fill(graphSection, drawDatasetGraph(datasets, await graph, counts));
    graphSection.dataset.ready = 'true';
  }
}

// ----------------------------------------------------------------- grid

/** The ref of the cell whose value index per dimension is `at`. */
function cellRef(grid, at) {
  const parts = grid.dimensions.map((d, i) => `${d.name}=${d.values[at[i]]}`);
  return parts.length ? `${grid.dataset}/${parts.join('/')}` : grid.dataset;
}

function globToRegExp(glob) {
  const escaped = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(escaped);
}

const SEVERITY = ['failed', 'running', 'stale', 'missing', 'built'];

/**
 * A grid too large to draw cell by cell (more than `maxCells` in the
 * view): the columns' values (and the rows', past 400) are rolled up into
 * blocks, each showing its count of partitions per state as a stacked bar,
 * its worst state as glyph, and the counts in its accessible name. A click
 * or Enter zooms into the block (`?rr=&cr=`).
 */
async function showHeatmap({ name, grid, dims, r, c, r0, c0, rowValues, colValues, flat, maxCells, scope, heading, controls, summary, zoomNote }) {
  const rows = rowValues.length;
  const cols = colValues.length;
  const target = Math.min(maxCells, HEATMAP_BLOCKS);
  const R = Math.max(1, Math.min(rows, 400, target));
  const C = Math.max(1, Math.min(cols, Math.floor(target / R)));
  const rb = Math.ceil(rows / R);
  const cb = Math.ceil(cols / C);
  const blockRows = Math.ceil(rows / rb);
  const blockCols = Math.ceil(cols / cb);
  const label = (values, dimIndex, first, size) => {
    const last = Math.min(values.length - 1, first + size - 1);
    return size === 1 || first === last ? values[first] : `${values[first]} … ${values[last]}`;
  };
  const table = h('table', { class: 'grid heatmap', role: 'grid', id: 'grid', 'data-aggregated': `${rb}x${cb}`, 'aria-label': `partitions of ${name}, ${rb} × ${cb} per block` });
  const head = h('tr', { role: 'row' }, h('th', { role: 'columnheader' }, ''));
  for (let bc = 0; bc < blockCols; bc += 1) head.append(h('th', { role: 'columnheader', scope: 'col' }, label(colValues, c, bc * cb, cb)));
  const body = h('tbody');
  const blocks = [];
  for (let br = 0; br < blockRows; br += 1) {
    const tr = h('tr', { role: 'row' }, h('th', { role: 'rowheader', scope: 'row' }, label(rowValues, r, br * rb, rb)));
    for (let bc = 0; bc < blockCols; bc += 1) {
      const td = h('td', { class: 'cell block', role: 'gridcell', tabindex: br === 0 && bc === 0 ? '0' : '-1', 'data-row': br, 'data-col': bc });
      blocks.push(td);
      tr.append(td);
    }
    body.append(tr);
  }
  table.append(h('thead', null, head), body);
  const paint = () => {
    const decoded = decodeRuns(grid);
    const K = decoded.names.length;
    // One flat counter array, walked with the strides (10⁶ cells in a
    // few tens of milliseconds).
    const counts = new Uint32Array(blocks.length * K);
    const colBlock = new Uint32Array(cols);
    for (let ci = 0; ci < cols; ci += 1) colBlock[ci] = Math.floor(ci / cb);
    const colStride = cols > 1 ? flat(0, 1) - flat(0, 0) : 0;
    const { codes } = decoded;
    for (let ri = 0; ri < rows; ri += 1) {
      const rowBlock = Math.floor(ri / rb) * blockCols;
      let index = flat(ri, 0);
      for (let ci = 0; ci < cols; ci += 1) {
        counts[(rowBlock + colBlock[ci]) * K + codes[index]] += 1;
        index += colStride;
      }
    }
    blocks.forEach((td, i) => {
      const byState = {};
      decoded.names.forEach((state, k) => { if (counts[i * K + k]) byState[state] = counts[i * K + k]; });
      const total = Object.values(byState).reduce((a, b) => a + b, 0);
      const worst = SEVERITY.find((state) => byState[state]) || Object.keys(byState)[0] || 'missing';
      td.dataset.state = worst;
      td.dataset.counts = JSON.stringify(byState);
      const text = Object.entries(byState).map(([state, n]) => `${n} ${state}`).join(', ');
      const br = Number(td.dataset.row);
      const bc = Number(td.dataset.col);
      const where = `${dims[r] ? `${dims[r].name} ${label(rowValues, r, br * rb, rb)}` : ''}${dims[c] ? `, ${dims[c].name} ${label(colValues, c, bc * cb, cb)}` : ''}`;
      td.setAttribute('aria-label', `${where}: ${text}`);
      td.title = `${where}\n${text}`;
      let at = 0;
      const stops = [];
      for (const state of [...SEVERITY].reverse()) {
        if (!byState[state]) continue;
        const from = (at / total) * 100;
        at += byState[state];
        stops.push(`var(--${state}) ${from.toFixed(1)}% ${((at / total) * 100).toFixed(1)}%`);
      }
      td.style.background = stops.length ? `linear-gradient(to top, ${stops.join(', ')})` : '';
    });
    summary.replaceChildren(h('span', null, `${decoded.total} partitions: `), countBadges(countStates(grid)));
  };
  paint();
  const zoom = (td) => {
    const br = Number(td.dataset.row);
    const bc = Number(td.dataset.col);
    const next = new URLSearchParams(location.search);
    if (r >= 0) next.set('rr', `${r0 + br * rb}-${r0 + Math.min(rows - 1, (br + 1) * rb - 1)}`);
    if (c >= 0) next.set('cr', `${c0 + bc * cb}-${c0 + Math.min(cols - 1, (bc + 1) * cb - 1)}`);
    navigate(`${location.pathname}?${next}`);
  };
  table.addEventListener('click', (event) => {
    const td = event.target.closest('td.cell');
    if (td) zoom(td);
  });
  table.addEventListener('keydown', (event) => {
    const td = event.target.closest('td.cell');
    if (!td) return;
    let br = Number(td.dataset.row);
    let bc = Number(td.dataset.col);
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      zoom(td);
      return;
    }
    const moves = { ArrowRight: [0, 1], ArrowLeft: [0, -1], ArrowDown: [1, 0], ArrowUp: [-1, 0] };
    if (!moves[event.key]) return;
    event.preventDefault();
    br = Math.max(0, Math.min(blockRows - 1, br + moves[event.key][0]));
    bc = Math.max(0, Math.min(blockCols - 1, bc + moves[event.key][1]));
    const next = blocks[br * blockCols + bc];
    td.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  });
  setView(heading, controls, zoomNote,
    h('p', { class: 'muted', id: 'aggregated' }, `${rows * cols} cells in this view: each block rolls up ${rb} × ${cb} partitions (a stacked bar of their states; the glyph is the worst). A click or Enter zooms in.`),
    summary, h('div', { class: 'grid-wrap' }, table));
  // Live: asked again after events about the dataset (at most once a second).
  let pending = null;
  follow('/v1/events', {
    signal: scope,
    onEvent: (kind, event) => {
      if (kind !== 'cairn' || pending) return;
      if (!eventPartitions(event).some((ref) => datasetOf(ref) === name) && event.kind !== 'BuildFinished') return;
      pending = setTimeout(async () => {
        pending = null;
        try {
          grid = await api(`/v1/datasets/${encodeURIComponent(name)}/grid`, { signal: scope });
          paint();
        } catch (error) {
          if (!scope.aborted) setLive(error.message);
        }
      }, GRID_REFRESH_MS);
    },
  }).catch((error) => {
    if (!scope.aborted) setLive(`not live: ${error.message}`);
  });
}

/**
 * Acting on a selection: the cells the filters show (all of the view
 * without a filter). Build or invalidate them with one action, which
 * asks for confirmation (and, to invalidate, the reason).
 */
/** Who submits from this page (`submitted_by`, shown with operations). */
const SUBMITTED_BY = 'the web page';

function selectionBar(selected, filtered) {
  const bar = h('div', { class: 'selection', id: 'selection' });
  const idle = (note) => {
    const n = selected().length;
    fill(bar, note instanceof Node ? [note, h('br')] : null, h('span', null, `Selection: the ${n} partition${n === 1 ? '' : 's'} ${filtered ? 'the filters show' : 'in this view'} `),
      h('button', { type: 'button', 'data-action': 'build', disabled: n === 0, onclick: () => ask('build') }, `Build ${n}…`), ' ',
      h('button', { type: 'button', class: 'danger', 'data-action': 'invalidate', disabled: n === 0, onclick: () => ask('invalidate') }, `Invalidate ${n}…`));
  };
  const ask = (what) => {
    const refs = selected();
    const reason = h('input', { name: 'reason', id: 'selection-reason', size: 40, required: what === 'invalidate', placeholder: what === 'invalidate' ? 'why (recorded in the log)' : 'why (shown with the operation)' });
    const form = h('form', { class: 'inline confirm', onsubmit: async (event) => {
      event.preventDefault();
      fill(bar, h('span', { class: 'muted' }, what === 'build' ? 'submitting…' : 'invalidating…'));
      try {
        if (what === 'build') {
          const body = { refs, keep_going: true, submitted_by: SUBMITTED_BY };
          if (reason.value.trim()) body.reason = reason.value.trim();
          const op = await api('/v1/builds', { method: 'POST', json: body });
          idle(h('span', { role: 'status', 'data-done': 'build' }, 'Submitted ', h('a', { href: `/ui/operations/${encodeURIComponent(op.id)}`, class: 'mono' }, op.id), ` to build ${refs.length} partitions.`));
        } else {
          const done = await api('/v1/invalidate', { method: 'POST', json: { refs, reason: reason.value.trim(), submitted_by: SUBMITTED_BY } });
          idle(h('span', { role: 'status', 'data-done': 'invalidate' }, `Invalidated ${done.partitions.length} partitions (build ${done.build ?? '—'}).`));
        }
      } catch (error) {
        if (error instanceof NeedToken) throw error;
        idle(h('span', { class: 'error', role: 'alert' }, error.message));
      }
    } },
    h('span', null, what === 'build' ? `Build these ${refs.length} partitions (keep going past failures)?` : `Invalidate these ${refs.length} partitions? They will read stale and rebuild on the next build.`),
    h('label', null, 'reason', reason),
    h('button', { type: 'submit', class: what === 'invalidate' ? 'danger' : '', 'data-action': `confirm-${what}` }, what === 'build' ? 'Yes, build them' : 'Yes, invalidate them'),
    h('button', { type: 'button', onclick: () => idle() }, 'No'));
    fill(bar, form);
    reason.focus();
  };
  idle();
  return bar;
}

async function showGrid(name, query, scope) {
  document.title = `${name} · cairn`;
  let grid = await api(`/v1/datasets/${encodeURIComponent(name)}/grid`, { signal: scope });
  const dims = grid.dimensions;
  const dimNames = dims.map((d) => d.name);
  const pick = (key, fallback) => (dimNames.includes(query.get(key)) ? query.get(key) : fallback);
  const rowDim = pick('rows', dimNames[0] ?? null);
  const colDim = pick('cols', dimNames.find((n) => n !== rowDim) ?? null);
  const shown = new Set((query.get('state') || '').split(',').filter(Boolean));
  const pattern = query.get('q') || '';
  const patternRe = pattern ? globToRegExp(pattern) : null;
  // The value chosen for each dimension that is neither rows nor columns.
  const fixed = dimNames.map((n, i) => {
    if (n === rowDim || n === colDim) return null;
    const wanted = query.get(`at.${n}`);
    const at = dims[i].values.indexOf(wanted);
    return at >= 0 ? at : 0;
  });
  const strides = [];
  let stride = 1;
  for (let i = dims.length - 1; i >= 0; i -= 1) {
    strides[i] = stride;
    stride *= dims[i].values.length;
  }
  const r = dimNames.indexOf(rowDim);
  const c = dimNames.indexOf(colDim);
  // A zoomed view shows a range of the rows' and columns' values
  // (`?rr=FIRST-LAST&cr=FIRST-LAST`, value indices): a heatmap block's
  // click zooms there.
  const range = (key, values) => {
    const m = /^(\d+)-(\d+)$/.exec(query.get(key) || '');
    if (!m) return [0, values.length - 1];
    const first = Math.min(Number(m[1]), values.length - 1);
    return [first, Math.max(first, Math.min(Number(m[2]), values.length - 1))];
  };
  const [r0, r1] = r >= 0 ? range('rr', dims[r].values) : [0, 0];
  const [c0, c1] = c >= 0 ? range('cr', dims[c].values) : [0, 0];
  const rowValues = r >= 0 ? dims[r].values.slice(r0, r1 + 1) : [''];
  const colValues = c >= 0 ? dims[c].values.slice(c0, c1 + 1) : [''];
  const base = fixed.reduce((sum, at, i) => sum + (at === null ? 0 : at * strides[i]), 0);
  const flat = (ri, ci) => base + (r >= 0 ? (ri + r0) * strides[r] : 0) + (c >= 0 ? (ci + c0) * strides[c] : 0);
  const maxCells = Number(query.get('max')) > 0 ? Number(query.get('max')) : MAX_CELLS;

  const setQuery = (changes) => {
    const next = new URLSearchParams(location.search);
    for (const [key, value] of Object.entries(changes)) {
      if (value === null || value === '') next.delete(key);
      else next.set(key, value);
    }
    const search = next.toString();
    navigate(`${location.pathname}${search ? `?${search}` : ''}`);
  };

  // Controls: pivot, the other dimensions' values, filters.
  const dimSelect = (label, key, value, allowNone) => h('label', null, label,
    h('select', { name: key, onchange: (event) => {
      const chosen = event.target.value;
      const other = key === 'rows' ? 'cols' : 'rows';
      const swap = chosen === (key === 'rows' ? colDim : rowDim) ? { [other]: key === 'rows' ? rowDim : colDim } : {};
      setQuery({ [key]: chosen, ...swap });
    } },
    allowNone ? h('option', { value: '' }, '(none)') : null,
    dimNames.map((n) => h('option', { value: n, selected: n === value }, n))));
  const controls = h('form', { class: 'inline', onsubmit: (event) => event.preventDefault() },
    dims.length > 0 ? dimSelect('rows', 'rows', rowDim, false) : null,
    dims.length > 1 ? dimSelect('columns', 'cols', colDim, false) : null,
    dims.map((d, i) => (fixed[i] === null ? null : h('label', null, d.name,
      h('select', { name: `at.${d.name}`, onchange: (event) => setQuery({ [`at.${d.name}`]: event.target.value }) },
        d.values.map((v, vi) => h('option', { value: v, selected: vi === fixed[i] }, v)))))),
    h('fieldset', { class: 'states' }, h('legend', null, 'show states'),
      STATES.map((s) => h('label', null, h('input', { type: 'checkbox', name: 'state', value: s, checked: shown.size === 0 || shown.has(s), onchange: (event) => {
        const boxes = [...event.target.form.querySelectorAll('input[name=state]')];
        const on = boxes.filter((b) => b.checked).map((b) => b.value);
        setQuery({ state: on.length === boxes.length ? null : on.join(',') || 'none' });
      } }), stateBadge(s)))),
    h('label', null, 'pattern (* and ?)', h('input', { type: 'search', name: 'q', value: pattern, placeholder: `${name}/…`, onchange: (event) => setQuery({ q: event.target.value }) })));

  const hover = h('div', { class: 'hover', id: 'hover', role: 'status', 'aria-live': 'polite' }, h('span', { class: 'muted' }, 'Point at or focus a cell for its ref, state and reason; Enter or a click opens it.'));
  const summary = h('p', { id: 'summary' });
  const zoomed = query.has('rr') || query.has('cr');
  const heading = h('h1', null, `Dataset ${name}`);
  const zoomNote = zoomed ? h('p', null, `${rowDim} ${rowValues[0]} … ${rowValues[rowValues.length - 1]}`,
    c >= 0 ? `, ${colDim} ${colValues[0]} … ${colValues[colValues.length - 1]}` : '', ' · ',
    h('a', { href: (() => { const q = new URLSearchParams(location.search); q.delete('rr'); q.delete('cr'); return `${location.pathname}${q.toString() ? `?${q}` : ''}`; })() }, 'the whole grid')) : null;
  if (rowValues.length * colValues.length > maxCells) {
    await showHeatmap({ name, grid, dims, r, c, r0, c0, rowValues, colValues, flat, maxCells, scope, heading, controls, summary, zoomNote });
    return;
  }

  let decoded = decodeRuns(grid);
  const byFlat = new Map();
  const table = h('table', { class: 'grid', role: 'grid', id: 'grid', 'aria-label': `partitions of ${name}: ${rowDim ?? ''} by ${colDim ?? ''}`, 'aria-rowcount': rowValues.length + 1, 'aria-colcount': colValues.length + 1 });
  const head = h('tr', { role: 'row' }, h('th', { role: 'columnheader', scope: 'col' }, rowDim && colDim ? `${rowDim} \\ ${colDim}` : ''));
  for (const v of colValues) head.append(h('th', { role: 'columnheader', scope: 'col' }, v));
  const body = document.createElement('tbody');
  const at = dims.map((_, i) => fixed[i]);
  let first = true;
  for (let ri = 0; ri < rowValues.length; ri += 1) {
    const tr = document.createElement('tr');
    tr.setAttribute('role', 'row');
    tr.append(h('th', { role: 'rowheader', scope: 'row' }, rowValues[ri]));
    for (let ci = 0; ci < colValues.length; ci += 1) {
      if (r >= 0) at[r] = ri + r0;
      if (c >= 0) at[c] = ci + c0;
      const index = flat(ri, ci);
      const ref = cellRef(grid, at);
      const td = document.createElement('td');
      td.className = 'cell';
      td.setAttribute('role', 'gridcell');
      td.dataset.ref = ref;
      td.dataset.row = ri;
      td.dataset.col = ci;
      td.tabIndex = first ? 0 : -1;
      first = false;
      byFlat.set(index, td);
      tr.append(td);
    }
    body.append(tr);
  }
  table.append(h('thead', null, head), body);

  const paint = (td, state) => {
    td.dataset.state = state;
    const visible = (shown.size === 0 || shown.has(state)) && (!patternRe || patternRe.test(td.dataset.ref));
    td.classList.toggle('dim', !visible);
    td.setAttribute('aria-label', `${td.dataset.ref}: ${state}${visible ? '' : ' (filtered out)'}`);
    td.title = `${td.dataset.ref}\n${state}`;
  };
  const paintAll = () => {
    for (const [index, td] of byFlat) paint(td, decoded.names[decoded.codes[index]]);
    const counts = countStates(grid);
    summary.replaceChildren(h('span', null, `${decoded.total} partitions: `), countBadges(counts));
  };
  paintAll();

  // Hover and focus: the reason, asked of /v1/status for that one ref.
  let reasonFor = null;
  const explain = async (td) => {
    const ref = td.dataset.ref;
    reasonFor = ref;
    hover.replaceChildren(h('span', { class: 'mono' }, ref), ' ', stateBadge(td.dataset.state));
    await sleep(120);
    if (reasonFor !== ref || scope.aborted) return;
    try {
      const { partitions } = await api(`/v1/status?ref=${encodeURIComponent(ref)}`, { signal: scope });
      if (reasonFor !== ref) return;
      const line = partitions[0];
      if (line) hover.replaceChildren(h('span', { class: 'mono' }, ref), ' ', stateBadge(line.state), ' ', h('span', { class: 'reason' }, line.reason || ''));
    } catch (error) {
      if (!scope.aborted && reasonFor === ref) hover.append(' ', h('span', { class: 'error' }, error.message));
    }
  };
  const open = (td) => navigate(`/ui/partitions/${encodeURIComponent(td.dataset.ref)}`);
  table.addEventListener('mouseover', (event) => {
    const td = event.target.closest('td.cell');
    if (td && td.dataset.ref !== reasonFor) explain(td);
  });
  table.addEventListener('focusin', (event) => {
    const td = event.target.closest('td.cell');
    if (td) explain(td);
  });
  table.addEventListener('click', (event) => {
    const td = event.target.closest('td.cell');
    if (td) open(td);
  });
  table.addEventListener('keydown', (event) => {
    const td = event.target.closest('td.cell');
    if (!td) return;
    let ri = Number(td.dataset.row);
    let ci = Number(td.dataset.col);
    switch (event.key) {
      case 'ArrowRight': ci += 1; break;
      case 'ArrowLeft': ci -= 1; break;
      case 'ArrowDown': ri += 1; break;
      case 'ArrowUp': ri -= 1; break;
      case 'Home': ci = 0; break;
      case 'End': ci = colValues.length - 1; break;
      case 'PageDown': ri += 10; break;
      case 'PageUp': ri -= 10; break;
      case 'Enter':
      case ' ':
        event.preventDefault();
        open(td);
        return;
      default: return;
    }
    event.preventDefault();
    ri = Math.max(0, Math.min(rowValues.length - 1, ri));
    ci = Math.max(0, Math.min(colValues.length - 1, ci));
    const next = byFlat.get(flat(ri, ci));
    if (next) {
      td.tabIndex = -1;
      next.tabIndex = 0;
      next.focus();
    }
  });

  const legend = h('div', { class: 'legend', 'aria-hidden': 'true' }, STATES.map((s) => stateBadge(s)));
  setView(
    heading,
    controls,
    zoomNote,
    summary,
    legend,
    selectionBar(() => [...byFlat.values()].filter((td) => !td.classList.contains('dim')).map((td) => td.dataset.ref), shown.size > 0 || Boolean(patternRe)),
    hover,
    h('div', { class: 'grid-wrap' }, table),
  );

  // Live: the log's events move cells at once (running, built, failed);
  // the grid is then asked again, which is the truth (`cairn status`).
  const valueIndex = dims.map((d) => new Map(d.values.map((v, i) => [v, i])));
  const flatOf = (ref) => {
    const parts = ref.split('/');
    if (parts.shift() !== name || parts.length !== dims.length) return null;
    let index = 0;
    for (let i = 0; i < dims.length; i += 1) {
      const eq = parts[i].indexOf('=');
      if (eq < 0 || parts[i].slice(0, eq) !== dims[i].name) return null;
      const vi = valueIndex[i].get(parts[i].slice(eq + 1));
      if (vi === undefined) return null;
      index += vi * strides[i];
    }
    return index;
  };
  // Each refetch costs the server a status of every partition of the
  // dataset: at most one per GRID_REFRESH_MS, however many events.
  let refresh = null;
  let lastFetch = 0;
  const refetch = () => {
    if (refresh) return;
    refresh = setTimeout(async () => {
      refresh = null;
      lastFetch = Date.now();
      try {
        grid = await api(`/v1/datasets/${encodeURIComponent(name)}/grid`, { signal: scope });
        decoded = decodeRuns(grid);
        paintAll();
        table.dataset.version = String(Number(table.dataset.version || 0) + 1);
      } catch (error) {
        if (!scope.aborted) hover.replaceChildren(h('span', { class: 'error' }, error.message));
      }
    }, Math.max(250, lastFetch + GRID_REFRESH_MS - Date.now()));
  };
  const optimistic = { ActionStarted: 'running', ActionRetrying: 'running', ActionFailed: 'failed', PartitionMaterialized: 'built' };
  follow('/v1/events', {
    signal: scope,
    onEvent: (kind, event) => {
      if (kind !== 'cairn' || typeof event !== 'object') return;
      let touched = false;
      for (const ref of eventPartitions(event)) {
        if (datasetOf(ref) !== name) continue;
        touched = true;
        const index = flatOf(ref);
        const td = index === null ? null : byFlat.get(index);
        if (td && optimistic[event.kind]) paint(td, optimistic[event.kind]);
      }
      if (touched || event.kind === 'BuildFinished' || event.kind === 'PartitionInvalidated') refetch();
    },
  }).catch((error) => {
    if (!scope.aborted) setLive(`not live: ${error.message}`);
  });
}

// ------------------------------------------------------------ partition

async function downloadLog(ref, stream) {
  const text = await api(`/v1/partitions/${encodeURIComponent(ref)}/logs?stream=${stream}`, { text: true });
  const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
  const link = h('a', { href: url, download: `${ref.replaceAll('/', '_')}.${stream}.txt` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

const LOG_TAIL_BYTES = 256 * 1024;

/**
 * The tail of a partition's log: the text stream is read to its end but
 * only its last LOG_TAIL_BYTES are kept (a 50 MB log costs no 50 MB
 * string); `total` is the whole log's size in bytes.
 */
async function fetchTail(ref, stream, signal) {
  const response = await fetch(`/v1/partitions/${encodeURIComponent(ref)}/logs?stream=${stream}`, { headers: authHeaders(), signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const chunks = [];
  let kept = 0;
  let total = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    total += value.length;
    chunks.push(value);
    kept += value.length;
    while (chunks.length > 1 && kept - chunks[0].length >= LOG_TAIL_BYTES) kept -= chunks.shift().length;
  }
  const bytes = new Uint8Array(kept);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  let text = new TextDecoder().decode(bytes);
  const cut = kept < total;
  // A kept tail starts mid-line (maybe mid-character): from the next line.
  if (cut) text = text.slice(text.indexOf('\n') + 1);
  return { text, total, cut };
}

function logBlock(ref, stream, log) {
  const id = `log-${stream}`;
  if (!log || log.total === 0) {
    return h('section', { id, 'data-stream': stream }, h('h3', null, stream), h('p', { class: 'muted' }, `no ${stream} captured`));
  }
  const tail = tailLines(log.text, LOG_TAIL_LINES);
  return h('section', { id, 'data-stream': stream, 'data-bytes': log.total },
    h('h3', null, stream),
    tail.cut || log.cut ? h('p', { class: 'muted' }, `the last ${LOG_TAIL_LINES} lines of ${log.total} bytes`) : null,
    h('pre', { class: 'log', tabindex: '0', 'aria-label': `${stream} of ${ref}` }, tail.text),
    h('button', { type: 'button', onclick: () => downloadLog(ref, stream).catch(showError) }, `Download the whole ${stream} (${log.total} bytes)`));
}

function historyWhat(e) {
  if (e.type === 'materialization') {
    const how = e.outcome === 'executed' ? 'ran' : `reused (${e.outcome})`;
    return [stateBadge('built'), ` ${how}${e.restored ? ', restored' : ''}${e.current ? ' · current' : ''}`];
  }
  if (e.type === 'failure') return [stateBadge('failed'), ` failed${e.exit_code !== null && e.exit_code !== undefined ? ` (exit ${e.exit_code})` : ''}`];
  if (e.type === 'invalidation') return [stateBadge('stale'), ` invalidated${e.by ? ` by ${e.by}` : ''}`];
  if (e.type === 'joined') return [stateBadge('built'), ` joined build ${e.joined_build}'s run (not built twice)`];
  return [e.type || ''];
}

function historyTable(entries) {
  if (!entries.length) return h('p', { class: 'muted', id: 'history' }, 'Never built.');
  return h('table', { class: 'list', id: 'history' },
    h('thead', null, h('tr', null, ['time', 'build', 'what', 'job', 'key', 'code', 'versions', 'inputs', 'why / error'].map((t) => h('th', null, t)))),
    h('tbody', null, entries.map((e) => h('tr', { 'data-type': e.type, 'data-build': e.build },
      h('td', { class: 'time' }, time(e.time_ms)),
      h('td', { class: 'num' }, e.build),
      h('td', null, historyWhat(e), e.duration_ms !== undefined && e.duration_ms !== null ? h('span', { class: 'muted' }, ` in ${duration(e.duration_ms / 1000)}`) : null),
      h('td', null, e.job || ''),
      h('td', { class: 'mono', title: e.key || '' }, (e.key || '').slice(0, 12)),
      h('td', { class: 'mono', title: e.code_digest || '' }, (e.code_digest || '').slice(0, 12)),
      h('td', null, e.versions ? Object.entries(e.versions).map(([k, v]) => `${k} ${v}`).join(', ') : ''),
      h('td', null, (e.inputs || []).map((i) => h('div', null, partitionLink(i.ref || i.partition), ' ', h('span', { class: 'mono muted', title: i.digest }, (i.digest || '').slice(0, 10)), i.changed ? ' (changed)' : ''))),
      h('td', null, [e.error, e.reason, e.build_reason].filter(Boolean).join(' — ')),
    ))));
}

function facts(object, skip) {
  return h('dl', { class: 'facts' }, Object.entries(object)
    .filter(([key, value]) => !skip.includes(key) && value !== null && value !== undefined && !(Array.isArray(value) && value.length === 0))
    .map(([key, value]) => [h('dt', null, key.replaceAll('_', ' ')), h('dd', null, typeof value === 'object' ? h('code', null, JSON.stringify(value)) : String(value))]));
}

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) if (value !== null && value !== undefined) el.setAttribute(name, String(value));
  for (const child of children.flat(Infinity)) if (child !== null && child !== undefined) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

/**
 * The lineage of `ref`: every partition it is built from, from the plan
 * that builds it (`/v1/plan?ref=`), and the partitions built directly
 * from it, found by planning each other dataset restricted to the
 * dimension values it shares with `ref`. Returns nodes (ref → depth) and
 * edges (input → output).
 */
async function lineage(ref, datasets, scope) {
  const nodes = new Map([[ref, 0]]);
  const edges = [];
  const plan = await api(`/v1/plan?ref=${encodeURIComponent(ref)}`, { signal: scope });
  const producedBy = new Map();
  for (const action of plan.actions) for (const out of action.outputs) producedBy.set(out, action);
  // Upstream: walk back from ref through the actions' inputs.
  const upstream = new Set();
  const walk = [ref];
  while (walk.length) {
    const at = walk.pop();
    const action = producedBy.get(at);
    if (!action) continue;
    for (const input of action.inputs) {
      edges.push([input.ref, at]);
      if (!upstream.has(input.ref)) {
        upstream.add(input.ref);
        walk.push(input.ref);
      }
    }
  }
  // Depths: sources 0, each output one more than its deepest input.
  const depth = new Map();
  const depthOf = (node, seen = new Set()) => {
    if (depth.has(node)) return depth.get(node);
    if (seen.has(node)) return 0;
    seen.add(node);
    const action = producedBy.get(node);
    const d = action && action.inputs.length ? 1 + Math.max(...action.inputs.map((i) => depthOf(i.ref, seen))) : 0;
    depth.set(node, d);
    return d;
  };
  for (const node of [ref, ...upstream]) nodes.set(node, depthOf(node));
  // Downstream, one step: the other datasets' partitions that share
  // ref's dimension values and list ref among their inputs.
  const values = new Map(ref.split('/').slice(1).map((part) => part.split('=')));
  const own = datasetOf(ref);
  const downstream = [];
  await Promise.all(datasets.filter((d) => d.name !== own && d.pattern).map(async (d) => {
    const pattern = d.pattern.replace(/([^/=]+)=\{([^}]+)\}/g, (whole, key) => (values.has(key) ? `${key}=${values.get(key)}` : whole));
    try {
      const down = await api(`/v1/plan?ref=${encodeURIComponent(pattern)}`, { signal: scope });
      for (const action of down.actions) {
        if (!action.inputs.some((i) => i.ref === ref)) continue;
        for (const out of action.outputs) {
          downstream.push(out);
          edges.push([ref, out]);
        }
      }
    } catch (error) {
      if (error instanceof NeedToken) throw error;
      // A dataset that cannot be planned here is left out.
    }
  }));
  for (const node of downstream) nodes.set(node, (nodes.get(ref) || 0) + 1);
  return { nodes, edges, upstream: [...upstream], downstream, plan };
}

const LINEAGE_NODES = 300;

/** Draws the lineage: datasets as lanes (upstream left), nodes linked. */
function drawLineage(ref, graph, states) {
  const lanes = new Map();
  for (const [node, d] of graph.nodes) {
    const dataset = datasetOf(node);
    const lane = lanes.get(dataset) || { dataset, depth: Infinity, nodes: [] };
    lane.depth = Math.min(lane.depth, d);
    lane.nodes.push(node);
    lanes.set(dataset, lane);
  }
  const ordered = [...lanes.values()].sort((a, b) => a.depth - b.depth || a.dataset.localeCompare(b.dataset));
  const W = 250;
  const GAP = 60;
  const H = 26;
  const STEP = 32;
  const pos = new Map();
  let shown = 0;
  ordered.forEach((lane, li) => {
    lane.nodes.sort();
    lane.nodes.forEach((node, ni) => {
      if (shown >= LINEAGE_NODES && node !== ref) return;
      shown += 1;
      pos.set(node, { x: 10 + li * (W + GAP), y: 34 + ni * STEP });
    });
  });
  const width = 20 + ordered.length * (W + GAP) - GAP;
  const height = 44 + Math.max(...ordered.map((l) => l.nodes.length)) * STEP;
  const root = svg('svg', { id: 'lineage-graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'group', 'aria-label': `lineage of ${ref}: ${graph.upstream.length} upstream, ${graph.downstream.length} downstream` });
  ordered.forEach((lane, li) => root.append(svg('text', { x: 10 + li * (W + GAP), y: 18, class: 'lane-title' }, lane.dataset)));
  for (const [from, to] of graph.edges) {
    const a = pos.get(from);
    const b = pos.get(to);
    if (!a || !b) continue;
    const x1 = a.x + W;
    const y1 = a.y + H / 2;
    const x2 = b.x;
    const y2 = b.y + H / 2;
    root.append(svg('path', { class: 'edge', 'data-from': from, 'data-to': to, d: `M${x1},${y1} C${x1 + GAP / 2},${y1} ${x2 - GAP / 2},${y2} ${x2},${y2}` }));
  }
  for (const [node, p] of pos) {
    const state = states.get(node) || 'missing';
    const label = node.slice(datasetOf(node).length + 1) || node;
    root.append(svg('a', { href: `/ui/partitions/${encodeURIComponent(node)}`, class: `node${node === ref ? ' current' : ''}`, 'data-ref': node, 'data-state': state, 'aria-label': `${node}: ${state}` },
      svg('title', null, `${node}\n${state}`),
      svg('rect', { x: p.x, y: p.y, width: W, height: H, rx: 4 }),
      svg('text', { x: p.x + 8, y: p.y + 17 }, `${GLYPH[state] || '?'} ${label.length > 34 ? `${label.slice(0, 33)}…` : label}`)));
  }
  return h('div', { class: 'lineage-wrap' },
    shown < graph.nodes.size ? h('p', { class: 'muted' }, `the first ${shown} of ${graph.nodes.size} partitions`) : null,
    root);
}

async function showLineage(ref, section, scope) {
  try {
    const { datasets } = await api('/v1/datasets', { signal: scope });
    const graph = await lineage(ref, datasets, scope);
    const refs = [...graph.nodes.keys()].slice(0, LINEAGE_NODES + 1);
    const states = new Map();
    for (let i = 0; i < refs.length; i += 100) {
      const query = refs.slice(i, i + 100).map((r) => `ref=${encodeURIComponent(r)}`).join('&');
      const { partitions } = await api(`/v1/status?${query}`, { signal: scope });
      for (const line of partitions) states.set(line.ref, line.state);
    }
    fill(section, h('p', { class: 'muted' }, `${graph.upstream.length} partitions upstream (what building it needs, from its plan), ${graph.downstream.length} built directly from it; a node opens its partition.`),
      drawLineage(ref, graph, states));
    section.dataset.ready = 'true';
  } catch (error) {
    if (scope.aborted) return;
    if (error instanceof NeedToken) throw error;
    fill(section, h('p', { class: 'error' }, error.message));
    section.dataset.ready = 'true';
  }
}

async function showPartition(ref, scope) {
  document.title = `${ref} · cairn`;
  const enc = encodeURIComponent(ref);
  const [status, why, hist] = await Promise.all([
    api(`/v1/status?ref=${enc}`, { signal: scope }),
    api(`/v1/partitions/${enc}/why`, { signal: scope }),
    api(`/v1/partitions/${enc}/history`, { signal: scope }),
  ]);
  // Logs exist once a job wrote output for it (a partition never built,
  // or a source, has none, and /logs would answer 404).
  const ran = (hist.entries || []).some((e) => e.stdout || e.stderr);
  const logs = ran ? await Promise.all([fetchTail(ref, 'stdout', scope), fetchTail(ref, 'stderr', scope)]) : null;
  const line = status.partitions[0] || { state: why.state, reason: why.reason };
  const lineageSection = h('section', { id: 'lineage' }, h('p', { class: 'muted' }, 'Loading the lineage…'));
  const dataset = datasetOf(ref);
  setView(
    h('p', null, h('a', { href: `/ui/datasets/${encodeURIComponent(dataset)}` }, `← dataset ${dataset}`)),
    h('h1', null, h('span', { class: 'mono' }, ref)),
    h('p', { id: 'state' }, stateBadge(line.state), ' ', h('span', { class: 'reason' }, line.reason || '')),
    h('h2', null, 'Why'),
    h('section', { id: 'why' }, h('p', null, why.reason || ''), facts(why, ['ref', 'partition', 'reason'])),
    h('h2', null, 'Lineage'),
    lineageSection,
    h('h2', null, 'History'),
    historyTable(hist.entries || []),
    h('h2', null, 'Logs of the last run'),
    logs ? [logBlock(ref, 'stdout', logs[0]), logBlock(ref, 'stderr', logs[1])] : h('p', { class: 'muted' }, 'No logs.'),
  );
  showLineage(ref, lineageSection, scope).catch(showError);
}

// ----------------------------------------------------------- operations

function opDuration(op) {
  if (!op.started_at) return '';
  const end = op.finished_at ? Date.parse(op.finished_at) : Date.now();
  return duration((end - Date.parse(op.started_at)) / 1000);
}

function opCounts(op) {
  const c = op.counts || {};
  return ['executed', 'cached', 'joined', 'failed', 'skipped'].filter((k) => c[k]).map((k) => `${c[k]} ${k}`).join(', ') || '—';
}

function opWhat(op) {
  const request = op.request || {};
  if (Array.isArray(request.refs)) return request.refs.join(' ');
  if (request.config_path) return request.config_path;
  if (request.config_name) return request.config_name;
  return '';
}

function cancelButton(op, onDone) {
  if (op.done) return null;
  const wrap = h('span', { class: 'cancel' });
  const ask = h('button', { type: 'button', class: 'danger', 'data-action': 'cancel', onclick: () => {
    wrap.replaceChildren(h('span', null, `Cancel ${op.id}? `),
      h('button', { type: 'button', class: 'danger', 'data-action': 'confirm-cancel', onclick: async () => {
        wrap.replaceChildren(h('span', { class: 'muted' }, 'cancelling…'));
        try {
          const after = await api(`/v1/operations/${encodeURIComponent(op.id)}/cancel`, { method: 'POST' });
          onDone(after);
        } catch (error) {
          wrap.replaceChildren(h('span', { class: 'error' }, error.message));
        }
      } }, 'Yes, cancel it'), ' ',
      h('button', { type: 'button', onclick: () => wrap.replaceChildren(ask) }, 'No'));
  } }, 'Cancel');
  wrap.append(ask);
  return wrap;
}

async function showOperations(query, scope) {
  document.title = 'operations · cairn';
  const state = query.get('state') || '';
  const kind = query.get('kind') || '';
  const params = new URLSearchParams();
  if (state) params.set('state', state);
  if (kind) params.set('kind', kind);
  params.set('page_size', '100');
  const load = () => api(`/v1/operations?${params}`, { signal: scope });
  const body = h('tbody');
  const filter = h('form', { class: 'inline', onsubmit: (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const next = new URLSearchParams();
    for (const key of ['state', 'kind']) if (form.get(key)) next.set(key, form.get(key));
    navigate(`/ui/operations${next.toString() ? `?${next}` : ''}`);
  } },
  h('label', null, 'state', h('select', { name: 'state' }, ['', 'queued', 'running', 'succeeded', 'failed', 'cancelled'].map((s) => h('option', { value: s, selected: s === state }, s || 'any')))),
  h('label', null, 'kind', h('select', { name: 'kind' }, ['', 'build', 'backfill'].map((s) => h('option', { value: s, selected: s === kind }, s || 'any')))),
  h('button', { type: 'submit' }, 'Filter'));
  const table = h('table', { class: 'list', id: 'operations' },
    h('thead', null, h('tr', null, ['operation', 'kind', 'state', 'what', 'submitted', 'by', 'reason', 'duration', 'counts', ''].map((t) => h('th', null, t)))),
    body);
  const empty = h('p', { class: 'muted', id: 'no-operations' }, 'No operation yet: `cairn --remote URL build REF`, or POST /v1/builds.');
  // A row's Cancel control survives the redraws (a half-confirmed
  // cancel is not lost when an event redraws the list).
  const cancels = new Map();
  const cancelFor = (op) => {
    if (op.done) {
      cancels.delete(op.id);
      return null;
    }
    if (!cancels.has(op.id)) cancels.set(op.id, cancelButton(op, () => reload()));
    return cancels.get(op.id);
  };
  const draw = (operations) => {
    empty.hidden = operations.length > 0;
    table.hidden = operations.length === 0;
    body.replaceChildren(...operations.map((op) => h('tr', { 'data-id': op.id, 'data-state': op.state },
      h('td', null, h('a', { href: `/ui/operations/${encodeURIComponent(op.id)}`, class: 'mono' }, op.id)),
      h('td', null, op.kind),
      h('td', null, stateBadge(op.state)),
      h('td', { class: 'mono' }, opWhat(op)),
      h('td', { class: 'time' }, time(op.submitted_at)),
      h('td', { class: 'by' }, op.submitted_by || '—'),
      h('td', { class: 'reason' }, op.reason || '—'),
      h('td', { class: 'num' }, opDuration(op)),
      h('td', null, opCounts(op), op.expected ? h('span', { class: 'muted' }, ` of ${op.expected.actions} actions`) : ''),
      h('td', null, cancelFor(op)))));
  };
  let pending = null;
  const reload = () => {
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      try {
        draw((await load()).operations);
      } catch (error) {
        if (!scope.aborted) setLive(error.message);
      }
    }, 300);
  };
  const first = await load();
  setView(h('h1', null, 'Operations'), filter, empty, table);
  draw(first.operations);
  follow('/v1/events', {
    signal: scope,
    onEvent: (kind, event) => {
      if (kind !== 'cairn') return;
      if (['BuildRequested', 'Planned', 'BuildFinished', 'ActionSucceeded', 'ActionFailed', 'ActionCached', 'ActionStarted'].includes(event.kind)) reload();
    },
  }).catch((error) => {
    if (!scope.aborted) setLive(`not live: ${error.message}`);
  });
}

function renderOperation(op, container, actions) {
  const e = op.expected || {};
  fill(container,
    h('h1', null, `Operation `, h('span', { class: 'mono' }, op.id)),
    h('p', { id: 'op-state', 'data-state': op.state }, stateBadge(op.state), ' ', op.kind, op.done ? ' · done' : ''),
    op.done ? null : actions,
    h('dl', { class: 'facts' },
      h('dt', null, 'what'), h('dd', { class: 'mono' }, opWhat(op)),
      h('dt', null, 'build'), h('dd', null, op.build ?? '—'),
      h('dt', null, 'submitted'), h('dd', null, time(op.submitted_at)),
      h('dt', null, 'by'), h('dd', { id: 'op-by' }, op.submitted_by || '—'),
      h('dt', null, 'reason'), h('dd', { id: 'op-reason' }, op.reason || '—'),
      h('dt', null, 'started'), h('dd', null, time(op.started_at) || '—'),
      h('dt', null, 'finished'), h('dd', null, time(op.finished_at) || '—'),
      h('dt', null, 'duration'), h('dd', null, opDuration(op)),
      h('dt', null, 'expected'), h('dd', null, `${e.partitions ?? '?'} partitions, ${e.actions ?? '?'} actions, ${e.current ?? '?'} current, ${e.to_run ?? '?'} to run`),
      h('dt', null, 'counts'), h('dd', { id: 'op-counts' }, opCounts(op)),
      op.eta_seconds !== null && op.eta_seconds !== undefined && !op.done ? [h('dt', null, 'eta'), h('dd', null, duration(op.eta_seconds))] : null),
    op.running && op.running.length ? [h('h2', null, 'Running now'), h('table', { class: 'list', id: 'op-running' },
      h('thead', null, h('tr', null, h('th', null, 'job'), h('th', null, 'outputs'), h('th', null, 'since'))),
      h('tbody', null, op.running.map((a) => h('tr', null, h('td', null, a.job), h('td', null, (a.outputs || []).map((o) => h('div', null, partitionLink(o)))), h('td', null, time(a.since))))))] : null,
    op.error ? [h('h2', null, 'Error'), h('p', { class: 'error', role: 'alert' }, op.error.message || ''),
      (op.error.failed || []).map((f) => h('section', { class: 'failed' }, h('h3', null, partitionLink(f.partition), ` (${f.job})`), f.log_tail ? h('pre', { class: 'log' }, f.log_tail) : null))] : null,
    op.result ? h('details', { id: 'op-result' }, h('summary', null, 'The build summary (`cairn build --json`)'), facts(op.result, [])) : null,
  );
}

/**
 * An operation's timeline: one bar per action on worker lanes (an action
 * takes the first lane free when it starts), from the operation's
 * events. Executed, cached, restored, failed and still running actions
 * are told apart by class, glyph and pattern; a failed bar links to its
 * partition (its logs).
 */
function makeTimeline() {
  const actions = new Map();
  const element = h('section', { id: 'timeline', 'aria-label': 'timeline of the actions' });
  let timer = null;
  const keyOf = (event) => event.key || (event.manifest && event.manifest.key);
  const take = (event) => {
    const key = keyOf(event);
    if (!key) return false;
    const at = event.time_ms;
    const action = actions.get(key) || { key, job: event.job || (event.manifest && event.manifest.job) || '', outputs: eventPartitions(event), start: at, end: null, outcome: null };
    switch (event.kind) {
      case 'ActionStarted':
      case 'ActionRetrying':
        if (!actions.has(key)) action.start = at;
        action.outcome = 'running';
        action.end = null;
        break;
      case 'ActionSucceeded':
        action.outcome = 'executed';
        action.end = at;
        if (event.manifest && event.manifest.started_ms) action.start = Math.min(action.start, event.manifest.started_ms);
        break;
      case 'ActionFailed':
        action.outcome = 'failed';
        action.end = at;
        action.error = event.error;
        break;
      case 'ActionCached':
        action.outcome = event.restored ? 'restored' : 'cached';
        action.end = at;
        break;
      case 'ActionJoined':
        // Another operation's run of the same action: this one waits on it.
        action.outcome = 'joined';
        action.joined = event.joined_build;
        action.end = at;
        break;
      default:
        return false;
    }
    if (!action.outputs.length) action.outputs = eventPartitions(event);
    actions.set(key, action);
    return true;
  };
  const draw = () => {
    const list = [...actions.values()].sort((a, b) => a.start - b.start);
    if (!list.length) {
      element.replaceChildren(h('p', { class: 'muted' }, 'No action yet.'));
      return;
    }
    const now = Date.now();
    const t0 = list[0].start;
    const t1 = Math.max(t0 + 1, ...list.map((a) => a.end ?? now));
    const lanes = [];
    for (const action of list) {
      const end = action.end ?? now;
      let lane = lanes.findIndex((free) => free <= action.start);
      if (lane < 0) {
        lane = lanes.length;
        lanes.push(0);
      }
      lanes[lane] = Math.max(end, action.start + 1);
      action.lane = lane;
    }
    const rows = lanes.map((_, i) => h('div', { class: 'lane', role: 'list', 'aria-label': `lane ${i + 1}` }, h('span', { class: 'lane-name' }, `${i + 1}`)));
    for (const action of list) {
      const end = action.end ?? now;
      const left = ((action.start - t0) / (t1 - t0)) * 100;
      const width = Math.max(0.4, ((end - action.start) / (t1 - t0)) * 100);
      const outcome = action.outcome || 'running';
      const state = { executed: 'built', restored: 'built', cached: 'built', joined: 'built', failed: 'failed', running: 'running' }[outcome];
      const text = `${action.job} ${action.outputs.join(' ')}: ${outcome}${action.joined ? ` (the run of build ${action.joined})` : ''}${action.end ? ` in ${duration((end - action.start) / 1000)}` : ''}${action.error ? ` — ${action.error}` : ''}`;
      const bar = action.outcome === 'failed' && action.outputs[0]
        ? h('a', { class: `bar ${outcome}`, role: 'listitem', href: `/ui/partitions/${encodeURIComponent(action.outputs[0])}`, 'data-state': state, 'data-outcome': outcome, 'data-key': action.key, title: text, 'aria-label': text }, action.job)
        : h('span', { class: `bar ${outcome}`, role: 'listitem', tabindex: '0', 'data-state': state, 'data-outcome': outcome, 'data-key': action.key, title: text, 'aria-label': text }, action.job);
      bar.style.left = `${left}%`;
      bar.style.width = `${width}%`;
      rows[action.lane].append(bar);
    }
    const running = list.some((a) => a.end === null);
    element.replaceChildren(
      h('p', { class: 'muted' }, `${list.length} actions on ${lanes.length} lanes over ${duration((t1 - t0) / 1000)}; `,
        h('span', { class: 'legend-inline' }, ['executed', 'cached', 'restored', 'joined', 'failed', 'running'].map((o) => h('span', { class: `bar-key ${o}` }, o)))),
      h('div', { class: 'lanes' }, rows));
    clearTimeout(timer);
    if (running) timer = setTimeout(draw, 1000);
  };
  return { element, take, draw, stop: () => clearTimeout(timer) };
}

async function showOperation(id, scope) {
  document.title = `${id} · cairn`;
  const path = `/v1/operations/${encodeURIComponent(id)}`;
  const container = h('div', { id: 'operation' });
  const feed = h('tbody');
  let op = await api(path, { signal: scope });
  // The Cancel control is made once: redraws (one per event) move it,
  // so a half-confirmed cancel is not lost.
  let actions = null;
  const redraw = (next) => {
    // A late answer (the cancel's, a reload's) never undoes the end that
    // the stream's done event already drew.
    if (op.done && !next.done) return;
    op = next;
    if (!actions && !op.done) actions = h('p', { id: 'op-actions' }, cancelButton(op, (after) => redraw(after)));
    renderOperation(op, container, actions);
  };
  redraw(op);
  const timeline = makeTimeline();
  scope.addEventListener('abort', timeline.stop);
  let drawPending = false;
  const drawTimeline = () => {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      timeline.draw();
    });
  };
  timeline.draw();
  setView(container, h('h2', null, 'Timeline'), timeline.element, h('h2', null, 'Events'), h('table', { class: 'list events', id: 'op-events' },
    h('thead', null, h('tr', null, ['seq', 'time', 'kind', 'job', 'partitions', 'build', 'detail'].map((t) => h('th', null, t)))), feed));
  let pending = null;
  const reload = () => {
    if (pending || op.done) return;
    pending = setTimeout(async () => {
      pending = null;
      try {
        redraw(await api(path, { signal: scope }));
      } catch (error) {
        if (!scope.aborted) setLive(error.message);
      }
    }, 200);
  };
  follow(`${path}/events`, {
    signal: scope,
    onEvent: (kind, data) => {
      if (kind === 'done') {
        clearTimeout(pending);
        pending = null;
        redraw(data);
        return;
      }
      if (kind !== 'cairn') return;
      feed.prepend(eventRow(data));
      if (timeline.take(data)) drawTimeline();
      reload();
    },
  }).catch((error) => {
    if (!scope.aborted) setLive(`not live: ${error.message}`);
  });
}

// ---------------------------------------------------------------- events

function eventDetail(event) {
  const skip = new Set(['seq', 'time_ms', 'build', 'kind', 'job', 'outputs', 'partition', 'manifest', 'key']);
  return Object.entries(event)
    .filter(([key, value]) => !skip.has(key) && value !== null && value !== undefined)
    .map(([key, value]) => `${key}=${typeof value === 'object' ? JSON.stringify(value) : value}`)
    .join(' ');
}

function eventRow(event) {
  return h('tr', { class: 'new', 'data-seq': event.seq, 'data-kind': event.kind },
    h('td', { class: 'num' }, event.seq),
    h('td', { class: 'time' }, time(event.time_ms)),
    h('td', null, event.kind),
    h('td', null, event.job || ''),
    h('td', null, eventPartitions(event).slice(0, 5).map((ref) => h('div', null, partitionLink(ref)))),
    h('td', { class: 'mono' }, `b${event.build}`),
    h('td', { class: 'mono detail' }, eventDetail(event)));
}

const EVENT_FILTERS = ['since', 'kind', 'partition', 'job', 'build', 'dimension', 'from', 'to'];
const SERVER_FILTERS = ['since', 'kind', 'partition', 'job', 'build', 'dimension'];

/**
 * A time bound as `cairn log --since/--until DATE` reads it: `YYYY-MM-DD`
 * (that day in UTC: its start for `from`, its end for `to`) or an RFC 3339
 * time with seconds and `Z` or an offset. Milliseconds, or null if none.
 */
function timeBound(text, end) {
  if (!text) return null;
  if (/^\d{4}-\d{2}-\d{2}$/.test(text)) {
    const start = Date.parse(`${text}T00:00:00Z`);
    if (Number.isNaN(start)) throw new Error(`${text}: not a date`);
    return end ? start + 86_400_000 - 1 : start;
  }
  const m = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.exec(text);
  const at = m ? Date.parse(text) : NaN;
  if (Number.isNaN(at)) throw new Error(`${text}: expected YYYY-MM-DD or an RFC 3339 time such as 2024-06-01T10:00:00Z`);
  // To the end of that second (or of the instant given with fractions).
  return end && !m[1] ? at + 999 : at;
}

async function showEvents(query, scope) {
  document.title = 'event log · cairn';
  const params = new URLSearchParams();
  for (const key of SERVER_FILTERS) for (const value of query.getAll(key)) if (value) params.append(key, value);
  if (!params.has('since')) params.set('since', '1');
  // The time range is applied here (the API filters by seq, not time).
  let from = null;
  let to = null;
  let problem = null;
  try {
    from = timeBound(query.get('from'), false);
    to = timeBound(query.get('to'), true);
  } catch (error) {
    problem = error.message;
  }
  const form = h('form', { class: 'inline', id: 'event-filters', onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    const next = new URLSearchParams();
    for (const key of EVENT_FILTERS) {
      const value = String(data.get(key) || '').trim();
      if (!value) continue;
      if (key === 'kind') for (const k of value.split(/[\s,]+/).filter(Boolean)) next.append('kind', k);
      else next.set(key, value);
    }
    navigate(`/ui/events${next.toString() ? `?${next}` : ''}`);
  } },
  EVENT_FILTERS.map((key) => h('label', null, { since: 'since (seq)', from: 'from (time)', to: 'to (time)' }[key] || key,
    h('input', { name: key, value: key === 'kind' ? query.getAll('kind').join(',') : query.get(key) || '', size: key === 'partition' ? 36 : 12,
      placeholder: { since: '1', kind: 'ActionFailed,…', partition: 'REF or pattern', job: 'job', build: 'build id', dimension: 'station=S07', from: 'YYYY-MM-DD or …T…Z', to: 'YYYY-MM-DD or …T…Z' }[key] }))),
  h('button', { type: 'submit' }, 'Apply'));
  const body = h('tbody');
  const count = h('p', { class: 'muted', id: 'event-count' }, 'waiting for events…');
  if (problem) {
    setView(h('h1', null, 'Event log'), form, h('p', { class: 'error', role: 'alert', id: 'event-problem' }, problem));
    return;
  }
  setView(h('h1', null, 'Event log'), form, count,
    h('table', { class: 'list events', id: 'events' },
      h('thead', null, h('tr', null, ['seq', 'time', 'kind', 'job', 'partitions', 'build', 'detail'].map((t) => h('th', null, t)))),
      body));
  // Events arrive in bursts (the whole log first): batch them per frame,
  // newest first, keeping the last EVENT_ROWS rows.
  let queue = [];
  let total = 0;
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    const batch = queue;
    queue = [];
    const fragment = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0 && i >= batch.length - EVENT_ROWS; i -= 1) fragment.append(eventRow(batch[i]));
    body.prepend(fragment);
    while (body.childElementCount > EVENT_ROWS) body.lastElementChild.remove();
    count.textContent = `${total} events${total > EVENT_ROWS ? ` (the newest ${EVENT_ROWS} shown)` : ''}; streaming new ones`;
  };
  await new Promise((resolve, reject) => {
    follow(`/v1/events?${params}`, {
      signal: scope,
      onOpen: resolve,
      onEvent: (kind, event) => {
        if (kind !== 'cairn') return;
        if ((from !== null && event.time_ms < from) || (to !== null && event.time_ms > to)) return;
        total += 1;
        queue.push(event);
        if (!scheduled) {
          scheduled = true;
          requestAnimationFrame(flush);
        }
      },
    }).then(resolve, reject);
  });
  if (total === 0) count.textContent = 'No event matches yet; streaming new ones.';
}

// ------------------------------------------------------------------ start

(function start() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has('token')) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get('token'));
    history.replaceState(null, '', location.pathname + location.search);
  }
  route();
}());
