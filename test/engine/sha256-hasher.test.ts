import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { Sha256Hasher } from '../../src/engine/cache/sha256.js';
import { testLog } from '../../testkit/telemetry.js';

const hexOf = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

describe('sha256 hasher of the disk cache', () => {
  test('small and large inputs hash as createHash does, and come back with the same bytes', async () => {
    const hasher = new Sha256Hasher(testLog());
    for (const size of [0, 1, 64 << 10, (64 << 10) + 1, 1 << 20, 4 << 20]) {
      const bytes = randomBytes(size);
      const copy = Buffer.from(bytes);
      const hashed = await hasher.hash(bytes);
      assert.equal(hashed.hex, hexOf(copy), `${size} bytes`);
      assert.deepEqual(hashed.bytes, copy);
    }
  });

  test('many at once, each answered with its own hash', async () => {
    const hasher = new Sha256Hasher(testLog());
    const inputs = Array.from({ length: 40 }, (_, i) => randomBytes((100 << 10) + i * 4096));
    const expected = inputs.map(hexOf);
    const results = await Promise.all(inputs.map((b) => hasher.hash(b)));
    assert.deepEqual(results.map((r) => r.hex), expected);
  });

  test('bytes in shared memory (allocate) are hashed where they are: the same Buffer comes back', async () => {
    const hasher = new Sha256Hasher(testLog());
    for (const size of [1000, 64 << 10, (64 << 10) + 1, 3 << 20]) {
      const bytes = hasher.allocate(size);
      assert.equal(bytes.length, size);
      assert.equal(bytes.buffer instanceof SharedArrayBuffer, size > 64 << 10, `${size}: shared memory for the thread only`);
      randomBytes(size).copy(bytes);
      const hashed = await hasher.hash(bytes);
      assert.equal(hashed.hex, hexOf(bytes));
      assert.equal(hashed.bytes, bytes, 'not transferred: the same Buffer');
    }
    // A view into a larger shared buffer: only its bytes are hashed.
    const big = Buffer.from(new SharedArrayBuffer(1 << 20));
    randomBytes(1 << 20).copy(big);
    const view = big.subarray(4096, 4096 + (300 << 10));
    assert.equal((await hasher.hash(view)).hex, hexOf(view));
  });

  test('a view into a larger buffer is copied, not handed over: the larger buffer stays usable', async () => {
    const hasher = new Sha256Hasher(testLog());
    const big = randomBytes(1 << 20);
    const view = big.subarray(1000, 1000 + (512 << 10));
    const hashed = await hasher.hash(view);
    assert.equal(hashed.hex, hexOf(big.subarray(1000, 1000 + (512 << 10))));
    assert.equal(big.length, 1 << 20, 'not detached');
    assert.deepEqual(hashed.bytes, big.subarray(1000, 1000 + (512 << 10)));
  });
});
