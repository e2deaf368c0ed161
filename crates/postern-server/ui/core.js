/* postern dashboard, part 1 of 3: state, DOM helpers, the API client, the live SSE reader
 * and graphs. Parts 2 and 3 (app.js, visitors.js) are the pages. Plain JavaScript, no build
 * step; all are classic scripts loaded in order, sharing these top-level names.
 *
 * - It uses only the documented admin API (/api/v1), with the token the user pasted, kept in
 *   sessionStorage and sent as a bearer header; never in a URL or a cookie.
 * - Live updates come over the SSE stream (/api/v1/events?traffic=1), read with fetch so the
 *   token can go in a header (EventSource cannot send one).
 * - Everything that comes from the relay is written into the page as text (createTextNode,
 *   textContent), never as HTML: captured paths, headers and bodies cannot run.
 */
'use strict';

const TOKEN_KEY = 'postern.token';
const MAX_POINTS = 720;
const MAX_FEED = 200;

const state = {
  admin: false,
  everyMs: 5000,
  tunnels: [],
  agents: [],
  traffic: new Map(), // tunnel name -> points, oldest first
  feed: [],
  live: null,
  pageHandlers: new Set(),
  cleanup: [],
};

// ---------- DOM helpers ----------

const $ = (sel) => document.querySelector(sel);

function safeHref(v) {
  return /^(https?:\/\/|#\/)/i.test(String(v));
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (k === 'href') { if (safeHref(v)) e.setAttribute('href', String(v)); }
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === undefined || kid === null || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i === 0 ? String(Math.round(v)) : v.toFixed(1)) + ' ' + u[i];
}

function ago(rfc) {
  if (!rfc) return '–';
  const s = Math.max(0, (Date.now() - Date.parse(rfc)) / 1000);
  if (s < 60) return Math.round(s) + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return (s / 3600).toFixed(1) + ' h ago';
  return (s / 86400).toFixed(1) + ' d ago';
}

function clock(rfc) {
  const d = new Date(rfc);
  return isNaN(d) ? String(rfc) : d.toLocaleTimeString();
}

function statusClass(s) {
  return 's' + String(s).charAt(0);
}

// Fills `tbody` with one row per item, keyed: a row whose key is still there is kept (and
// `update`d), new ones are `create`d, gone ones removed, in the items' order. With no item, one
// row of `cols` cells says `empty`.
function keyed(tbody, items, key, create, update, cols, empty) {
  const old = new Map();
  for (const r of [...tbody.children]) {
    if (r.dataset.key === undefined) r.remove();
    else old.set(r.dataset.key, r);
  }
  const rows = items.map((it) => {
    const k = String(key(it));
    let r = old.get(k);
    if (r) old.delete(k);
    else { r = create(it); r.dataset.key = k; }
    update(r, it);
    return r;
  });
  for (const r of old.values()) r.remove();
  for (const r of rows) tbody.append(r);
  if (!rows.length) tbody.append(el('tr', {}, el('td', { colspan: cols, class: 'empty' }, empty)));
}

// A button that acts on the second click, so nothing is kicked or revoked by accident.
function armed(label, confirmLabel, attrs, action) {
  const b = el('button', Object.assign({ type: 'button', class: 'danger' }, attrs), label);
  let timer = null;
  b.addEventListener('click', async (ev) => {
    ev.stopPropagation();
    if (!b.classList.contains('armed')) {
      b.classList.add('armed');
      b.textContent = confirmLabel;
      timer = setTimeout(() => { b.classList.remove('armed'); b.textContent = label; }, 4000);
      return;
    }
    clearTimeout(timer);
    b.disabled = true;
    try { await action(); } catch (e) { flash(e.message); b.disabled = false; }
  });
  return b;
}

function flash(message) {
  const m = $('#flash') || el('p', { id: 'flash', class: 'error', role: 'alert' });
  m.textContent = message;
  $('#main').prepend(m);
}

// ---------- API ----------

const token = () => sessionStorage.getItem(TOKEN_KEY) || '';

async function api(method, path, body) {
  const headers = { Authorization: 'Bearer ' + token() };
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  if (resp.status === 401) {
    logout('The relay refused the token: log in again.');
    throw new Error('unauthorized');
  }
  if (!resp.ok) throw new Error((data && data.error && data.error.message) || 'HTTP ' + resp.status);
  return data;
}

const enc = encodeURIComponent;

// ---------- live updates over SSE ----------

class Live {
  constructor() { this.stopped = false; this.ctrl = null; }

  async run() {
    while (!this.stopped) {
      this.ctrl = new AbortController();
      try {
        const resp = await fetch('/api/v1/events?traffic=1', {
          headers: { Authorization: 'Bearer ' + token() },
          signal: this.ctrl.signal,
          cache: 'no-store',
        });
        if (resp.status === 401) { logout('The relay refused the token: log in again.'); return; }
        if (!resp.ok || !resp.body) throw new Error('HTTP ' + resp.status);
        setLive(true);
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let type = 'message';
            let data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('event: ')) type = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (!data) continue;
            let parsed;
            try { parsed = JSON.parse(data); } catch (_) { continue; }
            dispatch(type, parsed);
          }
        }
      } catch (_) {
        if (this.stopped) return;
      }
      setLive(false);
      await sleep(2000);
    }
  }

  stop() {
    this.stopped = true;
    if (this.ctrl) this.ctrl.abort();
  }
}

function setLive(up) {
  const l = $('#live');
  l.hidden = false;
  l.textContent = up ? '● live' : '○ reconnecting';
  l.classList.toggle('down', !up);
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    await loadLists().catch(() => {});
    for (const h of state.pageHandlers) h('lists', null);
  }, 150);
}

function dispatch(type, data) {
  if (type === 'traffic') {
    for (const { name, point } of data.tunnels || []) {
      const t = state.tunnels.find((x) => x.name === name);
      if (addPoint(name, point) && t) advance(t, point);
    }
  } else if (type !== 'lagged') {
    state.feed.unshift({ type, data });
    state.feed.length = Math.min(state.feed.length, MAX_FEED);
    if (type !== 'request_captured') refreshSoon();
  }
  for (const h of state.pageHandlers) h(type, data);
}

function onPage(fn) {
  state.pageHandlers.add(fn);
  state.cleanup.push(() => state.pageHandlers.delete(fn));
}

// Adds a point to a tunnel's graph data; true when it is new.
function addPoint(name, p) {
  const list = state.traffic.get(name) || [];
  if (list.length && list[list.length - 1].t >= p.t) return false;
  list.push(p);
  if (list.length > MAX_POINTS) list.splice(0, list.length - MAX_POINTS);
  state.traffic.set(name, list);
  return true;
}

// Moves a tunnel's listed counters on by a new point, so totals stay live between list loads.
function advance(t, p) {
  t.totals.requests += p.requests;
  t.totals.bytes_in += p.bytes_in;
  t.totals.bytes_out += p.bytes_out;
  t.active_streams = p.active;
}

async function seed(name) {
  const h = await api('GET', '/api/v1/tunnels/' + enc(name) + '/history');
  state.everyMs = h.every_ms || state.everyMs;
  const live = state.traffic.get(name) || [];
  const merged = (h.points || []).slice();
  const last = merged.length ? merged[merged.length - 1].t : 0;
  for (const p of live) if (p.t > last) merged.push(p);
  state.traffic.set(name, merged.slice(-MAX_POINTS));
}

async function loadLists() {
  const [t, a] = await Promise.all([api('GET', '/api/v1/tunnels'), api('GET', '/api/v1/agents')]);
  state.tunnels = t.tunnels || [];
  state.agents = a.agents || [];
}

// ---------- graphs (uPlot) ----------

function graph(target, series, opts) {
  const spark = !!(opts && opts.spark);
  const fmt = (opts && opts.fmt) || ((v) => String(v));
  const width = spark ? 110 : Math.max(320, Math.min(target.clientWidth || 560, 900));
  const u = new uPlot({
    width,
    height: spark ? 26 : 170,
    legend: { show: !spark },
    cursor: { show: !spark },
    scales: { x: { time: !spark } },
    axes: spark ? [{ show: false }, { show: false }]
      : [{}, { size: 64, values: (_, ticks) => ticks.map(fmt) }],
    series: [{}].concat(series.map((s) => ({
      label: s.label, stroke: s.stroke, width: spark ? 1 : 1.5, points: { show: false },
      value: (_, v) => (v === null || v === undefined ? '–' : fmt(v)),
    }))),
  }, [[]].concat(series.map(() => [])), target);
  return u;
}

const perSec = () => state.everyMs / 1000;

function columns(points, pick) {
  const xs = points.map((p) => p.t / 1000);
  return [xs].concat(pick.map((f) => points.map(f)));
}

function sumPoints() {
  const by = new Map();
  for (const points of state.traffic.values()) {
    for (const p of points) {
      const s = by.get(p.t) || { t: p.t, requests: 0, bytes_in: 0, bytes_out: 0 };
      s.requests += p.requests; s.bytes_in += p.bytes_in; s.bytes_out += p.bytes_out;
      by.set(p.t, s);
    }
  }
  return [...by.values()].sort((a, b) => a.t - b.t).slice(-MAX_POINTS);
}
