import assert from 'node:assert/strict';
import { createHash, randomBytes as cryptoRandom } from 'node:crypto';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { LayerDigest } from '../../src/engine/layer-digest.js';
import { randomBytes } from '../helpers/layer-tar.js';

const sha = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

async function digestInPieces(blob: Buffer, piece: number): Promise<Awaited<ReturnType<LayerDigest['finish']>>> {
  const d = new LayerDigest();
  for (let i = 0; i < blob.length; i += piece) await d.push(blob.subarray(i, i + piece));
  return d.finish();
}

test('LayerDigest: blob digest and diffID of a blob pushed in pieces; the caller\'s buffers stay usable', async () => {
  const plain = Buffer.concat([randomBytes(3 << 20, 7), Buffer.alloc(2 << 20, 0x61)]);
  const blob = gzipSync(plain);
  const d = new LayerDigest();
  const cuts = [0, 10, 100_000, 1_000_000, blob.length - 3, blob.length];
  const pieces: Buffer[] = [];
  for (let i = 0; i + 1 < cuts.length; i++) {
    const view = blob.subarray(cuts[i], cuts[i + 1]);
    const piece = i === 2 ? Buffer.from(view) : view;
    pieces.push(piece);
    await d.push(piece);
  }
  assert.deepEqual(await d.finish(), { blob: sha(blob), diff: sha(plain) });
  assert.deepEqual(pieces.map((p) => p.length), cuts.slice(1).map((c, i) => c - cuts[i]!), 'nothing pushed was detached');
});

test('LayerDigest: a multi-member gzip stream (an eStargz blob is one)', async () => {
  const parts = [cryptoRandom(300_000), Buffer.alloc(2_000_000, 'x'), cryptoRandom(10)];
  const blob = Buffer.concat(parts.map((p) => gzipSync(p)));
  assert.deepEqual(await digestInPieces(blob, 65_536), { blob: sha(blob), diff: sha(Buffer.concat(parts)) });
});

test('LayerDigest: a blob that does not inflate is an answer with its blob digest, never an exception (the background-fetch crash)', async () => {
  const blob = gzipSync(cryptoRandom(500_000));
  for (const at of [20, 1000, blob.length - 6]) {
    const bad = Buffer.from(blob);
    bad[at] = bad[at]! ^ 0xff;
    const d = await digestInPieces(bad, 4096);
    assert.equal(d.blob, sha(bad));
    assert.ok(d.diff instanceof Error && /does not gunzip/.test(d.diff.message), `flip at ${at}: ${String(d.diff)}`);
  }
  const notGzip = await digestInPieces(Buffer.from('this is not gzip at all'), 8);
  assert.ok(notGzip.diff instanceof Error);
});

test('LayerDigest: close() stops a digest midway', async () => {
  const e = new LayerDigest();
  await e.push(gzipSync(Buffer.alloc(1000)).subarray(0, 20));
  await e.close();
  await assert.rejects(e.push(Buffer.alloc(1)), /closed/);
});
