import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { HeldSpans } from '../../src/engine/held-spans.js';
import { testLog } from '../../testkit/telemetry.js';

const blob = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 31 + 7) & 0xff));
const piece = (offset: number, end: number): Buffer => Buffer.from(blob.subarray(offset, end));

/** The pieces put back where they belong; gaps filled from the blob, as the background fetch does. */
function assemble(offset: number, end: number, t: Awaited<ReturnType<HeldSpans['take']>>): Buffer {
  const out = Buffer.alloc(end - offset, 0xee);
  for (const p of t.pieces) p.data.copy(out, p.offset - offset);
  for (const g of t.gaps) blob.copy(out, g.offset - offset, g.offset, g.end);
  return out;
}

describe('HeldSpans: readers\' compressed bytes kept for the whole-layer check', () => {
  test('take gives the held parts and the gaps between them; overlapping holds keep one copy', async () => {
    const h = new HeldSpans(1 << 20, undefined, 'l', testLog());
    assert.equal(h.hold(100, piece(100, 200)), true);
    assert.equal(h.hold(150, piece(150, 300)), true);
    assert.equal(h.hold(120, piece(120, 180)), false, 'already held: no reference kept');
    h.hold(500, piece(500, 600));
    assert.equal(h.memoryHeld, 300);
    const t = await h.take(50, 550);
    assert.deepEqual(t.gaps, [{ offset: 50, end: 100 }, { offset: 300, end: 500 }]);
    assert.deepEqual(assemble(50, 550, t), blob.subarray(50, 550));
    await h.close();
  });

  test('release lets go of what the check went past, and nothing before it is held again until a rewind', async () => {
    const h = new HeldSpans(1 << 20, undefined, 'l', testLog());
    h.hold(0, piece(0, 100));
    h.hold(200, piece(200, 300));
    h.release(250);
    assert.equal(h.memoryHeld, 100, 'the range that ends past 250 stays');
    assert.equal(h.hold(0, piece(0, 100)), false);
    const t = await h.take(0, 300);
    assert.deepEqual(t.gaps, [{ offset: 0, end: 200 }]);
    h.rewind();
    assert.equal(h.hold(0, piece(0, 100)), true);
    await h.close();
    assert.equal(h.memoryHeld, 0);
    assert.equal(h.hold(0, piece(0, 100)), false, 'closed: nothing held');
  });

  test('past the memory bound, ranges spill to a file at their blob offsets; without a directory they are not held', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'held-'));
    try {
      const h = new HeldSpans(100, dir, 'layer/x', testLog());
      h.hold(0, piece(0, 80));
      h.hold(300, piece(300, 700));
      h.hold(800, piece(800, 1000));
      assert.equal(h.memoryHeld, 80);
      const t = await h.take(0, 1000);
      assert.deepEqual(t.gaps, [{ offset: 80, end: 300 }, { offset: 700, end: 800 }]);
      assert.deepEqual(assemble(0, 1000, t), blob);
      assert.equal((await readdir(dir)).length, 1);
      await h.close();
      assert.deepEqual(await readdir(dir), [], 'the spill file goes with the check');

      const noDir = new HeldSpans(100, undefined, 'l', testLog());
      noDir.hold(0, piece(0, 80));
      assert.equal(noDir.hold(300, piece(300, 700)), false);
      assert.deepEqual((await noDir.take(0, 1000)).gaps, [{ offset: 80, end: 1000 }]);
      await noDir.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
