import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { DecodePool } from '../../src/engine/decode-pool.js';
import type { ChunkRef } from '../../src/estargz/chunk.js';
import { decodeBatch } from '../../workers/decode-batch.js';
import type { DecodeItem, DecodeSlice } from '../../workers/decode-types.js';
import { testTelemetry } from '../../testkit/telemetry.js';

/** One task's members back to back, each member one chunk of `plain`. */
function task(plains: Buffer[], corrupt: Set<number> = new Set()): { buffer: ArrayBuffer; items: DecodeItem[] } {
  const members = plains.map((p) => gzipSync(p));
  const total = members.reduce((n, m) => n + m.length, 0);
  const bytes = Buffer.allocUnsafeSlow(total);
  const items: DecodeItem[] = [];
  let offset = 0;
  plains.forEach((plain, i) => {
    const member = members[i]!;
    member.copy(bytes, offset);
    const ref: ChunkRef = {
      path: `f${i}`, fileOffset: 0, innerOffset: 0, size: plain.length, blobOffset: offset,
      digest: `sha256:${createHash('sha256').update(corrupt.has(i) ? Buffer.from('other') : plain).digest('hex')}`,
    };
    items.push({ offset, length: member.length, refs: [ref] });
    offset += member.length;
  });
  return { buffer: bytes.buffer as ArrayBuffer, items };
}

test('decodeBatch: tiny chunks share one buffer, the others each have their own, a bad chunk fails alone', () => {
  const plains = [randomBytes(3000), randomBytes(200 << 10), Buffer.alloc(0), randomBytes(5000), randomBytes(70 << 10), randomBytes(100), randomBytes(20 << 10), randomBytes(4 << 10)];
  const { buffer, items } = task(plains, new Set([3]));
  const result = decodeBatch({ decoder: 'zlib', buffer, items });
  assert.equal(result.results.length, plains.length);
  const tiny = new Set<number>();
  result.results.forEach((r, i) => {
    if (i === 3) {
      assert.ok('code' in r);
      assert.equal(r.code, 'CHUNK_DIGEST_MISMATCH');
      return;
    }
    assert.ok(!('code' in r));
    const slice = r as DecodeSlice;
    const bytes = Buffer.from(result.buffers[slice.buffer]!, slice.offset, slice.length);
    assert.deepEqual(bytes, plains[i]);
    if (plains[i]!.length < 4 << 10) {
      tiny.add(slice.buffer);
    } else {
      // Its own memory, no more than twice its size: the memory cache keeps it without a copy on the main thread.
      assert.ok(result.buffers[slice.buffer]!.byteLength <= 2 * slice.length, `chunk ${i}: buffer of ${result.buffers[slice.buffer]!.byteLength} bytes for ${slice.length}`);
      assert.equal(result.results.filter((x) => !('code' in x) && x.buffer === slice.buffer).length, 1, `chunk ${i} alone in its buffer`);
    }
  });
  assert.equal(tiny.size, 1, 'all tiny chunks in one buffer');
  assert.equal(new Set(result.buffers).size, result.buffers.length, 'every buffer listed once, so each can be transferred');
});

test('DecodePool: worker results are the verified chunks, per-chunk failures included', async () => {
  const pool = new DecodePool(testTelemetry(), { threads: 1 });
  try {
    const plains = [randomBytes(1000), randomBytes(300 << 10), randomBytes(2000)];
    const { buffer, items } = task(plains, new Set([2]));
    const outputs = await pool.run(buffer, items, 'foreground');
    assert.deepEqual(outputs[0], plains[0]);
    assert.deepEqual(outputs[1], plains[1]);
    assert.ok(!Buffer.isBuffer(outputs[2]) && outputs[2]!.code === 'CHUNK_DIGEST_MISMATCH');
  } finally {
    await pool.close();
  }
});

test('a decode worker loads piscina\'s worker side only, not its pool (the entry point): its result is marked movable all the same', async () => {
  const decodeUrl = new URL('../../workers/decode.js', import.meta.url).href;
  const { Worker } = await import('node:worker_threads');
  const code = `
    import { createRequire } from 'node:module';
    import { parentPort } from 'node:worker_threads';
    const mod = await import(${JSON.stringify(decodeUrl)});
    const result = mod.default({ decoder: 'zlib', buffer: new ArrayBuffer(0), items: [], priority: 'foreground' });
    const loaded = Object.keys(createRequire(${JSON.stringify(decodeUrl)}).cache).filter((k) => k.includes('/node_modules/piscina/'));
    parentPort.postMessage({ loaded, symbols: Object.getOwnPropertySymbols(result).map(String) });
  `;
  const w = new Worker(new URL(`data:text/javascript,${encodeURIComponent(code)}`));
  const msg = await new Promise<{ loaded: string[]; symbols: string[] }>((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
  await w.terminate();
  assert.deepEqual(msg.loaded.map((k) => k.slice(k.lastIndexOf('/') + 1)).sort(), ['common.js', 'symbols.js']);
  // Piscina's public transferable/value symbols, plus its private movable stamp (non-enumerable, still an own symbol).
  assert.ok(msg.symbols.includes('Symbol(Piscina.transferable)') && msg.symbols.includes('Symbol(Piscina.valueOf)') && msg.symbols.includes('Symbol(Piscina.kMovable)'), msg.symbols.join(', '));
});
