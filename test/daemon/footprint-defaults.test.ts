import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEFAULT_CONFIG, buildConfig, engineOptions } from '../../src/daemon/config.js';
import { STORE_PROCESS_FLAGS, storeProcessFlags } from '../../src/daemon/store-process-flags.js';
import { DecodePool } from '../../src/engine/decode-pool.js';
import { testTelemetry } from '../../testkit/telemetry.js';

describe('memory defaults of the store process', () => {
  test('node flags: the defaults, replaced (or emptied) by ESTARGZ_STORE_NODE_FLAGS', () => {
    assert.deepEqual(storeProcessFlags({}), ['--max-semi-space-size=2', '--liftoff-only']);
    assert.deepEqual(storeProcessFlags({}), [...STORE_PROCESS_FLAGS]);
    assert.deepEqual(storeProcessFlags({ ESTARGZ_STORE_NODE_FLAGS: '' }), []);
    assert.deepEqual(storeProcessFlags({ ESTARGZ_STORE_NODE_FLAGS: ' --max-semi-space-size=8  --trace-gc ' }), ['--max-semi-space-size=8', '--trace-gc']);
  });

  test('config: 32 MiB memory cache, one idle decode worker, 8 MiB of held bytes a layer; pool.idle_workers reaches the engine', () => {
    assert.equal(DEFAULT_CONFIG.cache.memory_bytes, 32 * 2 ** 20);
    assert.equal(DEFAULT_CONFIG.pool.idle_workers, 1);
    const opts = engineOptions(DEFAULT_CONFIG);
    assert.equal(opts.memoryCacheBytes, 32 * 2 ** 20);
    assert.equal(opts.poolIdleThreads, 1);
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
});
