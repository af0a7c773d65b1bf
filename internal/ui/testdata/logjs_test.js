// Tests of static/log.js's pure parts, run by TestLogScript under Node.
'use strict';
const path = require('path');
const log = require(path.join(__dirname, '..', 'static', 'log.js'));

let failed = 0;
function eq(name, got, want) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) {
    failed++;
    console.log('FAIL ' + name + ':\n  got  ' + g + '\n  want ' + w);
  }
}

function spans(line, st) {
  return log.parseLine(line, st || log.newState());
}

const E = '\x1b';
eq('plain', spans('hello world'), [{ text: 'hello world', cls: '' }]);
eq('markup stays text', spans('<script>alert(1)</script>&amp;'), [{ text: '<script>alert(1)</script>&amp;', cls: '' }]);
eq('red then reset', spans(E + '[31merror' + E + '[0m ok'), [{ text: 'error', cls: 'a31' }, { text: ' ok', cls: '' }]);
eq('bold bright green', spans(E + '[1;92mPASS' + E + '[m'), [{ text: 'PASS', cls: 'a92 ab' }]);
eq('bold off keeps colour', spans(E + '[1;34mA' + E + '[22mB'), [{ text: 'A', cls: 'a34 ab' }, { text: 'B', cls: 'a34' }]);
eq('default foreground', spans(E + '[33mA' + E + '[39mB'), [{ text: 'A', cls: 'a33' }, { text: 'B', cls: '' }]);
eq('256 colours and background dropped', spans(E + '[38;5;196mA' + E + '[48;2;1;2;3mB' + E + '[41mC'), [{ text: 'ABC', cls: '' }]);
eq('other CSI dropped', spans('a' + E + '[2Kb' + E + '[10;20Hc' + E + '[?25ld'), [{ text: 'abcd', cls: '' }]);
eq('OSC title and hyperlink dropped', spans(E + ']0;title\x07a' + E + ']8;;http://x' + E + '\\link' + E + ']8;;' + E + '\\'), [{ text: 'alink', cls: '' }]);
eq('cut-off sequence dropped', spans('a' + E + '[3'), [{ text: 'a', cls: '' }]);
eq('lone ESC dropped with one char', spans('a' + E + 'Mb'), [{ text: 'ab', cls: '' }]);
eq('controls dropped, tab kept', spans('a\x00\x07\bb\tc\x7f\x85d'), [{ text: 'ab\tcd', cls: '' }]);
eq('carriage return keeps the last state', spans('10%\r50%\r100%\r'), [{ text: '100%', cls: '' }]);
eq('colour before a carriage return counts', spans(E + '[32m10%\r100%'), [{ text: '100%', cls: 'a32' }]);
eq('a CSI ends at its final byte', spans(E + '[<b>m'), [{ text: '>m', cls: '' }]);

// The colour state carries over to the next line, as in a terminal.
const st = log.newState();
spans(E + '[35mstart', st);
eq('state carries over', spans('next', st), [{ text: 'next', cls: 'a35' }]);

eq('section', log.marker('--- compile'), { kind: 'section', title: 'compile' });
eq('group', log.marker('::group::Run tests'), { kind: 'group', title: 'Run tests' });
eq('endgroup', log.marker('::endgroup::'), { kind: 'end' });
eq('no marker: dashes without space', log.marker('---'), null);
eq('no marker: text', log.marker('hello --- x'), null);
eq('coloured section', log.marker(log.plain(E + '[1m--- build' + E + '[0m')), { kind: 'section', title: 'build' });

const times = { start: '2026-12-06T05:00:00Z', resolutionMs: 100, lines: 9, times: [[1, 0], [4, 1500], [6, 62000], [9, 3723000]] };
eq('elapsed of a pair\'s line', log.elapsedAt(times, 4), 1500);
eq('elapsed between pairs', log.elapsedAt(times, 5), 1500);
eq('elapsed of the first line', log.elapsedAt(times, 1), 0);
eq('elapsed of the last line', log.elapsedAt(times, 9), 3723000);
eq('elapsed past the index', log.elapsedAt(times, 10), null);
eq('elapsed without an index', log.elapsedAt(null, 1), null);
eq('elapsed before the first pair', log.elapsedAt({ lines: 5, times: [[3, 10]] }, 2), null);
eq('elapsed format', [0, 999, 1500, 62000, 600000, 3723000].map(log.fmtElapsed), ['+0:00', '+0:00', '+0:01', '+1:02', '+10:00', '+1:02:03']);

if (failed) {
  console.log(failed + ' failed');
  process.exit(1);
}
console.log('ok');
