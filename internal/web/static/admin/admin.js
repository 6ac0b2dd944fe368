// The operators' dashboard at /admin: every user's sessions by status, the
// workers' load, a filterable, paged table of sessions, one session's
// detail with its status history, and a disconnect with a confirmation;
// kept live by the admin event stream.
//
// Everything it shows comes from the admin API (role admin); the token and
// the stream (GET /api/integrations/admin/events) are handled by common.js,
// as on the session page: a link's token never replaces the one a tab
// holds. The stream says which sessions changed, each as the database holds
// it: a row on screen is replaced in place, and the counts, the workers and
// (on the first page) the list are read again shortly after, so a burst of
// changes costs a few reads, not one per change.
'use strict';
(() => {
  const { subjectOf, saveToken, forgetToken, chooseToken, request, follow } = window.wasessions;
  const API = '/api/integrations/admin';
  // The dashboard's own sentence for a refused token.
  const TEXTS = { 403: 'This token is not an operator\'s: the dashboard needs a token with role admin.' };
  const TOKEN_KEY = 'wasessions.admin-token';
  const STATUSES = ['pending', 'qr', 'connected', 'reconnecting', 'disconnected', 'logged_out', 'expired', 'failed'];
  const LIVE = ['pending', 'qr', 'connected', 'reconnecting'];
  const PAGE = 50;
  const $ = (id) => document.getElementById(id);
  const app = $('app');

  let token = null;
  let stream = null; // AbortController of the running event stream
  let filter = { status: '', worker: '', user: '' };
  let cursors = ['']; // cursor of each page shown so far; the last is the current page's
  let nextCursor = null;
  let shown = new Map(); // sessionId -> the session as last shown in the table
  let openId = null; // the session whose detail is open
  let openSession = null;
  let firstPaint = false;

  // --- small helpers -----------------------------------------------------------

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k in e) e[k] = v;
      else e.setAttribute(k, v);
    }
    e.append(...children.filter((c) => c !== null && c !== undefined));
    return e;
  }

  const dash = (v) => (v === null || v === undefined || v === '' ? '—' : String(v));

  function when(iso) {
    if (!iso) return '—';
    const t = new Date(iso);
    const ago = (Date.now() - t.getTime()) / 1000;
    const abs = Math.abs(ago);
    let rel;
    if (abs < 60) rel = `${Math.round(abs)} s`;
    else if (abs < 3600) rel = `${Math.round(abs / 60)} min`;
    else if (abs < 172800) rel = `${Math.round(abs / 3600)} h`;
    else rel = `${Math.round(abs / 86400)} d`;
    return ago >= 0 ? `${rel} ago` : `in ${rel}`;
  }

  function timeEl(iso) {
    if (!iso) return document.createTextNode('—');
    return el('time', { dateTime: iso, title: new Date(iso).toLocaleString() }, when(iso));
  }

  const badge = (status) => el('span', { className: 'badge ' + status }, status);

  function setError(msg) {
    $('error').textContent = msg || '';
    $('error').hidden = !msg;
  }

  function setStatus(text) {
    $('status').textContent = text || '';
  }

  function live(state, text) {
    $('live').dataset.live = state;
    $('live').textContent = text;
  }

  // --- the token (common.js) ----------------------------------------------------------

  function showSubject() {
    const sub = token ? subjectOf(token) : '';
    const p = $('subject');
    p.textContent = '';
    p.hidden = !token;
    if (!token) return;
    if (!sub) return void (p.textContent = 'This token names no user.');
    p.append('Signed in as operator ', el('strong', {}, sub));
  }

  function refuseLink(text) {
    $('link-refused').textContent = text || '';
    $('link-refused').hidden = !text;
  }

  function askToken(msg) {
    app.dataset.state = 'token';
    $('dash').hidden = true;
    $('token-view').hidden = false;
    $('forget').hidden = true;
    setStatus('Paste an operator token (role admin) to continue.');
    setError(msg || '');
    live('off', 'Not connected');
  }

  function rejectToken(msg) {
    forgetToken(TOKEN_KEY);
    if (stream) stream.abort();
    stream = null;
    token = null;
    refuseLink('');
    showSubject();
    closeDialogs();
    askToken(msg);
  }

  // start runs on load and on every change of the fragment.
  function start() {
    const { token: held, refused } = chooseToken(TOKEN_KEY, token);
    if (refused) refuseLink(refused);
    if (held === token && token) return;
    useToken(held);
  }

  function useToken(t) {
    if (stream) stream.abort();
    stream = null;
    token = t || null;
    showSubject();
    if (!token) return askToken('');
    $('token-view').hidden = true;
    $('forget').hidden = false;
    setError('');
    setStatus('Loading…');
    app.dataset.state = 'loading';
    stream = new AbortController();
    listen(stream);
  }

  // --- the API -------------------------------------------------------------------

  async function call(method, path) {
    try {
      return await request(API + path, { method, token, texts: TEXTS });
    } catch (e) {
      if (e.status === 401 || e.status === 403) rejectToken(e.message);
      throw e;
    }
  }

  // --- counts and workers --------------------------------------------------------------

  function renderLoad(load) {
    const counts = $('counts');
    counts.textContent = '';
    let total = 0;
    for (const st of STATUSES) {
      const n = load.sessionsByStatus[st] || 0;
      total += n;
      const b = el('button', { type: 'button', dataset: { status: st, testid: 'count-' + st } },
        el('span', { className: 'n' }, n.toLocaleString()), el('span', { className: 'k' }, st.replace('_', ' ')));
      b.setAttribute('aria-pressed', String(filter.status === st));
      b.addEventListener('click', () => applyFilter({ ...filter, status: filter.status === st ? '' : st }));
      counts.append(el('li', {}, b));
    }
    $('total').textContent = `${total.toLocaleString()} in all`;

    const list = $('workers');
    list.textContent = '';
    const ids = $('worker-ids');
    ids.textContent = '';
    for (const w of load.workers) {
      ids.append(el('option', { value: w.workerId }));
      const cap = w.capacity;
      const pct = cap ? Math.min(100, Math.round((w.hosted / cap) * 100)) : 0;
      const bar = el('span');
      bar.style.width = pct + '%'; // CSSOM, not a style attribute: allowed by the CSP
      const q = w.queue;
      const show = el('button', { type: 'button', className: 'link', dataset: { testid: 'worker-sessions' } }, 'Show its sessions');
      show.addEventListener('click', () => applyFilter({ ...filter, worker: w.workerId }));
      list.append(el('li', { dataset: { testid: 'worker', worker: w.workerId } },
        el('div', { className: 'name' }, w.workerId),
        el('div', { className: 'meter' + (cap && w.hosted >= cap ? ' full' : ''), role: 'meter', ariaValueNow: w.hosted,
          ariaValueMin: 0, ariaValueMax: cap || w.hosted, ariaLabel: 'sessions hosted' }, bar),
        el('div', { className: 'meta', dataset: { testid: 'worker-load' } },
          `${w.hosted} hosted` + (cap ? ` of ${cap} (${pct}%)` : ', capacity not yet known')),
        el('div', { className: 'meta' }, `queue ${q.name}: ${q.depth} waiting, oldest ${Math.round(q.latencyMs)} ms` +
          ` · tasks ${w.activeTasks}/${w.concurrency}`),
        el('div', { className: 'meta' }, `${w.host} pid ${w.pid}, up since `, timeEl(w.started)),
        show));
    }
    $('no-workers').hidden = load.workers.length > 0;
    const q = load.sharedQueue;
    $('shared-queue').textContent = `Shared queue ${q.name}: ${q.depth} waiting, oldest ${Math.round(q.latencyMs)} ms.`;
  }

  async function loadWorkers() {
    const { data } = await call('GET', '/workers');
    renderLoad(data);
  }

  // --- the table -------------------------------------------------------------------

  const leaseText = (s) => s.leaseState === 'held' ? `held (epoch ${s.leaseEpoch})` : s.leaseState;
  const workerText = (s) => s.workerId || (s.lastWorkerId ? `${s.lastWorkerId} (last)` : '—');

  function rowOf(s) {
    const open = el('button', { type: 'button', className: 'sid', dataset: { testid: 'open-session' } }, s.sessionId);
    // One wrapper per cell: on a phone each cell is a label and its value.
    const cell = (label, ...content) => el('td', { dataset: { label } }, el('span', {}, ...content));
    const tr = el('tr', { dataset: { session: s.sessionId, status: s.status, testid: 'session-row' } },
      cell('Session', open, el('div', { className: 'muted' }, 'user ' + s.userId)),
      cell('Status', badge(s.status), s.desiredState === 'gone' && LIVE.includes(s.status) ? ' (ending)' : null),
      cell('Reason', dash(s.statusReason)),
      cell('Worker', workerText(s)),
      cell('Lease', leaseText(s)),
      cell('Phone', dash(s.phoneNumber) + (s.userName ? ` (${s.userName})` : '')),
      cell('Last seen', timeEl(s.lastSeen)),
      cell('Expires', timeEl(s.expiresAt)),
      cell('Last error', dash(s.lastError)));
    tr.addEventListener('click', () => openDetail(s.sessionId));
    return tr;
  }

  function renderList(page) {
    const rows = $('rows');
    rows.textContent = '';
    shown = new Map();
    for (const s of page.sessions) {
      shown.set(s.sessionId, s);
      rows.append(rowOf(s));
    }
    nextCursor = page.nextCursor;
    $('empty').hidden = page.sessions.length > 0;
    $('newer').disabled = cursors.length <= 1;
    $('older').disabled = !nextCursor;
    const n = cursors.length;
    $('page-no').textContent = `Page ${n} · ${page.sessions.length} shown` + (nextCursor ? ', more older' : '');
  }

  function listQuery(cursor) {
    const p = new URLSearchParams({ limit: String(PAGE) });
    for (const k of ['status', 'worker', 'user']) if (filter[k]) p.set(k, filter[k]);
    if (cursor) p.set('cursor', cursor);
    return '/sessions?' + p.toString();
  }

  // loadList shows the current page; an answer that comes after the answer
  // to a later request (a filter changed meanwhile) is dropped.
  let listSeq = 0;
  async function loadList() {
    const seq = ++listSeq;
    const { data } = await call('GET', listQuery(cursors[cursors.length - 1]));
    if (seq === listSeq) renderList(data);
  }

  // matches says whether s belongs in the table under the current filter.
  const matches = (s) => (!filter.status || s.status === filter.status) &&
    (!filter.worker || s.lastWorkerId === filter.worker) && (!filter.user || s.userId === filter.user);

  // updateRow shows a changed session in place; it reports whether the
  // table needs reading again (the session left or joined the filter).
  function updateRow(s) {
    const old = $('rows').querySelector(`tr[data-session="${CSS.escape(s.sessionId)}"]`);
    if (!old) return cursors.length === 1 && matches(s);
    if (!matches(s)) return true;
    shown.set(s.sessionId, s);
    const tr = rowOf(s);
    tr.classList.add('changed');
    old.replaceWith(tr);
    return false;
  }

  // --- filters and paging ------------------------------------------------------------

  function filterFromURL() {
    const p = new URLSearchParams(location.search);
    filter = { status: p.get('status') || '', worker: p.get('worker') || '', user: p.get('user') || '' };
    if (!STATUSES.includes(filter.status)) filter.status = '';
    $('f-status').value = filter.status;
    $('f-worker').value = filter.worker;
    $('f-user').value = filter.user;
  }

  // applyFilter shows the first page of f and keeps f in the address (so a
  // filtered view can be bookmarked or sent; the token is never in it).
  async function applyFilter(f) {
    filter = f;
    $('f-status').value = f.status;
    $('f-worker').value = f.worker;
    $('f-user').value = f.user;
    for (const b of $('counts').querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.status === f.status));
    const p = new URLSearchParams();
    for (const k of ['status', 'worker', 'user']) if (f[k]) p.set(k, f[k]);
    history.replaceState(null, '', location.pathname + (p.toString() ? '?' + p : ''));
    cursors = [''];
    await guarded(loadList);
  }

  async function guarded(fn) {
    try {
      await fn();
      setError('');
    } catch (e) {
      if (e.status !== 401 && e.status !== 403) setError(e.message);
    }
  }

  // --- detail and disconnect ------------------------------------------------------------

  function field(dl, name, ...value) {
    dl.append(el('dt', {}, name), el('dd', { dataset: { field: name } }, ...value));
  }

  function renderDetail(det) {
    const s = det.session;
    openSession = s;
    $('detail-h').textContent = 'Session ' + s.sessionId;
    const dl = $('detail-fields');
    dl.textContent = '';
    field(dl, 'Status', badge(s.status), s.statusReason ? ` (${s.statusReason})` : '');
    field(dl, 'Wanted', s.desiredState === 'gone' ? 'gone: being disconnected' : 'linked');
    field(dl, 'User', s.userId);
    field(dl, 'Phone', dash(s.phoneNumber) + (s.userName ? ` (${s.userName})` : ''));
    field(dl, 'Worker', dash(s.workerId));
    field(dl, 'Last worker', dash(s.lastWorkerId));
    field(dl, 'Lease', leaseText(s) + (s.leaseUntil ? ' until ' : ''), s.leaseUntil ? timeEl(s.leaseUntil) : null);
    field(dl, 'Connected', s.isConnected ? 'yes' : 'no');
    field(dl, 'Last seen', timeEl(s.lastSeen));
    field(dl, 'Expires', timeEl(s.expiresAt));
    field(dl, 'Created', timeEl(s.createdAt));
    field(dl, 'Updated', timeEl(s.updatedAt));
    if (s.bannedUntil) field(dl, 'Banned until', timeEl(s.bannedUntil));
    field(dl, 'Last error', s.lastError ? `${s.lastError} (${s.lastErrorCode})` : '—');
    const canEnd = s.desiredState !== 'gone' && LIVE.includes(s.status);
    $('detail-disconnect').disabled = !canEnd;
    $('detail-disconnect').title = canEnd ? '' : 'The session has ended or is being disconnected.';

    const ol = $('history');
    ol.textContent = '';
    for (const h of det.history) {
      ol.append(el('li', { dataset: { testid: 'history-entry', status: h.status } },
        badge(h.status), h.reason ? ` ${h.reason}` : '', h.workerId ? ` on ${h.workerId}` : '',
        h.lastError ? el('div', { className: 'err' }, `${h.lastError} (${h.lastErrorCode})`) : null,
        el('div', { className: 'when' }, timeEl(h.at))));
    }
    if (!det.history.length) ol.append(el('li', {}, 'No change recorded (older history is pruned after 30 days).'));
  }

  async function loadDetail(id) {
    const { data } = await call('GET', '/sessions/' + encodeURIComponent(id));
    if (openId === id) renderDetail(data);
  }

  function detailNote(text) {
    $('detail-note').textContent = text || '';
    $('detail-note').hidden = !text;
  }

  async function openDetail(id) {
    openId = id;
    openSession = null;
    detailNote('');
    $('detail-h').textContent = 'Session ' + id;
    $('detail-fields').textContent = '';
    $('history').textContent = '';
    if (!$('detail').open) $('detail').showModal();
    try {
      await loadDetail(id);
    } catch (e) {
      detailNote(e.message);
    }
  }

  function closeDialogs() {
    openId = null;
    for (const d of [$('confirm'), $('detail')]) if (d.open) d.close();
  }

  function askDisconnect() {
    const s = openSession;
    if (!s) return;
    $('confirm-text').textContent = `Session ${s.sessionId} of user ${s.userId}` +
      (s.phoneNumber ? `, linked as ${s.phoneNumber}` : '') + '.';
    $('confirm').showModal();
  }

  async function disconnect() {
    const s = openSession;
    $('confirm').close();
    if (!s) return;
    $('detail-disconnect').disabled = true;
    try {
      const { data, status } = await call('POST', '/sessions/' + encodeURIComponent(s.sessionId) + '/disconnect');
      detailNote(status === 202 ? 'Disconnect requested: the worker is logging the device out.' : 'The session had already ended.');
      updateRow(data);
      await loadDetail(s.sessionId);
    } catch (e) {
      detailNote(e.message);
      $('detail-disconnect').disabled = false;
    }
  }

  // --- loading everything, and the live stream ----------------------------------------

  async function loadAll() {
    await Promise.all([loadList(), loadWorkers()]);
    if (openId) await loadDetail(openId);
    if (!firstPaint) {
      firstPaint = true;
      $('dash').hidden = false;
      setStatus('');
      app.dataset.state = 'ready';
      // The first useful paint: counts, workers and a page of sessions on
      // screen (docs/BENCHMARKS.md reads this mark).
      requestAnimationFrame(() => performance.mark('admin-ready'));
    }
  }

  // Reads scheduled by changes, at most one per kind a second.
  const timers = {};
  function soon(kind, fn, ms) {
    if (timers[kind]) return;
    timers[kind] = setTimeout(async () => {
      await guarded(fn);
      timers[kind] = null;
    }, ms);
  }

  function onSession(s) {
    if (updateRow(s)) soon('list', loadList, 1000);
    if (openId === s.sessionId) soon('detail', () => loadDetail(s.sessionId), 300);
    soon('workers', loadWorkers, 1000);
  }

  // listen follows the admin stream until ctl is aborted (common.js
  // reconnects, with backoff). Each ready event (first connect and every
  // reconnect) reads everything, so what happened while the stream was
  // down is shown.
  function listen(ctl) {
    return follow(API + '/events', {
      token, signal: ctl.signal, texts: TEXTS, refuse: [401, 403],
      refused: (err) => rejectToken(err.message),
      event: async (ev) => {
        if (ev.type === 'ready') {
          live('on', 'Live');
          if (!firstPaint) performance.mark('admin-stream-ready');
          await guarded(loadAll);
        } else if (ev.type === 'session') {
          onSession(ev.data);
        } else if (ev.type === 'resync') {
          soon('all', loadAll, 500);
        }
      },
      lost: async (e, delay) => {
        live('retry', `Live updates interrupted; retrying in ${Math.round(delay / 1000)} s`);
        // Without the stream the dashboard is still useful: show what the
        // API answers (once, on the first failure).
        if (!firstPaint) await guarded(loadAll);
        if (e.status && e.status !== 503) setError(e.message);
      },
    });
  }

  // --- wiring -------------------------------------------------------------------------

  for (const st of STATUSES) $('f-status').append(el('option', { value: st }, st));
  $('filters').addEventListener('submit', (e) => {
    e.preventDefault();
    const who = $('f-user').value.trim();
    // A session id (from a log line, a user's report) opens that session.
    if (who.startsWith('whatsapp_')) {
      $('f-user').value = filter.user;
      return void openDetail(who);
    }
    applyFilter({ status: $('f-status').value, worker: $('f-worker').value.trim(), user: who });
  });
  $('f-clear').addEventListener('click', () => applyFilter({ status: '', worker: '', user: '' }));
  $('older').addEventListener('click', () => {
    if (!nextCursor) return;
    cursors.push(nextCursor);
    guarded(loadList);
  });
  $('newer').addEventListener('click', () => {
    if (cursors.length <= 1) return;
    cursors.pop();
    guarded(loadList);
  });
  $('detail-close').addEventListener('click', closeDialogs);
  $('detail').addEventListener('close', () => { openId = null; });
  $('detail-disconnect').addEventListener('click', askDisconnect);
  $('confirm-cancel').addEventListener('click', () => $('confirm').close());
  $('confirm-ok').addEventListener('click', disconnect);
  $('token-view').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token-input').value.trim().replace(/^Bearer\s+/i, '');
    $('token-input').value = '';
    saveToken(TOKEN_KEY, t);
    refuseLink('');
    useToken(t);
  });
  $('forget').addEventListener('click', () => rejectToken(''));
  // Worker load moves without session changes (queues): read it now and then.
  setInterval(() => { if (token && firstPaint && !document.hidden) guarded(loadWorkers); }, 15000);
  window.addEventListener('hashchange', start);
  filterFromURL();
  start();
})();
