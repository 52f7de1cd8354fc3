import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ListFileError, filesForLayer, formatList, parseList } from '../../src/optimize/list-file.js';
import { ReadRecorder } from '../../src/optimize/recorder.js';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;

describe('prioritized-files list file', () => {
  test('formatList then parseList gives each layer its files in order; lines before a section go to every layer', () => {
    const text = formatList('reg/app:1', [{ digest: D1, paths: ['bin/sh', 'etc/a'] }, { digest: D2, paths: [] }, { digest: D2, paths: ['#odd', '[odd', 'x\ny'] }]);
    assert.equal(text, `# files read by the workload of reg/app:1, in the order of their first read, per layer\n[layer 1 ${D1}]\n/bin/sh\n/etc/a\n[layer 3 ${D2}]\n/#odd\n/[odd\n`);
    const list = parseList(`/etc/all\n${text}`, 'f');
    assert.deepEqual(list.all, ['/etc/all']);
    assert.deepEqual(filesForLayer(list, { index: 0, digest: D1, count: 3 }, 'f'), ['/bin/sh', '/etc/a', '/etc/all']);
    assert.deepEqual(filesForLayer(list, { index: 1, digest: D1, count: 3 }, 'f'), ['/etc/all']);
    assert.deepEqual(filesForLayer(list, { index: 2, digest: D2, count: 3 }, 'f'), ['/#odd', '/[odd', '/etc/all']);
  });

  test('hand-written lines: comments, blank lines, CRLF, names without a leading slash, a section without digest', () => {
    const list = parseList('# c\r\n\r\n  etc/x  \r\n[layer 2]\r\nusr/bin/y\r\n', 'f');
    assert.deepEqual(list.all, ['etc/x']);
    assert.deepEqual(list.layers.get(1), { paths: ['usr/bin/y'] });
  });

  test('refused: a malformed section, a layer the image lacks, another layer digest', () => {
    assert.throws(() => parseList('[layer x]\n', 'f'), (e: unknown) => e instanceof ListFileError && /f:1: expected "\[layer N\]"/.test(e.message));
    assert.throws(() => parseList('[layer 0]\n', 'f'), ListFileError);
    const list = parseList(`[layer 3 ${D1}]\n/a\n`, 'f');
    assert.throws(() => filesForLayer(list, { index: 0, digest: D1, count: 2 }, 'f'), /\[layer 3\] but the image has 2 layer\(s\)/);
    assert.throws(() => filesForLayer(list, { index: 2, digest: D2, count: 3 }, 'f'), /was recorded for sha256:1{64}, but the image's layer 3 is sha256:2{64}/);
  });
});

describe('ReadRecorder', () => {
  test('first read of each file per layer, in order; nothing after stop()', () => {
    const r = new ReadRecorder();
    for (const [d, p] of [[D1, 'b'], [D2, 'x'], [D1, 'a'], [D1, 'b'], [D2, 'x'], [D2, 'b']] as const) r.note(d, p);
    r.stop();
    r.note(D1, 'late');
    assert.deepEqual(r.paths(D1), ['b', 'a']);
    assert.deepEqual(r.paths(D2), ['x', 'b']);
    assert.deepEqual(r.paths('sha256:none'), []);
    assert.equal(r.size, 4);
  });
});
