import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { DecodePool } from '../../src/engine/decode-pool.js';
import { randomBytes } from '../helpers/layer-tar.js';

const hex = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

test('DecodePool.sha256: hashed in a worker, the memory transferred there and back; views are copied first', async () => {
  const pool = new DecodePool({ threads: 1 });
  try {
    const whole = Buffer.allocUnsafeSlow(4 << 20);
    randomBytes(4 << 20, 3).copy(whole);
    const expected = hex(whole);
    const copy = Buffer.from(whole);
    const r = await pool.sha256(whole);
    assert.equal(r.hex, expected);
    assert.ok(r.bytes.equals(copy), 'the same bytes come back');
    assert.equal(whole.length, 0, 'a buffer that was all of its memory was transferred, not copied');

    const big = randomBytes(1 << 20, 9);
    const view = big.subarray(100, 70_000);
    const v = await pool.sha256(view, 'background');
    assert.equal(v.hex, hex(view));
    assert.equal(big.length, 1 << 20, 'a view is copied: its buffer stays usable');
    assert.ok(v.bytes.equals(view));
  } finally {
    await pool.close();
  }
  const inline = new DecodePool({ threads: 0 });
  const b = randomBytes(1000, 1);
  assert.equal((await inline.sha256(b)).hex, hex(b));
  await inline.close();
});
