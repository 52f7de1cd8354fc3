import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { WholeLayerHash } from '../../src/engine/whole-layer-hash.js';

const digest = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

async function hashInPieces(blob: Buffer, piece: number): Promise<Awaited<ReturnType<WholeLayerHash['digests']>>> {
  const h = new WholeLayerHash();
  for (let i = 0; i < blob.length; i += piece) await h.update(blob.subarray(i, i + piece));
  return h.digests();
}

test('blob digest and diff_id of a multi-member gzip stream fed in pieces', async () => {
  const parts = [randomBytes(300_000), Buffer.alloc(2_000_000, 'x'), randomBytes(10)];
  const blob = Buffer.concat(parts.map((p) => gzipSync(p)));
  const d = await hashInPieces(blob, 65_536);
  assert.equal(d.blob, digest(blob));
  assert.equal(d.diff, digest(Buffer.concat(parts)));
});

test('a blob that does not inflate is an answer, not an exception (the background-fetch crash)', async () => {
  const blob = gzipSync(randomBytes(500_000));
  for (const at of [20, 1000, blob.length - 6]) {
    const bad = Buffer.from(blob);
    bad[at] = bad[at]! ^ 0xff;
    const d = await hashInPieces(bad, 4096);
    assert.equal(d.blob, digest(bad));
    assert.ok(d.diff instanceof Error, `flip at ${at}: ${String(d.diff)}`);
  }
  const notGzip = await hashInPieces(randomBytes(100_000), 8192);
  assert.ok(notGzip.diff instanceof Error);
});

test('discard() of a half-fed hash leaves nothing behind', async () => {
  const h = new WholeLayerHash();
  await h.update(gzipSync(randomBytes(100_000)).subarray(0, 5000));
  h.discard();
});
