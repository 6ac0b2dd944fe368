// What the session page (/) and the operators' dashboard (/admin) share:
// the token's handling, the API's error sentences, and the event stream.
//
// A token comes from the URL fragment (#token=..., which never reaches a
// server) or is pasted; it is kept in sessionStorage only and sent only in
// the Authorization header. A link's token only fills a tab that holds
// none: it never replaces the token a tab holds, or whoever sent the link
// (carrying their own token) would receive what the victim does next. That
// is also why streams are read with fetch and not EventSource, which cannot
// send headers.
'use strict';
window.wasessions = (() => {
  // subjectOf is the token's sub claim. It is read, not verified (the API
  // verifies the token); it is only shown, so the user sees whose token the
  // tab holds.
  function subjectOf(t) {
    try {
      const p = t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const claims = JSON.parse(atob(p + '='.repeat((4 - (p.length % 4)) % 4)));
      return typeof claims.sub === 'string' ? claims.sub : '';
    } catch {
      return '';
    }
  }

  function saveToken(key, t) {
    try { sessionStorage.setItem(key, t); } catch { /* storage off */ }
  }

  function forgetToken(key) {
    try { sessionStorage.removeItem(key); } catch { /* storage off */ }
  }

  function heldToken(key) {
    try { return sessionStorage.getItem(key); } catch { return null; /* storage off */ }
  }

  // tokenFromFragment takes #token=... off the address bar (and history)
  // at once and returns it, or null.
  function tokenFromFragment() {
    const t = new URLSearchParams(location.hash.slice(1)).get('token');
    if (!t) return null;
    history.replaceState(null, '', location.pathname + location.search);
    return t;
  }

  // chooseToken runs on load and on every change of the fragment: the token
  // the tab holds (current, in memory, else the one stored under key) wins
  // over a link's. It returns the token to use and, when a link's token was
  // ignored, the sentence that says so ('' otherwise).
  function chooseToken(key, current) {
    const linked = tokenFromFragment();
    let held = current || heldToken(key);
    if (linked && held && linked !== held) {
      const other = subjectOf(linked);
      return {
        token: held,
        refused: 'The link you opened carries a token for ' + (other ? `user ${other}` : 'another user') +
          '. It was ignored: this tab keeps the token it already had. To use that token, choose "Use another token" and paste it.',
      };
    }
    if (linked && !held) {
      saveToken(key, linked);
      held = linked;
    }
    return { token: held, refused: '' };
  }

  // apiError turns a failed answer into an Error with the sentence to show
  // (texts: a page's own sentences by status) and the status and code.
  async function apiError(res, texts) {
    let code = '', msg = '';
    try {
      const b = await res.json();
      code = b.error.code;
      msg = b.error.message;
    } catch { /* not an envelope */ }
    let text = msg || `The request failed (HTTP ${res.status}).`;
    if (texts && texts[res.status]) text = texts[res.status];
    else if (res.status === 401) text = 'Your token is invalid or expired. Paste a valid one.';
    else if (res.status === 503) text = `The service is briefly unavailable (${msg || code}). Try again in a moment.`;
    return Object.assign(new Error(text), { status: res.status, code });
  }

  // request calls the API with the token and returns the envelope's data
  // and the status; a failure throws apiError's Error.
  async function request(url, { method, token, body, texts }) {
    const opt = { method, cache: 'no-store', headers: { Authorization: 'Bearer ' + token } };
    if (body) {
      opt.headers['Content-Type'] = 'application/json';
      opt.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(url, opt);
    } catch {
      throw new Error('The server cannot be reached. Check the connection and try again.');
    }
    if (!res.ok) throw await apiError(res, texts);
    return { data: (await res.json()).data, status: res.status };
  }

  // parseFrame reads one server-sent event: its type and its JSON data, or
  // null (a comment, or data that is not JSON). A retry field goes into
  // hint.
  function parseFrame(frame, hint) {
    let type = 'message';
    const data = [];
    for (const line of frame.split('\n')) {
      if (!line || line[0] === ':') continue;
      const c = line.indexOf(':');
      const name = c < 0 ? line : line.slice(0, c);
      let val = c < 0 ? '' : line.slice(c + 1);
      if (val[0] === ' ') val = val.slice(1);
      if (name === 'event') type = val;
      else if (name === 'data') data.push(val);
      else if (name === 'retry' && /^\d+$/.test(val)) hint.retry = Number(val);
    }
    if (!data.length) return null;
    try {
      return { type, data: JSON.parse(data.join('\n')) };
    } catch {
      return null;
    }
  }

  const sleep = (ms, signal) => new Promise((done) => {
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); done(); }, { once: true });
  });

  // follow reads the event stream at url until signal is aborted,
  // reconnecting with exponential backoff (from the server's retry hint up
  // to 30 s, with jitter). opened runs when a connection is accepted, event
  // (awaited) for each event, lost (awaited) when a connection fails or
  // ends, with the delay before the next try. An answer whose status is in
  // refuse ends it: refused gets the Error.
  async function follow(url, { token, signal, texts, refuse, refused, opened, event, lost }) {
    const hint = { retry: 1000 };
    let delay = 0;
    while (!signal.aborted) {
      try {
        const res = await fetch(url, {
          cache: 'no-store', signal,
          headers: { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' },
        });
        if (!res.ok) {
          const err = await apiError(res, texts);
          if (refuse.includes(res.status)) return refused(err);
          throw err;
        }
        if (opened) opened();
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
            if (!ev) continue;
            delay = 0;
            await event(ev);
          }
        }
        throw new Error('the stream ended');
      } catch (e) {
        if (signal.aborted) return;
        delay = Math.min(delay ? delay * 2 : hint.retry, 30000);
        await lost(e, delay);
      }
      await sleep(delay * (0.8 + Math.random() * 0.4), signal);
    }
  }

  return Object.freeze({ subjectOf, saveToken, forgetToken, chooseToken, request, follow });
})();
