import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryChunkCache } from '../../src/engine/cache/memory-cache.js';
import { testTelemetry } from '../../testkit/telemetry.js';

const bytes = (n: number, fill: number): Buffer => Buffer.alloc(n, fill);

test('memory cache: bounded in bytes, least recently used out first', () => {
  const c = new MemoryChunkCache(300, testTelemetry().metrics);
  c.put('sha256:a', bytes(100, 1));
  c.put('sha256:b', bytes(100, 2));
  c.put('sha256:c', bytes(100, 3));
  assert.equal(c.size, 300);
  assert.ok(c.get('sha256:a')); // a is now the most recent
  c.put('sha256:d', bytes(100, 4));
  assert.equal(c.has('sha256:b'), false, 'b was the least recently used');
  assert.deepEqual(c.get('sha256:a'), bytes(100, 1));
  assert.equal(c.size, 300);
});

test('memory cache: a chunk larger than the cache is not kept; 0 bytes keeps nothing', () => {
  const c = new MemoryChunkCache(100, testTelemetry().metrics);
  c.put('sha256:big', bytes(101, 1));
  assert.equal(c.has('sha256:big'), false);
  assert.equal(c.get('sha256:big'), undefined);
  const none = new MemoryChunkCache(0, testTelemetry().metrics);
  none.put('sha256:x', bytes(1, 1));
  assert.equal(none.get('sha256:x'), undefined);
  assert.equal(none.size, 0);
});

test('memory cache: a small view into a large buffer is kept as a copy, so the large buffer can go', () => {
  const c = new MemoryChunkCache(1 << 20, testTelemetry().metrics);
  const big = Buffer.alloc(64 << 10, 7);
  const view = big.subarray(100, 200);
  c.put('sha256:v', view);
  const kept = c.get('sha256:v')!;
  assert.deepEqual(kept, view);
  assert.notEqual(kept.buffer, big.buffer);
  assert.equal(kept.buffer.byteLength < big.buffer.byteLength, true);
  // A buffer that is (mostly) its own is kept as it is.
  const own = Buffer.alloc(1000, 1);
  c.put('sha256:o', own);
  assert.equal(c.get('sha256:o'), own);
});
