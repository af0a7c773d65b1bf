// Decap status UI: small enhancements over the server-rendered pages.
//
// Every change goes through ingest's JSON API with fetch, the session
// cookie (credentials: 'same-origin') and the X-Decap-CSRF header; reads
// use the session too. A 401 (the session ended) sends the user to the
// sign-in page. Text from the server is only ever
// put into the page as text (textContent, append), never as markup.
'use strict';

(function () {
  const FINAL = new Set(['succeeded', 'failed', 'timed_out', 'cancelled', 'errored', 'expired', 'skipped', 'superseded']);
  const BUILD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

  // DONE says what a finished action did.
  const DONE = {
    pause: 'Dispatching paused: requests wait in the queue.',
    resume: 'Dispatching resumed.',
    cancel: 'Build cancelled.',
    unlock: 'Lock released.',
    unsubscribe: 'Webhook removed.',
  };

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function goLogin() {
    location.assign('/ui/login?next=' + encodeURIComponent(location.pathname + location.search));
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      if (body && typeof body.error === 'string') {
        return res.status + ' ' + body.error;
      }
    } catch (e) { /* not JSON */ }
    return 'HTTP ' + res.status;
  }

  // api sends a mutation. It resolves to the response of a 2xx answer and
  // rejects with the server's error otherwise; a 401 also goes to sign in.
  async function api(method, url, body) {
    const headers = { 'X-Decap-CSRF': '1' };
    const init = { method: method, headers: headers, credentials: 'same-origin' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(url, init);
    if (res.status === 401) {
      goLogin();
      throw new Error('sign-in required');
    }
    if (!res.ok) {
      throw new Error(await errorText(res));
    }
    return res;
  }

  function flash(msg, bad) {
    const el = document.getElementById('flash');
    if (!el) {
      return;
    }
    el.textContent = msg;
    el.classList.toggle('bad', !!bad);
    el.hidden = false;
  }

  // ---- formatting, as the server formats (funcs.go) ----

  function fmtTime(iso) {
    if (!iso) {
      return '';
    }
    const d = new Date(iso);
    if (isNaN(d)) {
      return '';
    }
    return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  }

  function pad2(n) {
    return String(n).padStart(2, '0');
  }

  function fmtDur(ms) {
    if (!(ms > 0)) {
      return '';
    }
    if (ms < 1000) {
      return Math.floor(ms) + 'ms';
    }
    if (ms < 60000) {
      return (ms / 1000).toFixed(1) + 's';
    }
    const s = Math.floor(ms / 1000);
    if (s < 3600) {
      return Math.floor(s / 60) + 'm' + pad2(s % 60) + 's';
    }
    return Math.floor(s / 3600) + 'h' + pad2(Math.floor(s / 60) % 60) + 'm' + pad2(s % 60) + 's';
  }

  function statusClass(s) {
    switch (s) {
      case 'succeeded': return 'st-ok';
      case 'failed': case 'errored': case 'timed_out': return 'st-bad';
      case 'running': return 'st-run';
      case 'queued': case 'deferred': return 'st-wait';
      default: return 'st-off';
    }
  }

  // ---- buttons: pause, resume, cancel, rebuild, unlock, unsubscribe, sign out ----

  async function onAction(button) {
    const action = button.dataset.action;
    const url = button.dataset.url;
    let body;
    if (action === 'pause') {
      const reason = window.prompt('Pause dispatching? Requests wait in the queue until dispatching is resumed.\n\nReason (optional):', '');
      if (reason === null) {
        return;
      }
      body = reason.trim() ? { reason: reason.trim() } : {};
    } else if (action === 'resume') {
      body = {};
    } else if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) {
      return;
    }
    button.disabled = true;
    try {
      switch (action) {
        case 'pause':
        case 'resume':
          await api('POST', url, body);
          break;
        case 'cancel':
        case 'unlock':
        case 'unsubscribe':
          await api('DELETE', url);
          break;
        case 'rebuild': {
          // The new build's page: a build ID is all the answer may add
          // to the URL.
          const answer = await (await api('POST', url)).json();
          if (!answer || !BUILD_ID.test(answer.id)) {
            throw new Error('unexpected answer');
          }
          location.assign('/ui/builds/' + answer.id);
          return;
        }
        case 'logout':
          await api('DELETE', '/api/v1/session');
          location.assign('/');
          return;
        default:
          return;
      }
    } catch (e) {
      flash(button.textContent.trim() + ' failed: ' + e.message, true);
      button.disabled = false;
      return;
    }
    const build = document.getElementById('build');
    if (action === 'cancel' && build) {
      flash('Cancellation requested.');
      await refreshRecord(build);
      button.disabled = false;
      return;
    }
    flash(DONE[action] || 'Done.');
    await refreshMain();
  }

  document.addEventListener('click', (ev) => {
    const button = ev.target.closest('button[data-action]');
    if (button && !button.disabled) {
      ev.preventDefault();
      onAction(button);
    }
  });

  // refreshMain re-reads the current page and swaps in its <main>, keeping
  // the flash message: our own server-rendered, escaped HTML.
  async function refreshMain() {
    try {
      const res = await fetch(location.href, { credentials: 'same-origin' });
      if (res.redirected && new URL(res.url).pathname === '/ui/login') {
        goLogin();
        return;
      }
      if (!res.ok) {
        return;
      }
      const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
      const next = doc.querySelector('main');
      const cur = document.querySelector('main');
      if (!next || !cur) {
        return;
      }
      const flashEl = document.getElementById('flash');
      const nextFlash = next.querySelector('#flash');
      if (flashEl && nextFlash) {
        nextFlash.replaceWith(flashEl);
      }
      cur.replaceWith(document.adoptNode(next));
    } catch (e) { /* keep the page as it is */ }
  }

  // ---- sign in ----

  function initLogin(form) {
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const button = form.querySelector('button');
      button.disabled = true;
      try {
        const res = await fetch('/api/v1/session', {
          method: 'POST',
          credentials: 'same-origin',
          headers: { 'Content-Type': 'application/json', 'X-Decap-CSRF': '1' },
          body: JSON.stringify({ token: form.elements.token.value }),
        });
        if (res.status === 401) {
          throw new Error('that token is not valid');
        }
        if (!res.ok) {
          throw new Error(await errorText(res));
        }
        const next = form.dataset.next || '/';
        location.assign(next.startsWith('/') && !next.startsWith('//') ? next : '/');
      } catch (e) {
        flash('Sign-in failed: ' + e.message, true);
        button.disabled = false;
      }
    });
  }

  // ---- project page: refs and build requests ----

  async function requestBuild(url, ref, refType, button) {
    button.disabled = true;
    try {
      const res = await api('POST', url, { ref: ref, refType: refType });
      const answer = await res.json();
      if (!answer || !BUILD_ID.test(answer.id)) {
        throw new Error('unexpected answer');
      }
      forgetTyped();
      location.assign('/ui/builds/' + answer.id);
    } catch (e) {
      if (e.message !== 'sign-in required') {
        forgetTyped();
      }
      flash('Build request for ' + ref + ' failed: ' + e.message, true);
      button.disabled = false;
    }
  }

  // forgetTyped drops what the build form kept for the sign-in.
  function forgetTyped() {
    const form = document.getElementById('build-form');
    if (form) {
      try {
        sessionStorage.removeItem(typedKey(form));
      } catch (e) { /* storage unavailable */ }
    }
  }

  function cell(text, cls) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) {
      td.className = cls;
    }
    return td;
  }

  function fillRefs(box, refType, refs) {
    const table = box.querySelector('table[data-reftype="' + refType + '"]');
    const tbody = table.tBodies[0];
    tbody.replaceChildren();
    for (const r of refs) {
      if (!r || typeof r.name !== 'string') {
        continue;
      }
      const tr = document.createElement('tr');
      tr.append(cell(r.name, 'ref'));
      const sha = cell(typeof r.sha === 'string' ? r.sha.slice(0, 7) : '', 'mono');
      sha.title = r.sha || '';
      tr.append(sha);
      const td = document.createElement('td');
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'small';
      b.textContent = 'Build';
      b.dataset.ref = r.name;
      b.dataset.refType = refType;
      b.setAttribute('aria-label', 'Build ' + refType + ' ' + r.name);
      b.addEventListener('click', () => requestBuild(box.dataset.buildsUrl, r.name, refType, b));
      td.append(b);
      tr.append(td);
      tbody.append(tr);
    }
    table.hidden = tbody.rows.length === 0;
    return tbody.rows.length;
  }

  async function loadRefs(box) {
    const status = box.querySelector('[data-refs-status]');
    try {
      const res = await fetch(box.dataset.refsUrl, { credentials: 'same-origin' });
      if (res.status === 401) {
        goLogin();
        return;
      }
      if (!res.ok) {
        throw new Error(await errorText(res));
      }
      const data = await res.json();
      const n = fillRefs(box, 'branch', data.branches || []) + fillRefs(box, 'tag', data.tags || []);
      status.textContent = n ? '' : 'The repository has no branches or tags.';
      status.hidden = n > 0;
      box.dataset.state = 'loaded';
    } catch (e) {
      status.textContent = 'Branches and tags could not be listed (' + e.message + '). A ref can still be built by name.';
      status.classList.add('error');
      box.dataset.state = 'error';
    }
  }

  // ---- project page: secrets (names, sizes, times; values go one way) ----

  async function loadSecrets(box) {
    const status = box.querySelector('[data-secrets-status]');
    const table = box.querySelector('table');
    const tbody = table.querySelector('tbody');
    let list;
    try {
      const res = await fetch(box.dataset.secretsUrl, { credentials: 'same-origin' });
      if (!res.ok) {
        status.textContent = 'Secrets are not available: ' + (await errorText(res));
        return;
      }
      list = (await res.json()).secrets || [];
    } catch (e) {
      status.textContent = 'Secrets are not available: ' + e.message;
      return;
    }
    tbody.textContent = '';
    for (const s of list) {
      const tr = document.createElement('tr');
      for (const text of [s.name, s.size + ' B', fmtTime(s.updatedAt)]) {
        const td = document.createElement('td');
        td.textContent = text;
        tr.appendChild(td);
      }
      tr.firstChild.className = 'mono';
      const td = document.createElement('td');
      const del = document.createElement('button');
      del.type = 'button';
      del.className = 'danger small';
      del.textContent = 'Delete';
      del.addEventListener('click', async () => {
        if (!confirm('Delete secret ' + s.name + '? Builds that want it get it no more.')) {
          return;
        }
        try {
          await api('DELETE', box.dataset.secretsUrl + '/' + encodeURIComponent(s.name));
          flash('Secret ' + s.name + ' deleted.');
          loadSecrets(box);
        } catch (e) {
          flash('Delete failed: ' + e.message, true);
        }
      });
      td.appendChild(del);
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
    table.hidden = list.length === 0;
    status.textContent = list.length === 0 ? 'No secrets.' : '';
  }

  function initSecretForm(form, box) {
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const name = form.elements.name.value.trim();
      const value = form.elements.value.value;
      const button = form.querySelector('button');
      button.disabled = true;
      try {
        const headers = { 'X-Decap-CSRF': '1', 'Content-Type': 'application/octet-stream' };
        const res = await fetch(form.dataset.secretsUrl + '/' + encodeURIComponent(name),
          { method: 'PUT', headers: headers, credentials: 'same-origin', body: value });
        if (res.status === 401) {
          goLogin();
          return;
        }
        if (!res.ok) {
          throw new Error(await errorText(res));
        }
        form.elements.value.value = '';
        flash('Secret ' + name + ' set.');
        if (box) {
          loadSecrets(box);
        }
      } catch (e) {
        flash('Setting the secret failed: ' + e.message, true);
      } finally {
        button.disabled = false;
      }
    });
  }

  // typedKey is where the build form keeps what was typed while the
  // user signs in (a 401 leads to the sign-in page, which comes back).
  function typedKey(form) {
    return 'decap.build-form:' + form.dataset.buildsUrl;
  }

  function initBuildForm(form) {
    try {
      const kept = JSON.parse(sessionStorage.getItem(typedKey(form)) || 'null');
      sessionStorage.removeItem(typedKey(form));
      if (kept && typeof kept.ref === 'string') {
        form.elements.ref.value = kept.ref;
        if (kept.refType === 'branch' || kept.refType === 'tag') {
          form.elements.refType.value = kept.refType;
        }
      }
    } catch (e) { /* storage unavailable: nothing kept */ }
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const ref = form.elements.ref.value.trim();
      if (ref) {
        try {
          sessionStorage.setItem(typedKey(form), JSON.stringify({ ref: ref, refType: form.elements.refType.value }));
        } catch (e) { /* storage unavailable */ }
        requestBuild(form.dataset.buildsUrl, ref, form.elements.refType.value, form.querySelector('button'));
      }
    });
  }

  // ---- build page: status and the live console log ----

  function setField(name, text) {
    for (const el of document.querySelectorAll('[data-field="' + name + '"]')) {
      el.textContent = text;
    }
  }

  function showRecord(box, rec) {
    box.dataset.status = rec.status;
    for (const el of document.querySelectorAll('[data-field="status"]')) {
      el.textContent = rec.status;
      el.className = 'status ' + statusClass(rec.status);
    }
    setField('startedAt', fmtTime(rec.startedAt));
    setField('finishedAt', fmtTime(rec.finishedAt));
    if (rec.startedAt && rec.finishedAt) {
      setField('duration', fmtDur(Date.parse(rec.finishedAt) - Date.parse(rec.startedAt)));
    }
    setField('exitCode', rec.exitCode === undefined || rec.exitCode === null ? '' : String(rec.exitCode));
    setField('reason', rec.reason || '');
    checkArtifacts(rec);
    const cancel = document.getElementById('cancel');
    if (cancel) {
      cancel.hidden = FINAL.has(rec.status);
    }
    const rebuild = document.getElementById('rebuild');
    if (rebuild) {
      rebuild.hidden = !FINAL.has(rec.status);
    }
    for (const el of document.querySelectorAll('[data-field="progress"]')) {
      if (rec.status !== 'running') {
        el.hidden = true;
      } else if (el.hidden && !FINAL.has(rec.status)) {
        // The build started since the page was rendered: its bar runs
        // from its start.
        const started = Date.parse(rec.startedAt);
        for (const bar of el.querySelectorAll('progress[data-elapsed-ms]')) {
          bar.dataset.elapsedMs = String(isNaN(started) ? 0 : Math.max(0, Date.now() - started));
          bar.t0 = performance.now();
        }
        el.hidden = false;
      }
    }
    const follow = document.getElementById('log-follow-label');
    if (follow) {
      follow.hidden = FINAL.has(rec.status);
    }
  }

  // checkArtifacts shows the artifacts button once the build stored some:
  // a build that left none stored an empty tarball, which the API
  // answers 404.
  async function checkArtifacts(rec) {
    const a = document.getElementById('artifacts');
    if (!a || !rec.artifactsKey || a.dataset.checked) {
      return;
    }
    a.dataset.checked = '1';
    try {
      const res = await fetch(a.href, { method: 'HEAD', credentials: 'same-origin' });
      a.hidden = !res.ok;
      a.dataset.artifacts = res.ok ? 'some' : 'none';
    } catch (e) {
      delete a.dataset.checked;
    }
  }

  async function refreshRecord(box) {
    try {
      const res = await fetch(box.dataset.buildUrl, { credentials: 'same-origin' });
      if (res.status === 401) {
        goLogin();
        return null;
      }
      if (!res.ok) {
        return null;
      }
      const rec = await res.json();
      showRecord(box, rec);
      return rec;
    } catch (e) {
      return null;
    }
  }

  // logURL is where the log is read from: a finished build's last
  // data-tail bytes (the raw log has all of it), a running build's whole
  // log as it grows.
  function logURL(box, logBox) {
    if (FINAL.has(box.dataset.status) && logBox.dataset.tail) {
      return box.dataset.logUrl + '?tail=' + encodeURIComponent(logBox.dataset.tail);
    }
    return box.dataset.logUrl + '?follow=1';
  }

  // showNotice says how much of the log the page leaves out.
  function showNotice(lines) {
    const notice = document.getElementById('log-notice');
    if (!notice) {
      return;
    }
    notice.hidden = !(lines > 0);
    const count = notice.querySelector('[data-skipped]');
    if (count) {
      count.textContent = String(lines);
    }
  }

  // followTail scrolls the log to its end while "follow" is ticked.
  function followTail(logBox) {
    const follow = document.getElementById('log-follow');
    if (follow && follow.checked && !follow.closest('[hidden]')) {
      logBox.scrollTop = logBox.scrollHeight;
    }
  }

  // streamLog reads the log into the view until the build is final. A
  // build that has not started has no log yet (404): try again.
  async function streamLog(box, view, logBox) {
    const state = document.getElementById('log-state');
    let finalMisses = 0;
    let anchor = /^#L\d+$/.test(location.hash) ? location.hash.slice(2) : '';
    for (;;) {
      let got = false;
      try {
        const res = await fetch(logURL(box, logBox), { credentials: 'same-origin' });
        if (res.ok && res.body) {
          got = true;
          state.textContent = FINAL.has(box.dataset.status) ? '' : 'streaming…';
          const skipped = Number(res.headers.get('X-Decap-Log-Skipped-Lines')) || 0;
          view.reset(skipped);
          showNotice(skipped);
          const reader = res.body.getReader();
          const dec = new TextDecoder();
          for (;;) {
            const chunk = await reader.read();
            if (chunk.done) {
              break;
            }
            view.append(dec.decode(chunk.value, { stream: true }));
            if (anchor && view.show(anchor)) {
              anchor = '';
            }
            followTail(logBox);
          }
          view.append(dec.decode());
          view.finish();
          if (anchor && view.show(anchor)) {
            anchor = '';
          }
          applySearch(view);
          followTail(logBox);
        } else if (res.status === 401) {
          goLogin();
          return;
        } else if (res.status === 404) {
          state.textContent = 'waiting for the build to start…';
        } else {
          state.textContent = 'log unavailable: ' + (await errorText(res));
        }
      } catch (e) {
        state.textContent = 'log stream interrupted, retrying…';
      }
      const rec = await refreshRecord(box);
      if (rec && FINAL.has(rec.status)) {
        if (got) {
          state.textContent = 'complete';
          box.dataset.logDone = '1';
          return;
        }
        if (++finalMisses > 1) {
          state.textContent = 'no log was stored';
          box.dataset.logDone = '1';
          return;
        }
      }
      await sleep(1000);
    }
  }

  // streamTimes reads the log's line-time index (GET .../log?times=1)
  // into the view: once for an ended build, every 3 s while one runs
  // (the local executor keeps a live index; elsewhere the index is
  // stored when the build ends, and the page says so meanwhile).
  async function streamTimes(box, view, logBox) {
    const note = document.getElementById('log-times-state');
    const say = (text) => {
      if (note) {
        note.textContent = text;
      }
    };
    for (;;) {
      const final = FINAL.has(box.dataset.status);
      try {
        const res = await fetch(box.dataset.logUrl + '?times=1', { credentials: 'same-origin' });
        if (res.ok) {
          const t = await res.json();
          view.setTimes(t);
          say('');
          if (t.complete) {
            logBox.dataset.times = 'complete';
            return;
          }
        } else if (res.status === 401) {
          return; // the log's stream leads to the sign-in page
        } else if (final) {
          say('no elapsed times were stored with this log');
          logBox.dataset.times = 'none';
          return;
        } else if (box.dataset.status === 'running' && (await errorText(res)).includes('stored when it ends')) {
          say('elapsed times appear when the build ends');
        }
      } catch (e) {
        // the network: try again
      }
      await sleep(3000);
    }
  }

  // applySearch runs the search box's query over the log.
  function applySearch(view) {
    const input = document.getElementById('log-search');
    if (!input) {
      return;
    }
    const only = document.getElementById('log-only');
    const hits = view.search(input.value.trim(), only && only.checked);
    const out = document.getElementById('log-hits');
    if (out) {
      out.textContent = input.value.trim() ? hits + (hits === 1 ? ' matching line' : ' matching lines') : '';
    }
  }

  function initLogView(box) {
    const logBox = document.getElementById('log');
    if (!logBox || !window.DecapLog) {
      return;
    }
    const view = new window.DecapLog.LogView(logBox, { max: Number(logBox.dataset.maxLines) || 20000, onTrim: () => {
      const notice = document.getElementById('log-trimmed');
      if (notice) {
        notice.hidden = false;
      }
    } });
    const input = document.getElementById('log-search');
    if (input) {
      input.addEventListener('input', () => applySearch(view));
      input.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter') {
          ev.preventDefault();
          view.nextHit();
        }
      });
    }
    const only = document.getElementById('log-only');
    if (only) {
      only.addEventListener('change', () => applySearch(view));
    }
    const times = document.getElementById('log-times');
    if (times) {
      // The choice is kept for the next build page.
      const key = 'decap.logTimes';
      try {
        times.checked = localStorage.getItem(key) !== 'off';
      } catch (e) {
        // storage refused: shown
      }
      logBox.classList.toggle('times-off', !times.checked);
      times.addEventListener('change', () => {
        logBox.classList.toggle('times-off', !times.checked);
        try {
          localStorage.setItem(key, times.checked ? 'on' : 'off');
        } catch (e) {
          // not kept
        }
      });
    }
    for (const b of document.querySelectorAll('button[data-log-expand]')) {
      b.addEventListener('click', () => view.expand(b.dataset.logExpand === 'open'));
    }
    const follow = document.getElementById('log-follow');
    if (follow) {
      // A link to a line is read there, not at the end.
      if (/^#L\d+$/.test(location.hash)) {
        follow.checked = false;
      }
      follow.addEventListener('change', () => followTail(logBox));
    }
    window.addEventListener('hashchange', () => {
      if (/^#L\d+$/.test(location.hash)) {
        view.show(location.hash.slice(2));
      }
    });
    streamLog(box, view, logBox);
    streamTimes(box, view, logBox);
  }

  // initBuild follows the build's record live from the event stream,
  // and polls it every 2 s only while the stream is not open (it failed,
  // or the server has none).
  function initBuild(box) {
    initLogView(box);
    const id = box.dataset.buildUrl.split('/').pop();
    let live = { open: false, close: () => {} };
    if (!FINAL.has(box.dataset.status)) {
      live = liveEvents('?build=' + encodeURIComponent(id), (rec) => {
        // Events come in order; a record read by a poll may be newer.
        if (rec.id !== id || FINAL.has(box.dataset.status)) {
          return;
        }
        showRecord(box, rec);
        if (FINAL.has(rec.status)) {
          live.close();
        }
      }, () => refreshRecord(box));
    }
    const timer = setInterval(async () => {
      if (FINAL.has(box.dataset.status)) {
        clearInterval(timer);
        live.close();
        return;
      }
      if (!live.open) {
        await refreshRecord(box);
      }
    }, 2000);
  }

  // ---- live updates: the build events (GET /api/v1/events) ----

  const EVENT_TYPES = ['queued', 'retried', 'deferred', 'started', 'succeeded', 'failed', 'timed_out',
    'cancelled', 'superseded', 'errored', 'expired', 'skipped'].map((t) => 'io.decap.build.' + t);

  // liveEvents opens the build-event stream (query filters it) and hands
  // each event's record to onRecord. Its result's open tells whether the
  // stream is open now: pages poll while it is not. Each time the stream
  // opens, events may have been missed — those between the page's own read
  // and the first open (a build launched while its page loaded), or during
  // a break (the server ended it: it fell behind, or its time was up) —
  // so onReopen reloads, the first time too. An answer that
  // is not a stream (no stream on this backend, too many streams, signed
  // out) closes it for good, and the page keeps polling.
  // document.documentElement's data-live says "on" while it is open, and
  // its data-live-events counts the events the page got.
  function liveEvents(query, onRecord, onReopen) {
    const state = { open: false, close: () => {} };
    if (!window.EventSource) {
      return state;
    }
    const es = new EventSource('/api/v1/events' + query);
    const mark = (on) => {
      state.open = on;
      document.documentElement.dataset.live = on ? 'on' : 'off';
    };
    es.addEventListener('open', () => {
      mark(true);
      onReopen();
    });
    es.addEventListener('error', () => mark(false));
    const handle = (ev) => {
      let ce;
      try {
        ce = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (ce && ce.data && typeof ce.data.status === 'string' && BUILD_ID.test(ce.data.id)) {
        const root = document.documentElement;
        root.dataset.liveEvents = String((Number(root.dataset.liveEvents) || 0) + 1);
        onRecord(ce.data);
      }
    };
    for (const t of EVENT_TYPES) {
      es.addEventListener(t, handle);
    }
    state.close = () => {
      es.close();
      mark(false);
    };
    return state;
  }

  // showStatusInRows shows rec's status in the rows of the page that link
  // its build, at once.
  function showStatusInRows(rec) {
    for (const a of document.querySelectorAll('main a[href="/ui/builds/' + rec.id + '"]')) {
      const row = a.closest('tr');
      const st = row && row.querySelector('[data-field="status"]');
      if (st) {
        st.textContent = rec.status;
        st.className = 'status ' + statusClass(rec.status);
      }
    }
  }

  // initDashboard updates the dashboard from the event stream: a build's
  // status in its rows at once, and the page's lists (a build moves from
  // waiting to running to recent) re-read within a second of a burst of
  // events. While the stream is not open it re-reads them every
  // data-refresh seconds instead, as before.
  function initDashboard(box) {
    let soon = null;
    const reread = () => {
      if (!soon) {
        soon = setTimeout(() => {
          soon = null;
          refreshMain();
        }, 1000);
      }
    };
    const live = liveEvents('', (rec) => {
      showStatusInRows(rec);
      reread();
    }, reread);
    const seconds = Math.max(5, Number(box.dataset.refresh) || 15);
    setInterval(() => {
      if (!live.open && document.visibilityState === 'visible') {
        refreshMain();
      }
    }, seconds * 1000);
  }

  // ---- progress bars and the dashboard's refresh ----

  function tickProgress() {
    const now = performance.now();
    for (const bar of document.querySelectorAll('progress[data-elapsed-ms]')) {
      if (bar.t0 === undefined) {
        bar.t0 = now;
      }
      const avg = Number(bar.dataset.averageMs);
      if (!(avg > 0)) {
        continue;
      }
      const elapsed = Number(bar.dataset.elapsedMs) + (now - bar.t0);
      const pct = Math.floor((100 * elapsed) / avg);
      bar.value = Math.min(pct, 100);
      const label = bar.parentElement.querySelector('[data-progress-label]');
      if (label) {
        label.textContent = Math.min(pct, 100) + '% of ~' + fmtDur(avg) + (pct > 100 ? ', overdue' : '');
      }
    }
  }

  function init() {
    const login = document.getElementById('login');
    if (login) {
      initLogin(login);
    }
    const refs = document.getElementById('refs');
    if (refs) {
      loadRefs(refs);
    }
    const form = document.getElementById('build-form');
    if (form) {
      initBuildForm(form);
    }
    const secrets = document.getElementById('secrets');
    if (secrets) {
      loadSecrets(secrets);
    }
    const secretForm = document.getElementById('secret-form');
    if (secretForm) {
      initSecretForm(secretForm, secrets);
    }
    const build = document.getElementById('build');
    if (build) {
      initBuild(build);
    }
    setInterval(tickProgress, 1000);
    const refresh = document.querySelector('[data-refresh]');
    if (refresh) {
      initDashboard(refresh);
    }
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
})();
