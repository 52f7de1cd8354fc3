import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_CONFIG, engineOptions, type EngineOverrides } from '../../src/daemon/config.js';
import { Engine } from '../../src/engine/engine.js';
import { estargzContent, zstdChunkedContent, type EngineLayer } from '../../src/engine/layer.js';
import type { LayerIndex, LayerNode } from '../../src/estargz/layer-index.js';
import { openEstargz } from '../../src/estargz/open.js';
import { convertLayer } from '../../src/estargz/writer/convert.js';
import { RemoteBlob } from '../../src/registry/blob.js';
import { RegistryClient } from '../../src/registry/client.js';
import type { RegistryTraffic, RequestReport } from '../../src/registry/traffic.js';
import { openZstdChunked } from '../../src/zstdchunked/open.js';
import { cacheRecords } from '../../testkit/disk-cache-packs.js';
import { makeLayerTar, randomBytes, type SpecEntry } from '../../testkit/layer-tar.js';
import { startFaultProxy } from '../../testkit/fault-proxy.js';
import { pushBlob, startRegistry, type Registry } from '../../testkit/registry.js';
import { writeZstdChunked } from '../../testkit/zstd-chunked-writer.js';
import { testLog, testTelemetry } from '../../testkit/telemetry.js';

const sha = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** Registry traffic as the client reports it: every GET body byte, by operation. */
class Counting implements RegistryTraffic {
  requests: RequestReport[] = [];
  request(r: RequestReport): void {
    this.requests.push(r);
  }
  retry(): void {}
  rangeSplit(): void {}
  bytes(ops?: readonly string[]): number {
    return this.requests.filter((r) => !ops || ops.includes(r.operation ?? '')).reduce((n, r) => n + r.bytes, 0);
  }
  reset(): void {
    this.requests = [];
  }
}

/** The layer's own data reads (not its TOC or manifest, which every open reads). */
const DATA_OPS = ['on_demand', 'prefetch', 'background', 'blob'];

interface Pushed {
  format: 'estargz' | 'zstd:chunked';
  repo: string;
  digest: string;
  size: number;
  diffID: string;
  annotations?: Record<string, string>;
  contents: Map<string, Buffer>;
}

/** 160 incompressible files of 4–40 KiB, and one of 1 MiB: about 4 MB of blob. */
function spec(seed: number): SpecEntry[] {
  const files: SpecEntry[] = [{ name: 'd/', type: 'directory' }];
  for (let i = 0; i < 160; i++) files.push({ name: `d/f${String(i).padStart(3, '0')}`, type: 'file', content: randomBytes(4096 + ((i * 7919) % 36_000), seed + i) });
  files.push({ name: 'd/big', type: 'file', content: randomBytes(1 << 20, seed + 999) });
  return files;
}

describe('whole-layer check: no byte fetched twice, a passed check remembered', () => {
  let reg: Registry;
  const traffic = new Counting();
  let client: RegistryClient;
  const dirs: string[] = [];
  const layers = new Map<string, Pushed>();

  before(async () => {
    reg = await startRegistry();
    client = new RegistryClient({ log: testLog(), traffic, retry: { maxRetries: 2, minWaitMs: 5, maxWaitMs: 100 }, credentials: { name: 'none', lookup: async () => undefined } });
    const files = spec(11);
    const contents = new Map(files.filter((f) => f.type === 'file').map((f) => [f.name, f.content!]));
    const tar = await makeLayerTar(files);
    const parts: Buffer[] = [];
    const converted = await convertLayer(Readable.from([tar]), new Writable({ write(c: Buffer, _e, cb) { parts.push(c); cb(); } }), { level: 1 });
    const es = Buffer.concat(parts);
    await pushBlob(reg.url, 'sched/estargz', es);
    layers.set('estargz', { format: 'estargz', repo: 'sched/estargz', digest: converted.digest, size: es.length, diffID: converted.diffID, contents });
    const z = await writeZstdChunked(tar, { chunkSize: 32 << 10 });
    const zDigest = await pushBlob(reg.url, 'sched/zstd', z.blob);
    layers.set('zstd:chunked', { format: 'zstd:chunked', repo: 'sched/zstd', digest: zDigest, size: z.blob.length, diffID: sha(tar), annotations: z.annotations, contents });
  });
  after(async () => {
    await client.close();
    await reg.stop();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  async function tempDir(): Promise<string> {
    const d = await mkdtemp(join(tmpdir(), 'estargz-sched-'));
    dirs.push(d);
    return d;
  }

  function engineWith(cacheDir: string, background: Record<string, number> = {}): Promise<Engine> {
    // No read-ahead: the foreground fetches only what it reads, so the check has gaps to fill between readers' bytes.
    const overrides: EngineOverrides = { cacheDir, tuning: { readAheadChunks: 0, readAheadBytes: 0 }, fetch: { noPrefetch: true, background: { idleMs: 0, spanBytes: 256 << 10, runRetryWaitMs: 5, maxRuns: 1, maxWholeFailures: 1, ...background } } };
    return Engine.create(engineOptions(DEFAULT_CONFIG, overrides), testTelemetry());
  }

  async function open(engine: Engine, p: Pushed, host = reg.host): Promise<{ layer: EngineLayer; index: LayerIndex }> {
    const fetcher = await RemoteBlob.open(client, { registry: host, repository: p.repo }, p.digest);
    const content = p.format === 'estargz'
      ? estargzContent(await openEstargz(fetcher))
      : zstdChunkedContent(await openZstdChunked(fetcher, p.annotations, { checkTarSplit: engine.pool.checkTarSplit }));
    const layer = engine.openLayer({ id: `${p.format}-${Math.random().toString(36).slice(2, 6)}`, blobDigest: p.digest, diffID: p.diffID, fetcher, content });
    return { layer, index: content.index };
  }

  /**
   * Opens the layer on a new engine over `cacheDir`, runs its background
   * fetch to `complete` (the whole-layer check passed) and closes both;
   * returns the bytes the background fetch moved.
   */
  async function fetchWhole(cacheDir: string, p: Pushed): Promise<number> {
    const engine = await engineWith(cacheDir);
    try {
      traffic.reset();
      const { layer } = await open(engine, p);
      layer.startBackgroundFetch();
      await layer.backgroundDone();
      assert.equal(layer.state, 'complete', layer.failureReason);
      await layer.close();
      return traffic.bytes(['background']);
    } finally {
      await engine.close();
    }
  }

  async function readAll(layer: EngineLayer, index: LayerIndex, p: Pushed, filter: (name: string, i: number) => boolean = () => true): Promise<void> {
    let i = 0;
    for (const [name, content] of p.contents) {
      if (!filter(name, i++)) continue;
      const node = index.byPath.get(name) as LayerNode;
      assert.equal(sha(await layer.readFile(node, 0, node.size)), sha(content), name);
    }
  }

  for (const format of ['estargz', 'zstd:chunked'] as const) {
    for (const held of [{ label: 'held in memory', bytes: 64 << 20 }, { label: 'spilled to the cache directory', bytes: 64 << 10 }]) {
      test(`${format}, readers' bytes ${held.label}: a cold start moves the blob about once, a restart with a warm cache moves none of it`, async () => {
        const p = layers.get(format)!;
        const cacheDir = await tempDir();
        let engine = await engineWith(cacheDir, { heldMemoryBytes: held.bytes });
        try {
          traffic.reset();
          const cold = await open(engine, p);
          // Every other pair of files and the big one in the foreground, then the whole-layer check.
          await readAll(cold.layer, cold.index, p, (n, i) => i % 4 < 2 || n === 'd/big');
          const foreground = traffic.bytes(DATA_OPS);
          assert.ok(foreground > p.size / 3 && foreground < 0.9 * p.size, `the reads fetched ${foreground} of ${p.size} bytes`);
          cold.layer.startBackgroundFetch();
          await cold.layer.backgroundDone();
          assert.equal(cold.layer.state, 'complete', cold.layer.failureReason);
          const coldBytes = traffic.bytes();
          console.log(`${format} (${held.label}): blob ${p.size} B; cold start moved ${coldBytes} B (${(coldBytes / p.size).toFixed(3)}x; foreground ${foreground} B, background ${traffic.bytes(['background'])} B)`);
          assert.ok(coldBytes <= 1.05 * p.size, `cold start moved ${coldBytes} B for a ${p.size} B blob`);
          await cold.layer.close();
          // Spill files go when the check is over.
          assert.deepEqual((await readdir(join(cacheDir, 'tmp'))).filter((n) => !n.startsWith('verdict.')), []);
        } finally {
          await engine.close();
        }

        // Restart: a new engine on the same cache directory.
        engine = await engineWith(cacheDir);
        try {
          traffic.reset();
          const warm = await open(engine, p);
          warm.layer.startBackgroundFetch();
          await warm.layer.backgroundDone();
          assert.equal(warm.layer.state, 'complete', warm.layer.failureReason);
          await readAll(warm.layer, warm.index, p);
          const restartBytes = traffic.bytes(DATA_OPS);
          console.log(`${format} (${held.label}): restart with a warm cache moved ${restartBytes} B of layer data (${traffic.bytes()} B with the TOC/manifest read at open)`);
          assert.equal(restartBytes, 0);
          assert.ok(traffic.bytes() < 0.05 * p.size);
          await warm.layer.close();
        } finally {
          await engine.close();
        }
      });
    }
  }

  test('raw blob reads (podman exporting the layer) count too: the check fetches none of what they fetched', async () => {
    const p = layers.get('estargz')!;
    const engine = await engineWith(await tempDir());
    try {
      traffic.reset();
      const { layer } = await open(engine, p);
      const half = Math.floor(p.size / 2);
      for (let at = 0; at < half; at += 128 << 10) await layer.readBlob(at, Math.min(128 << 10, half - at));
      layer.startBackgroundFetch();
      await layer.backgroundDone();
      assert.equal(layer.state, 'complete', layer.failureReason);
      const total = traffic.bytes();
      console.log(`estargz, half read raw: cold start moved ${total} B for a ${p.size} B blob (${(total / p.size).toFixed(3)}x)`);
      assert.ok(total <= 1.05 * p.size, `${total} B moved`);
      await layer.close();
    } finally {
      await engine.close();
    }
  });

  test('a damaged or cut verdict file is ignored: the layer is fetched and checked again, and the verdict written anew', async () => {
    const p = layers.get('estargz')!;
    const cacheDir = await tempDir();
    await fetchWhole(cacheDir, p);
    const [name] = await readdir(join(cacheDir, 'verdicts'));
    const path = join(cacheDir, 'verdicts', name!);
    const good = await readFile(path);
    for (const damaged of [Buffer.concat([good.subarray(0, 10), Buffer.from([good[10]! ^ 1]), good.subarray(11)]), good.subarray(0, good.length - 5), Buffer.alloc(0)]) {
      await writeFile(path, damaged);
      assert.equal(await fetchWhole(cacheDir, p), p.size, 'the whole blob is fetched for the check again');
      assert.deepEqual(await readFile(path), good, 'the verdict is written again');
    }
  });

  test('a verdict without its chunks in the cache is not enough: the layer is fetched again', async () => {
    const p = layers.get('zstd:chunked')!;
    const cacheDir = await tempDir();
    await fetchWhole(cacheDir, p);
    // One chunk gone from the cache: its pack cut inside its last chunk (so the pack is read header by header, without it).
    const last = (await cacheRecords(cacheDir)).filter((r) => r.length > 1).at(-1)!;
    await truncate(last.pack, last.offset + (last.length >> 1));
    assert.equal(await fetchWhole(cacheDir, p), p.size, 'the whole blob is fetched for the check again');
  });

  test('a read that arrives during a background fetch over a slow link completes within about one round trip of its own fetch', async () => {
    const DELAY_MS = 300;
    const proxy = await startFaultProxy(reg.url);
    const p = layers.get('estargz')!;
    // Background may keep 6 ranges in flight, the host takes 3 requests: without the slot kept for readers, the read would queue behind a range.
    const engine = await Engine.create(engineOptions(DEFAULT_CONFIG, {
      tuning: { readAheadChunks: 0, readAheadBytes: 0 },
      hostScheduler: { maxRequests: 3, reservedForeground: 1 },
      fetch: { noPrefetch: true, background: { idleMs: 0, spanBytes: 128 << 10, concurrency: 6, maxRuns: 1 } },
    }), testTelemetry());
    try {
      const { layer, index } = await open(engine, p, proxy.host);
      proxy.addFault({ kind: 'delay', ms: DELAY_MS, method: 'GET', times: Infinity });
      proxy.reset();
      layer.startBackgroundFetch();
      while (proxy.requests.filter((r) => r.method === 'GET').length < 2) await new Promise((r) => setTimeout(r, 10));
      const node = index.byPath.get('d/f159') as LayerNode;
      const started = performance.now();
      assert.equal(sha(await layer.readFile(node, 0, node.size)), sha(p.contents.get('d/f159')!));
      const ms = performance.now() - started;
      console.log(`read during background fetch, ${DELAY_MS} ms per response: ${ms.toFixed(0)} ms`);
      assert.ok(ms < 2 * DELAY_MS, `the read took ${ms.toFixed(0)} ms`);
      assert.notEqual(layer.state, 'complete', 'the background fetch was still going');
      proxy.clearFaults();
      await layer.backgroundDone();
      assert.equal(layer.state, 'complete', layer.failureReason);
      await layer.close();
    } finally {
      await engine.close();
      await proxy.stop();
    }
  });
});
