import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { DEFAULT_CONFIG, engineOptions, type EngineOverrides } from '../../src/daemon/config.js';
import type { BlobFetcher } from '../../src/engine/chunk-loader.js';
import { DecodePool } from '../../src/engine/decode-pool.js';
import { Engine } from '../../src/engine/engine.js';
import { zstdChunkedContent, type EngineLayer } from '../../src/engine/layer.js';
import { BufferSource } from '../../src/estargz/source.js';
import { isZstdChunkedError } from '../../src/zstdchunked/errors.js';
import { openZstdChunked, type ZstdChunkedBlob } from '../../src/zstdchunked/open.js';
import { makeLayerTar, randomBytes, type SpecEntry } from '../../testkit/layer-tar.js';
import { loadZstdFixture, zstdCliDecode } from '../zstdchunked/fixture.js';
import { writeZstdChunked } from '../../testkit/zstd-chunked-writer.js';
import { testTelemetry } from '../../testkit/telemetry.js';

const sha = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** The blob in memory, every range asked for recorded. */
function recordingFetcher(blob: Buffer): BlobFetcher & { ranges: [number, number][] } {
  const ranges: [number, number][] = [];
  return {
    size: blob.length,
    ranges,
    async readRanges(rs) {
      return rs.map(({ offset, length }) => {
        ranges.push([offset, offset + length]);
        return Buffer.from(blob.subarray(offset, offset + length));
      });
    },
  };
}

function spec(): SpecEntry[] {
  return [
    { name: 'bin/', type: 'directory' },
    { name: 'bin/tool', type: 'file', mode: 0o755, content: randomBytes(300_000, 7) },
    { name: 'bin/tool-link', type: 'link', linkname: 'bin/tool' },
    { name: 'data/', type: 'directory' },
    // Random, a run of zeros (a zeros chunk), random again.
    { name: 'data/holey', type: 'file', content: Buffer.concat([randomBytes(20_000, 8), Buffer.alloc(70_000), randomBytes(5_000, 9)]) },
    { name: 'data/zeros', type: 'file', content: Buffer.alloc(64 << 10) }, // one chunk: a plain zstd frame, as c/storage writes it
    { name: 'data/small', type: 'file', content: Buffer.from('small\n') },
    { name: 'data/empty', type: 'file', content: Buffer.alloc(0) },
  ];
}

interface Made {
  blob: Buffer;
  annotations: Record<string, string>;
  diffID: string;
  contents: Map<string, Buffer>;
}

async function make(entries: SpecEntry[] = spec()): Promise<Made> {
  const tar = await makeLayerTar(entries);
  const { blob, annotations } = await writeZstdChunked(tar, { chunkSize: 32 << 10 });
  const contents = new Map(entries.filter((e) => e.type === 'file').map((e) => [e.name, e.content!]));
  return { blob, annotations, diffID: sha(tar), contents };
}

async function withEngine<T>(opts: EngineOverrides, fn: (e: Engine) => Promise<T>): Promise<T> {
  const engine = await Engine.create(engineOptions(DEFAULT_CONFIG, { ...opts, fetch: { noBackgroundFetch: true, noPrefetch: true, ...opts.fetch } }), testTelemetry());
  try {
    return await fn(engine);
  } finally {
    await engine.close();
  }
}

const BACKGROUND: EngineOverrides = { fetch: { noBackgroundFetch: false, background: { idleMs: 0, spanBytes: 64 << 10, spanAttempts: 1, runRetryWaitMs: 5, maxWholeFailures: 1, maxRuns: 1 } } };

async function openLayer(engine: Engine, blob: Buffer, annotations: Record<string, string>, diffID: string): Promise<{ layer: EngineLayer; z: ZstdChunkedBlob; fetcher: ReturnType<typeof recordingFetcher> }> {
  const z = await openZstdChunked(new BufferSource(blob), annotations, { checkTarSplit: engine.pool.checkTarSplit });
  const fetcher = recordingFetcher(blob);
  const layer = engine.openLayer({ id: `zstd-${Math.random().toString(36).slice(2, 8)}`, blobDigest: sha(blob), diffID, fetcher, content: zstdChunkedContent(z) });
  return { layer, z, fetcher };
}

describe('the engine serving zstd:chunked layers', () => {
  test('every file reads back exactly; a zeros chunk is never fetched', async () => {
    const m = await make();
    // No read-ahead: the zeros chunk's read alone.
    await withEngine({ tuning: { readAheadChunks: 0, readAheadBytes: 0 } }, async (engine) => {
      const { layer, z, fetcher } = await openLayer(engine, m.blob, m.annotations, m.diffID);
      const holey = z.index.byPath.get('data/holey')!;
      assert.deepEqual(holey.chunks.map((c) => c.codec), ['zstd', 'zeros', 'zstd']);
      const zeroChunk = holey.chunks[1]!;
      assert.deepEqual(await layer.readFile(holey, zeroChunk.fileOffset, zeroChunk.size), Buffer.alloc(zeroChunk.size));
      assert.equal(fetcher.ranges.length, 0, 'a zeros chunk costs no fetch');
      for (const [name, content] of m.contents) {
        const node = z.index.byPath.get(name)!;
        assert.ok(node.chunks.every((c) => c.codec === 'zstd' || c.codec === 'zeros'));
        assert.equal(sha(await layer.readFile(node, 0, node.size + 10)), sha(content), name);
        if (node.size > 100) assert.equal(sha(await layer.readFile(node, 33, 100)), sha(content.subarray(33, 133)), `${name} at 33`);
        // What a FUSE read gets: the chunks' pieces in order, one per chunk the range touches, not joined.
        const parts = await layer.readFileParts(node, 1, node.size);
        assert.equal(parts.length, node.chunks.length, `${name}: one piece per chunk`);
        assert.equal(sha(Buffer.concat(parts)), sha(content.subarray(1)), `${name} in pieces`);
      }
      assert.ok(fetcher.ranges.every(([s, e]) => !(s >= zeroChunk.blobOffset && e <= zeroChunk.blobEnd)), 'no request for a zeros frame alone');
      await layer.close();
    });
  });

  test('background fetch verifies the blob digest and the diff_id of the tar rebuilt from the tar-split', async () => {
    const m = await make();
    await withEngine(BACKGROUND, async (engine) => {
      const { layer } = await openLayer(engine, m.blob, m.annotations, m.diffID);
      layer.startBackgroundFetch();
      await layer.backgroundDone();
      assert.equal(layer.state, 'complete', layer.failureReason);
      assert.equal(layer.fetchedBytes, m.blob.length);
      await layer.close();

      const wrong = await openLayer(engine, m.blob, m.annotations, 'sha256:' + '0'.repeat(64));
      wrong.layer.startBackgroundFetch();
      await wrong.layer.backgroundDone();
      assert.equal(wrong.layer.state, 'failed');
      assert.match(wrong.layer.failureReason!, new RegExp(`the uncompressed layer hashes to ${m.diffID}, the image config says sha256:0{64}`));
      await wrong.layer.close();
    });
  });

  test("podman 5.4's blob: the rebuilt tar hashes to the config's diff_id, which is also zstd -dc's", async () => {
    const fx = await loadZstdFixture();
    assert.equal(sha(await zstdCliDecode(fx.blobPath)), fx.diffID);
    await withEngine(BACKGROUND, async (engine) => {
      const { layer, z } = await openLayer(engine, fx.blob, fx.annotations, fx.diffID);
      assert.equal(z.tocDigest, fx.annotations['io.github.containers.zstd-chunked.manifest-checksum']);
      layer.startBackgroundFetch();
      await layer.backgroundDone();
      assert.equal(layer.state, 'complete', layer.failureReason);
      await layer.close();
    });
  });

  test('a damaged frame: that file fails, the others read, and the whole-layer check does not pass', async () => {
    const m = await make();
    const z0 = await openZstdChunked(new BufferSource(m.blob), m.annotations);
    const tool = z0.index.byPath.get('bin/tool')!;
    const victim = tool.chunks[1]!;
    const bad = Buffer.from(m.blob);
    for (let i = victim.blobOffset + 6; i < victim.blobEnd - 4; i += 7) bad[i]! ^= 0x5a;
    await withEngine({ ...BACKGROUND, tuning: { verifyRetries: 0 } } as EngineOverrides, async (engine) => {
      const { layer, z } = await openLayer(engine, bad, m.annotations, m.diffID);
      const node = z.index.byPath.get('bin/tool')!;
      await assert.rejects(layer.readFile(node, 0, node.size), (err: Error) => /bin\/tool/.test(err.message) && /zstd|verification/.test(err.message));
      assert.equal(sha(await layer.readFile(node, 0, victim.fileOffset)), sha(m.contents.get('bin/tool')!.subarray(0, victim.fileOffset)), 'the chunk before it still reads');
      const small = z.index.byPath.get('data/small')!;
      assert.equal((await layer.readFile(small, 0, 100)).toString(), 'small\n');
      layer.startBackgroundFetch();
      await layer.backgroundDone();
      assert.notEqual(layer.state, 'complete');
      // The run stops at the range whose chunk fails, or, when a reader was loading that chunk at the time (its
      // read-ahead), at the rebuild, which decodes and checks every frame itself.
      assert.match(layer.failureReason!, /failed verification|tar cannot be had: .*"bin\/tool" at file offset 32768/);
      await layer.close();
    });
  });

  test('the tar-split check on a decode worker refuses what the in-thread check refuses, with the same code', async (t) => {
    // Never on this thread (inlineMaxBytes 0), however small the tar-split: the worker's answer is what is tested.
    const pool = new DecodePool(testTelemetry(), { threads: 1, idleThreads: 1, inlineMaxBytes: 0 });
    const checkTarSplitInWorker = pool.checkTarSplit;
    t.after(() => pool.close());
    const m = await make([{ name: 'a', type: 'file', content: Buffer.from('abc') }, { name: 'b', type: 'file', mode: 0o600, content: Buffer.from('def') }]);
    // The manifest says b is 0644, the tar-split's header 0600: c/storage would export another tar than the tree served.
    const liar = await writeZstdChunked(await makeLayerTar([{ name: 'a', type: 'file', content: Buffer.from('abc') }, { name: 'b', type: 'file', mode: 0o600, content: Buffer.from('def') }]), {
      chunkSize: 32 << 10,
      alter: (entries) => { entries.find((e) => e.name === 'b')!.mode = 0o644; },
    });
    const inThread = await openZstdChunked(new BufferSource(liar.blob), liar.annotations).then(() => undefined, (err: unknown) => err);
    const inWorker = await openZstdChunked(new BufferSource(liar.blob), liar.annotations, { checkTarSplit: checkTarSplitInWorker }).then(() => undefined, (err: unknown) => err);
    assert.ok(isZstdChunkedError(inThread) && isZstdChunkedError(inWorker), `${String(inThread)} / ${String(inWorker)}`);
    assert.equal(inWorker.code, inThread.code);
    assert.equal(inWorker.message, inThread.message);
    const ok = await openZstdChunked(new BufferSource(m.blob), m.annotations, { checkTarSplit: checkTarSplitInWorker });
    assert.equal(ok.tarSize, (await makeLayerTar([{ name: 'a', type: 'file', content: Buffer.from('abc') }, { name: 'b', type: 'file', mode: 0o600, content: Buffer.from('def') }])).length);
  });
});
