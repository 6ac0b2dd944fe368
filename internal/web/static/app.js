// The session page: links the caller's WhatsApp account by QR code or by a
// pairing code, and shows the session's state live from the event stream.
//
// The token (from the URL fragment, which `make run` prints, or pasted) is
// handled by common.js, shared with /admin: a link's token never replaces
// the one a tab holds, or whoever sent the link would receive the WhatsApp
// account the victim scans next. For the same reason the page always shows
// whose session it links (the token's subject). The server sends the
// current state first on every (re)connect of the event stream, so the
// page only ever renders what it was last told.
'use strict';
(() => {
  const { subjectOf, saveToken, forgetToken, chooseToken, request, follow } = window.wasessions;
  const API = '/api/integrations/whatsapp';
  const TOKEN_KEY = 'wasessions.token';
  const LIVE = ['pending', 'qr', 'connected', 'reconnecting'];
  const $ = (id) => document.getElementById(id);
  const app = $('app');
  const views = ['token-view', 'start-view', 'pending-view', 'qr-view', 'code-view', 'linked-view', 'ended-view'];

  let token = null;
  let stream = null; // AbortController of the running event stream
  let cur = { status: 'loading' }; // the session as last known
  let busy = false;

  // --- rendering -------------------------------------------------------------

  function show(state, text, view) {
    app.dataset.state = state;
    $('status').textContent = text;
    for (const v of views) $(v).hidden = v !== view;
    $('forget').hidden = !token;
    $('subject').hidden = !token;
  }

  function showSubject(t) {
    const sub = subjectOf(t || '');
    const el = $('subject');
    el.textContent = '';
    if (!sub) return void (el.textContent = 'This token names no user.');
    const strong = document.createElement('strong');
    strong.textContent = sub;
    el.append('WhatsApp session of user ', strong);
  }

  function refuseLink(text) {
    $('link-refused').textContent = text || '';
    $('link-refused').hidden = !text;
  }

  function setError(msg) {
    $('error').textContent = msg || '';
    $('error').hidden = !msg;
  }

  // detail is what went wrong: the API's sentence for users (lastError,
  // never a raw error), else the status reason.
  function detail(s) {
    if (s.lastError) return '. ' + s.lastError;
    return s.reason ? ` (${s.reason}).` : '.';
  }

  const who = (s) => (s.phoneNumber || 'unknown number') + (s.userName ? ` (${s.userName})` : '');

  // Messages for sessions that have ended, by status.
  const ended = {
    expired: (s) => s.reason === 'qr_timeout'
      ? (s.byPhone ? 'The pairing code expired before it was entered.' : 'The QR code expired before it was scanned.')
      : 'The session expired after being unused for too long.',
    logged_out: (s) => s.reason === 'phone_unlinked'
      ? 'WhatsApp was unlinked from your phone (Linked devices → Log out).'
      : 'WhatsApp logged this device out' + detail(s),
    failed: (s) => 'Linking WhatsApp failed' + detail(s),
    disconnected: (s) => "You disconnected WhatsApp: this device is no longer one of your phone's linked devices" +
      (s.lastError ? '. ' + s.lastError : '.'),
  };

  function render() {
    const s = cur;
    if (s.gone && LIVE.includes(s.status)) return show('disconnecting', 'Disconnecting…', 'pending-view');
    switch (s.status) {
      case 'loading': return show('loading', 'Loading…', 'pending-view');
      case 'none': return show('none', 'Link your WhatsApp account to continue.', 'start-view');
      case 'pending': return show('pending', 'Starting…', 'pending-view');
      case 'qr':
        if (s.pairingCode) {
          $('pairing-code').textContent = s.pairingCode;
          return show('code', `Enter this code on the phone with ${s.pairPhone || 'your number'}`, 'code-view');
        }
        if (s.qrCode) {
          const img = $('qr');
          if (img.getAttribute('src') !== s.qrCode) img.src = s.qrCode;
          img.dataset.qr = s.qrRaw || '';
          return show('qr', 'Scan this QR code with WhatsApp', 'qr-view');
        }
        return show('pending', 'Preparing the code…', 'pending-view');
      case 'connected': return show('connected', 'Connected as ' + who(s), 'linked-view');
      case 'reconnecting':
        if (s.reason === 'temporary_ban' && s.bannedUntil) {
          const until = new Date(s.bannedUntil);
          return show('banned', `WhatsApp has temporarily blocked this account until ${until.toLocaleString()}. ` +
            `It reconnects by itself then, no new scan needed (still linked as ${who(s)}).`, 'linked-view');
        }
        if (s.reason === 'client_outdated') {
          return show('reconnecting', `Waiting for WhatsApp to accept this service's client version; it reconnects by itself (still linked as ${who(s)}).`, 'linked-view');
        }
        return show('reconnecting', `Reconnecting… (still linked as ${who(s)})`, 'linked-view');
      default: {
        const msg = ended[s.status] ? ended[s.status](s) : `The session is ${s.status}` + detail(s);
        return show(s.status, msg, 'ended-view');
      }
    }
  }

  // --- state -------------------------------------------------------------------

  // fromSession maps an API session (a create or disconnect answer) to the
  // shape of a stream event.
  const fromSession = (d) => ({
    sessionId: d.sessionId, status: d.status, reason: d.statusReason, lastError: d.lastError, bannedUntil: d.bannedUntil,
    phoneNumber: d.phoneNumber, userName: d.userName, qrCode: d.qrCode, qrRaw: d.qrRaw,
    pairingCode: d.pairingCode, at: d.updatedAt, gone: d.desiredState === 'gone',
  });

  // apply merges an update (a stream event or an API answer) into cur and
  // renders. Updates older than what is shown are ignored, so a slow answer
  // cannot undo a newer event.
  function apply(u) {
    if (u.sessionId !== cur.sessionId) cur = { sessionId: u.sessionId, pairPhone: cur.pairPhone };
    const at = Date.parse(u.at);
    if (at < cur.at) return;
    if (at) cur.at = at;
    const keep = cur.gone;
    if (u.type === 'status' || !u.type) Object.assign(cur, { reason: u.reason, lastError: u.lastError, bannedUntil: u.bannedUntil });
    for (const [k, v] of Object.entries(u)) if (v !== undefined && v !== null && k !== 'at') cur[k] = v;
    cur.gone = keep || !!u.gone;
    if (cur.pairingCode) cur.byPhone = true;
    if (cur.status !== 'qr') for (const k of ['qrCode', 'qrRaw', 'pairingCode']) delete cur[k];
    render();
  }

  // --- the API -------------------------------------------------------------------

  async function call(method, path, body) {
    try {
      return (await request(API + path, { method, token, body })).data;
    } catch (e) {
      if (e.status === 401) rejectToken(e.message);
      throw e;
    }
  }

  async function act(pendingText, fn) {
    if (busy) return;
    busy = true;
    setError('');
    show('pending', pendingText, 'pending-view');
    try {
      await fn();
    } catch (e) {
      setError(e.message);
      if (e.status !== 401) render();
    } finally {
      busy = false;
    }
  }

  const connect = (phoneNumber) => act(phoneNumber ? 'Requesting a pairing code…' : 'Starting…', async () => {
    cur.pairPhone = phoneNumber;
    apply(fromSession(await call('POST', '/session', phoneNumber ? { phoneNumber } : undefined)));
  });

  const disconnect = () => act('Disconnecting…', async () => {
    apply(fromSession(await call('POST', '/disconnect')));
  });

  // --- the event stream ----------------------------------------------------------

  function note(text) {
    $('note').textContent = text || '';
    $('note').hidden = !text;
  }

  // listen follows the event stream until ctl is aborted (common.js
  // reconnects, with backoff).
  function listen(ctl) {
    return follow(API + '/events', {
      token, signal: ctl.signal, refuse: [401],
      refused: (err) => rejectToken(err.message),
      opened: () => note(''),
      // message.received / message.status describe a message, not the
      // session this page shows.
      event: (ev) => { if (!ev.type.startsWith('message.')) apply({ ...ev.data, type: ev.type }); },
      lost: (e, delay) => {
        const why = e.status ? e.message : 'The connection to the server was lost.';
        note(`${why} Reconnecting in ${Math.round(delay / 1000)} s…`);
      },
    });
  }

  // --- the token -----------------------------------------------------------------

  function useToken(t) {
    if (stream) stream.abort();
    stream = null;
    token = t || null;
    cur = { status: 'loading' };
    note('');
    showSubject(token);
    if (!token) return show('token', 'Paste your access token to continue.', 'token-view');
    render();
    stream = new AbortController();
    listen(stream);
  }

  function rejectToken(msg) {
    forgetToken(TOKEN_KEY);
    refuseLink('');
    useToken(null);
    setError(msg);
  }

  // start runs on load and on every change of the fragment.
  function start() {
    const { token: held, refused } = chooseToken(TOKEN_KEY, token);
    if (refused) refuseLink(refused);
    if (held === token && token) return; // the tab goes on as it was
    setError('');
    useToken(held);
  }

  $('token-view').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token-input').value.trim().replace(/^Bearer\s+/i, '');
    $('token-input').value = '';
    saveToken(TOKEN_KEY, t);
    setError('');
    refuseLink('');
    useToken(t);
  });
  $('connect').addEventListener('click', () => connect());
  $('again').addEventListener('click', () => connect());
  $('phone-form').addEventListener('submit', (e) => {
    e.preventDefault();
    connect($('phone-input').value.trim());
  });
  $('disconnect').addEventListener('click', disconnect);
  $('forget').addEventListener('click', () => rejectToken(''));
  window.addEventListener('hashchange', start);
  start();
})();
