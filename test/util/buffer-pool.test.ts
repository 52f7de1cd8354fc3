import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BufferPool, sizeClass } from '../../src/util/buffer-pool.js';

const KiB = 1024;
const MiB = 1024 * KiB;

describe('buffer pool', () => {
  test('size classes: at least the size and the minimum, at most a quarter more, growing with the size', () => {
    let last = 0;
    for (let size = 1; size <= 40 * MiB; size = Math.ceil(size * 1.07)) {
      const cls = sizeClass(size, 64 * KiB);
      assert.ok(cls >= size && cls >= 64 * KiB, `${size} → ${cls}`);
      if (size > 64 * KiB) assert.ok(cls <= size * 1.25 + 1, `${size} → ${cls}: more than a quarter unused`);
      assert.ok(cls >= last, 'monotonic');
      last = cls;
    }
    assert.equal(sizeClass(64 * KiB, 64 * KiB), 64 * KiB);
    assert.equal(sizeClass(100_000, 64 * KiB), 112 * KiB);
    assert.equal(sizeClass(16 * MiB, 64 * KiB), 16 * MiB);
  });

  test('memory let go by its only holder is used for the next buffer of its class, and is counted once', () => {
    const pool = new BufferPool();
    const a = pool.acquire(100_000);
    assert.equal(a.bytes.length, 100_000);
    assert.ok(a.bytes.buffer instanceof SharedArrayBuffer);
    const memory = a.bytes.buffer;
    a.release();
    assert.equal(pool.idleBytes, 112 * KiB);
    const b = pool.acquire(110_000);
    assert.equal(b.bytes.buffer, memory, 'same class: same memory');
    assert.equal(b.bytes.length, 110_000);
    assert.equal(pool.idleBytes, 0);
    assert.equal(pool.allocatedBytes, 112 * KiB);
    const c = pool.acquire(100_000);
    assert.notEqual(c.bytes.buffer, memory, 'in use: new memory');
    assert.equal(pool.allocatedBytes, 224 * KiB);
  });

  test('a buffer handed to other holders comes back only once every one of them let go; a release counts once', () => {
    const pool = new BufferPool();
    const a = pool.acquire(200_000);
    const r1 = a.retain();
    const r2 = a.retain();
    a.release();
    a.release(); // twice: no effect
    r1();
    r1();
    assert.equal(pool.idleBytes, 0, 'r2 still reads it');
    assert.notEqual(pool.acquire(200_000).bytes.buffer, a.bytes.buffer);
    r2();
    assert.ok(pool.idleBytes > 0);
    assert.equal(pool.acquire(200_000).bytes.buffer, a.bytes.buffer);
    assert.throws(() => a.retain(), /already let go/);
  });

  test('a buffer that escaped (a holder that cannot say when it is done) is never used again', () => {
    const pool = new BufferPool();
    const a = pool.acquire(200_000);
    const r = a.retain();
    a.escape();
    a.release();
    r();
    assert.equal(a.reusable, false);
    assert.equal(pool.idleBytes, 0);
    assert.notEqual(pool.acquire(200_000).bytes.buffer, a.bytes.buffer);
  });

  test('sizes outside the pooled range get memory of their own; idle memory is bounded', () => {
    const pool = new BufferPool({ minBytes: 64 * KiB, maxBytes: 1 * MiB, maxIdleBytes: 2 * MiB });
    for (const size of [100, 2 * MiB]) {
      const a = pool.acquire(size);
      assert.equal(a.bytes.length, size);
      assert.equal(a.reusable, false);
      a.release();
      assert.equal(pool.idleBytes, 0);
    }
    const many = Array.from({ length: 4 }, () => pool.acquire(1 * MiB));
    for (const a of many) a.release();
    assert.equal(pool.idleBytes, 2 * MiB, 'two kept, two left to the garbage collector');
  });

  test('idle memory is dropped once none was asked for in idleMs', async () => {
    const pool = new BufferPool({ idleMs: 30 });
    pool.acquire(100_000).release();
    assert.ok(pool.idleBytes > 0);
    const deadline = Date.now() + 5000;
    while (pool.idleBytes > 0 && Date.now() < deadline) await sleep(10);
    assert.equal(pool.idleBytes, 0);
  });
});
