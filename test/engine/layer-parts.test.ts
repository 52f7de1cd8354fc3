// The parts EngineLayer is made of, each on its own with a fake chunk loader:
// the file read path, its read-ahead window, prefetch, the layer's status and
// the chunk list in blob order. (Against a real registry: engine.test.ts.)
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEFAULT_TUNING, type ChunkWant, type FetchTuning } from '../../src/engine/chunk-loader.js';
import { isEngineError } from '../../src/engine/errors.js';
import { FileReader } from '../../src/engine/file-reader.js';
import { chunksInBlobOrder } from '../../src/engine/layer-content.js';
import { LayerStatus } from '../../src/engine/layer-status.js';
import { Prefetch } from '../../src/engine/prefetch.js';
import { ReadAhead } from '../../src/engine/read-ahead.js';
import type { Chunk, LayerIndex, LayerNode, PrefetchHint } from '../../src/estargz/layer-index.js';
import type { FetchOperation } from '../../src/metrics/store-metrics.js';
import { testLog, testTelemetry } from '../../testkit/telemetry.js';

/** A regular file whose chunks are `sizes` bytes each, one member per chunk, its members from `blobOffset` on, 100 compressed bytes each. */
function file(path: string, ino: number, blobOffset: number, sizes: number[]): LayerNode {
  let fileOffset = 0;
  const chunks: Chunk[] = sizes.map((size, i) => {
    const c = { fileOffset, size, blobOffset: blobOffset + 100 * i, blobEnd: blobOffset + 100 * (i + 1), innerOffset: 0, digest: `sha256:${path}#${i}` };
    fileOffset += size;
    return c;
  });
  return {
    ino, path, type: 'reg', mode: 0o644, uid: 0, gid: 0, userName: '', groupName: '', size: fileOffset, mtime: 0, linkName: '',
    devMajor: 0, devMinor: 0, xattrs: new Map(), digest: undefined, chunks, nlink: 1, children: null, implicit: false,
  };
}

/** An index of `files` (byPath only, as the engine reads it), plus extra paths naming the same nodes (hardlinks). */
function index(files: LayerNode[], links: [string, LayerNode][] = [], prefetch: PrefetchHint = { kind: 'default', end: 0 }): LayerIndex {
  const byPath = new Map<string, LayerNode>([...files.map((f): [string, LayerNode] => [f.path, f]), ...links]);
  return { root: files[0]!, byPath, records: [], prefetch, totalFileBytes: 0, nodeCount: files.length };
}

/** A chunk's bytes: its digest's first letter after the '#', repeated (distinct per chunk index). */
const bytesOf = (c: Chunk): Buffer => Buffer.alloc(c.size, 0x61 + Number(c.digest.split('#')[1]));

/** A chunk loader that answers from memory and records what it was asked for. */
function fakeLoader(tuning: Partial<FetchTuning> = {}, fail: (c: Chunk) => boolean = () => false) {
  const cached = new Set<string>();
  const asked: { op: FetchOperation; chunks: string[] }[] = [];
  return {
    cached,
    asked,
    tuning: { ...DEFAULT_TUNING, mergeGapBytes: 0, fetchTimeoutMs: 1000, readAheadBytes: 0, readAheadMaxBytes: 0, ...tuning } as FetchTuning,
    isCached: (digest: string) => cached.has(digest),
    load(wants: readonly ChunkWant[], op: FetchOperation): Promise<Buffer>[] {
      asked.push({ op, chunks: wants.map((w) => w.chunk.digest) });
      return wants.map((w) => (fail(w.chunk) ? Promise.reject(new Error(`no ${w.chunk.digest}`)) : Promise.resolve(bytesOf(w.chunk))));
    },
  };
}

describe('chunksInBlobOrder', () => {
  test('every chunk once in blob order; a hardlinked file under its first path', () => {
    const b = file('b', 2, 0, [10, 10]);
    const a = file('a', 3, 200, [10]);
    const list = chunksInBlobOrder(index([a, b], [['z-link', b]]));
    assert.deepEqual(list.map((w) => [w.path, w.chunk.blobOffset]), [['b', 0], ['b', 100], ['a', 200]]);
  });
});

describe('FileReader: the read path', () => {
  test('a read spanning chunks: exactly its bytes, the chunks it needs asked for on demand', async () => {
    const f = file('f', 2, 0, [4, 4, 4]);
    const loader = fakeLoader({ readAheadChunks: 0 });
    const reader = new FileReader('l', loader, () => chunksInBlobOrder(index([f])), testTelemetry().metrics);
    assert.deepEqual(await reader.read(f, 3, 6), Buffer.from('abbbbc'));
    assert.deepEqual(loader.asked, [{ op: 'on_demand', chunks: ['sha256:f#0', 'sha256:f#1', 'sha256:f#2'] }]);
    assert.deepEqual(await reader.read(f, 10, 100), Buffer.from('cc'), 'clipped at the end of the file');
    assert.deepEqual(await reader.read(f, 12, 1), Buffer.alloc(0), 'past the end: nothing, nothing asked');
    assert.equal(loader.asked.length, 2);
  });

  test('the next chunks of the file are asked for in a request of their own; its failure is not the read\'s', async () => {
    const f = file('f', 2, 0, [4, 4, 4, 4]);
    const loader = fakeLoader({ readAheadChunks: 2 }, (c) => c.digest.endsWith('#2'));
    const reader = new FileReader('l', loader, () => chunksInBlobOrder(index([f])), testTelemetry().metrics);
    assert.deepEqual(await reader.read(f, 0, 4), Buffer.from('aaaa'));
    assert.deepEqual(loader.asked, [{ op: 'on_demand', chunks: ['sha256:f#0'] }, { op: 'on_demand', chunks: ['sha256:f#1', 'sha256:f#2'] }]);
  });

  test('a chunk shorter than it claims is refused (SHORT_READ), never served short', async () => {
    const f = file('f', 2, 0, [4, 4]);
    const loader = fakeLoader({ readAheadChunks: 0 });
    loader.load = (wants) => wants.map((w) => Promise.resolve(bytesOf(w.chunk).subarray(1)));
    const reader = new FileReader('l', loader, () => [], testTelemetry().metrics);
    await assert.rejects(reader.read(f, 0, 8), (err: unknown) => isEngineError(err) && err.code === 'SHORT_READ' && /"f" \[0, 8\) has 6 verified bytes/.test(err.message));
  });
});

describe('ReadAhead: the blob read-ahead window', () => {
  // 40 one-chunk files of 100 compressed bytes each, back to back.
  const files = Array.from({ length: 40 }, (_, i) => file(`f${String(i).padStart(2, '0')}`, i + 2, i * 100, [10]));
  const all = chunksInBlobOrder(index(files));
  const window = (wants: ChunkWant[]): [number, number] => [wants[0]!.chunk.blobOffset, wants.at(-1)!.chunk.blobEnd];
  const readOf = (ra: ReadAhead, i: number): ChunkWant[] => ra.after(files[i]!, 1, files[i]!.path, i * 100, i * 100 + 100);

  test('a first read asks for one step after it; in-order reads top it up and the step doubles to its maximum', () => {
    const ra = new ReadAhead(fakeLoader({ readAheadChunks: 0, readAheadBytes: 400, readAheadMaxBytes: 1600 }), () => all);
    assert.deepEqual(window(readOf(ra, 0)), [100, 500], 'first step: 400 bytes');
    assert.deepEqual(readOf(ra, 1), [], 'more than half a step still ahead: nothing');
    assert.deepEqual(readOf(ra, 2), [], 'at exactly half a step ahead: nothing');
    assert.deepEqual(window(readOf(ra, 3)), [500, 1200], 'back in order before the window ran out: the step doubles (800)');
    const steps: number[] = [];
    for (let i = 4; i < 30; i++) {
      const w = readOf(ra, i);
      if (w.length) steps.push(w.at(-1)!.chunk.blobEnd - (i * 100 + 100));
    }
    assert.ok(steps.length > 0 && steps.every((s) => s <= 1600), `steps ${steps.join(', ')}`);
    assert.equal(Math.max(...steps), 1600, 'the step grew to its maximum');
  });

  test('a jump starts a new window of one first step; cached chunks are left out', () => {
    const loader = fakeLoader({ readAheadChunks: 0, readAheadBytes: 400, readAheadMaxBytes: 1600 });
    const ra = new ReadAhead(loader, () => all);
    readOf(ra, 0);
    readOf(ra, 3);
    loader.cached.add('sha256:f21#0');
    const afterJump = readOf(ra, 20);
    assert.deepEqual(afterJump.map((w) => w.path), ['f22', 'f23', 'f24'], 'one step (400 bytes) after the jump, the cached f21 left out');
  });

  test('a large member straddling the step is left to its own read; readAheadBytes 0 turns the blob read-ahead off', () => {
    const big = [file('a', 2, 0, [10]), file('b', 3, 100, [10]), file('c', 4, 200, [10])];
    big[2]!.chunks[0]!.blobEnd = 1000; // one 800-byte member
    const list = chunksInBlobOrder(index(big));
    const ra = new ReadAhead(fakeLoader({ readAheadChunks: 0, readAheadBytes: 400, readAheadMaxBytes: 400 }), () => list);
    assert.deepEqual(ra.after(big[0]!, 1, 'a', 0, 100).map((w) => w.path), ['b']);
    const off = new ReadAhead(fakeLoader({ readAheadChunks: 0, readAheadBytes: 0 }), () => list);
    assert.deepEqual(off.after(big[0]!, 1, 'a', 0, 100), []);
  });
});

describe('Prefetch', () => {
  const files = [file('a', 2, 0, [10, 10]), file('b', 3, 200, [10]), file('c', 4, 300, [10])];
  const chunks = () => chunksInBlobOrder(index(files));

  function prefetch(hint: PrefetchHint, opts: Partial<{ noPrefetch: boolean; prefetchSize: number; prefetchTimeoutMs: number }> = {}, loader = fakeLoader()) {
    const events: string[] = [];
    const p = new Prefetch({ layer: 'l', log: testLog(), hint, payloadEnd: 400, loader, chunks, onStart: () => events.push('start'), onEnd: () => events.push('end') },
      { noPrefetch: false, prefetchSize: 250, prefetchTimeoutMs: 10_000, ...opts });
    return { p, events, loader };
  }

  test('the range: the landmark\'s, none, prefetch_size (within the chunk data), or none at all with noprefetch', () => {
    assert.equal(prefetch({ kind: 'landmark', end: 150 }).p.end(), 150);
    assert.equal(prefetch({ kind: 'none', end: 0 }).p.end(), 0);
    assert.equal(prefetch({ kind: 'default', end: 0 }).p.end(), 250);
    assert.equal(prefetch({ kind: 'default', end: 0 }, { prefetchSize: 1000 }).p.end(), 400);
    assert.equal(prefetch({ kind: 'landmark', end: 150 }, { noPrefetch: true }).p.end(), 0);
  });

  test('one run, shared by later calls: the chunks that start in the range, as prefetch; a failed chunk does not fail it', async () => {
    const { p, events, loader } = prefetch({ kind: 'landmark', end: 201 }, {}, fakeLoader({}, (c) => c.blobOffset === 100));
    await Promise.all([p.start(), p.start()]);
    await p.start();
    assert.deepEqual(loader.asked, [{ op: 'prefetch', chunks: ['sha256:a#0', 'sha256:a#1', 'sha256:b#0'] }]);
    assert.deepEqual(events, ['start', 'end']);
  });

  test('nothing to prefetch: no run, no state change', async () => {
    const { p, events, loader } = prefetch({ kind: 'none', end: 0 });
    await p.start();
    assert.deepEqual(loader.asked, []);
    assert.deepEqual(events, []);
  });

  test('a run past its timeout is no longer waited for', async () => {
    const loader = fakeLoader();
    loader.load = (wants) => wants.map(() => new Promise<Buffer>(() => {}));
    const { p, events } = prefetch({ kind: 'landmark', end: 100 }, { prefetchTimeoutMs: 20 }, loader);
    await p.start();
    assert.deepEqual(events, ['start', 'end']);
  });
});

describe('LayerStatus', () => {
  test('fetched bytes count each byte once; prefetch bytes as fetched; a reason stays until the layer completes', () => {
    const s = new LayerStatus('status-test', 1000, testTelemetry().metrics);
    assert.equal(s.state, 'lazy');
    s.noteFetched(0, 100, 'prefetch');
    s.noteFetched(50, 150, 'on_demand');
    assert.equal(s.fetchedBytes, 150);
    assert.equal(s.prefetchBytes, 100);
    s.followBackground('incomplete', 'registry down');
    assert.deepEqual([s.state, s.failureReason], ['incomplete', 'registry down']);
    s.followBackground('fetching');
    assert.deepEqual([s.state, s.failureReason], ['lazy', 'registry down'], 'a new run: lazy again, the last reason kept');
    s.followBackground('waiting');
    assert.equal(s.state, 'lazy');
    s.followBackground('complete');
    assert.deepEqual([s.state, s.failureReason], ['complete', undefined]);
    s.close();
  });
});
