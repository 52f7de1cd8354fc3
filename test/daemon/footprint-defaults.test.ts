import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEFAULT_CONFIG, buildConfig, engineOptions } from '../../src/daemon/config.js';
import { STORE_PROCESS_ENV, STORE_PROCESS_FLAGS, storeProcessEnv, storeProcessFlags } from '../../src/daemon/store-process-flags.js';
import { createHash, randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { DecodePool, INLINE_MAX_PLAIN_BYTES, type Priority } from '../../src/engine/decode-pool.js';

/** A task of one gzip member of `plain` (its digest `wrongDigest` when asked), and what it must decode to. */
function oneChunk(plain: Buffer, wrongDigest = false): { buffer: ArrayBuffer; items: Parameters<DecodePool['run']>[1] } {
  const member = gzipSync(plain);
  const digest = `sha256:${createHash('sha256').update(wrongDigest ? Buffer.from('other') : plain).digest('hex')}`;
  return { buffer: new Uint8Array(member).buffer, items: [{ offset: 0, length: member.length, refs: [{ path: 'f', fileOffset: 0, innerOffset: 0, size: plain.length, blobOffset: 0, digest }] }] };
}

async function decode(pool: DecodePool, plain: Buffer, priority: Priority, wrongDigest = false): Promise<unknown> {
  const { buffer, items } = oneChunk(plain, wrongDigest);
  const [out] = await pool.run(buffer, items, priority);
  return out;
}
import { testTelemetry } from '../../testkit/telemetry.js';

describe('memory defaults of the store process', () => {
  test('node flags: the defaults, replaced (or emptied) by ESTARGZ_STORE_NODE_FLAGS', () => {
    assert.deepEqual(storeProcessFlags({}), ['--max-semi-space-size=4', '--liftoff-only']);
    assert.deepEqual(storeProcessFlags({}), [...STORE_PROCESS_FLAGS]);
    assert.deepEqual(storeProcessFlags({ ESTARGZ_STORE_NODE_FLAGS: '' }), []);
    assert.deepEqual(storeProcessFlags({ ESTARGZ_STORE_NODE_FLAGS: ' --max-semi-space-size=8  --trace-gc ' }), ['--max-semi-space-size=8', '--trace-gc']);
  });

  test('malloc settings: added to the store process environment, an operator\'s own win', () => {
    assert.deepEqual(STORE_PROCESS_ENV, { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072' });
    assert.deepEqual(storeProcessEnv({ PATH: '/bin' }), { PATH: '/bin', MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072' });
    assert.equal(storeProcessEnv({ MALLOC_ARENA_MAX: '8' }).MALLOC_ARENA_MAX, '8');
  });

  test('config: 32 MiB memory cache, two idle decode workers, 8 MiB of held bytes a layer; pool.idle_workers reaches the engine', () => {
    assert.equal(DEFAULT_CONFIG.cache.memory_bytes, 32 * 2 ** 20);
    assert.equal(DEFAULT_CONFIG.pool.idle_workers, 2);
    const opts = engineOptions(DEFAULT_CONFIG);
    assert.equal(opts.memoryCacheBytes, 32 * 2 ** 20);
    assert.equal(opts.poolIdleThreads, 2);
    assert.equal(opts.fetch.background.heldMemoryBytes, 8 << 20);
    const { config } = buildConfig({ pool: { workers: 4, idle_workers: 2 } }, 'test.toml');
    assert.equal(engineOptions(config).poolIdleThreads, 2);
    assert.throws(() => buildConfig({ pool: { idle_workers: -1 } }, 'test.toml'), /pool\.idle_workers/);
  });

  test('decode pool: idle workers at most its threads; background tasks wait while all workers but one are busy with them, a foreground task does not', async () => {
    assert.equal(new DecodePool(testTelemetry(), { threads: 0, idleThreads: 3 }).idleThreads, 0);
    const pool = new DecodePool(testTelemetry(), { threads: 2, idleThreads: 1 });
    try {
      assert.equal(pool.idleThreads, 1);
      // Empty batches: a worker answers them at once.
      const empty = (): ArrayBuffer => new ArrayBuffer(8);
      const order: string[] = [];
      const bg = [1, 2, 3].map((i) => pool.run(empty(), [], 'background').then(() => order.push(`bg${i}`)));
      // Two of the three background tasks wait in the pool's own queue (one may run at a time with two workers).
      assert.equal(pool.queued, 2);
      const fg = pool.run(empty(), [], 'foreground').then(() => order.push('fg'));
      // The foreground task was handed on at once, not queued behind them.
      assert.equal(pool.queued, 2);
      await Promise.all([...bg, fg]);
      // One background task at a time: they are answered in the order they came.
      assert.deepEqual(order.filter((x) => x.startsWith('bg')), ['bg1', 'bg2', 'bg3']);
      assert.equal(pool.queued, 0);
    } finally {
      await pool.close();
    }
  });

  test('decode pool without idle workers: a small foreground task is decoded (and verified) on this thread while no worker runs; a larger one, or a background one, starts a worker', async () => {
    const pool = new DecodePool(testTelemetry(), { threads: 2, idleThreads: 0 });
    try {
      assert.equal(pool.workers, 0);
      const small = randomBytes(INLINE_MAX_PLAIN_BYTES);
      assert.deepEqual(await decode(pool, small, 'foreground'), small);
      const bad = await decode(pool, randomBytes(1000), 'foreground', true) as { code: string };
      assert.equal(bad.code, 'CHUNK_DIGEST_MISMATCH');
      assert.equal(pool.workers, 0, 'no worker for small foreground tasks');
      await decode(pool, randomBytes(100), 'background');
      assert.equal(pool.workers, 1, 'a background task starts a worker');
    } finally {
      await pool.close();
    }
    const pool2 = new DecodePool(testTelemetry(), { threads: 2, idleThreads: 0 });
    try {
      const large = randomBytes(INLINE_MAX_PLAIN_BYTES + 1);
      assert.deepEqual(await decode(pool2, large, 'foreground'), large);
      assert.equal(pool2.workers, 1, 'a larger task starts a worker');
    } finally {
      await pool2.close();
    }
    const kept = new DecodePool(testTelemetry(), { threads: 1, idleThreads: 1 });
    try {
      assert.equal(kept.workers, 1, 'a worker kept idle starts with the pool');
    } finally {
      await kept.close();
    }
  });

  test('decode pool prestart: one worker starts in the background (once), and reads meanwhile still get their verified bytes', async () => {
    const pool = new DecodePool(testTelemetry(), { threads: 2, idleThreads: 0 });
    try {
      pool.prestart();
      pool.prestart();
      assert.equal(pool.workers, 1);
      const small = randomBytes(4096);
      assert.deepEqual(await decode(pool, small, 'foreground'), small);
      const large = randomBytes(INLINE_MAX_PLAIN_BYTES * 2);
      assert.deepEqual(await decode(pool, large, 'foreground'), large);
    } finally {
      await pool.close();
    }
    const none = new DecodePool(testTelemetry(), { threads: 0 });
    none.prestart();
    assert.equal(none.workers, 0);
  });
});
