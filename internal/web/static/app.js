// The session page: links the caller's WhatsApp account by QR code or by a
// pairing code, and shows the session's state live from the event stream.
//
// The token comes from the URL fragment (#token=..., which `make run`
// prints; the fragment never reaches a server) or is pasted; it is kept in
// sessionStorage only and sent only in the Authorization header. A link's
// token only fills a tab that holds none: it never replaces the token a tab
// holds, or whoever sent the link (carrying their own token) would receive
// the WhatsApp account the victim scans next. For the same reason the page
// always shows whose session it links (the token's subject). That is
// why the stream is read with fetch and not EventSource, which cannot send
// headers. The server sends the current state first on every (re)connect,
// so the page only ever renders what it was last told.
'use strict';
(() => {
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

  // subjectOf is the token's sub claim: the user whose WhatsApp session
  // this page links. It is read, not verified (the API verifies the token);
  // it is only shown, so the user sees whose account a scan would link.
  function subjectOf(t) {
    try {
      const p = t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const claims = JSON.parse(atob(p + '='.repeat((4 - (p.length % 4)) % 4)));
      return typeof claims.sub === 'string' ? claims.sub : '';
    } catch {
      return '';
    }
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

  async function apiError(res) {
    let code = '', msg = '';
    try {
      const b = await res.json();
      code = b.error.code;
      msg = b.error.message;
    } catch { /* not an envelope */ }
    let text = msg || `The request failed (HTTP ${res.status}).`;
    if (res.status === 401) text = 'Your token is invalid or expired. Paste a valid one.';
    else if (res.status === 503) text = `The service is briefly unavailable (${msg || code}). Try again in a moment.`;
    return Object.assign(new Error(text), { status: res.status, code });
  }

  async function call(method, path, body) {
    const opt = { method, cache: 'no-store', headers: { Authorization: 'Bearer ' + token } };
    if (body) {
      opt.headers['Content-Type'] = 'application/json';
      opt.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(API + path, opt);
    } catch {
      throw new Error('The server cannot be reached. Check the connection and try again.');
    }
    if (!res.ok) {
      const err = await apiError(res);
      if (res.status === 401) rejectToken(err.message);
      throw err;
    }
    return (await res.json()).data;
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

  function parseFrame(frame, hint) {
    let type = 'message';
    const data = [];
    for (const line of frame.split('\n')) {
      if (!line || line[0] === ':') continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let val = c < 0 ? '' : line.slice(c + 1);
      if (val[0] === ' ') val = val.slice(1);
      if (field === 'event') type = val;
      else if (field === 'data') data.push(val);
      else if (field === 'retry' && /^\d+$/.test(val)) hint.retry = Number(val);
    }
    if (!data.length) return null;
    try {
      return { ...JSON.parse(data.join('\n')), type };
    } catch {
      return null;
    }
  }

  const sleep = (ms, signal) => new Promise((done) => {
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); done(); }, { once: true });
  });

  function note(text) {
    $('note').textContent = text || '';
    $('note').hidden = !text;
  }

  // listen reads the event stream until ctl is aborted, reconnecting with
  // exponential backoff (from the server's retry hint up to 30 s).
  async function listen(ctl) {
    const hint = { retry: 1000 };
    let delay = 0;
    while (!ctl.signal.aborted) {
      try {
        const res = await fetch(API + '/events', {
          cache: 'no-store', signal: ctl.signal,
          headers: { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' },
        });
        if (!res.ok) {
          const err = await apiError(res);
          if (res.status === 401) return rejectToken(err.message);
          throw err;
        }
        note('');
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, '\n');
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const ev = parseFrame(buf.slice(0, i), hint);
            buf = buf.slice(i + 2);
            if (ev) {
              delay = 0;
              // message.received / message.status describe a message, not
              // the session this page shows.
              if (!ev.type.startsWith('message.')) apply(ev);
            }
          }
        }
        throw new Error('the stream ended');
      } catch (e) {
        if (ctl.signal.aborted) return;
        delay = Math.min(delay ? delay * 2 : hint.retry, 30000);
        const why = e.status ? e.message : 'The connection to the server was lost.';
        note(`${why} Reconnecting in ${Math.round(delay / 1000)} s…`);
      }
      await sleep(delay * (0.8 + Math.random() * 0.4), ctl.signal);
    }
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
    try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* storage off */ }
    refuseLink('');
    useToken(null);
    setError(msg);
  }

  // tokenFromFragment takes #token=... off the address bar (and history)
  // at once and returns it, or null.
  function tokenFromFragment() {
    const t = new URLSearchParams(location.hash.slice(1)).get('token');
    if (!t) return null;
    history.replaceState(null, '', location.pathname + location.search);
    return t;
  }

  // start runs on load and on every change of the fragment. The token the
  // tab holds (in memory, else in sessionStorage) wins over a link's.
  function start() {
    const linked = tokenFromFragment();
    let held = token;
    if (!held) try { held = sessionStorage.getItem(TOKEN_KEY); } catch { /* storage off */ }
    if (linked && held && linked !== held) {
      const other = subjectOf(linked);
      refuseLink('The link you opened carries a token for ' + (other ? `user ${other}` : 'another user') +
        '. It was ignored: this tab keeps the session it already had. To use that token, choose "Use another token" and paste it.');
    } else if (linked && !held) {
      try { sessionStorage.setItem(TOKEN_KEY, linked); } catch { /* storage off */ }
      held = linked;
    }
    if (held === token && token) return; // the tab goes on as it was
    setError('');
    useToken(held);
  }

  $('token-view').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token-input').value.trim().replace(/^Bearer\s+/i, '');
    $('token-input').value = '';
    try { sessionStorage.setItem(TOKEN_KEY, t); } catch { /* storage off */ }
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
