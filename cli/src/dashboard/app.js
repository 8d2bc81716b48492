// The node dashboard: polls /api/state every second and redraws. Text from
// the node goes into the page as text only (textContent), never as markup.
'use strict';

const token = new URLSearchParams(location.search).get('token');
const api = 'api/state' + (token ? '?token=' + encodeURIComponent(token) : '');

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = el('tr');
  for (const cell of cells) {
    const td = el('td');
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell;
    tr.appendChild(td);
  }
  return tr;
}

function fill(id, rows, empty) {
  const body = document.querySelector('#' + id + ' tbody');
  body.replaceChildren(...rows);
  if (rows.length === 0) {
    const td = el('td', empty, 'muted');
    td.colSpan = document.querySelectorAll('#' + id + ' thead th').length;
    const tr = el('tr');
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

const openImports = new Set();

function short(id) { return id.length > 12 ? '…' + id.slice(-8) : id; }
function bytes(n) {
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + ' MiB';
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + ' KiB';
  return n + ' B';
}

function draw(state) {
  const s = state.status;
  document.getElementById('peer-id').textContent = s.peer_id;
  document.getElementById('summary').textContent =
    `${s.services.length} service(s) · ${s.peers.length} peer(s) connected · ` +
    `${s.routing_table} in the routing table · ${s.provider_records} provider record(s) held · ` +
    `reach ${s.reach.reachability}` +
    (s.reach.relayed.length ? ` (${s.reach.relayed.length} relay reservation(s))` : '');
  document.getElementById('updated').textContent =
    'updated ' + new Date().toLocaleTimeString() + ' · listening on ' + s.listen.join(', ');

  fill('services', s.services.map((v) => {
    const group = v.group;
    return row([
      `${v.name} ${v.version}`,
      el('span', v.role, 'role ' + v.role),
      el('span', v.content_id.slice(0, 12) + ' · ' + bytes(v.size), 'mono'),
      group ? String(group.providers) : (state.providers[v.name] ?? '…'),
      `${v.busy_invocations} / ${v.limit}`,
      v.calls_per_s.toFixed(1),
      v.busy_per_s.toFixed(1),
      v.p95_ms == null ? '–' : v.p95_ms.toFixed(1) + ' ms',
      group ? (group.last_decision || `needs ${group.needed}`) : '–',
    ]);
  }), 'no services yet');
  document.getElementById('standby').textContent =
    s.standby.length ? 'standby for: ' + s.standby.join(', ') : '';

  fill('transfers', s.transfers.map((t) => row([
    t.target,
    t.stage,
    t.total ? `${bytes(t.bytes)} of ${bytes(t.total)} (${Math.floor(100 * t.bytes / t.total)}%)` : bytes(t.bytes),
    el('span', t.provider ? short(t.provider) : '–', 'mono'),
  ])), 'none');

  const events = document.getElementById('events');
  events.replaceChildren(...state.events.slice().reverse().map((e) => {
    const li = el('li');
    li.appendChild(el('span', new Date(e.at_ms).toLocaleTimeString() + ' ', 'muted'));
    li.appendChild(el('span', e.kind, 'kind'));
    li.appendChild(el('span', ' ' + e.text, e.kind === 'peer-banned' || e.kind === 'checked-wrong' ? 'bad' : ''));
    return li;
  }));
  if (state.events.length === 0) events.appendChild(el('li', 'nothing yet', 'muted'));

  const audits = document.getElementById('audits');
  audits.replaceChildren(...state.audits.map((a) => {
    const box = el('div', null, 'audit');
    box.appendChild(el('h3', `${a.name} ${a.version}`));
    box.appendChild(el('div', 'publisher ' + a.publisher + ' · package ' + a.content_id.slice(0, 16), 'mono muted'));
    box.appendChild(el('div', 'capabilities: ' + (a.capabilities.length ? a.capabilities.join('; ') : 'none')));
    const exports = el('ul', null, 'mono');
    for (const e of a.exports) exports.appendChild(el('li', e));
    box.appendChild(el('div', 'exports'));
    box.appendChild(exports);
    // Kept open across redraws once the reader opens it.
    const details = el('details');
    details.open = openImports.has(a.content_id);
    details.addEventListener('toggle', () => {
      if (details.open) openImports.add(a.content_id); else openImports.delete(a.content_id);
    });
    details.appendChild(el('summary', `imports (${a.imports.length})`));
    const imports = el('ul', null, 'mono');
    for (const [name, how] of a.imports) imports.appendChild(el('li', `${name}: ${how}`));
    details.appendChild(imports);
    box.appendChild(details);
    return box;
  }));
  if (state.audits.length === 0) audits.appendChild(el('p', 'no services yet', 'muted'));

  // Each connection: direct or through a relay, dialled here or there.
  const peers = document.getElementById('peers');
  peers.replaceChildren(...s.connections.map((c) =>
    el('li', `${c.path} ${c.direction} ${c.peer} ${c.remote}`)));
  if (s.connections.length === 0) peers.appendChild(el('li', 'none', 'muted'));

  fill('announcements', s.announcements.map((a) => row([
    el('span', a.key, 'mono'), a.state + (a.error ? ': ' + a.error : ''), String(a.peers),
  ])), 'none');
  const c = s.counters;
  document.getElementById('uploads').textContent =
    `${c.transfer_requests} transfer request(s), ${c.busy} answered busy, ` +
    `${c.blocks_served} block(s) served, ${bytes(c.bytes_uploaded)} uploaded`;
}

async function poll() {
  try {
    const response = await fetch(api, { cache: 'no-store' });
    if (!response.ok) throw new Error(response.status + ' ' + (await response.text()));
    draw(await response.json());
  } catch (error) {
    document.getElementById('updated').textContent = 'cannot reach the node: ' + error.message;
  }
  setTimeout(poll, 1000);
}

poll();
