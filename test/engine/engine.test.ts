import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_CONFIG, engineOptions, type EngineOverrides } from '../../src/daemon/config.js';
import { Engine } from '../../src/engine/engine.js';
import type { EngineLayer } from '../../src/engine/layer.js';
import { estargzContent } from '../../src/engine/layer.js';
import { isEstargzError } from '../../src/estargz/errors.js';
import { openEstargz, type EstargzBlob } from '../../src/estargz/open.js';
import { convertLayer } from '../../src/estargz/writer/convert.js';
import { RemoteBlob } from '../../src/registry/blob.js';
import { RegistryClient } from '../../src/registry/client.js';
import { cacheRecords, flipRecordByte, packBytesOnDisk } from '../../testkit/disk-cache-packs.js';
import { startFaultProxy, type FaultProxy } from '../../testkit/fault-proxy.js';
import { loadFixture, type TreeEntry } from '../../testkit/fixtures.js';
import { makeLayerTar } from '../../testkit/layer-tar.js';
import { pushBlob, startRegistry, type Registry } from '../../testkit/registry.js';
import { testLog, testTelemetry } from '../../testkit/telemetry.js';

/** One logger and metrics for every store part this file builds, so the tests can read the counters back. */
const telemetry = testTelemetry();

const hex = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Served {
  digest: string;
  size: number;
  tree: TreeEntry[];
  diffID: string;
}

/** Parses the proxy's Range headers back into [start, end) ranges. */
function rangesOf(header: string | undefined, size: number): [number, number][] {
  if (!header) return [[0, size]];
  return header.replace(/^bytes=/, '').split(',').map((r) => {
    const [a, b] = r.split('-');
    return [Number(a), b === '' ? size : Number(b) + 1] as [number, number];
  });
}

async function counterValue(name: string, labels: Record<string, string>): Promise<number> {
  const m = (await telemetry.metrics.registry.getMetricsAsJSON()).find((x) => x.name === name);
  const v = (m?.values as { labels: Record<string, string>; value: number }[] | undefined)?.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
  return v?.value ?? 0;
}

describe('chunk engine against a real registry', () => {
  let reg: Registry;
  let proxy: FaultProxy;
  let client: RegistryClient;
  const served = new Map<string, Served>();
  const dirs: string[] = [];

  before(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.url);
    client = new RegistryClient({ log: testLog(), retry: { maxRetries: 2, minWaitMs: 5, maxWaitMs: 100 }, credentials: { name: 'none', lookup: async () => undefined } });
    for (const name of ['chunked', 'basic', 'prefetch', 'prefetch-none', 'corrupt-chunked-chunk', 'links']) {
      const { meta, blob, tree } = await loadFixture(name);
      const digest = await pushBlob(reg.url, `fixtures/${name}`, blob);
      served.set(name, { digest, size: blob.length, tree, diffID: meta.diffID });
    }
    // 400 incompressible 2 KiB files: a directory a reader can walk in blob order.
    const parts: Buffer[] = [];
    const files = Array.from({ length: 400 }, (_, i) => ({ name: `many/f${String(i).padStart(3, '0')}`, type: 'file' as const, content: randomBytes(2048) }));
    const result = await convertLayer(Readable.from([await makeLayerTar(files)]), new Writable({ write(c: Buffer, _e, cb) { parts.push(c); cb(); } }), { level: 1 });
    const blob = Buffer.concat(parts);
    await pushBlob(reg.url, 'fixtures/many', blob);
    served.set('many', { digest: result.digest, size: blob.length, tree: [], diffID: result.diffID });
  });
  after(async () => {
    await client.close();
    await proxy.stop();
    await reg.stop();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  async function tempDir(): Promise<string> {
    const d = await mkdtemp(join(tmpdir(), 'estargz-engine-'));
    dirs.push(d);
    return d;
  }

  async function open(engine: Engine, name: string, diffID?: string): Promise<{ layer: EngineLayer; es: EstargzBlob; s: Served }> {
    const s = served.get(name)!;
    const fetcher = await RemoteBlob.open(client, { registry: proxy.host, repository: `fixtures/${name}` }, s.digest);
    const es = await openEstargz(fetcher);
    const layer = engine.openLayer({ id: `${name}-${Math.random().toString(36).slice(2, 6)}`, blobDigest: s.digest, fetcher, content: estargzContent(es), diffID: diffID ?? s.diffID });
    return { layer, es, s };
  }

  const blobGets = (digest: string) => proxy.requests.filter((r) => r.method === 'GET' && r.path.endsWith(digest));

  async function withEngine<T>(opts: EngineOverrides, fn: (e: Engine) => Promise<T>): Promise<T> {
    const engine = await Engine.create(engineOptions(DEFAULT_CONFIG, { ...opts, fetch: { noBackgroundFetch: true, ...opts.fetch } }), telemetry);
    try {
      return await fn(engine);
    } finally {
      await engine.close();
    }
  }

  test('whole files, empty files, and reads across chunk boundaries return verified bytes', async () => {
    await withEngine({}, async (engine) => {
      for (const name of ['chunked', 'basic', 'links']) {
        const { layer, es, s } = await open(engine, name);
        for (const e of s.tree) {
          if (e.type !== 'reg') continue;
          const node = es.index.byPath.get(e.path)!;
          const whole = await layer.readFile(node, 0, node.size);
          assert.equal(hex(whole), e.sha256, e.path);
        }
        await layer.close();
      }
      const { layer, es } = await open(engine, 'chunked');
      const node = es.index.byPath.get('big/random-10m.bin')!;
      const whole = await layer.readFile(node, 0, node.size);
      const MiB = 1 << 20;
      for (const [off, len] of [[MiB - 1, 2], [MiB - 100, 3 * MiB + 200], [0, 1], [node.size - 1, 10], [5 * MiB, 0], [node.size + 5, 5], [3 * MiB + 7, MiB]]) {
        assert.deepEqual(await layer.readFile(node, off!, len!), whole.subarray(off!, Math.min(node.size, off! + len!)), `[${off}, +${len})`);
      }
      await layer.close();
    });
  });

  test('64 concurrent overlapping readers: exactly one fetch per chunk', async () => {
    await withEngine({}, async (engine) => {
      const { layer, es, s } = await open(engine, 'chunked');
      const node = es.index.byPath.get('big/random-10m.bin')!;
      proxy.reset();
      proxy.addFault({ path: `/blobs/${s.digest}`, method: 'GET', kind: 'delay', ms: 50, times: Infinity });
      const expected = s.tree.find((e) => e.path === 'big/random-10m.bin')!.sha256;
      const reads = Array.from({ length: 64 }, (_, i) => {
        const off = (i * 313_331) % (node.size - 3_000_000);
        return layer.readFile(node, off, 3_000_000).then((b) => ({ off, b }));
      });
      const whole = await layer.readFile(node, 0, node.size);
      assert.equal(hex(whole), expected);
      for (const { off, b } of await Promise.all(reads)) assert.deepEqual(b, whole.subarray(off, off + 3_000_000));
      proxy.clearFaults();
      const fetched = blobGets(s.digest).flatMap((r) => rangesOf(r.range, s.size));
      for (const c of node.chunks) {
        const covering = fetched.filter(([a, b]) => a <= c.blobOffset && c.blobOffset < b);
        assert.equal(covering.length, 1, `chunk at file offset ${c.fileOffset} fetched ${covering.length} times`);
      }
      await layer.close();
    });
  });

  test('read-ahead grows while a reader walks the blob in order, and starts over after a jump', async () => {
    const tuning = { readAheadBytes: 8 << 10, readAheadMaxBytes: 64 << 10, mergeGapBytes: 0 };
    await withEngine({ tuning }, async (engine) => {
      const { layer, es, s } = await open(engine, 'many');
      const files = [...es.index.byPath.values()].filter((n) => n.type === 'reg').sort((a, b) => a.chunks[0]!.blobOffset - b.chunks[0]!.blobOffset);
      const requestBytes = (): number[] => blobGets(s.digest).flatMap((r) => rangesOf(r.range, s.size)).map(([a, b]) => b - a);
      proxy.reset();
      for (const f of files.slice(0, 150)) await layer.readFile(f, 0, f.size);
      const walk = requestBytes();
      // Only the first file was fetched for the reader itself (a single member, which may arrive
      // after the first window's request); every other request is a read-ahead window.
      const windows = walk.filter((n) => n > 4096);
      assert.equal(walk.length - windows.length, 1, `requests: ${walk.join(', ')}`);
      // The first window is one step; later ones grow to the maximum, never past it (plus one member).
      assert.ok(windows[0]! <= (8 << 10) + 4096, `first read-ahead ${windows[0]} B`);
      assert.ok(Math.max(...walk) > 32 << 10, `largest request ${Math.max(...walk)} B: the window did not grow`);
      assert.ok(Math.max(...walk) <= (64 << 10) + 4096, `largest request ${Math.max(...walk)} B: past the maximum`);
      // Far ahead of the window: a jump, so the read-ahead after it is one first step again.
      proxy.reset();
      const far = files[350]!;
      await layer.readFile(far, 0, far.size);
      await new Promise((r) => setTimeout(r, 200)); // the read-ahead request is not waited for by the read
      const afterJump = requestBytes();
      assert.ok(afterJump.length >= 2 && afterJump.slice(1).every((n) => n <= (8 << 10) + 4096), `after the jump: ${afterJump.join(', ')}`);
    });
  });

  test('a corrupted chunk is never returned: refetched with back-off a bounded number of times, then the read fails; other chunks read', async () => {
    await withEngine({ tuning: { verifyRetries: 2, verifyRetryWaitMs: 5 } }, async (engine) => {
      const { layer, es, s } = await open(engine, 'corrupt-chunked-chunk');
      const node = es.index.byPath.get('big/random-10m.bin')!;
      const bad = node.chunks[3]!;
      const before = await counterValue('estargz_store_verification_failures_total', { what: 'chunk' });
      proxy.reset();
      await assert.rejects(layer.readFile(node, bad.fileOffset + 10, 100), (err) =>
        isEstargzError(err, 'CHUNK_DIGEST_MISMATCH') && /big\/random-10m.bin.*file offset 3145728/.test(err.message));
      const covering = blobGets(s.digest).filter((r) => rangesOf(r.range, s.size).some(([a, b]) => a <= bad.blobOffset && bad.blobOffset < b));
      assert.equal(covering.length, 3, 'fetched, then fetched twice more');
      assert.equal(await counterValue('estargz_store_verification_failures_total', { what: 'chunk' }) - before, 3);
      await assert.rejects(layer.readFile(node, 0, node.size), (err) => isEstargzError(err, 'CHUNK_DIGEST_MISMATCH'));
      const good = await layer.readFile(node, 0, bad.fileOffset);
      const tree = (await loadFixture('chunked')).tree;
      const other = es.index.byPath.get('big/compressible-9m.txt')!;
      assert.equal(hex(await layer.readFile(other, 0, other.size)), tree.find((e) => e.path === 'big/compressible-9m.txt')!.sha256);
      assert.equal(good.length, bad.fileOffset);
      assert.equal(s.tree.length > 0, true);
      await layer.close();
    });
  });

  test('registry errors fail the read; the next read tries again', async () => {
    await withEngine({}, async (engine) => {
      const { layer, es, s } = await open(engine, 'basic');
      const node = es.index.byPath.get('sizes/f100k.bin')!;
      proxy.addFault({ path: `/blobs/${s.digest}`, method: 'GET', kind: 'status', status: 503, times: Infinity });
      await assert.rejects(layer.readFile(node, 0, 10), /503/);
      proxy.clearFaults();
      assert.equal(hex(await layer.readFile(node, 0, node.size)), s.tree.find((e) => e.path === 'sizes/f100k.bin')!.sha256);
      await layer.close();
    });
  });

  test('a restart with the same disk cache fetches nothing for cached chunks', async () => {
    const cacheDir = await tempDir();
    const readAll = async (engine: Engine): Promise<void> => {
      const { layer, es, s } = await open(engine, 'chunked');
      proxy.reset(); // count from here: opening read the footer and TOC
      for (const e of s.tree) if (e.type === 'reg') {
        const node = es.index.byPath.get(e.path)!;
        assert.equal(hex(await layer.readFile(node, 0, node.size)), e.sha256);
      }
      await layer.close();
    };
    const s = served.get('chunked')!;
    await withEngine({ cacheDir }, readAll); // closing the engine writes the queued chunks out
    await withEngine({ cacheDir }, readAll);
    assert.equal(blobGets(s.digest).length, 0, 'no blob bytes fetched after the restart');
  });

  test('a damaged disk-cache file is dropped and the chunk fetched again', async () => {
    const cacheDir = await tempDir();
    const s = served.get('basic')!;
    const path = 'sizes/f100k.bin';
    await withEngine({ cacheDir, memoryCacheBytes: 0 }, async (engine) => {
      const { layer, es } = await open(engine, 'basic');
      const node = es.index.byPath.get(path)!;
      await layer.readFile(node, 0, node.size);
      await engine.disk!.flush(); // writes are behind: put them on disk now
      const record = (await cacheRecords(cacheDir)).find((r) => r.hex === node.chunks[0]!.digest.slice(7))!;
      await flipRecordByte(record);
      proxy.reset();
      assert.equal(hex(await layer.readFile(node, 0, node.size)), s.tree.find((e) => e.path === path)!.sha256);
      assert.equal(blobGets(s.digest).length, 1);
      await layer.close();
    });
  });

  test('eviction keeps the disk and memory caches under their bounds', async () => {
    const cacheDir = await tempDir();
    const bound = 3 << 20;
    await withEngine({ cacheDir, diskCacheBytes: bound, memoryCacheBytes: 2 << 20 }, async (engine) => {
      const { layer, es, s } = await open(engine, 'chunked');
      for (const e of s.tree) if (e.type === 'reg') {
        const node = es.index.byPath.get(e.path)!;
        assert.equal(hex(await layer.readFile(node, 0, node.size)), e.sha256);
      }
      await engine.disk!.flush();
      const total = await packBytesOnDisk(cacheDir);
      assert.ok(total > 0 && total <= bound, `disk cache holds ${total} bytes, bound ${bound}`);
      assert.ok(engine.disk!.size <= bound);
      assert.ok(engine.memory.size <= 2 << 20, `memory cache ${engine.memory.size}`);
      await layer.close();
    });
  });

  test('an unusable cache directory degrades to memory only', async () => {
    const file = join(await tempDir(), 'not-a-dir');
    await writeFile(file, 'x');
    await withEngine({ cacheDir: join(file, 'cache') }, async (engine) => {
      assert.equal(engine.disk!.enabled, false);
      const { layer, es, s } = await open(engine, 'basic');
      const node = es.index.byPath.get('sizes/f100k.bin')!;
      assert.equal(hex(await layer.readFile(node, 0, node.size)), s.tree.find((e) => e.path === 'sizes/f100k.bin')!.sha256);
      await layer.close();
    });
  });

  test('prefetch: the landmark range in one request, then prioritized files read without fetching', async () => {
    await withEngine({}, async (engine) => {
      const { layer, es, s } = await open(engine, 'prefetch');
      const end = layer.prefetchEnd();
      assert.ok(end > 0);
      proxy.reset();
      await layer.prefetch();
      const gets = blobGets(s.digest);
      assert.equal(gets.length, 1);
      // One range up to the landmark; it starts at the first payload member (the header-only member before it is not needed).
      const [[from, to]] = rangesOf(gets[0]!.range, s.size) as [[number, number]];
      const firstChunk = Math.min(...[...es.index.byPath.values()].flatMap((n) => n.chunks.map((c) => c.blobOffset)));
      assert.deepEqual([from, to], [firstChunk, end]);
      assert.equal(layer.prefetchBytes, end - firstChunk);
      proxy.reset();
      for (const p of ['top.txt', 'bin/tool', 'etc/config.conf', 'sub/deeper/file07.txt', 'lib/libbar.so.1']) {
        const node = es.index.byPath.get(p)!;
        assert.equal(hex(await layer.readFile(node, 0, node.size)), s.tree.find((e) => e.path === p)!.sha256, p);
      }
      assert.equal(blobGets(s.digest).length, 0);
      await layer.close();
      const none = await open(engine, 'prefetch-none');
      proxy.reset();
      await none.layer.prefetch();
      assert.equal(blobGets(none.s.digest).length, 0, '.no.prefetch.landmark: nothing fetched');
      await none.layer.close();
    });
  });

  test('background fetch completes the layer, checks blob digest and diffID, and feeds the cache', async () => {
    await withEngine({ fetch: { noBackgroundFetch: false, background: { idleMs: 20, spanBytes: 1 << 20, runRetryWaitMs: 10, maxWholeFailures: 2 } } }, async (engine) => {
      const { layer, es, s } = await open(engine, 'chunked');
      layer.startBackgroundFetch();
      await layer.backgroundDone();
      assert.equal(layer.state, 'complete');
      assert.equal(layer.fetchedBytes, s.size);
      proxy.reset();
      const node = es.index.byPath.get('big/compressible-9m.txt')!;
      await layer.readFile(node, 0, node.size);
      assert.equal(blobGets(s.digest).length, 0);
      await layer.close();

      const wrong = await open(engine, 'basic', 'sha256:' + '0'.repeat(64));
      wrong.layer.startBackgroundFetch();
      await wrong.layer.backgroundDone();
      assert.equal(wrong.layer.state, 'failed');
      assert.match(wrong.layer.failureReason!, /the uncompressed layer hashes to sha256:e7f80f73\w+, the image config says sha256:0{64}/);
      await wrong.layer.close();
    });
  });

  test('raw blob reads: exact bytes, the blob fetched once, a wrong blob fails its last read', async () => {
    await withEngine({}, async (engine) => {
      const { layer, s } = await open(engine, 'chunked');
      proxy.reset();
      const parts: Buffer[] = [];
      for (let off = 0; off < s.size; off += 128 << 10) parts.push(await layer.readBlob(off, 128 << 10));
      assert.equal('sha256:' + hex(Buffer.concat(parts)), s.digest);
      const fetchedBytes = blobGets(s.digest).flatMap((r) => rangesOf(r.range, s.size)).reduce((n, [a, b]) => n + b - a, 0);
      assert.equal(fetchedBytes, s.size, 'each byte fetched once');
      // Reads of an odd size straddle the 4 MiB blocks: answered as the blocks' pieces, in order, not joined.
      const pieces: Buffer[][] = [];
      for (let off = 0; off < s.size; off += 1_000_003) pieces.push(await layer.readBlobParts(off, 1_000_003));
      assert.equal('sha256:' + hex(Buffer.concat(pieces.flat())), s.digest);
      if (s.size > 4 << 20) assert.ok(pieces.some((p) => p.length === 2), 'a read across a block boundary comes in two pieces');
      await layer.close();

      // A layer whose registry serves other bytes than its digest: the export must not complete.
      const other = served.get('basic')!;
      const fetcher = await RemoteBlob.open(client, { registry: proxy.host, repository: 'fixtures/basic' }, other.digest);
      const es = await openEstargz(fetcher);
      const liar = engine.openLayer({ id: 'liar', blobDigest: 'sha256:' + '1'.repeat(64), fetcher, content: estargzContent(es) });
      let last: unknown;
      for (let off = 0; off < other.size; off += 16 << 10) {
        try {
          await liar.readBlob(off, 16 << 10);
        } catch (err) {
          last = err;
          assert.ok(off + (16 << 10) >= other.size, `failed early at ${off}`);
        }
      }
      assert.ok(isEstargzError(last, 'BLOB_DIGEST_MISMATCH'), String(last));
      await liar.close();
    });
  });

  test('pako decoder and main-thread decoding give the same bytes', async () => {
    for (const opts of [{ decoder: 'pako' as const, poolThreads: 1 }, { poolThreads: 0 }]) {
      await withEngine(opts, async (engine) => {
        const { layer, es, s } = await open(engine, 'chunked');
        const node = es.index.byPath.get('big/compressible-9m.txt')!;
        assert.equal(hex(await layer.readFile(node, 0, node.size)), s.tree.find((e) => e.path === 'big/compressible-9m.txt')!.sha256);
        await layer.close();
      });
    }
  });
});
