// starsync operator's dashboard: one small script with no dependencies and no build step, served
// by the hub itself (hubs run on closed networks). It only calls the admin API (PROTOCOL §6) and
// reads the admin event stream (PROTOCOL §12) to refresh as things happen.
//
// Two rules hold throughout (tests/api/dashboard.rs checks for the APIs that would break them):
// - Data from the server reaches the page only as text (textContent, createTextNode, attribute
//   values), never parsed as HTML, so a node name or entity field cannot become markup.
// - The admin token lives in this tab's session storage alone: never in local storage, a cookie
//   or a URL. Sign-out and any 401 forget it.
'use strict';

(() => {
  const TOKEN_KEY = 'starsync.adminToken';
  // Polling interval while the event stream is down: 5 s, or `?poll=<seconds>` (1 to 3600) in
  // the page's address (for a hub where operators want less traffic; the tests use a long one
  // so that only the event stream can explain an update).
  const POLL_MS = (() => {
    const n = Number(new URLSearchParams(location.search).get('poll'));
    return Number.isFinite(n) && n >= 1 && n <= 3600 ? Math.round(n * 1000) : 5000;
  })();
  // While the stream is live, a slow poll still runs: admin writes (a conflict resolved
  // elsewhere, an entity written through the API) send no event, and "2 min ago" must age.
  const LIVE_POLL_MS = Math.max(60000, POLL_MS);
  // Events come in bursts (one exchange often brings a conflict with it): the first one waits
  // this long for the rest, and event-driven refreshes start at most once per MIN_GAP_MS.
  const DEBOUNCE_MS = 200;
  const MIN_GAP_MS = 1000;
  // Reconnecting after the stream failed: 1 s, doubling to 30 s, with some jitter so that many
  // dashboards do not come back at once after a hub restart.
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 30000;
  const PAGE = 50;
  // The API sits beside /admin/ (also behind a proxy that mounts the hub under a prefix).
  const API = location.pathname.replace(/admin\/[^/]*$/, '') + 'api/sync';
  const VIEWS = ['overview', 'nodes', 'conflicts', 'entities'];

  const $ = (id) => document.getElementById(id);

  // ---------- DOM helpers (text only) ----------

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = String(v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    delete node.dataset.sig;
    return node;
  }

  /**
   * Puts `rows` into a table body unless it already shows the same thing: polling then leaves
   * an unchanged table alone, so a click or a text selection in it is not lost every few seconds.
   */
  function fillRows(tbody, rows) {
    const sig = rows.map((r) => r.className + '|' + (r.dataset.id || r.dataset.nodeId || '') + '|' + r.textContent).join('\n');
    if (tbody.dataset.sig === sig && tbody.rows.length === rows.length) return;
    clear(tbody).append(...rows);
    tbody.dataset.sig = sig;
  }

  function setText(id, text) {
    $(id).textContent = text === undefined || text === null ? '' : String(text);
  }

  function ago(ts) {
    if (!ts) return 'never';
    const s = Math.round((Date.now() - Date.parse(ts)) / 1000);
    if (!Number.isFinite(s)) return ts;
    if (s < 5) return 'just now';
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  /** A time cell: relative, with the exact time on hover. */
  function timeCell(ts) {
    return el('td', { title: ts || '' }, ago(ts));
  }

  function stateBadge(active) {
    return el('span', { class: active ? 'badge ok' : 'badge off' }, active ? 'active' : 'disabled');
  }

  // JSON with sorted keys, so two versions compare by content, not key order.
  function stable(v) {
    if (Array.isArray(v)) return '[' + v.map(stable).join(',') + ']';
    if (v && typeof v === 'object') {
      return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + stable(v[k])).join(',') + '}';
    }
    return JSON.stringify(v);
  }

  /**
   * Shows `data` as indented JSON in `pre`, one line per top-level field; fields whose value
   * differs in `other` are marked, so the two sides of a conflict can be compared at a glance.
   */
  function renderJson(pre, data, other) {
    clear(pre);
    if (data === null || data === undefined) {
      pre.append(el('span', { class: 'muted' }, '(deleted: no data)'));
      return;
    }
    if (typeof data !== 'object' || Array.isArray(data)) {
      pre.append(JSON.stringify(data, null, 2));
      return;
    }
    const keys = Object.keys(data);
    pre.append('{\n');
    keys.forEach((k, i) => {
      const differs = other !== undefined &&
        (other === null || typeof other !== 'object' || stable(other[k]) !== stable(data[k]));
      const value = JSON.stringify(data[k], null, 2).replace(/\n/g, '\n  ');
      const line = '  ' + JSON.stringify(k) + ': ' + value + (i < keys.length - 1 ? ',' : '') + '\n';
      pre.append(el('span', { class: differs ? 'changed' : null }, line));
    });
    pre.append('}');
  }

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) throw new ApiError(401, 'unauthorized', 'Not signed in.');
    const init = {
      method,
      headers: { Authorization: 'Bearer ' + token, Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(API + path, init);
    } catch (e) {
      throw new ApiError(0, 'unreachable', 'The hub cannot be reached (' + e.message + ').');
    }
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (!resp.ok) {
      const code = (data && data.error) || 'http_' + resp.status;
      const message = (data && data.message) || 'HTTP ' + resp.status;
      if (resp.status === 401) signOut('The hub did not accept this token: ' + message);
      else if (resp.status === 403) signOut('That is a node token; sign in with the admin token.');
      throw new ApiError(resp.status, code, message);
    }
    return data;
  }

  const enc = encodeURIComponent;

  // ---------- state, sign-in, navigation ----------

  const state = {
    nodes: new Map(), // node_id → node
    sample: null, // last {t, n} of packets_received, for exchanges/s
    conflict: null, // the conflict open in the detail
    entityType: '',
    pageStarts: [], // `after` of each page seen, for "first page"
    nextAfter: null,
    entityRows: new Map(),
  };

  function signedIn() {
    return sessionStorage.getItem(TOKEN_KEY) !== null;
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    disconnect();
    hideToken();
    state.nodes.clear();
    state.sample = null;
    state.conflict = null;
    for (const id of ['ov-table', 'nodes-table', 'conflicts-table', 'entities-table']) {
      clear($(id).tBodies[0]);
    }
    $('conflict-detail').hidden = true;
    $('entity-detail').hidden = true;
    setText('signin-error', message || '');
    setText('status-line', '');
    render();
  }

  function currentView() {
    const v = location.hash.slice(1);
    return VIEWS.includes(v) ? v : 'overview';
  }

  function render() {
    const inside = signedIn();
    $('signin-view').hidden = inside;
    $('nav').hidden = !inside;
    $('signout').hidden = !inside;
    const view = currentView();
    for (const v of VIEWS) $(v + '-view').hidden = !inside || v !== view;
    for (const a of $('nav').querySelectorAll('a')) {
      if (a.getAttribute('href') === '#' + view) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    $('live-indicator').hidden = !inside;
    if (inside) {
      connect();
      refresh(true);
    } else $('token-input').focus();
  }

  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('token-input');
    const token = input.value.trim();
    input.value = '';
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    setText('signin-error', '');
    try {
      await api('GET', '/status');
      if (!VIEWS.includes(location.hash.slice(1))) location.hash = '#overview';
      render();
    } catch (e) {
      if (e.status !== 401 && e.status !== 403) {
        sessionStorage.removeItem(TOKEN_KEY);
        setText('signin-error', e.message);
      }
    }
  });

  $('signout').addEventListener('click', () => signOut('Signed out.'));
  window.addEventListener('hashchange', render);

  // ---------- refreshing: the event stream, polling while it is down ----------

  let busy = false;
  // A refresh asked for while one runs: it runs again afterwards (the running one may have read
  // the hub before the event that asked for it), once for any number of asks.
  let again = false;
  let againViewChanged = false;

  async function refresh(viewChanged) {
    if (busy) {
      again = true;
      againViewChanged = againViewChanged || viewChanged;
      return;
    }
    busy = true;
    clearTimeout(poll.timer);
    try {
      const view = currentView();
      if (view === 'overview') await loadOverview();
      else if (view === 'nodes') await loadNodes();
      else if (view === 'conflicts') await loadConflicts();
      else if (view === 'entities' && viewChanged) await loadEntityTypes();
      if (signedIn()) {
        setText('status-line', 'Updated ' + new Date().toLocaleTimeString() + ' · ' +
          (live.on ? 'live: updates as the hub reports changes' : 'refreshes every ' + POLL_MS / 1000 + ' s'));
        $('status-line').classList.remove('error');
      }
    } catch (e) {
      if (signedIn()) {
        setText('status-line', e.message);
        $('status-line').classList.add('error');
      }
    } finally {
      busy = false;
    }
    if (again) {
      const changed = againViewChanged;
      again = false;
      againViewChanged = false;
      refresh(changed);
    } else schedulePoll();
  }

  // The next poll, counted from the last refresh whatever caused it: a busy stream leaves no
  // room for polls at all.
  const poll = { timer: null };
  function schedulePoll() {
    clearTimeout(poll.timer);
    if (!signedIn()) return;
    poll.timer = setTimeout(() => {
      if (signedIn() && !document.hidden) refresh(false);
      else schedulePoll();
    }, live.on ? LIVE_POLL_MS : POLL_MS);
  }

  // Which views an admin event changes (PROTOCOL §12): an exchange moves pending counts, last
  // syncs and the exchange rate, and may bring conflicts; a node event changes the node list
  // (and the names the conflicts show).
  const AFFECTS = {
    exchange: ['overview', 'nodes', 'conflicts'],
    conflict: ['overview', 'conflicts'],
    node: ['overview', 'nodes', 'conflicts'],
  };

  const live = {
    on: false,
    controller: null, // aborts the open stream
    retryMs: RETRY_MIN_MS,
    retryTimer: null,
    eventTimer: null,
    lastEventRefresh: 0,
    dirty: new Set(), // views an event changed since the last event-driven refresh
    conflictSeen: false, // a conflict event since then (the navigation's count)
  };

  function setLive(on) {
    const changed = live.on !== on;
    live.on = on;
    const ind = $('live-indicator');
    ind.textContent = on ? 'live' : 'polling';
    ind.className = 'indicator ' + (on ? 'live' : 'polling');
    ind.title = on
      ? 'Connected to the hub\'s event stream: the views refresh as soon as something happens.'
      : 'The event stream is not connected: the views refresh every ' + POLL_MS / 1000 + ' s.';
    // Coming back: catch up on whatever happened while the stream was down. Going down: poll
    // at the short interval from now on.
    if (changed && signedIn()) {
      if (on) refresh(false);
      else schedulePoll();
    }
  }

  /**
   * Opens the admin event stream. EventSource cannot send the Authorization header, and the
   * token must not go into a URL, so the stream is read with fetch and parsed here.
   */
  function connect() {
    if (live.controller || !signedIn()) return;
    clearTimeout(live.retryTimer);
    const token = sessionStorage.getItem(TOKEN_KEY);
    const controller = new AbortController();
    live.controller = controller;
    readStream(token, controller).then(
      () => streamEnded(controller, null),
      (e) => streamEnded(controller, e),
    );
  }

  function disconnect() {
    clearTimeout(live.retryTimer);
    clearTimeout(live.eventTimer);
    clearTimeout(poll.timer);
    if (live.controller) live.controller.abort();
    live.controller = null;
    live.retryMs = RETRY_MIN_MS;
    setLive(false);
  }

  function streamEnded(controller, error) {
    if (live.controller !== controller) return; // signed out or replaced meanwhile
    live.controller = null;
    setLive(false);
    if (!signedIn()) return;
    const delay = Math.round(live.retryMs * (0.8 + Math.random() * 0.4));
    live.retryMs = Math.min(live.retryMs * 2, RETRY_MAX_MS);
    const ind = $('live-indicator');
    ind.title += ' Reconnecting in ' + Math.round(delay / 1000) + ' s' +
      (error && error.message ? ' (' + error.message + ')' : '') + '.';
    live.retryTimer = setTimeout(connect, delay);
  }

  async function readStream(token, controller) {
    const resp = await fetch(API + '/events', {
      headers: { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' },
      cache: 'no-store',
      credentials: 'omit',
      signal: controller.signal,
    });
    if (resp.status === 401 || resp.status === 403) {
      signOut(resp.status === 401 ? 'The hub no longer accepts this token.' : 'That is a node token; sign in with the admin token.');
      return;
    }
    if (!resp.ok || !resp.body) throw new Error('HTTP ' + resp.status);
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let kind = '';
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      if (live.controller !== controller) return;
      // Any line (the server's first comment, a keep-alive) proves the stream works.
      if (!live.on) {
        live.retryMs = RETRY_MIN_MS;
        setLive(true);
      }
      buffer += decoder.decode(value, { stream: true });
      // Server-Sent Events: lines end with \n (or \r\n); a blank line ends an event; lines
      // starting with ':' are comments; `field: value` otherwise.
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        let line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (data.length) onEvent(kind || 'message', data.join('\n'));
          kind = '';
          data = [];
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'event') kind = val;
        else if (field === 'data') data.push(val);
      }
    }
  }

  // Refreshes the view shown if the event concerns it, soon but not for every event of a burst.
  function onEvent(kind) {
    const views = AFFECTS[kind];
    if (!views) return; // a kind this page does not know: nothing it shows depends on it
    for (const v of views) live.dirty.add(v);
    if (kind === 'conflict') live.conflictSeen = true;
    const view = currentView();
    if (!live.dirty.has(view) && !live.conflictSeen) return;
    if (live.eventTimer) return; // already scheduled: this event rides along
    const wait = Math.max(DEBOUNCE_MS, live.lastEventRefresh + MIN_GAP_MS - Date.now());
    live.eventTimer = setTimeout(eventRefresh, wait);
  }

  function eventRefresh() {
    live.eventTimer = null;
    live.lastEventRefresh = Date.now();
    const view = currentView();
    const stale = live.dirty.has(view);
    const conflictSeen = live.conflictSeen;
    live.dirty.clear();
    live.conflictSeen = false;
    if (!signedIn()) return;
    if (stale) refresh(false);
    // Elsewhere only the conflict count in the navigation changes.
    if (conflictSeen && view !== 'overview' && view !== 'conflicts') {
      guarded(async () => showConflictCount((await api('GET', '/status')).unresolved_conflicts));
    }
  }

  async function fetchNodes() {
    const list = (await api('GET', '/nodes')).nodes;
    state.nodes = new Map(list.map((n) => [n.node_id, n]));
    return list;
  }

  function nodeLabel(id) {
    if (!id) return 'the hub';
    const n = state.nodes.get(id);
    return n ? n.code : id;
  }

  function showConflictCount(n) {
    const badge = $('nav-conflicts');
    badge.hidden = !n;
    badge.textContent = String(n);
  }

  // ---------- overview ----------

  async function loadOverview() {
    const [status, nodes] = await Promise.all([api('GET', '/status'), fetchNodes()]);
    const active = nodes.filter((n) => n.active).length;
    setText('ov-nodes', nodes.length);
    setText('ov-nodes-sub', active + ' active · ' + (nodes.length - active) + ' disabled');

    const pending = nodes.reduce((s, n) => s + n.pending_changes, 0);
    const most = nodes.reduce((m, n) => (!m || n.pending_changes > m.pending_changes ? n : m), null);
    setText('ov-pending', pending);
    setText('ov-pending-sub', most && most.pending_changes ? 'most: ' + most.code + ' (' + most.pending_changes + ')' : 'every node is up to date');

    const last = nodes.map((n) => n.last_sync_in).filter(Boolean).sort().pop();
    setText('ov-last-sync', ago(last));
    const lastNode = nodes.find((n) => n.last_sync_in === last);
    setText('ov-last-sync-sub', last ? (lastNode ? lastNode.code + ' · ' : '') + last : 'no node has synced yet');

    // Exchanges per second: the change of packets_received (every exchange carries one node
    // packet) between two readings, over the hub's own clock.
    const t = Date.parse(status.timestamp);
    const n = status.packets_received || 0;
    if (state.sample && t > state.sample.t && n >= state.sample.n) {
      const secs = (t - state.sample.t) / 1000;
      const rate = (n - state.sample.n) / secs;
      setText('ov-rate', rate >= 10 ? rate.toFixed(0) : rate.toFixed(2));
      setText('ov-rate-sub', 'over the last ' + Math.round(secs) + ' s · ' + n + ' in all');
    } else {
      setText('ov-rate', '…');
      setText('ov-rate-sub', 'measuring · ' + n + ' in all');
    }
    state.sample = { t, n };

    setText('ov-conflicts', status.unresolved_conflicts);
    showConflictCount(status.unresolved_conflicts);
    setText('ov-entities', status.entities);

    const top = nodes.slice().sort((a, b) => b.pending_changes - a.pending_changes).slice(0, 20);
    const rows = [];
    for (const node of top) {
      rows.push(el('tr', { 'data-node-id': node.node_id },
        el('td', {}, el('strong', {}, node.code)),
        el('td', {}, node.name),
        el('td', {}, stateBadge(node.active)),
        el('td', { class: 'num' }, node.pending_changes),
        timeCell(node.last_sync_in)));
    }
    if (!nodes.length) rows.push(el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'No node is registered yet.')));
    fillRows($('ov-table').tBodies[0], rows);
  }

  // ---------- nodes ----------

  async function loadNodes() {
    const nodes = await fetchNodes();
    const rows = [];
    for (const node of nodes) {
      rows.push(el('tr', { 'data-node-id': node.node_id },
        el('td', {}, el('strong', {}, node.code)),
        el('td', { title: node.description || '' }, node.name),
        el('td', {}, stateBadge(node.active)),
        el('td', { class: 'num' }, node.pending_changes),
        timeCell(node.last_sync_in),
        timeCell(node.last_sync_out),
        el('td', { class: 'muted' }, node.last_device || '–'),
        timeCell(node.created_at),
        el('td', { class: 'actions' },
          node.active
            ? el('button', { type: 'button', class: 'node-disable', onclick: () => setActive(node, false) }, 'Disable')
            : el('button', { type: 'button', class: 'node-enable', onclick: () => setActive(node, true) }, 'Enable'),
          el('button', { type: 'button', class: 'node-rotate', onclick: () => rotate(node) }, 'Rotate token'))));
    }
    if (!nodes.length) rows.push(el('tr', {}, el('td', { colspan: 9, class: 'muted' }, 'No node is registered yet.')));
    fillRows($('nodes-table').tBodies[0], rows);
  }

  function confirmAction(text, okLabel) {
    const dialog = $('confirm');
    setText('confirm-text', text);
    setText('confirm-ok', okLabel);
    dialog.returnValue = '';
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    });
  }

  async function setActive(node, active) {
    if (!active && !(await confirmAction('Disable node ' + node.code + '? Its token is refused until it is enabled again.', 'Disable'))) return;
    try {
      await api('POST', '/nodes/' + enc(node.node_id) + (active ? '/enable' : '/disable'));
      await refresh(true);
    } catch (e) {
      setText('status-line', e.message);
    }
  }

  async function rotate(node) {
    if (!(await confirmAction('Issue a new token for ' + node.code + '? Its current token stops working at once; the node syncs again only with the new one.', 'Rotate token'))) return;
    try {
      const answer = await api('POST', '/nodes/' + enc(node.node_id) + '/token');
      setText('token-node', node.code);
      setText('new-token', answer.auth_token);
      $('token-panel').hidden = false;
    } catch (e) {
      setText('status-line', e.message);
    }
  }

  // The new token exists only in this panel; hiding it removes it from the page.
  function hideToken() {
    setText('new-token', '');
    setText('token-node', '');
    $('token-panel').hidden = true;
  }
  $('token-done').addEventListener('click', hideToken);

  // ---------- conflicts ----------

  async function loadConflicts() {
    if (!state.nodes.size) await fetchNodes();
    const unresolved = $('unresolved-only').checked;
    const list = (await api('GET', '/conflicts?limit=200' + (unresolved ? '&unresolved=true' : ''))).conflicts;
    // A node registered since the list was read (its first exchange may bring the conflict).
    if (list.some((c) => (c.node_id || c.source_node_id) && !state.nodes.has(c.node_id || c.source_node_id))) await fetchNodes();
    if (unresolved) showConflictCount(list.length);
    const rows = [];
    for (const c of list) {
      const open = state.conflict && state.conflict.id === c.id;
      rows.push(el('tr', { 'data-id': c.id, class: open ? 'selected' : null, tabindex: 0, onclick: () => guarded(() => openConflict(c)), onkeydown: (ev) => { if (ev.key === 'Enter') guarded(() => openConflict(c)); } },
        timeCell(c.arrival_time),
        el('td', {}, c.entity_type),
        el('td', { class: 'mono' }, c.entity_uuid),
        el('td', {}, nodeLabel(c.node_id || c.source_node_id)),
        el('td', {}, c.conflict_resolution),
        el('td', { class: 'num' }, c.server_version),
        el('td', {}, c.resolved_at
          ? el('span', { class: 'badge ok', title: c.resolved_at }, 'resolved by ' + (c.resolved_by || '?'))
          : el('span', { class: 'badge warn' }, 'unresolved'))));
    }
    fillRows($('conflicts-table').tBodies[0], rows);
    $('conflicts-empty').hidden = list.length > 0;
  }

  $('unresolved-only').addEventListener('change', () => refresh(true));

  async function openConflict(c) {
    state.conflict = c;
    for (const tr of $('conflicts-table').tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.id === c.id);
    const detail = $('conflict-detail');
    detail.hidden = false;
    setText('resolve-result', '');
    $('resolve-result').className = '';
    setText('cd-title', c.entity_type + ' / ' + c.entity_uuid);
    setText('cd-meta', 'Conflict ' + c.id + ' · ' + c.conflict_resolution + ' · change from ' +
      nodeLabel(c.node_id || c.source_node_id) + ' arrived ' + ago(c.arrival_time) + ' (' + c.arrival_time +
      ') · the server was at version ' + c.server_version + ' then' +
      (c.resolved_at ? ' · resolved by ' + (c.resolved_by || '?') + ' at ' + c.resolved_at : ''));
    setText('cd-server-title', 'Server version (loading…)');
    clear($('server-json'));
    renderJson($('history-json'), c.serialized_data);
    const resolvable = !c.resolved_at;
    $('cd-actions').hidden = !resolvable;
    let server = null;
    try {
      server = await api('GET', '/entities/' + enc(c.entity_type) + '/' + enc(c.entity_uuid));
    } catch (e) {
      if (e.status !== 404) throw e;
    }
    if (state.conflict !== c) return; // another conflict was opened meanwhile
    const serverData = server && !server.deleted ? server.data : null;
    setText('cd-server-title', server
      ? 'Server version now: v' + server.version + (server.deleted ? ' (deleted)' : '') + ', updated ' + ago(server.updated_at)
      : 'Server version: the entity does not exist');
    renderJson($('server-json'), serverData, c.serialized_data);
    renderJson($('history-json'), c.serialized_data, serverData);
    $('history-json').dataset.loaded = 'true';
    $('cd-history-title').textContent = 'Losing version from ' + nodeLabel(c.node_id || c.source_node_id) + ' (kept in history)';
    $('resolve-json').value = JSON.stringify(serverData || c.serialized_data || {}, null, 2);
  }

  async function resolve(body, what) {
    const c = state.conflict;
    if (!c) return;
    const result = $('resolve-result');
    for (const b of $('cd-actions').querySelectorAll('button')) b.disabled = true;
    try {
      const entity = await api('POST', '/conflicts/' + enc(c.id) + '/resolve', body);
      result.className = 'ok';
      result.textContent = 'Resolved with ' + what + ': ' + entity.entity_type + ' / ' + entity.entity_uuid +
        ' is now version ' + entity.version + ', sent to every node.';
      $('cd-actions').hidden = true;
      renderJson($('server-json'), entity.deleted ? null : entity.data, c.serialized_data);
      setText('cd-server-title', 'Server version now: v' + entity.version);
      await loadConflicts();
    } catch (e) {
      result.className = 'error';
      result.textContent = 'Not resolved: ' + e.message;
    } finally {
      for (const b of $('cd-actions').querySelectorAll('button')) b.disabled = false;
    }
  }

  $('resolve-server').addEventListener('click', () => resolve({ use: 'server' }, 'the server version'));
  $('resolve-history').addEventListener('click', () => resolve({ use: 'history' }, 'the losing version'));
  $('resolve-edited').addEventListener('click', () => {
    let data;
    try {
      data = JSON.parse($('resolve-json').value);
    } catch (e) {
      $('resolve-result').className = 'error';
      setText('resolve-result', 'The edited text is not JSON: ' + e.message);
      return;
    }
    if (!data || typeof data !== 'object' || Array.isArray(data)) {
      $('resolve-result').className = 'error';
      setText('resolve-result', 'The edited version must be a JSON object ({ … }).');
      return;
    }
    resolve({ data }, 'the edited version');
  });

  // ---------- entities ----------

  async function loadEntityTypes() {
    const types = (await api('GET', '/entity-types')).entity_types;
    const select = clear($('entity-type'));
    select.append(el('option', { value: '' }, types.length ? 'choose a type…' : 'no entities yet'));
    for (const t of types) select.append(el('option', { value: t, selected: t === state.entityType }, t));
    if (state.entityType && types.includes(state.entityType)) await loadEntities(state.pageStarts[state.pageStarts.length - 1] || '');
  }

  async function loadEntities(after) {
    const type = state.entityType;
    if (!type) return;
    const page = await api('GET', '/entities?entity_type=' + enc(type) + '&limit=' + PAGE + (after ? '&after=' + enc(after) : ''));
    const body = clear($('entities-table').tBodies[0]);
    state.entityRows.clear();
    for (const e of page.entities) {
      state.entityRows.set(e.entity_uuid, e);
      const preview = e.deleted ? '' : JSON.stringify(e.data);
      body.append(el('tr', { 'data-id': e.entity_uuid, tabindex: 0, onclick: () => showEntity(e), onkeydown: (ev) => { if (ev.key === 'Enter') showEntity(e); } },
        el('td', { class: 'mono' }, e.entity_uuid),
        el('td', { class: 'num' }, e.version),
        timeCell(e.updated_at),
        el('td', {}, e.deleted ? el('span', { class: 'badge off' }, 'deleted') : el('span', { class: 'badge ok' }, 'live')),
        el('td', { class: 'mono preview' }, preview.length > 120 ? preview.slice(0, 119) + '…' : preview)));
    }
    $('entities-empty').hidden = page.entities.length > 0;
    state.nextAfter = page.next_after;
    $('entities-next').hidden = !page.next_after;
    $('entities-first').hidden = !after;
  }

  function showEntity(e) {
    $('entity-detail').hidden = false;
    setText('ed-title', e.entity_type + ' / ' + e.entity_uuid);
    setText('ed-meta', 'version ' + e.version + (e.deleted ? ' · deleted' : '') + ' · updated ' + (e.updated_at || '?'));
    renderJson($('ed-json'), e.deleted ? null : e.data);
  }

  async function guarded(f) {
    try {
      await f();
    } catch (e) {
      setText('status-line', e.message);
      $('status-line').classList.add('error');
    }
  }

  $('entity-type').addEventListener('change', () => guarded(async () => {
    state.entityType = $('entity-type').value;
    state.pageStarts = [''];
    $('entity-detail').hidden = true;
    clear($('entities-table').tBodies[0]);
    $('entities-next').hidden = true;
    $('entities-first').hidden = true;
    await loadEntities('');
  }));
  $('entities-next').addEventListener('click', () => guarded(async () => {
    if (!state.nextAfter) return;
    state.pageStarts.push(state.nextAfter);
    await loadEntities(state.nextAfter);
  }));
  $('entities-first').addEventListener('click', () => guarded(async () => {
    state.pageStarts = [''];
    await loadEntities('');
  }));
  $('entity-open').addEventListener('submit', (ev) => {
    ev.preventDefault();
    guarded(async () => {
      const type = $('entity-type').value;
      const id = $('entity-id').value.trim();
      if (!type || !id) {
        setText('status-line', 'Choose a type and give an id.');
        return;
      }
      try {
        showEntity(await api('GET', '/entities/' + enc(type) + '/' + enc(id)));
      } catch (e) {
        $('entity-detail').hidden = false;
        setText('ed-title', type + ' / ' + id);
        setText('ed-meta', e.message);
        clear($('ed-json'));
      }
    });
  });

  render();
})();
