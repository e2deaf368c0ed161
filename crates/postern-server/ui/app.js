/* postern dashboard, part 2 of 3: the pages (overview, tunnels, one tunnel with its graphs
 * and the request inspector, agents, tokens, events), the log-in form and start-up. Part 1
 * (core.js) holds the helpers they use, part 3 (visitors.js) a tunnel's signed-in visitors.
 * Values from the relay are only ever set as text.
 */
'use strict';

// ---------- pages ----------

const pages = { overview, tunnels, tunnel, agents, tokens, events };

async function render() {
  for (const f of state.cleanup.splice(0)) f();
  const hash = location.hash || '#/overview';
  const [, page, ...rest] = hash.split('/');
  const fn = pages[page] || overview;
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('current', a.dataset.page === (page === 'tunnel' ? 'tunnels' : page));
  }
  const main = $('#main');
  main.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
  try {
    await fn(main, rest.map(decodeURIComponent));
  } catch (e) {
    if (e.message !== 'unauthorized') main.replaceChildren(el('p', { class: 'error' }, e.message));
  }
}

async function overview(main) {
  const [ready] = await Promise.all([
    fetch('/readyz', { cache: 'no-store' }).then((r) => r.json()).catch(() => ({ status: 'unreachable' })),
    loadLists(),
  ]);
  await Promise.all(state.tunnels.slice(0, 100).map((t) => seed(t.name).catch(() => {})));
  const count = (id, label) => el('div', { class: 'card' }, el('div', { class: 'n', id }, ''), el('div', { class: 'l' }, label));
  const health = el('span', { class: 'pill ' + (ready.status === 'ready' ? 'ok' : 'bad'), id: 'health' }, ready.status);
  const reqs = el('div', { class: 'graph' }, el('h3', {}, 'Requests per second, all tunnels'));
  const bw = el('div', { class: 'graph' }, el('h3', {}, 'Bytes per second, all tunnels'));
  main.replaceChildren(
    el('h1', {}, 'Overview'),
    el('div', { class: 'cards' },
      count('count-tunnels', 'Tunnels'), count('count-http', 'HTTP tunnels'), count('count-tcp', 'TCP tunnels'),
      count('count-agents', 'Agents'), count('count-streams', 'Open streams'),
      el('div', { class: 'card' }, el('div', { class: 'n' }, health), el('div', { class: 'l' }, 'Relay'))),
    el('div', { class: 'panel graphs' }, reqs, bw));
  const g1 = graph(reqs, [{ label: 'req/s', stroke: '#2f6fde' }], { fmt: (v) => v.toFixed(1) });
  const g2 = graph(bw, [{ label: 'in', stroke: '#1f9d55' }, { label: 'out', stroke: '#c98a00' }], { fmt: (v) => bytes(v) + '/s' });
  const update = () => {
    $('#count-tunnels').textContent = state.tunnels.length;
    $('#count-http').textContent = state.tunnels.filter((t) => t.kind === 'http').length;
    $('#count-tcp').textContent = state.tunnels.filter((t) => t.kind === 'tcp').length;
    $('#count-agents').textContent = state.agents.length;
    $('#count-streams').textContent = state.tunnels.reduce((n, t) => n + t.active_streams, 0);
    const s = sumPoints();
    g1.setData(columns(s, [(p) => p.requests / perSec()]));
    g2.setData(columns(s, [(p) => p.bytes_in / perSec(), (p) => p.bytes_out / perSec()]));
  };
  update();
  onPage((type) => { if (type === 'traffic' || type === 'lists') update(); });
}

async function tunnels(main) {
  await loadLists();
  await Promise.all(state.tunnels.slice(0, 100).map((t) => seed(t.name).catch(() => {})));
  const body = el('tbody', {});
  const table = el('table', { id: 'tunnels-table' },
    el('thead', {}, el('tr', {}, ['Name', 'Public URL', 'Kind', 'Owner', 'Agent', 'Connected', 'Req/s', 'In', 'Out', 'Status', '']
      .map((h) => el('th', {}, h)))), body);
  main.replaceChildren(el('h1', {}, 'Tunnels'), table);
  // Rows are kept by tunnel name and updated in place, so a list refresh never replaces a row
  // (or a half-pressed Kick button) that is still there.
  const sparks = new Map();
  const create = (t) => {
    const inCell = el('span', { class: 'spark' });
    const outCell = el('span', { class: 'spark' });
    const live = {
      rate: el('td', { class: 'num', 'data-rate': t.name }, '–'),
      since: el('td', { title: t.connected_since }),
      bytesIn: el('span', { class: 'muted' }),
      bytesOut: el('span', { class: 'muted' }),
      status: el('td', {}),
    };
    const row = el('tr', { 'data-tunnel': t.name },
      el('td', {}, el('a', { href: '#/tunnel/' + enc(t.name) }, t.name)),
      el('td', {}, el('a', { href: t.public_url, target: '_blank', rel: 'noopener noreferrer' }, t.public_url)),
      el('td', {}, t.kind),
      el('td', {}, t.owner),
      el('td', { class: 'muted' }, t.agent_id),
      live.since,
      live.rate,
      el('td', {}, inCell, ' ', live.bytesIn),
      el('td', {}, outCell, ' ', live.bytesOut),
      live.status,
      el('td', {}, armed('Kick', 'Kick?', { 'data-kick': t.name }, async () => {
        await api('DELETE', '/api/v1/tunnels/' + enc(t.name));
      })));
    sparks.set(t.name, {
      live,
      in: graph(inCell, [{ stroke: '#1f9d55' }], { spark: true }),
      out: graph(outCell, [{ stroke: '#c98a00' }], { spark: true }),
    });
    return row;
  };
  const update = (row, t) => {
    const { live } = sparks.get(t.name);
    live.since.textContent = ago(t.connected_since);
    live.bytesIn.textContent = bytes(t.totals.bytes_in);
    live.bytesOut.textContent = bytes(t.totals.bytes_out);
    const open = t.active_streams > 0;
    live.status.replaceChildren(el('span', { class: 'pill ok' }, open ? 'up · ' + t.active_streams + ' open' : 'up'),
      t.inspect ? el('span', { class: 'pill warn' }, 'inspecting') : null);
  };
  const draw = () => {
    keyed(body, state.tunnels, (t) => t.name, create, update, 11, 'No tunnels.');
    for (const name of [...sparks.keys()]) if (!state.tunnels.some((t) => t.name === name)) sparks.delete(name);
    fill();
  };
  const fill = () => {
    for (const [name, s] of sparks) {
      const pts = (state.traffic.get(name) || []).slice(-60);
      s.in.setData(columns(pts, [(p) => p.bytes_in]));
      s.out.setData(columns(pts, [(p) => p.bytes_out]));
      const last = pts[pts.length - 1];
      s.live.rate.textContent = last ? (last.requests / perSec()).toFixed(1) : '–';
    }
  };
  draw();
  onPage((type) => {
    if (type === 'traffic') draw();
    if (type === 'lists') draw();
  });
}

async function tunnel(main, [name]) {
  const t = await api('GET', '/api/v1/tunnels/' + enc(name));
  await seed(name).catch(() => {});
  const seeded = state.traffic.get(name) || [];
  let shownUpTo = seeded.length ? seeded[seeded.length - 1].t : 0;
  const totals = el('dd', { id: 'tunnel-totals' });
  const showTotals = () => {
    totals.textContent = t.totals.requests + ' streams, ' + bytes(t.totals.bytes_in) + ' in, ' + bytes(t.totals.bytes_out) + ' out';
  };
  showTotals();
  const inspectBtn = el('button', { type: 'button', id: 'inspect-toggle' }, '');
  const showInspect = (on) => {
    inspectBtn.textContent = on ? 'Stop inspecting' : 'Inspect requests';
    inspectBtn.dataset.on = on ? '1' : '0';
  };
  showInspect(t.inspect);
  inspectBtn.addEventListener('click', async () => {
    const r = await api('PUT', '/api/v1/tunnels/' + enc(name) + '/inspect', { enabled: inspectBtn.dataset.on !== '1' })
      .catch((e) => flash(e.message));
    if (r) { showInspect(r.inspect); loadCaptures(); }
  });
  const gStatus = el('div', { class: 'graph' }, el('h3', {}, 'Requests per second by status'));
  const gBytes = el('div', { class: 'graph' }, el('h3', {}, 'Bytes per second'));
  const gLatency = el('div', { class: 'graph' }, el('h3', {}, 'Mean time to response headers (ms)'));
  const captures = el('tbody', {});
  const detail = el('div', { id: 'capture', class: 'panel' }, el('p', { class: 'muted' }, 'Select a request.'));
  const visitors = t.kind === 'http' ? visitorsPanel(t) : null;
  main.replaceChildren(
    el('h1', {}, 'Tunnel ', el('span', { id: 'tunnel-name' }, t.name)),
    el('div', { class: 'panel' }, el('dl', { class: 'kv' },
      el('dt', {}, 'Public URL'), el('dd', {}, el('a', { href: t.public_url, target: '_blank', rel: 'noopener noreferrer' }, t.public_url)),
      el('dt', {}, 'Kind'), el('dd', {}, t.kind),
      el('dt', {}, 'Owner'), el('dd', {}, t.owner),
      el('dt', {}, 'Agents'), el('dd', {}, (t.agents || []).join(', ')),
      el('dt', {}, 'Local port'), el('dd', {}, t.local_port),
      el('dt', {}, 'Connected'), el('dd', {}, t.connected_since),
      el('dt', {}, 'Totals'), totals,
      t.volume ? [el('dt', {}, 'Volume'), el('dd', { id: 'tunnel-volume' }, volumeText(t.volume))] : null)),
    el('div', { class: 'panel graphs' }, gStatus, gBytes, gLatency),
    el('h2', {}, 'Requests'),
    t.kind === 'http' ? el('div', { class: 'toolbar' }, inspectBtn,
      el('span', { class: 'muted', id: 'inspect-note' }, 'Captures keep headers and the first 64 KiB of each body; credentials are redacted.'))
      : el('p', { class: 'muted' }, 'TCP tunnels are never inspected.'),
    el('div', { class: 'split' },
      el('table', { id: 'captures' }, el('thead', {}, el('tr', {}, ['Time', 'Method', 'Path', 'Status', 'Duration', 'Size'].map((h) => el('th', {}, h)))), captures),
      detail),
    visitors ? visitors.section : null);
  const colours = ['#8a8f99', '#1f9d55', '#2f6fde', '#c98a00', '#d3382f'];
  const g1 = graph(gStatus, ['1xx', '2xx', '3xx', '4xx', '5xx'].map((label, i) => ({ label, stroke: colours[i] })), { fmt: (v) => v.toFixed(2) });
  const g2 = graph(gBytes, [{ label: 'in', stroke: '#1f9d55' }, { label: 'out', stroke: '#c98a00' }], { fmt: (v) => bytes(v) + '/s' });
  const g3 = graph(gLatency, [{ label: 'ms', stroke: '#7a4fd0' }], { fmt: (v) => v.toFixed(1) });
  const drawGraphs = () => {
    const pts = state.traffic.get(name) || [];
    g1.setData(columns(pts, [0, 1, 2, 3, 4].map((i) => (p) => p.status[i] / perSec())));
    g2.setData(columns(pts, [(p) => p.bytes_in / perSec(), (p) => p.bytes_out / perSec()]));
    g3.setData(columns(pts, [(p) => p.latency_ms]));
  };
  drawGraphs();

  let selected = null;
  async function loadCaptures() {
    if (t.kind !== 'http') return;
    const r = await api('GET', '/api/v1/tunnels/' + enc(name) + '/requests');
    showInspect(r.inspect);
    const create = (c) => {
      const row = el('tr', { class: 'clickable', 'data-capture': c.id },
        el('td', {}, clock(c.time)),
        el('td', {}, c.method),
        el('td', { class: 'path' }, c.path, c.replay_of ? el('span', { class: 'pill' }, ' replay of #' + c.replay_of) : null),
        el('td', { class: statusClass(c.status) }, c.status),
        el('td', { class: 'num' }, c.duration_ms.toFixed(1) + ' ms'),
        el('td', { class: 'num' }, bytes(c.response_size)));
      row.addEventListener('click', () => show(c.id));
      return row;
    };
    const update = (row, c) => row.classList.toggle('selected', c.id === selected);
    keyed(captures, r.requests, (c) => c.id, create, update, 6,
      r.inspect ? 'No requests yet.' : 'Inspection is off: switch it on to capture requests.');
  }

  function headersTable(id, headers) {
    return el('table', { id }, el('tbody', {}, headers.map((h) => el('tr', {}, el('td', {}, h.name), el('td', {}, h.value)))));
  }

  function bodyBlock(id, b) {
    const note = [bytes(b.size)];
    if (b.truncated) note.push('truncated to the first 64 KiB');
    if (b.base64 !== null && b.base64 !== undefined) note.push('binary, shown as base64');
    return [el('p', { class: 'muted' }, note.join(' · ')), el('pre', { id }, b.text !== null && b.text !== undefined ? b.text : b.base64)];
  }

  async function show(id) {
    selected = id;
    for (const r of captures.querySelectorAll('tr')) r.classList.toggle('selected', r.dataset.capture === String(id));
    const c = await api('GET', '/api/v1/tunnels/' + enc(name) + '/requests/' + enc(id));
    const replay = el('button', { type: 'button', class: 'primary', id: 'replay', disabled: !c.replayable }, 'Replay');
    replay.addEventListener('click', async () => {
      replay.disabled = true;
      try {
        const r = await api('POST', '/api/v1/tunnels/' + enc(name) + '/requests/' + enc(id) + '/replay');
        await loadCaptures();
        await show(r.id);
      } catch (e) { flash(e.message); replay.disabled = false; }
    });
    detail.replaceChildren(
      el('div', { class: 'toolbar' }, el('strong', { id: 'capture-line' }, c.method + ' ' + c.path), replay),
      el('dl', { class: 'kv' },
        el('dt', {}, 'Status'), el('dd', { class: statusClass(c.status), id: 'capture-status' }, c.status),
        el('dt', {}, 'Host'), el('dd', {}, c.host),
        el('dt', {}, 'From'), el('dd', {}, c.peer),
        el('dt', {}, 'Time'), el('dd', {}, c.time),
        el('dt', {}, 'Duration'), el('dd', {}, c.duration_ms + ' ms'),
        c.replay_of ? [el('dt', {}, 'Replay of'), el('dd', {}, '#' + c.replay_of)] : null,
        c.bodies_dropped ? [el('dt', {}, 'Bodies'), el('dd', {}, 'not kept: the relay’s inspector memory was full')] : null),
      el('h2', {}, 'Request headers'), headersTable('request-headers', c.request_headers),
      el('h2', {}, 'Request body'), ...bodyBlock('request-body', c.request_body),
      el('h2', {}, 'Response headers'), headersTable('response-headers', c.response_headers),
      el('h2', {}, 'Response body'), ...bodyBlock('response-body', c.response_body));
  }

  await loadCaptures();
  if (visitors) {
    await visitors.load();
    // Sign-ins make no event: the list looks again every 5 s while the page is open.
    const every = setInterval(() => visitors.load().catch(() => {}), 5000);
    state.cleanup.push(() => clearInterval(every));
  }
  let again = null;
  onPage((type, data) => {
    if (type === 'traffic') {
      const mine = (data.tunnels || []).find((x) => x.name === name);
      if (mine && mine.point.t > shownUpTo) { advance(t, mine.point); shownUpTo = mine.point.t; showTotals(); }
      drawGraphs();
    }
    if (type === 'request_captured' && data.tunnel && data.tunnel.name === name) {
      clearTimeout(again);
      again = setTimeout(() => loadCaptures().catch(() => {}), 100);
    }
  });
}

async function agents(main) {
  await loadLists();
  const body = el('tbody', {});
  main.replaceChildren(el('h1', {}, 'Agents'),
    el('table', { id: 'agents-table' }, el('thead', {}, el('tr', {},
      ['Session', 'Client id', 'Owner', 'Address', 'Connected', 'Tunnels', ''].map((h) => el('th', {}, h)))), body));
  const create = (a) => el('tr', { 'data-agent': a.id },
    el('td', { class: 'muted' }, a.id), el('td', {}, a.client_id), el('td', {}, a.owner), el('td', {}, a.addr),
    el('td', { title: a.connected_since, class: 'since' }, ago(a.connected_since)),
    el('td', {}, (a.tunnels || []).map((n) => [el('a', { href: '#/tunnel/' + enc(n) }, n), ' '])),
    el('td', {}, armed('Kick', 'Kick?', { 'data-kick-agent': a.id }, async () => {
      await api('DELETE', '/api/v1/agents/' + enc(a.id));
    })));
  const update = (row, a) => { row.querySelector('.since').textContent = ago(a.connected_since); };
  const draw = () => keyed(body, state.agents, (a) => a.id, create, update, 7, 'No agents connected.');
  draw();
  onPage((type) => { if (type === 'lists') draw(); });
}

async function tokens(main) {
  if (!state.admin) {
    main.replaceChildren(el('h1', {}, 'Tokens'), el('p', { class: 'muted' }, 'Only the admin manages tokens.'));
    return;
  }
  const body = el('tbody', {});
  const minted = el('div', { id: 'minted' });
  const subject = el('input', { id: 'mint-subject', required: true, placeholder: 'ws-123' });
  const ids = el('input', { id: 'mint-ids', placeholder: 'ws-123*, demo' });
  const ttl = el('select', { id: 'mint-ttl' }, [['1h', 3600], ['1 day', 86400], ['7 days', 604800], ['30 days', 2592000], ['90 days', 7776000]]
    .map(([l, v]) => el('option', { value: v, selected: v === 2592000 }, l)));
  const admin = el('input', { id: 'mint-admin', type: 'checkbox' });
  const form = el('form', { class: 'inline panel', id: 'mint-form' },
    el('label', {}, 'Subject', subject), el('label', {}, 'Names (comma-separated patterns)', ids),
    el('label', {}, 'Lifetime', ttl), el('label', {}, 'Admin', admin),
    el('button', { type: 'submit', class: 'primary' }, 'Mint'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const req = { subject: subject.value.trim(), ttl_secs: Number(ttl.value), admin: admin.checked };
    const list = ids.value.split(',').map((s) => s.trim()).filter(Boolean);
    if (list.length) req.ids = list;
    try {
      const r = await api('POST', '/api/v1/tokens', req);
      minted.replaceChildren(el('div', { class: 'panel' },
        el('p', {}, 'Token for ', el('strong', {}, r.subject), ' (id ', r.id, '). It is shown once: copy it now.'),
        el('code', { class: 'token', id: 'minted-token' }, r.token)));
      await load();
    } catch (e) { flash(e.message); }
  });
  main.replaceChildren(el('h1', {}, 'Tokens'), form, minted,
    el('table', { id: 'tokens-table' }, el('thead', {}, el('tr', {},
      ['Id', 'Subject', 'Kind', 'Names', 'Minted', 'Expires', 'State', ''].map((h) => el('th', {}, h)))), body));
  async function load() {
    const r = await api('GET', '/api/v1/tokens');
    body.replaceChildren();
    if (!r.tokens.length) body.append(el('tr', {}, el('td', { colspan: 8, class: 'empty' }, 'No tokens minted with this relay’s state directory.')));
    for (const tk of r.tokens) {
      const st = tk.revoked ? ['bad', 'revoked'] : tk.expired ? ['warn', 'expired'] : ['ok', 'active'];
      body.append(el('tr', { 'data-token': tk.id },
        el('td', { class: 'muted' }, tk.id), el('td', {}, tk.subject), el('td', {}, tk.kind),
        el('td', {}, (tk.ids || []).join(', ') || '(subject)'), el('td', {}, tk.minted), el('td', {}, tk.expires || 'never'),
        el('td', {}, el('span', { class: 'pill ' + st[0] }, st[1])),
        el('td', {}, tk.revoked ? null : armed('Revoke', 'Revoke?', { 'data-revoke': tk.id }, async () => {
          await api('DELETE', '/api/v1/tokens/' + enc(tk.id));
          await load();
        }))));
    }
  }
  await load();
}

function describe(type, d) {
  if (type === 'request_captured' && d.request) {
    const r = d.request;
    return (d.tunnel ? d.tunnel.name + ': ' : '') + r.method + ' ' + r.path + ' → ' + r.status + ' (' + r.duration_ms + ' ms)' + (r.replay_of ? ' replay of #' + r.replay_of : '');
  }
  if (d.tunnel) return d.tunnel.name + ' ' + d.tunnel.public_url + ' (' + d.tunnel.owner + ')';
  if (d.agent) return d.agent.client_id + ' from ' + d.agent.addr + ' (' + d.agent.owner + ')';
  return JSON.stringify(d);
}

async function events(main) {
  const list = el('ul', { class: 'feed', id: 'feed' });
  const item = (e) => el('li', { 'data-type': e.type },
    el('span', { class: 'muted' }, clock(e.data.time || new Date().toISOString()), ' '),
    el('strong', {}, e.type), ' ', describe(e.type, e.data));
  main.replaceChildren(el('h1', {}, 'Events'), el('p', { class: 'muted' }, 'Live from the relay; the last ' + MAX_FEED + ' are kept while this tab is open.'), list);
  list.append(...state.feed.map(item));
  onPage((type, data) => {
    if (type === 'traffic' || type === 'lists' || type === 'lagged') return;
    list.prepend(item({ type, data }));
    while (list.children.length > MAX_FEED) list.lastChild.remove();
  });
}

// ---------- login ----------

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.live) state.live.stop();
  state.live = null;
  state.traffic.clear();
  state.feed = [];
  for (const f of state.cleanup.splice(0)) f();
  $('#main').replaceChildren();
  $('#nav').hidden = true;
  $('#logout').hidden = true;
  $('#live').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
  $('#token').value = '';
}

async function boot() {
  try {
    await loadLists();
  } catch (e) {
    if (e.message !== 'unauthorized') logout(e.message);
    return;
  }
  const probe = await fetch('/api/v1/tokens', { headers: { Authorization: 'Bearer ' + token() }, cache: 'no-store' });
  state.admin = probe.ok;
  $('#nav-tokens').hidden = !state.admin;
  $('#login').hidden = true;
  $('#nav').hidden = false;
  $('#logout').hidden = false;
  state.live = new Live();
  state.live.run();
  await render();
}

document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('#token').value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    $('#login-error').textContent = '';
    boot();
  });
  $('#logout').addEventListener('click', () => logout(''));
  window.addEventListener('hashchange', () => { if (token()) render(); });
  if (token()) boot(); else logout('');
});
