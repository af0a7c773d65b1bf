// Decap status UI: the console log view of a build page.
//
// A log is what a build wrote: hostile text. It is only ever put into the
// page as text (textContent, createTextNode), never as markup; ANSI colour
// codes become class names from a fixed set, every other escape sequence
// and control character is dropped.
//
// Markers a build.sh may print (README, "What a build sees"):
//   --- <title>        starts a section (ends the one before); open
//   ::group::<title>   starts a group, nested in the current section; closed
//   ::endgroup::       ends the innermost group
// Lines are numbered as in the raw log; #L42 links to line 42. Beside the
// number, each line may show when it began (+1:05 after the log's start),
// from the log's line-time index (GET .../log?times=1, setTimes).
//
// The same file runs under Node for its tests (module.exports).
'use strict';

(function (root) {
  // ---- ANSI: SGR 30-37, 90-97, 39, bold (1, 22), reset (0); nothing else ----

  function newState() {
    return { fg: 0, bold: false };
  }

  function applySGR(params, st) {
    const ps = params === '' ? [0] : params.split(/[;:]/).map((p) => (p === '' ? 0 : Number(p)));
    for (let i = 0; i < ps.length; i++) {
      const p = ps[i];
      if (p === 0) {
        st.fg = 0;
        st.bold = false;
      } else if (p === 1) {
        st.bold = true;
      } else if (p === 22) {
        st.bold = false;
      } else if ((p >= 30 && p <= 37) || (p >= 90 && p <= 97)) {
        st.fg = p;
      } else if (p === 39) {
        st.fg = 0;
      } else if (p === 38 || p === 48) {
        // 256 colours or RGB: not rendered, their arguments skipped.
        if (ps[i + 1] === 5) {
          i += 2;
        } else if (ps[i + 1] === 2) {
          i += 4;
        }
      }
    }
  }

  function classOf(st) {
    const c = [];
    if (st.fg) {
      c.push('a' + st.fg);
    }
    if (st.bold) {
      c.push('ab');
    }
    return c.join(' ');
  }

  // parseLine turns one line of a log (without its line break) into spans
  // of plain text with a class ('' for none), updating st, the colour state
  // that carries over to the next line. A carriage return inside the line
  // keeps what came after it (a progress bar's last state).
  function parseLine(line, st) {
    if (line.endsWith('\r')) {
      line = line.slice(0, -1);
    }
    const cr = line.lastIndexOf('\r');
    if (cr >= 0) {
      // The colour codes before the last \r still count.
      for (const m of line.slice(0, cr).matchAll(/\x1b\[([0-9;:]*)m/g)) {
        applySGR(m[1], st);
      }
      line = line.slice(cr + 1);
    }
    const spans = [];
    let text = '';
    let cls = classOf(st);
    const flush = () => {
      const last = spans[spans.length - 1];
      if (text && last && last.cls === cls) {
        last.text += text;
      } else if (text) {
        spans.push({ text: text, cls: cls });
      }
      text = '';
      cls = classOf(st);
    };
    for (let i = 0; i < line.length; i++) {
      const ch = line[i];
      const code = line.charCodeAt(i);
      if (ch === '\x1b' || code === 0x9b) {
        let j = i + 1;
        const csi = code === 0x9b || line[j] === '[';
        if (csi) {
          if (code !== 0x9b) {
            j++;
          }
          const start = j;
          while (j < line.length && /[0-?]/.test(line[j])) {
            j++;
          }
          const params = line.slice(start, j);
          while (j < line.length && /[ -/]/.test(line[j])) {
            j++;
          }
          if (j < line.length && line[j] === 'm' && /^[0-9;:]*$/.test(params)) {
            flush();
            applySGR(params, st);
            cls = classOf(st);
          }
          i = j; // the final byte, or the end of a cut-off sequence
        } else if (line[j] === ']' || line[j] === 'P' || line[j] === '_' || line[j] === '^' || line[j] === 'X') {
          // OSC, DCS, APC, PM, SOS: up to BEL or ST (ESC \).
          j++;
          while (j < line.length && line[j] !== '\x07' && !(line[j] === '\x1b' && line[j + 1] === '\\')) {
            j++;
          }
          i = line[j] === '\x1b' ? j + 1 : j;
        } else {
          i = j; // ESC and one character
        }
        continue;
      }
      if ((code < 0x20 && ch !== '\t') || (code >= 0x7f && code <= 0x9f)) {
        continue;
      }
      text += ch;
    }
    flush();
    return spans;
  }

  // plain is a line's text without its escape sequences.
  function plain(line) {
    return parseLine(line, newState()).map((s) => s.text).join('');
  }

  // marker classifies a line's plain text: a section's or group's start
  // (with its title), a group's end, or nothing.
  function marker(text) {
    if (text.startsWith('--- ')) {
      return { kind: 'section', title: text.slice(4).trim() };
    }
    if (text.startsWith('::group::')) {
      return { kind: 'group', title: text.slice(9).trim() };
    }
    if (text.trim() === '::endgroup::') {
      return { kind: 'end' };
    }
    return null;
  }

  // ---- elapsed time: the line-time index (build.LogTimes) ----

  // elapsedAt returns when line n began, in ms after the index's start:
  // the time of the last [line, ms] pair at or before n; null when the
  // index does not cover n (yet).
  function elapsedAt(times, n) {
    if (!times || !Array.isArray(times.times) || !(n >= 1) || n > times.lines) {
      return null;
    }
    const pairs = times.times;
    let lo = 0;
    let hi = pairs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (pairs[mid][0] <= n) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo === 0 ? null : pairs[lo - 1][1];
  }

  // fmtElapsed writes ms as +M:SS, or +H:MM:SS from an hour on.
  function fmtElapsed(ms) {
    const s = Math.floor(Math.max(0, ms) / 1000);
    const two = (v) => (v < 10 ? '0' : '') + v;
    const h = Math.floor(s / 3600);
    const m = Math.floor(s / 60) % 60;
    return '+' + (h > 0 ? h + ':' + two(m) : String(m)) + ':' + two(s % 60);
  }

  // ---- the view (browser only) ----

  // LogView renders a log into box, a line at a time, keeping at most max
  // lines in the page: beyond it the oldest go (the raw log has them).
  class LogView {
    constructor(box, opts) {
      this.box = box;
      this.doc = box.ownerDocument;
      this.max = (opts && opts.max) || 20000;
      this.onTrim = (opts && opts.onTrim) || (() => {});
      this.times = null; // kept across resets: the log is the same
      this.reset(0);
    }

    // reset empties the view; the next line is line first+1.
    reset(skipped) {
      this.box.replaceChildren();
      this.n = skipped || 0;
      this.count = 0;
      this.trimmed = 0;
      this.st = newState();
      this.pending = '';
      this.pendingEl = null;
      this.stack = [{ kind: 'root', el: this.box }];
      this.query = '';
      this.only = false;
    }

    // append adds text as it arrives: complete lines are rendered, the
    // unfinished last one shown until it is complete.
    append(text) {
      const parts = (this.pending + text).split('\n');
      this.pending = parts.pop();
      if (this.pendingEl) {
        this.pendingEl.remove();
        this.pendingEl = null;
      }
      for (const line of parts) {
        this.addLine(line);
      }
      if (this.pending) {
        const st = { fg: this.st.fg, bold: this.st.bold };
        this.pendingEl = this.lineEl(this.n + 1, parseLine(this.pending, st));
        this.top().el.append(this.pendingEl);
      }
    }

    // finish renders an unfinished last line as a line.
    finish() {
      if (this.pendingEl) {
        this.pendingEl.remove();
        this.pendingEl = null;
      }
      if (this.pending) {
        this.addLine(this.pending);
        this.pending = '';
      }
    }

    top() {
      return this.stack[this.stack.length - 1];
    }

    lineEl(n, spans) {
      const div = this.doc.createElement('div');
      div.className = 'ln';
      div.id = 'L' + n;
      const a = this.doc.createElement('a');
      a.className = 'n';
      a.href = '#L' + n;
      a.dataset.n = String(n);
      a.setAttribute('aria-label', 'line ' + n);
      div.append(a);
      const el = this.doc.createElement('span');
      el.className = 'el';
      div.append(el);
      this.showTime(el, n);
      const t = this.doc.createElement('span');
      t.className = 't';
      for (const s of spans) {
        if (s.cls) {
          const span = this.doc.createElement('span');
          span.className = s.cls;
          span.textContent = s.text;
          t.append(span);
        } else {
          t.append(this.doc.createTextNode(s.text));
        }
      }
      div.append(t);
      return div;
    }

    addLine(line) {
      this.n++;
      this.count++;
      const spans = parseLine(line, this.st);
      const el = this.lineEl(this.n, spans);
      const m = marker(spans.map((s) => s.text).join(''));
      if (m && m.kind === 'end') {
        el.classList.add('marker');
        this.top().el.append(el);
        for (let i = this.stack.length - 1; i > 0; i--) {
          if (this.stack[i].kind === 'group') {
            this.stack.length = i;
            break;
          }
        }
      } else if (m) {
        if (m.kind === 'section') {
          // A section ends the one before, and any group in it.
          for (let i = this.stack.length - 1; i > 0; i--) {
            if (this.stack[i].kind === 'section') {
              this.stack.length = i;
              break;
            }
          }
        }
        const d = this.doc.createElement('details');
        d.className = m.kind === 'section' ? 'sec' : 'grp';
        d.open = m.kind === 'section';
        const sum = this.doc.createElement('summary');
        if (m.kind === 'group') {
          el.querySelector('.t').replaceChildren(this.doc.createTextNode(m.title || 'group'));
        }
        sum.append(el);
        d.append(sum);
        this.top().el.append(d);
        this.stack.push({ kind: m.kind, el: d });
      } else {
        this.top().el.append(el);
      }
      if (this.query) {
        this.mark(el);
      }
      if (this.count > this.max) {
        this.trim();
      }
    }

    // trim drops the oldest line.
    trim() {
      const first = this.box.querySelector('.ln');
      if (!first) {
        return;
      }
      const sum = first.parentElement;
      if (sum && sum.tagName === 'SUMMARY') {
        const d = sum.parentElement;
        if (this.stack.some((f) => f.el === d)) {
          // Still being written to: keep it, without its first line.
          sum.replaceChildren(this.doc.createTextNode('… (its start is in the raw log)'));
        } else {
          sum.remove();
          d.replaceWith(...d.childNodes);
        }
      } else {
        first.remove();
      }
      this.count--;
      this.trimmed++;
      this.onTrim(this.trimmed);
    }

    // mark applies the search to one line; it returns whether it matches.
    mark(el) {
      const t = el.querySelector('.t');
      const hit = !!this.query && !!t && t.textContent.toLowerCase().includes(this.query);
      el.classList.toggle('hit', hit);
      el.classList.toggle('miss', this.only && !!this.query && !hit);
      if (hit) {
        for (let p = el.parentElement; p && p !== this.box; p = p.parentElement) {
          if (p.tagName === 'DETAILS') {
            p.open = true;
          }
        }
      }
      return hit;
    }

    // search highlights the lines holding q (any case); with only, it
    // hides the others. It returns how many lines match.
    search(q, only) {
      this.query = (q || '').toLowerCase();
      this.only = !!only;
      let hits = 0;
      for (const el of this.box.querySelectorAll('.ln')) {
        if (this.mark(el)) {
          hits++;
        }
      }
      this.box.classList.toggle('filtered', this.only && !!this.query);
      return hits;
    }

    // nextHit scrolls to the first matching line after the current one.
    nextHit() {
      const hits = [...this.box.querySelectorAll('.ln.hit')];
      if (hits.length === 0) {
        return;
      }
      const cur = this.box.querySelector('.ln.cur');
      let i = cur ? hits.indexOf(cur) + 1 : 0;
      if (i >= hits.length) {
        i = 0;
      }
      if (cur) {
        cur.classList.remove('cur');
      }
      hits[i].classList.add('cur');
      hits[i].scrollIntoView({ block: 'center' });
    }

    // show highlights line n, opens what holds it and scrolls to it; it
    // returns false when the line is not (yet) in the view.
    show(n) {
      const el = this.doc.getElementById('L' + n);
      if (!el || !this.box.contains(el)) {
        return false;
      }
      for (const old of this.box.querySelectorAll('.ln.target')) {
        old.classList.remove('target');
      }
      el.classList.add('target');
      for (let p = el.parentElement; p && p !== this.box; p = p.parentElement) {
        if (p.tagName === 'DETAILS') {
          p.open = true;
        }
      }
      el.scrollIntoView({ block: 'center' });
      return true;
    }

    // setTimes takes the log's line-time index (api.LogTimes) and shows
    // each line's elapsed time. A running build's index grows: when its
    // resolution stayed the same, the pairs of the lines shown before did
    // too, and only the lines after them are updated.
    setTimes(t) {
      if (!t || !Array.isArray(t.times)) {
        return;
      }
      const old = this.times;
      const from = old && old.resolutionMs === t.resolutionMs && old.start === t.start ? old.lines + 1 : 1;
      this.times = t;
      this.start = Date.parse(t.start);
      this.box.classList.add('has-times');
      for (const a of this.box.querySelectorAll('.ln > a.n')) {
        const n = Number(a.dataset.n);
        if (n >= from) {
          this.showTime(a.nextElementSibling, n);
        }
      }
    }

    // showTime fills el, line n's elapsed time, from the index.
    showTime(el, n) {
      const ms = elapsedAt(this.times, n);
      if (!el || ms === null) {
        return;
      }
      el.dataset.el = fmtElapsed(ms);
      const at = new Date(this.start + ms);
      el.title = 'began ' + (isNaN(at) ? '' : at.toISOString().replace('T', ' ').replace('Z', ' UTC') + ', ') +
        (ms / 1000).toFixed(1) + ' s after the log began (within ' + (this.times.resolutionMs * 2 / 1000) + ' s)';
    }

    // expand opens (or closes) every section and group.
    expand(open) {
      for (const d of this.box.querySelectorAll('details')) {
        d.open = open;
      }
    }
  }

  const api = {
    parseLine: parseLine, plain: plain, marker: marker, newState: newState,
    elapsedAt: elapsedAt, fmtElapsed: fmtElapsed, LogView: LogView,
  };
  if (typeof module === 'object' && module.exports) {
    module.exports = api;
  } else {
    root.DecapLog = api;
  }
})(typeof window !== 'undefined' ? window : globalThis);
