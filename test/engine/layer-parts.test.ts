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
    isLoading: () => false,
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

describe('FileReader: read-ahead that pays for itself', () => {
  // 400 one-chunk files of 100 compressed bytes each, back to back.
  const files = Array.from({ length: 400 }, (_, i) => file(`m${String(i).padStart(3, '0')}`, i + 2, i * 100, [10]));
  const all = chunksInBlobOrder(index(files));

  /** A loader that keeps what it was asked for as loading (so a read of it is no miss), and counts the members each request adds. */
  function countingLoader(tuning: Partial<FetchTuning>) {
    const loading = new Set<string>();
    const requests: { readAhead: boolean; bytes: number }[] = [];
    return {
      requests,
      /** Set before each read: FileReader's first load of a read is for the read's own chunks, the next one its read-ahead. */
      readStarts: false,
      tuning: { ...DEFAULT_TUNING, mergeGapBytes: 0, fetchTimeoutMs: 1000, readAheadChunks: 0, ...tuning } as FetchTuning,
      isCached: () => false,
      isLoading: (digest: string) => loading.has(digest),
      load(wants: readonly ChunkWant[]): Promise<Buffer>[] {
        const readAhead = !this.readStarts;
        this.readStarts = false;
        let bytes = 0;
        for (const w of wants) {
          if (loading.has(w.chunk.digest)) continue;
          loading.add(w.chunk.digest);
          bytes += w.chunk.blobEnd - w.chunk.blobOffset;
        }
        if (bytes) requests.push({ readAhead, bytes });
        return wants.map((w) => Promise.resolve(bytesOf(w.chunk)));
      },
    };
  }
  async function readAll(loader: ReturnType<typeof countingLoader>, order: number[]): Promise<void> {
    const reader = new FileReader('l', loader, () => all, testTelemetry().metrics);
    for (const i of order) {
      loader.readStarts = true;
      await reader.read(files[i]!, 0, files[i]!.size);
    }
  }

  test('a reader walking every file in blob order (an unpacker, W3): one fetch of its own, then few read-ahead requests as large as the maximum', async () => {
    const loader = countingLoader({ readAheadBytes: 1600, readAheadMaxBytes: 12800 });
    await readAll(loader, files.map((_, i) => i));
    const own = loader.requests.filter((r) => !r.readAhead);
    const ahead = loader.requests.filter((r) => r.readAhead).map((r) => r.bytes);
    assert.equal(own.length, 1, 'only the first read waited for a fetch of its own');
    assert.equal(own[0]!.bytes + ahead.reduce((n, b) => n + b, 0), 400 * 100, 'every member fetched once, nothing more');
    assert.ok(ahead.length <= 8, `${ahead.length} read-ahead requests: ${ahead.join(', ')}`);
    assert.ok(Math.max(...ahead) >= 12800 / 2 && Math.max(...ahead) <= 12800, `largest read-ahead request ${Math.max(...ahead)} B`);
  });

  test('a reader opening files here and there (python importing modules): its read-ahead shrinks to a sixteenth of the first step and stays there', async () => {
    const loader = countingLoader({ readAheadBytes: 1600, readAheadMaxBytes: 12800 });
    // 30 files, 131 apart modulo 400: forward and back, never one a window brought.
    await readAll(loader, Array.from({ length: 30 }, (_, k) => (k * 131) % 400));
    const ahead = loader.requests.filter((r) => r.readAhead).map((r) => r.bytes);
    assert.equal(ahead[0], 1600, 'the layer\'s first read: one first step');
    assert.ok(ahead.slice(1).every((b) => b === 100), `later windows: ${ahead.slice(1).join(', ')}`);
    assert.ok(ahead.reduce((n, b) => n + b, 0) < 2 * 1600 + 30 * 100);
  });
});

describe('ReadAhead: the blob read-ahead window', () => {
  // 40 one-chunk files of 100 compressed bytes each, back to back.
  const files = Array.from({ length: 40 }, (_, i) => file(`f${String(i).padStart(2, '0')}`, i + 2, i * 100, [10]));
  const all = chunksInBlobOrder(index(files));
  const window = (wants: ChunkWant[]): [number, number] => [wants[0]!.chunk.blobOffset, wants.at(-1)!.chunk.blobEnd];
  /** A read of file i: a miss unless its chunk was asked for before (by a read or a read-ahead), as FileReader tells. */
  const reader = (ra: ReadAhead) => {
    const asked = new Set<number>();
    return (i: number): ChunkWant[] => {
      const f = files[i]!;
      const miss = !asked.has(f.chunks[0]!.blobOffset);
      asked.add(f.chunks[0]!.blobOffset);
      const out = ra.after(f, 0, 1, f.path, miss);
      for (const w of out) asked.add(w.chunk.blobOffset);
      return out;
    };
  };

  test('a first read asks for one step after it; in-order reads top it up and the step doubles to its maximum', () => {
    const readOf = reader(new ReadAhead(fakeLoader({ readAheadChunks: 0, readAheadBytes: 400, readAheadMaxBytes: 1600 }), () => all));
    assert.deepEqual(window(readOf(0)), [100, 500], 'first step: 400 bytes');
    assert.deepEqual(readOf(1), [], 'more than half a step still ahead: nothing');
    assert.deepEqual(readOf(2), [], 'at exactly half a step ahead: nothing');
    assert.deepEqual(window(readOf(3)), [500, 1200], 'every member passed was read: the step doubles (800)');
    const steps: number[] = [];
    for (let i = 4; i < 30; i++) {
      const w = readOf(i);
      if (w.length) steps.push(w.at(-1)!.chunk.blobEnd - (i * 100 + 100));
    }
    assert.ok(steps.length > 0 && steps.every((s) => s <= 1600), `steps ${steps.join(', ')}`);
    assert.equal(Math.max(...steps), 1600, 'the step grew to its maximum');
  });

  test('a jump after a window that was read starts a new one of one first step; cached chunks are left out', () => {
    const loader = fakeLoader({ readAheadChunks: 0, readAheadBytes: 400, readAheadMaxBytes: 1600 });
    const readOf = reader(new ReadAhead(loader, () => all));
    for (let i = 0; i <= 3; i++) readOf(i);
    loader.cached.add('sha256:f21#0');
    const afterJump = readOf(20);
    assert.deepEqual(afterJump.map((w) => w.path), ['f22', 'f23', 'f24'], 'one step (400 bytes) after the jump, the cached f21 left out');
  });

  test('a scattered reader: each new window is twice what was read of the last, never less than a sixteenth of the first step', () => {
    // 400 files; the reader opens one file here and there, never one the read-ahead brought.
    const many = Array.from({ length: 400 }, (_, i) => file(`g${String(i).padStart(3, '0')}`, i + 2, i * 100, [10]));
    const list = chunksInBlobOrder(index(many));
    const ra = new ReadAhead(fakeLoader({ readAheadChunks: 0, readAheadBytes: 1600, readAheadMaxBytes: 12800 }), () => list);
    const readOf = (i: number, miss = true): number => {
      const out = ra.after(many[i]!, 0, 1, many[i]!.path, miss);
      return out.reduce((n, w) => n + w.chunk.blobEnd - w.chunk.blobOffset, 0);
    };
    assert.equal(readOf(0), 1600, 'a layer\'s first window: one first step');
    const later = [50, 120, 200, 260, 330].map((i) => readOf(i));
    assert.deepEqual(later, [100, 100, 100, 100, 100], 'none of it read: a sixteenth of the first step each time, no growth');
    assert.equal(readOf(331, false), 200, 'the next file, which the last window brought: every member passed was read, so the step doubles');
    assert.equal(readOf(370), 200, 'a jump after a window of 300 bytes of which 100 were read: 200');
  });

  test('reads of members loaded already (read again, or the file read-ahead\'s) neither start a window nor grow it', () => {
    const big = file('big', 2, 0, [10, 10, 10]); // members at 0, 100, 200
    const rest = Array.from({ length: 20 }, (_, i) => file(`h${String(i).padStart(2, '0')}`, i + 3, 300 + i * 100, [10]));
    const list = chunksInBlobOrder(index([big, ...rest]));
    const loader = fakeLoader({ readAheadChunks: 2, readAheadBytes: 400, readAheadMaxBytes: 3200 });
    const ra = new ReadAhead(loader, () => list);
    const first = ra.after(big, 0, 1, 'big', true);
    assert.deepEqual(first.map((w) => w.chunk.blobOffset), [100, 200, 300, 400], 'the file\'s next two chunks, then the blob step after the read (to 500)');
    for (const c of big.chunks) loader.cached.add(c.digest);
    assert.deepEqual(ra.after(big, 0, 1, 'big', false), [], 'the same chunk again: nothing');
    assert.deepEqual(ra.after(big, 2, 3, 'big', false), [], 'the file\'s last chunk, which the file read-ahead brought: no top-up, though less than half a step is left');
    // The next file was the blob read-ahead's: a hit, less than half a step left, so a top-up, the step
    // doubled once (the one member passed was read) and only once (the file's chunks are not the blob's).
    const topUp = ra.after(rest[0]!, 0, 1, 'h00', false);
    assert.deepEqual(window(topUp), [500, 1200]);
  });

  test('an in-order reader keeps its window across a member too large to fetch ahead', () => {
    // 30 small files, one file of a 2000-byte member, 30 small files.
    const a = Array.from({ length: 30 }, (_, i) => file(`a${String(i).padStart(2, '0')}`, i + 2, i * 100, [10]));
    const huge = file('huge', 40, 3000, [10]);
    huge.chunks[0]!.blobEnd = 5000;
    const b = Array.from({ length: 30 }, (_, i) => file(`b${String(i).padStart(2, '0')}`, i + 50, 5000 + i * 100, [10]));
    const list = chunksInBlobOrder(index([...a, huge, ...b]));
    const ra = new ReadAhead(fakeLoader({ readAheadChunks: 0, readAheadBytes: 400, readAheadMaxBytes: 1600 }), () => list);
    const asked = new Set<number>();
    const readOf = (f: LayerNode): ChunkWant[] => {
      const miss = !asked.has(f.chunks[0]!.blobOffset);
      asked.add(f.chunks[0]!.blobOffset);
      const out = ra.after(f, 0, 1, f.path, miss);
      for (const w of out) asked.add(w.chunk.blobOffset);
      return out;
    };
    for (const f of a) readOf(f);
    assert.ok(!asked.has(3000), 'the large member is left to its read');
    const afterHuge = readOf(huge);
    assert.equal(afterHuge[0]!.chunk.blobOffset, 5000);
    assert.ok(afterHuge.at(-1)!.chunk.blobEnd - 5000 >= 1600, `after the large file: ${afterHuge.at(-1)!.chunk.blobEnd - 5000} bytes, the grown window`);
  });

  test('a large member straddling the step is left to its own read; readAheadBytes 0 turns the blob read-ahead off', () => {
    const big = [file('a', 2, 0, [10]), file('b', 3, 100, [10]), file('c', 4, 200, [10])];
    big[2]!.chunks[0]!.blobEnd = 1000; // one 800-byte member
    const list = chunksInBlobOrder(index(big));
    const ra = new ReadAhead(fakeLoader({ readAheadChunks: 0, readAheadBytes: 400, readAheadMaxBytes: 400 }), () => list);
    assert.deepEqual(ra.after(big[0]!, 0, 1, 'a', true).map((w) => w.path), ['b']);
    const off = new ReadAhead(fakeLoader({ readAheadChunks: 0, readAheadBytes: 0 }), () => list);
    assert.deepEqual(off.after(big[0]!, 0, 1, 'a', true), []);
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
