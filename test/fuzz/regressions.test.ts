import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, describe, test } from 'node:test';
import { DEFAULT_CONFIG, engineOptions, type EngineOverrides } from '../../src/daemon/config.js';
import { Engine } from '../../src/engine/engine.js';
import { estargzContent } from '../../src/engine/layer.js';
import { isEstargzError } from '../../src/estargz/errors.js';
import { encodeFooter } from '../../src/estargz/footer.js';
import { readFileChunks } from '../../src/estargz/file-chunks.js';
import { openEstargz, type EstargzBlob } from '../../src/estargz/open.js';
import { BufferSource } from '../../src/estargz/source.js';
import { sha256Digest, type TocJson } from '../../src/estargz/toc.js';
import { loadFixture } from '../../testkit/fixtures.js';
import { randomBytes } from '../../testkit/layer-tar.js';
import { FUZZ_TUNING, bufferFetcher, createPoolEngine, fuzzTelemetry, loadBases, newStats, runCase, sha, tocMember, type FuzzCase } from './harness.js';

/**
 * Findings of the fuzzer (test/fuzz/format.test.ts, `npm run fuzz`), each
 * kept as a named case. The engine ones reproduce the reports: the
 * daemon dying of an unhandled Z_DATA_ERROR, and short reads served when a
 * lying TOC's chunk digest names a chunk cached from another file.
 */

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Collects unhandled rejections and uncaught exceptions while `fn` runs (each would end the daemon). */
async function noCrash<T>(fn: () => Promise<T>): Promise<T> {
  const crashes: unknown[] = [];
  const onCrash = (err: unknown): void => { crashes.push(err); };
  process.on('unhandledRejection', onCrash);
  process.on('uncaughtException', onCrash);
  try {
    const out = await fn();
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(crashes.map(String), [], 'unhandled rejections or uncaught exceptions');
    return out;
  } finally {
    process.off('unhandledRejection', onCrash);
    process.off('uncaughtException', onCrash);
  }
}

/** Fails the test when `p` does not settle in time: a hung background fetch must not hang the suite. */
async function settles<T>(p: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

async function withEngine<T>(opts: EngineOverrides, fn: (e: Engine) => Promise<T>): Promise<T> {
  const engine = await Engine.create(engineOptions(DEFAULT_CONFIG, { poolThreads: 0, tuning: FUZZ_TUNING, ...opts, fetch: { noBackgroundFetch: false, background: { idleMs: 0, runRetryWaitMs: 1, spanRetryWaitMs: 1, maxRuns: 1 }, ...opts.fetch } }), fuzzTelemetry());
  try {
    return await fn(engine);
  } finally {
    await engine.close();
  }
}

function layerOf(engine: Engine, es: EstargzBlob, blob: Buffer, blobDigest = sha(blob)) {
  return engine.openLayer({ id: `regression-${Math.random().toString(36).slice(2, 8)}`, blobDigest, fetcher: bufferFetcher(blob), content: estargzContent(es) });
}

/** The blob with its TOC replaced by `toc` (same payload), and that TOC's digest: a lying-but-signed layer. */
function relabel(blob: Buffer, tocOffset: number, toc: TocJson): { blob: Buffer; tocDigest: string } {
  const json = Buffer.from(JSON.stringify(toc, null, '\t'));
  return { blob: Buffer.concat([blob.subarray(0, tocOffset), tocMember(json), encodeFooter(tocOffset)]), tocDigest: sha256Digest(json) };
}

describe('fuzz findings: engine', () => {
  // Found by `npm run fuzz -- --seed 20240611` (case 60): one flipped bit in the first gzip member.
  // Background fetch gunzips the whole blob for the diffID: the stream's 'error' rejected a promise
  // nobody awaited yet (unhandled: the daemon died of Z_DATA_ERROR), and the loop then waited for a
  // 'drain' that never came, so background fetch, and layer.close() after it, never finished.
  for (const memoryCacheBytes of [256 << 20, 0]) {
    test(`background fetch of a blob with a corrupt member settles without an unhandled error (memory cache ${memoryCacheBytes ? 'on' : 'off'})`, async () => {
      const { blob } = await loadFixture('basic');
      const es = await openEstargz(new BufferSource(blob));
      const corrupt = Buffer.from(blob);
      corrupt[0] = corrupt[0]! ^ 1;
      await noCrash(() => withEngine({ memoryCacheBytes }, async (engine) => {
        const layer = layerOf(engine, es, corrupt, sha(blob));
        layer.startBackgroundFetch();
        await settles(layer.backgroundDone(), 'background fetch');
        assert.notEqual(layer.state, 'complete');
        await settles(layer.close(), 'layer close');
      }));
    });
  }

  test('background fetch of a blob truncated in its last member settles without an unhandled error', async () => {
    const { blob } = await loadFixture('basic');
    const es = await openEstargz(new BufferSource(blob));
    // Same size, but the data members' bytes after the first KiB are zeros: gunzip fails mid-stream.
    const damaged = Buffer.concat([blob.subarray(0, 1024), Buffer.alloc(es.footer.tocOffset - 1024), blob.subarray(es.footer.tocOffset)]);
    await noCrash(() => withEngine({}, async (engine) => {
      const layer = layerOf(engine, es, damaged, sha(blob));
      layer.startBackgroundFetch();
      await settles(layer.backgroundDone(), 'background fetch');
      assert.notEqual(layer.state, 'complete');
      await settles(layer.close(), 'layer close');
    }));
  });

  /**
   * The case: a TOC says a file is 900,000 bytes, its one chunk's
   * digest names a 300,000-byte chunk the cache holds from the genuine layer.
   * The read must fail; it must not return the 300,000 real bytes (and the
   * kernel zeros after them).
   */
  async function sizeLie(lieSize = 900_000): Promise<{ good: EstargzBlob; goodBlob: Buffer; lying: EstargzBlob; lyingBlob: Buffer }> {
    const content = randomBytes(300_000, 11);
    const member = gzipSync(content);
    const toc: TocJson = { version: 1, entries: [{ name: 'f', type: 'reg', size: content.length, offset: 0, digest: sha(content), chunkDigest: sha(content) }] };
    const json = Buffer.from(JSON.stringify(toc));
    const goodBlob = Buffer.concat([member, tocMember(json), encodeFooter(member.length)]);
    const good = await openEstargz(new BufferSource(goodBlob), { tocDigest: sha256Digest(json) });
    const lie = relabel(goodBlob, member.length, { version: 1, entries: [{ ...toc.entries[0]!, size: lieSize }] });
    // The lie passes open: 900,000 bytes from a 300 KB member is within deflate's ratio.
    const lying = await openEstargz(new BufferSource(lie.blob), { tocDigest: lie.tocDigest });
    assert.equal(lying.index.byPath.get('f')!.size, lieSize);
    return { good, goodBlob, lying, lyingBlob: lie.blob };
  }

  test('format path: the 900,000-byte lie fails to decode', async () => {
    const { lying, lyingBlob } = await sizeLie();
    await assert.rejects(async () => {
      for await (const _ of readFileChunks(new BufferSource(lyingBlob), lying.index.byPath.get('f')!)) { /* drain */ }
    }, (err) => isEstargzError(err, 'CHUNK_CORRUPT') && /expected at least 900000/.test(err.message));
  });

  for (const [label, opts] of [
    ['memory cache', { memoryCacheBytes: 256 << 20 }],
    ['disk cache only', { memoryCacheBytes: 0, disk: true }],
    ['no cache', { memoryCacheBytes: 0 }],
  ] as const) {
    test(`a cached chunk of another size is not served for a lying TOC's file (${label})`, async () => {
      const { good, goodBlob, lying, lyingBlob } = await sizeLie();
      let cacheDir: string | undefined;
      if ('disk' in opts) {
        cacheDir = await mkdtemp(join(tmpdir(), 'estargz-fuzz-'));
        dirs.push(cacheDir);
      }
      await noCrash(() => withEngine({ memoryCacheBytes: opts.memoryCacheBytes, ...(cacheDir && { cacheDir }), fetch: { noBackgroundFetch: true } }, async (engine) => {
        const g = layerOf(engine, good, goodBlob);
        const gf = good.index.byPath.get('f')!;
        assert.equal(sha(await g.readFile(gf, 0, gf.size)), good.index.byPath.get('f')!.digest);
        await g.close();
        await engine.disk?.flush();
        const l = layerOf(engine, lying, lyingBlob);
        const lf = lying.index.byPath.get('f')!;
        for (const [offset, length] of [[0, 900_000], [0, 131_072], [299_000, 4096], [400_000, 131_072]] as const) {
          await assert.rejects(l.readFile(lf, offset, length), (err: unknown) => err instanceof Error,
            `read [${offset}, +${length}) of the 900,000-byte lie must fail, not return short or padded bytes`);
        }
        await l.close();
      }));
    });
  }

  // Found by `npm run fuzz -- --seed 3` (case 63): the lie the other way, a file said to be shorter
  // than its chunk: the cached (longer) chunk was cut to the claimed size, bytes no digest vouches for.
  test('a cached chunk longer than the lying chunk size is not served cut short (memory cache)', async () => {
    const { good, goodBlob, lying, lyingBlob } = await sizeLie(100_000);
    await noCrash(() => withEngine({ fetch: { noBackgroundFetch: true } }, async (engine) => {
      const g = layerOf(engine, good, goodBlob);
      const gf = good.index.byPath.get('f')!;
      await g.readFile(gf, 0, gf.size);
      await g.close();
      const l = layerOf(engine, lying, lyingBlob);
      await assert.rejects(l.readFile(lying.index.byPath.get('f')!, 0, 100_000));
      await l.close();
    }));
  });

  // Found reading the chunk loader while triaging the fuzz findings: loads in flight are shared by
  // digest, so a lying file naming another file's chunk digest got that file's bytes, whatever its size.
  for (const lieSize of [100, 5000]) {
    test(`a chunk loading for another file with the same digest is not served at another size (${lieSize} bytes, concurrent reads)`, async () => {
      const a = randomBytes(300, 21);
      const c = randomBytes(6000, 22);
      const m0 = gzipSync(a);
      const m1 = gzipSync(c);
      const toc: TocJson = {
        version: 1,
        entries: [
          { name: 'a', type: 'reg', size: a.length, offset: 0, chunkDigest: sha(a) },
          { name: 'b', type: 'reg', size: lieSize, offset: m0.length, chunkDigest: sha(a) },
        ],
      };
      const json = Buffer.from(JSON.stringify(toc));
      const blob = Buffer.concat([m0, m1, tocMember(json), encodeFooter(m0.length + m1.length)]);
      const es = await openEstargz(new BufferSource(blob), { tocDigest: sha256Digest(json) });
      for (const memoryCacheBytes of [0, 256 << 20]) {
        await noCrash(() => withEngine({ memoryCacheBytes, fetch: { noBackgroundFetch: true } }, async (engine) => {
          const layer = layerOf(engine, es, blob);
          const fa = es.index.byPath.get('a')!;
          const fb = es.index.byPath.get('b')!;
          const [ra, rb] = await Promise.allSettled([layer.readFile(fa, 0, fa.size), layer.readFile(fb, 0, fb.size)]);
          assert.deepEqual(ra, { status: 'fulfilled', value: a });
          assert.equal(rb.status, 'rejected', `b (said to be ${lieSize} bytes) was served ${rb.status === 'fulfilled' ? rb.value.length : 0} bytes of a's chunk`);
          await layer.close();
        }));
      }
    });
  }

  // Found by `npm run fuzz -- --seed 1` (case 156): the same lie in a reference-made fixture, the
  // landmark's size taken from another entry (4095), with the engine's cache holding the real 1-byte chunk.
  test('basic fixture, landmark size lie: the cached 1-byte chunk is not served as 4095 bytes', async () => {
    const { blob } = await loadFixture('basic');
    const good = await openEstargz(new BufferSource(blob));
    const toc = structuredClone(good.toc);
    toc.entries[0] = { ...toc.entries[0]!, size: 4095 };
    const lie = relabel(blob, good.footer.tocOffset, toc);
    const lying = await openEstargz(new BufferSource(lie.blob), { tocDigest: lie.tocDigest });
    await noCrash(() => withEngine({ fetch: { noBackgroundFetch: true } }, async (engine) => {
      const g = layerOf(engine, good, blob);
      const landmark = good.index.byPath.get('.no.prefetch.landmark')!;
      assert.deepEqual(await g.readFile(landmark, 0, 1), Buffer.of(0x0f));
      await g.close();
      const l = layerOf(engine, lying, lie.blob);
      await assert.rejects(l.readFile(lying.index.byPath.get('.no.prefetch.landmark')!, 0, 4095));
      await l.close();
    }));
  });
});

describe('fuzz findings: replayed through the harness', () => {
  // The shrunk cases as the fuzzer printed them: they must pass the whole property.
  const cases: [string, FuzzCase][] = [
    ['seed 20240611 case 60: bit flip in the first member, background fetch',
      { base: 0, toc: [], bytes: [{ op: 'xor', region: 'chunks', at: 0, mask: 1 }], decoder: 'zlib', background: true, range: { at: 0, len: 0 } }],
    ['seed 3 case 63: a file said to be 1 byte, its cached chunk longer',
      { base: 0, toc: [{ op: 'num', at: 1888445967, field: 'size', value: { lit: 1 } }, { op: 'num', at: 0, field: 'offset', value: { delta: 0 } }], bytes: [{ op: 'xor', region: 'any', at: 0, mask: 1 }], decoder: 'zlib', background: false, range: { at: 0, len: 0 } }],
    ['seed 1 case 156: landmark size taken from another entry',
      { base: 0, toc: [{ op: 'num', at: 0, field: 'size', value: { from: 1766944 } }], bytes: [], decoder: 'zlib', background: false, range: { at: 0, len: 0 } }],
  ];
  for (const [name, c] of cases) {
    test(name, async () => {
      const bases = await loadBases();
      const poolEngine = await createPoolEngine();
      try {
        await runCase({ bases, poolEngine, stats: newStats() }, c);
      } finally {
        await poolEngine.close();
      }
    });
  }

});
