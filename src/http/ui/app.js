// The dnd dashboard: plain script, no framework, no build step. Everything
// it shows comes from this node's own API (same origin), read every
// REFRESH_MS; nothing is fetched from anywhere else. The page's
// Content-Security-Policy forbids inline script and style, so all
// behaviour is here and all looks are in style.css; elements are built with
// DOM calls, never from HTML strings, so no value read from a key can
// become markup.
'use strict';

const REFRESH_MS = 2000;
// A hung node must show as a failed refresh, not as figures that stop moving.
const REQUEST_TIMEOUT_MS = 5000;
// The charts keep this much history in memory; a reload starts afresh.
const WINDOW_MS = 5 * 60 * 1000;
const HISTOGRAM = 'dnd_http_request_duration_seconds';
const TOKEN_KEY = 'dnd-token';
const SVG_NS = 'http://www.w3.org/2000/svg';

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === 'class') node.className = value;
    else if (name.startsWith('data-')) node.dataset[camel(name.slice(5))] = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

function camel(name) {
  return name.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

// ---------------------------------------------------------------------------
// Formatting

function hms(date) {
  return date.toTimeString().slice(0, 8);
}

function humanDuration(ms) {
  const s = ms / 1000;
  if (s < 1) return '< 1 s';
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 48 * 3600) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

function humanBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function percent(share) {
  return `${(share * 100).toFixed(1)} %`;
}

function millis(seconds) {
  if (seconds === null || !Number.isFinite(seconds)) return '–';
  const ms = seconds * 1000;
  return ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0);
}

// ---------------------------------------------------------------------------
// The API, with the operator's token

let tokenPrompt = null;

// Shows the token form once, however many requests are waiting for it; all
// of them go on when a token is given.
function askForToken(reason) {
  if (tokenPrompt) return tokenPrompt.promise;
  const form = $('#token-form');
  const input = $('#token-input');
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  tokenPrompt = { promise, resolve };
  $('#token-reason').textContent = reason === 'refused'
    ? 'This node refused the token given: give another.'
    : 'This node takes requests only with a bearer token.';
  form.hidden = false;
  input.value = '';
  input.focus();
  return promise;
}

$('#token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('#token-input').value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('#token-form').hidden = true;
  const prompt = tokenPrompt;
  tokenPrompt = null;
  if (prompt) prompt.resolve();
});

// fetch with the bearer token (when one was given) and a deadline. A 401
// asks for a token and tries again with it; any other answer is returned.
async function api(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.set('Authorization', `Bearer ${token}`);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(path, { ...init, headers, signal: abort.signal, cache: 'no-store' });
    } catch (error) {
      throw new Error(abort.signal.aborted
        ? `${path}: no answer within ${REQUEST_TIMEOUT_MS / 1000} s`
        : `${path}: ${error.message}`);
    } finally {
      clearTimeout(timer);
    }
    if (response.status !== 401) return response;
    await askForToken(token ? 'refused' : 'needed');
  }
}

async function failure(path, response) {
  let detail = '';
  try {
    const body = await response.text();
    try {
      detail = JSON.parse(body).error || body;
    } catch (_) {
      detail = body;
    }
  } catch (_) {
    detail = '';
  }
  return new Error(`${path}: ${response.status} ${response.statusText}${detail ? `: ${detail}` : ''}`);
}

async function getOk(path) {
  const response = await api(path);
  if (!response.ok) throw await failure(path, response);
  return response;
}

// ---------------------------------------------------------------------------
// Members and health

function handoffText(handoff) {
  if (!handoff) return '–';
  if (handoff.running) {
    const p = handoff.running.progress;
    return `moving: ${p.keys_sent} of ${p.keys_scanned} keys sent (${humanBytes(p.bytes_sent)})`;
  }
  if (handoff.last) {
    const last = handoff.last;
    return `last ${last.state}: ${last.progress.keys_sent} keys in ${humanDuration(last.elapsed_ms)}`;
  }
  return 'none';
}

function memberRow(node) {
  const stats = node.stats;
  const missing = () => el('td', { class: 'missing', title: node.stats_error || '' }, '–');
  return el('tr', { 'data-node-id': node.id, 'data-state': node.state },
    el('td', { class: 'id' }, node.id),
    el('td', {}, node.http_addr),
    el('td', { class: `state state-${node.state}` }, node.state),
    el('td', { class: 'num' }, String(node.incarnation)),
    el('td', { class: 'num' }, humanDuration(node.state_for_ms)),
    el('td', { class: 'num' }, percent(node.ring_share)),
    stats ? el('td', { class: 'num' }, String(stats.keys)) : missing(),
    stats ? el('td', { class: 'num' }, humanBytes(stats.bytes)) : missing(),
    stats ? el('td', { class: 'num' }, String(stats.hints_pending)) : missing(),
    stats
      ? el('td', {}, handoffText(stats.handoff))
      : el('td', { class: 'missing' }, `no figures: ${node.stats_error || 'no answer'}`));
}

function renderStatus(status) {
  $('#node-name').textContent = `node ${status.node}`;
  const health = $('#health');
  health.dataset.healthy = String(status.healthy);
  $('#verdict').textContent = status.healthy ? 'healthy' : 'not healthy';
  $('#quorums').textContent =
    `N = ${status.replicas}, R = ${status.read_quorum}, W = ${status.write_quorum}; ${status.nodes.length} members`;
  $('#problems').replaceChildren(...status.problems.map((p) => el('li', {}, p)));
  $('#members tbody').replaceChildren(...status.nodes.map(memberRow));
}

// ---------------------------------------------------------------------------
// Latency and rate, from the request-duration histogram

// One scrape's histogram, every label set but `le` summed: cumulative
// counts by upper bound, ascending; null when the node exports none.
function parseHistogram(text, name) {
  const buckets = new Map();
  let found = false;
  const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?\s*$/;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}_bucket`)) continue;
    const m = sample.exec(line);
    if (!m || m[1] !== `${name}_bucket`) continue;
    const le = /(?:^\{|,)\s*le="([^"]*)"/.exec(m[2] || '');
    const value = Number(m[3]);
    if (!le || !Number.isFinite(value)) continue;
    const bound = le[1] === '+Inf' ? Infinity : Number(le[1]);
    if (Number.isNaN(bound)) continue;
    buckets.set(bound, (buckets.get(bound) || 0) + value);
    found = true;
  }
  if (!found) return null;
  return [...buckets.entries()].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count }));
}

// The q-quantile of cumulative `buckets`, by linear interpolation inside
// the bucket the rank falls in, as Prometheus's histogram_quantile does:
// null without observations or without a +Inf bucket; the highest finite
// bound when the rank falls in the +Inf bucket.
function histogramQuantile(q, buckets) {
  if (buckets.length < 2 || buckets[buckets.length - 1].le !== Infinity) return null;
  // Counts scraped at slightly different moments may dip; a cumulative
  // count never does.
  const counts = [];
  for (const b of buckets) counts.push(Math.max(b.count, counts.length ? counts[counts.length - 1] : 0));
  const total = counts[counts.length - 1];
  if (total <= 0) return null;
  let rank = q * total;
  let b = counts.findIndex((c) => c >= rank);
  if (b === buckets.length - 1) return buckets[b - 1].le;
  if (b === 0 && buckets[0].le <= 0) return buckets[0].le;
  let start = 0;
  let count = counts[b];
  if (b > 0) {
    start = buckets[b - 1].le;
    count -= counts[b - 1];
    rank -= counts[b - 1];
  }
  return start + (buckets[b].le - start) * (rank / count);
}

// What happened between two scrapes: the bucket counts' differences.
function bucketDeltas(previous, current) {
  const before = new Map(previous.map((b) => [b.le, b.count]));
  return current.map((b) => ({ le: b.le, count: b.count - (before.get(b.le) || 0) }));
}

const samples = [];
let lastScrape = null;

function addScrape(text, at) {
  const buckets = parseHistogram(text, HISTOGRAM);
  if (!buckets) {
    lastScrape = null;
    return;
  }
  const scrape = { at: at.getTime(), buckets };
  const previous = lastScrape;
  lastScrape = scrape;
  if (!previous) return;
  const deltas = bucketDeltas(previous.buckets, buckets);
  const total = deltas.length ? deltas[deltas.length - 1].count : 0;
  // A node that restarted counts from zero: no rate across that.
  if (total < 0 || deltas.some((d) => d.count < 0)) return;
  const seconds = (scrape.at - previous.at) / 1000;
  if (seconds <= 0) return;
  samples.push({
    at: scrape.at,
    rate: total / seconds,
    p50: histogramQuantile(0.5, deltas),
    p99: histogramQuantile(0.99, deltas),
  });
  while (samples.length && samples[0].at < scrape.at - WINDOW_MS) samples.shift();
}

const CHART = { width: 600, height: 160, left: 48, right: 8, top: 8, bottom: 20 };

// Lines of `series` (each {key, class}) over the window ending now, with a
// scale from 0 to the largest value shown.
function drawChart(figure, series, format) {
  const hasData = samples.some((s) => series.some((line) => s[line.key] !== null));
  figure.dataset.hasData = String(hasData);
  figure.dataset.samples = String(samples.length);
  figure.querySelector('.chart-empty').hidden = hasData;
  if (!hasData) figure.querySelector('.current').textContent = '';
  const old = figure.querySelector('svg');
  if (old) old.remove();
  if (!hasData) return;
  const { width, height, left, right, top, bottom } = CHART;
  const end = samples[samples.length - 1].at;
  const start = end - WINDOW_MS;
  let max = 0;
  for (const s of samples) for (const line of series) if (s[line.key] !== null) max = Math.max(max, s[line.key]);
  if (max <= 0) max = 1;
  const x = (at) => left + ((at - start) / WINDOW_MS) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img' });
  root.append(svg('line', { class: 'axis', x1: left, y1: y(0), x2: width - right, y2: y(0) }));
  root.append(svg('line', { class: 'axis', x1: left, y1: top, x2: left, y2: y(0) }));
  const label = (text, attrs) => {
    const t = svg('text', attrs);
    t.textContent = text;
    return t;
  };
  root.append(label(format(max), { class: 'tick', x: left - 4, y: top + 10, 'text-anchor': 'end' }));
  root.append(label('0', { class: 'tick', x: left - 4, y: y(0), 'text-anchor': 'end' }));
  root.append(label('−5 min', { class: 'tick', x: left, y: height - 4 }));
  root.append(label('now', { class: 'tick', x: width - right, y: height - 4, 'text-anchor': 'end' }));
  for (const line of series) {
    // A scrape interval without requests has no quantile: the line breaks.
    let points = [];
    const flush = () => {
      if (points.length === 1) {
        const [px, py] = points[0].split(',');
        root.append(svg('circle', { class: `dot ${line.class}`, cx: px, cy: py, r: 2 }));
      } else if (points.length > 1) {
        root.append(svg('polyline', { class: `line ${line.class}`, points: points.join(' ') }));
      }
      points = [];
    };
    for (const s of samples) {
      if (s[line.key] === null) flush();
      else points.push(`${x(s.at).toFixed(1)},${y(s[line.key]).toFixed(1)}`);
    }
    flush();
  }
  const last = samples[samples.length - 1];
  figure.querySelector('.current').textContent =
    `last: ${series.map((line) => `${line.name} ${format(last[line.key])}`).join(', ')}`;
  figure.append(root);
}

function renderCharts() {
  drawChart($('#rate-chart'), [{ key: 'rate', class: 'rate', name: 'rate' }],
    (v) => (v === null ? '–' : v < 10 ? v.toFixed(2) : v.toFixed(0)));
  drawChart($('#latency-chart'), [
    { key: 'p50', class: 'p50', name: 'p50' },
    { key: 'p99', class: 'p99', name: 'p99' },
  ], millis);
}

// ---------------------------------------------------------------------------
// The refresh loop and stale marking

let lastGood = null;

function markFresh(at) {
  lastGood = at;
  document.body.dataset.stale = 'false';
  for (const section of document.querySelectorAll('main > section')) section.dataset.stale = 'false';
  $('#stale-banner').hidden = true;
  $('#updated').textContent = `updated ${hms(at)}`;
}

function markStale(at, reason) {
  document.body.dataset.stale = 'true';
  for (const id of ['#health', '#members-section', '#charts-section']) $(id).dataset.stale = 'true';
  const banner = $('#stale-banner');
  banner.textContent = `refresh failed at ${hms(at)}: ${reason}; ` +
    (lastGood ? `figures below are from ${hms(lastGood)}` : 'no figures have been read yet');
  banner.hidden = false;
  $('#updated').textContent = lastGood ? `stale since ${hms(lastGood)}` : 'no figures yet';
}

async function refresh() {
  const at = new Date();
  try {
    const [status, metrics] = await Promise.all([
      getOk('/cluster/status').then((r) => r.json()),
      getOk('/metrics').then((r) => r.text()),
    ]);
    renderStatus(status);
    addScrape(metrics, at);
    renderCharts();
    markFresh(at);
  } catch (error) {
    markStale(new Date(), error.message);
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

// ---------------------------------------------------------------------------
// Key inspector

function keyPath(key) {
  return `/kv/${encodeURIComponent(key)}`;
}

function decodeText(bytes) {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (_) {
    return null;
  }
}

function base64Bytes(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function field(name, value) {
  return el('div', { class: 'field' }, el('span', { class: 'name' }, name), el('code', {}, value));
}

function showResult(status, ...children) {
  const out = $('#inspect-result');
  out.dataset.status = String(status);
  out.replaceChildren(...children.filter((child) => child !== null));
}

// Writes `body` over everything the 300 showed (its context), then reads
// the key again so the operator sees what it now holds.
async function resolve(key, context, contentType, body, note) {
  const status = $('#inspect-status');
  if (status) status.textContent = 'writing…';
  try {
    const response = await api(keyPath(key), {
      method: 'PUT',
      headers: { 'X-Dnd-Context': context, 'Content-Type': contentType },
      body,
    });
    if (!response.ok) throw await failure(keyPath(key), response);
  } catch (error) {
    if (status) status.textContent = `not written: ${error.message}`;
    return;
  }
  await inspect(key, note);
}

function siblingBlock(key, context, sibling, index) {
  const text = sibling.value !== undefined ? sibling.value : null;
  const bytes = text === null ? base64Bytes(sibling.value_base64 || '') : null;
  const keep = el('button', { type: 'button', class: 'keep' }, 'keep this one');
  keep.addEventListener('click', () => resolve(key, context, sibling.content_type,
    text !== null ? text : bytes, `kept sibling ${index + 1}`));
  return el('div', { class: 'sibling', 'data-index': String(index) },
    el('h4', {}, `sibling ${index + 1}`),
    field('content type', sibling.content_type),
    sibling.ttl !== undefined ? field('expires in', `${sibling.ttl} s`) : null,
    text !== null ? el('pre', { class: 'value' }, text) : el('p', { class: 'value' }, `${bytes.length} bytes`),
    keep);
}

function mergeForm(key, context, siblings) {
  const area = el('textarea', { id: 'merged-value', rows: '4' });
  const first = siblings.find((s) => s.value !== undefined);
  area.value = first ? first.value : '';
  const type = el('input', { id: 'merged-type', type: 'text', value: siblings[0].content_type });
  const write = el('button', { type: 'button', id: 'write-merged' }, 'write merged value');
  write.addEventListener('click', () => resolve(key, context, type.value || 'application/octet-stream',
    area.value, 'wrote the merged value'));
  return el('div', { class: 'merge' },
    el('label', {}, 'merged value ', area),
    el('label', {}, 'content type ', type),
    write);
}

async function inspect(key, note) {
  showResult('', el('p', {}, `reading ${key}…`));
  let response;
  try {
    response = await api(keyPath(key));
  } catch (error) {
    showResult('error', el('p', { class: 'error' }, error.message));
    return;
  }
  const context = response.headers.get('X-Dnd-Context') || '';
  const heading = el('h3', {}, key);
  const noted = note ? el('p', { class: 'note' }, note) : null;
  if (response.status === 200) {
    const bytes = new Uint8Array(await response.arrayBuffer());
    const text = decodeText(bytes);
    showResult(200, heading, noted,
      field('content type', response.headers.get('Content-Type') || ''),
      field('context', context),
      text !== null ? el('pre', { class: 'value' }, text) : el('p', { class: 'value' }, `${bytes.length} bytes`));
  } else if (response.status === 404) {
    showResult(404, heading, noted, el('p', { class: 'value' }, 'not found'), field('context', context));
  } else if (response.status === 300) {
    let siblings;
    try {
      siblings = (await response.json()).siblings || [];
    } catch (error) {
      showResult('error', heading, el('p', { class: 'error' }, `unreadable siblings: ${error.message}`));
      return;
    }
    showResult(300, heading, noted,
      el('p', {}, `${siblings.length} concurrent values: keep one, or write one that merges them.`),
      field('context', context),
      el('div', { class: 'siblings' }, ...siblings.map((s, i) => siblingBlock(key, context, s, i))),
      mergeForm(key, context, siblings),
      el('p', { id: 'inspect-status' }));
  } else {
    const error = await failure(keyPath(key), response);
    showResult(response.status, heading, el('p', { class: 'error' }, error.message));
  }
}

$('#inspect-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const key = $('#inspect-key').value;
  if (key) inspect(key);
});

refresh();
