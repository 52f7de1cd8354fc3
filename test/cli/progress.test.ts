import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createProgress, formatLine } from '../../src/cli/progress.js';

function sink(isTTY: boolean): { out: { write(t: string): void; isTTY: boolean; columns: number }; text: () => string } {
  let text = '';
  return { out: { write: (t: string) => { text += t; }, isTTY, columns: 200 }, text: () => text };
}

describe('progress', () => {
  test('tty: one line per item, redrawn in place, throttled between stage changes', () => {
    let now = 0;
    const s = sink(true);
    const p = createProgress(s.out, 'auto', { intervalMs: 100, now: () => now });
    p.start('a', 'layer 1/2', { stage: 'download', size: 2e6, downloaded: 0 });
    p.start('b', 'layer 2/2', { stage: 'download', size: 1e6, downloaded: 0 });
    const afterStarts = s.text();
    // The second draw goes back up over the one line drawn before it.
    assert.ok(afterStarts.includes('\x1b[1A'), JSON.stringify(afterStarts));
    now = 10;
    p.update('a', { downloaded: 1e6 }); // within the interval: not drawn now
    assert.equal(s.text(), afterStarts);
    p.update('a', { stage: 'convert', downloaded: 2e6, read: 0, tarBytes: 4e6 }); // a stage change draws at once
    const redraw = s.text().slice(afterStarts.length);
    assert.ok(redraw.startsWith('\x1b[2A'), JSON.stringify(redraw));
    const lines = redraw.split('\n').filter(Boolean);
    assert.equal(lines.length, 2);
    assert.match(lines[0]!, /layer 1\/2 convert +\[\.{24}\] read 2\.0\/2\.0 {2}tar 0\.0\/4\.0 MB/);
    assert.match(lines[1]!, /layer 2\/2 download +\[\.{24}\]/);
    p.done('b', { downloaded: 1e6, written: 5e5, pushed: 5e5 });
    p.close();
    const last = s.text().split('\x1b[2A').at(-1)!.split('\n').filter(Boolean);
    assert.match(last[1]!, /layer 2\/2 done +\[#{24}\]/);
  });

  test('json: start, progress at most once per interval and item, done; nothing drawn', () => {
    let now = 0;
    const s = sink(false);
    const p = createProgress(s.out, 'auto', { intervalMs: 1000, now: () => now });
    p.start('x', 'L', { stage: 'download', size: 10, downloaded: 0 });
    now = 1; p.update('x', { downloaded: 5 }); // too soon
    now = 1200; p.update('x', { downloaded: 8 });
    now = 1201; p.update('x', { stage: 'convert' }); // stage change: always
    p.done('x', { written: 3, pushed: 3 });
    p.close();
    const events = s.text().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(events.map((e) => [e.event, e.stage, e.downloaded]), [
      ['layer-start', 'download', 0], ['layer-progress', 'download', 8], ['layer-progress', 'convert', 8], ['layer-done', 'done', 8],
    ]);
    assert.deepEqual(events.at(-1), { event: 'layer-done', id: 'x', stage: 'done', size: 10, downloaded: 8, written: 3, pushed: 3 });
    assert.ok(!s.text().includes('\x1b'));
  });

  test('formatLine: the bar follows the current stage', () => {
    assert.match(formatLine('l', { stage: 'push', written: 4e6, pushed: 1e6 }, 8), /\[##\.{6}\]/);
    assert.match(formatLine('l', { stage: 'download', size: 4e6, downloaded: 4e6 }, 8), /\[#{8}\]/);
  });
});
