import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { MemoryChunkCache } from '../../src/engine/cache/memory-cache.js';
import { ChunkLoader, DEFAULT_TUNING, type BlobFetcher, type ChunkWant, type FetchTuning } from '../../src/engine/chunk-loader.js';
import { DecodePool } from '../../src/engine/decode-pool.js';
import type { Chunk } from '../../src/estargz/layer-index.js';
import { isEstargzError } from '../../src/estargz/errors.js';
import type { FetchOperation } from '../../src/metrics/store-metrics.js';
import { testLog, testTelemetry } from '../../testkit/telemetry.js';

const digestOf = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A blob of gzip members, one chunk each, with the plain bytes and the chunk list. */
function makeBlob(sizes: number[]): { blob: Buffer; plains: Buffer[]; chunks: Chunk[] } {
  const plains = sizes.map((n) => randomBytes(n));
  const members = plains.map((p) => gzipSync(p));
  const chunks: Chunk[] = [];
  let at = 0;
  for (const [i, member] of members.entries()) {
    chunks.push({ fileOffset: 0, size: plains[i]!.length, blobOffset: at, blobEnd: at + member.length, innerOffset: 0, digest: digestOf(plains[i]!) });
    at += member.length;
  }
  return { blob: Buffer.concat(members), plains, chunks };
}

/** An in-process source: records each call, can damage answers, and can hand out buffers as exclusive. */
class FakeSource implements BlobFetcher {
  calls: { ranges: { offset: number; length: number }[]; operation: FetchOperation | undefined }[] = [];
  /** Bytes of the next `damage` answers are flipped. */
  damage = 0;
  readOwned?: BlobFetcher['readOwned'];
  /** `owned`: readOwned says the buffers are exclusive; `shared`: answers are in shared memory (as RemoteBlob's are). */
  constructor(private readonly blob: Buffer, owned: boolean, private readonly shared = false) {
    if (owned) this.readOwned = (ranges, opts) => this.answer(ranges, opts.operation);
  }
  get size(): number {
    return this.blob.length;
  }
  async readRanges(ranges: readonly { offset: number; length: number }[], _signal?: AbortSignal, operation?: FetchOperation): Promise<Buffer[]> {
    return (await this.answer(ranges, operation)).map((r) => r.data);
  }
  private async answer(ranges: readonly { offset: number; length: number }[], operation: FetchOperation | undefined): Promise<{ data: Buffer; exclusive: boolean }[]> {
    this.calls.push({ ranges: ranges.map((r) => ({ ...r })), operation });
    await new Promise((r) => setImmediate(r));
    const flip = this.damage > 0;
    if (flip) this.damage--;
    return ranges.map((r) => {
      // A buffer of its own (what RemoteBlob gives for a single-range answer).
      const data = this.shared ? Buffer.from(new SharedArrayBuffer(r.length + 16), 16, r.length) : Buffer.allocUnsafeSlow(r.length);
      this.blob.copy(data, 0, r.offset, r.offset + r.length);
      if (flip) data[Math.floor(r.length / 2)]! ^= 0xff;
      return { data, exclusive: !this.shared };
    });
  }
}

const TUNING: FetchTuning = { ...DEFAULT_TUNING, mergeGapBytes: 1024, fetchTimeoutMs: 10_000, readAheadBytes: 0, readAheadMaxBytes: 0, verifyRetries: 2, verifyRetryWaitMs: 1 };

describe('ChunkLoader against an in-process source', () => {
  const pool = new DecodePool(testTelemetry(), { threads: 1 });
  after(() => pool.close());
  const loader = (source: BlobFetcher, tuning: Partial<FetchTuning> = {}, fetched: [number, number, FetchOperation][] = []) => new ChunkLoader({
    log: testLog(), metrics: testTelemetry().metrics, fetcher: source, pool, memory: new MemoryChunkCache(64 << 20, testTelemetry().metrics), disk: null, tuning: { ...TUNING, ...tuning }, layer: 'testlayer',
    onFetched: (o, e, op) => fetched.push([o, e, op]),
  });
  const wants = (chunks: Chunk[]): ChunkWant[] => chunks.map((chunk, i) => ({ chunk, path: `dir/file${i}` }));

  for (const [owned, shared, what] of [[false, false, 'buffers that may be shared, copied'], [true, false, 'exclusive buffers, transferred'], [true, true, 'shared memory, read in place']] as const) {
    test(`loads verified bytes in one request for nearby members (${what})`, async () => {
      const { blob, plains, chunks } = makeBlob([1000, 70_000, 5, 300_000, 2_000_000]);
      const source = new FakeSource(blob, owned, shared);
      const fetched: [number, number, FetchOperation][] = [];
      const l = loader(source, {}, fetched);
      const got = await Promise.all(l.load(wants(chunks), 'on_demand'));
      assert.deepEqual(got, plains);
      assert.equal(source.calls.length, 1);
      assert.deepEqual(source.calls[0]!.ranges, [{ offset: 0, length: blob.length }]);
      assert.equal(source.calls[0]!.operation, 'on_demand', 'the operation labels the request');
      assert.deepEqual(fetched, [[0, blob.length, 'on_demand']]);
      // Cached now: no request.
      assert.deepEqual(await Promise.all(l.load(wants(chunks.slice(1, 2)), 'on_demand')), [plains[1]]);
      assert.equal(source.calls.length, 1);
    });
  }

  test('on a slow link a large fetch goes as pieces in blob order, the first at once, the others a window at a time', async () => {
    const { blob, plains, chunks } = makeBlob([100_000, 100_000, 100_000, 100_000, 100_000, 100_000]);
    const inner = new FakeSource(blob, true);
    let inFlight = 0;
    let most = 0;
    const starts: number[] = [];
    // Answers take a few ms, so that pieces overlap as they would on a link.
    const source: BlobFetcher = {
      size: blob.length,
      readRanges: (ranges, signal, op) => inner.readRanges(ranges, signal, op),
      readOwned: async (ranges, opts) => {
        starts.push(ranges[0]!.offset);
        most = Math.max(most, ++inFlight);
        await new Promise((r) => setTimeout(r, 5));
        try {
          return await inner.readOwned!(ranges, opts);
        } finally {
          inFlight--;
        }
      },
    };
    const l = new ChunkLoader({
      log: testLog(), metrics: testTelemetry().metrics, fetcher: source, pool, memory: new MemoryChunkCache(64 << 20, testTelemetry().metrics), disk: null, tuning: { ...TUNING }, layer: 'testlayer',
      onFetched: () => {},
      pieces: () => ({ bytes: 210_000, window: 2 }),
    });
    const got = await Promise.all(l.load(wants(chunks), 'on_demand'));
    assert.deepEqual(got, plains);
    // ~100 KB members, pieces of at most 210 KB: two members each, three pieces, asked in blob order.
    assert.deepEqual(starts, [0, chunks[2]!.blobOffset, chunks[4]!.blobOffset]);
    assert.ok(most <= 3, `${most} in flight`);
    // Without a cut (a fast link) the same load is one request.
    const fast = new FakeSource(blob, true);
    const one = new ChunkLoader({
      log: testLog(), metrics: testTelemetry().metrics, fetcher: fast, pool, memory: new MemoryChunkCache(64 << 20, testTelemetry().metrics), disk: null, tuning: { ...TUNING }, layer: 'testlayer',
      onFetched: () => {},
      pieces: () => ({ bytes: Infinity, window: 1 }),
    });
    assert.deepEqual(await Promise.all(one.load(wants(chunks), 'on_demand')), plains);
    assert.equal(fast.calls.length, 1);
  });

  test('a chunk wanted by many readers at once is fetched once', async () => {
    const { blob, plains, chunks } = makeBlob([50_000, 50_000]);
    const source = new FakeSource(blob, true);
    const l = loader(source, { mergeGapBytes: 0, maxSpanBytes: 1 });
    const loads = Array.from({ length: 16 }, () => l.load(wants(chunks), 'on_demand')).flat();
    const got = await Promise.all(loads);
    for (const [i, b] of got.entries()) assert.deepEqual(b, plains[i % 2]);
    const asked = source.calls.flatMap((c) => c.ranges.map((r) => r.offset)).sort((a, b) => a - b);
    assert.deepEqual(asked, [0, chunks[1]!.blobOffset], 'each member asked for once');
  });

  test('bytes that fail verification are fetched again; a chunk that keeps failing names layer, file, offset and compressed range', async () => {
    const { blob, plains, chunks } = makeBlob([20_000]);
    const source = new FakeSource(blob, true);
    source.damage = 1;
    const l = loader(source);
    assert.deepEqual(await Promise.all(l.load(wants(chunks), 'on_demand')), plains, 'one bad answer is retried');
    assert.equal(source.calls.length, 2);

    const bad = makeBlob([20_000]);
    const always = new FakeSource(bad.blob, true);
    always.damage = Infinity;
    const c = bad.chunks[0]!;
    await assert.rejects(Promise.all(loader(always).load(wants(bad.chunks), 'prefetch')), (err) => {
      assert.ok(isEstargzError(err), String(err));
      assert.match(err.message, /^layer testlayer: "dir\/file0" at file offset 0, compressed bytes \[0, \d+\) of the blob: /);
      assert.match(err.message, new RegExp(`compressed bytes \\[${c.blobOffset}, ${c.blobEnd}\\)`));
      assert.equal(err.context.path, 'dir/file0');
      assert.equal(err.context.blobOffset, 0);
      return true;
    });
    assert.equal(always.calls.length, 1 + TUNING.verifyRetries);
  });

  test('a lying TOC (a digest with another size) is refused, not served short', async () => {
    const { blob, chunks } = makeBlob([4000]);
    const l = loader(new FakeSource(blob, true));
    await Promise.all(l.load(wants(chunks), 'on_demand'));
    const liar: Chunk = { ...chunks[0]!, size: 3000 };
    await assert.rejects(Promise.all(l.load([{ chunk: liar, path: 'liar' }], 'on_demand')), /CHUNK_SIZE_MISMATCH|is 3000 bytes in the TOC/);
  });

  /** A source in shared memory whose answers come with `release` (as RemoteBlob's pooled bodies do): a release records and overwrites the memory, as its next use would. */
  const pooledSource = (blob: Buffer, releases: { offset: number; at: number }[]): BlobFetcher => ({
    size: blob.length,
    readRanges: async () => { throw new Error('readOwned only'); },
    readOwned: async (ranges) => ranges.map((r) => {
      const data = Buffer.from(new SharedArrayBuffer(r.length));
      blob.copy(data, 0, r.offset, r.offset + r.length);
      return { data, exclusive: false, release: () => { releases.push({ offset: r.offset, at: performance.now() }); data.fill(0xa5); } };
    }),
  });

  test('pooled memory is let go once its decode tasks are done, never while the layer holds it, after a spill write', async () => {
    const { blob, plains, chunks } = makeBlob([30_000, 200_000, 1000]);
    for (const [hold, expectRelease] of [[false, true], [true, false], ['spill', true]] as const) {
      const releases: { offset: number; at: number }[] = [];
      let written = 0;
      const l = new ChunkLoader({
        log: testLog(), metrics: testTelemetry().metrics, fetcher: pooledSource(blob, releases), pool, memory: new MemoryChunkCache(64 << 20, testTelemetry().metrics), disk: null, tuning: TUNING, layer: 'testlayer',
        onFetched: () => {},
        hold: () => (hold === 'spill' ? new Promise<void>((resolve) => setTimeout(() => { written = performance.now(); resolve(); }, 30)) : hold),
      });
      // Overwriting the memory at release changes none of the bytes served: the decoders were done with it.
      assert.deepEqual(await Promise.all(l.load(wants(chunks), 'on_demand')), plains, `hold ${hold}`);
      // The readers' promises resolve as the decode task's answer is handed out; the release follows in a later turn.
      const deadline = Date.now() + 5000;
      while (expectRelease && releases.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setImmediate(r));
      if (hold === 'spill') assert.ok(written > 0 && releases[0]!.at >= written, 'released after the spill write');
      assert.deepEqual(releases.map((r) => r.offset), expectRelease ? [0] : [], `hold ${hold}`);
      assert.deepEqual(await Promise.all(l.load(wants(chunks), 'on_demand')), plains, 'cached bytes unchanged');
    }
  });

  test('ingest decodes chunks from bytes fetched elsewhere and leaves the buffer usable', async () => {
    const { blob, plains, chunks } = makeBlob([10_000, 90_000, 3]);
    const source = new FakeSource(blob, true);
    const l = loader(source);
    const buf = Buffer.from(blob);
    assert.equal(await l.ingest(0, buf, wants(chunks), 'background'), 0);
    assert.equal(buf.length, blob.length, 'not transferred');
    assert.deepEqual(buf, blob);
    assert.equal(source.calls.length, 0);
    for (const c of chunks) assert.equal(l.isCached(c.digest), true);
    assert.deepEqual(await Promise.all(l.load(wants(chunks), 'on_demand')), plains);
    assert.equal(source.calls.length, 0);
  });
});
