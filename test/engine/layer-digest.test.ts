import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { LayerDigest } from '../../src/engine/layer-digest.js';
import { randomBytes } from '../helpers/layer-tar.js';

const sha = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

test('LayerDigest: blob digest and diffID of a blob pushed in pieces, owned and shared buffers alike', async () => {
  const plain = Buffer.concat([randomBytes(3 << 20, 7), Buffer.alloc(2 << 20, 0x61)]);
  const blob = gzipSync(plain);
  const d = new LayerDigest();
  // Pieces of every kind: views into a larger buffer (copied), a buffer of its own (transferred), tiny ones.
  const cuts = [0, 10, 100_000, 1_000_000, blob.length - 3, blob.length];
  for (let i = 0; i + 1 < cuts.length; i++) {
    const view = blob.subarray(cuts[i], cuts[i + 1]);
    await d.push(i === 2 ? Buffer.from(view) : view);
  }
  assert.deepEqual(await d.finish(), { blobDigest: sha(blob), diffID: sha(plain) });
  assert.equal(blob.length, cuts.at(-1), 'the caller\'s views were copied, not detached');
});

test('LayerDigest: bytes that do not gunzip fail finish(); close() stops a digest midway', async () => {
  const d = new LayerDigest();
  await d.push(Buffer.from('this is not gzip at all'));
  await assert.rejects(d.finish(), /does not gunzip/);
  const e = new LayerDigest();
  await e.push(gzipSync(Buffer.alloc(1000)).subarray(0, 20));
  await e.close();
  await assert.rejects(e.push(Buffer.alloc(1)), /closed/);
});
