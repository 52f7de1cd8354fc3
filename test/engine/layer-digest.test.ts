import assert from 'node:assert/strict';
import { createHash, randomBytes as cryptoRandom } from 'node:crypto';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { LayerDigest } from '../../src/engine/layer-digest.js';
import type { Chunk } from '../../src/estargz/layer-index.js';
import { BufferSource } from '../../src/estargz/source.js';
import { openZstdChunked } from '../../src/zstdchunked/open.js';
import type { ZstdRebuildPlan } from '../../workers/layer-digest.js';
import { makeLayerTar, randomBytes } from '../../testkit/layer-tar.js';
import { writeZstdChunked } from '../../testkit/zstd-chunked-writer.js';

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

/** A zstd:chunked layer written by the test writer, and its digest worker plan. */
async function zstdPlanned(): Promise<{ blob: Buffer; tar: Buffer; plan: ZstdRebuildPlan }> {
  const tar = await makeLayerTar([
    { name: 'a/', type: 'directory' },
    { name: 'a/big', type: 'file', content: Buffer.concat([randomBytes(200_000, 41), Buffer.alloc(50_000), randomBytes(70_000, 42)]) },
    { name: 'a/link', type: 'link', linkname: 'a/big' },
    { name: 'a/small', type: 'file', content: Buffer.from('small') },
    { name: 'a/empty', type: 'file', content: Buffer.alloc(0) },
  ]);
  const { blob, annotations } = await writeZstdChunked(tar, { chunkSize: 16 << 10 });
  const z = await openZstdChunked(new BufferSource(blob), annotations);
  const files = new Map<string, readonly Chunk[]>();
  for (const [path, node] of z.index.byPath) if (node.type === 'reg') files.set(path, node.chunks);
  return { blob, tar, plan: { kind: 'zstd:chunked', tarSplit: z.tarSplit, tarSplitPosition: z.tarSplitPosition, files, layer: 'test' } };
}

test('LayerDigest (zstd:chunked): the diffID is the sha256 of the tar rebuilt from the tar-split and the frames, whatever the pieces', async () => {
  const { blob, tar, plan } = await zstdPlanned();
  for (const piece of [blob.length, 8 << 10, 1000, 7]) {
    const d = new LayerDigest(plan);
    for (let i = 0; i < blob.length; i += piece) await d.push(blob.subarray(i, i + piece));
    assert.deepEqual(await d.finish(), { blob: sha(blob), diff: sha(tar) }, `pieces of ${piece}`);
  }
});

test('LayerDigest (zstd:chunked): a damaged frame or a blob cut short is an answer naming the chunk, not a crash', async () => {
  const { blob, plan } = await zstdPlanned();
  const victim = plan.files.get('a/big')![2]!;
  const bad = Buffer.from(blob);
  bad[victim.blobOffset + Math.floor((victim.blobEnd - victim.blobOffset) / 2)]! ^= 0x40;
  const d = new LayerDigest(plan);
  for (let i = 0; i < bad.length; i += 4096) await d.push(bad.subarray(i, i + 4096));
  const r = await d.finish();
  assert.equal(r.blob, sha(bad));
  assert.ok(r.diff instanceof Error && /a\/big.*file offset/.test(r.diff.message), String(r.diff));

  const short = new LayerDigest(plan);
  await short.push(blob.subarray(0, victim.blobEnd - 1));
  const s = await short.finish();
  assert.ok(s.diff instanceof Error && /past the blob's/.test(s.diff.message), String(s.diff));
});
