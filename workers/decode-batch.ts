import { decodeChunk } from '../src/estargz/chunk.js';
import { isEstargzError } from '../src/estargz/errors.js';
import type { DecodeResult, DecodeSlice, DecodeTask } from './decode-types.js';

/**
 * Decodes and verifies every chunk of a task; failures are per chunk (one bad
 * chunk does not fail its neighbours). Shared by the worker and by the
 * pool's on-thread mode.
 */
export function decodeBatch(task: DecodeTask): DecodeResult {
  const started = performance.now();
  const buffers: ArrayBuffer[] = [];
  const results: DecodeResult['results'] = [];
  const small: { plain: Buffer; slot: number }[] = [];
  let smallTotal = 0;
  for (const item of task.items) {
    const member = new Uint8Array(task.buffer, item.offset, item.length);
    for (const ref of item.refs) {
      try {
        const plain = decodeChunk(member, ref, task.decoder);
        if (plain.length >= OWN_BUFFER_MIN && !buffers.includes(plain.buffer as ArrayBuffer)) {
          // zlib's output buffer for a large chunk is its own: hand it over as it is, no copy.
          buffers.push(plain.buffer as ArrayBuffer);
          results.push({ buffer: buffers.length - 1, offset: plain.byteOffset, length: plain.length });
        } else {
          small.push({ plain, slot: results.length });
          results.push({ buffer: -1, offset: smallTotal, length: plain.length });
          smallTotal += plain.length;
        }
      } catch (err) {
        results.push({ code: isEstargzError(err) ? err.code : 'CHUNK_CORRUPT', message: (err as Error).message });
      }
    }
  }
  if (small.length) {
    // Not from Node's shared pool: this ArrayBuffer is the result's alone, so it can be transferred.
    const out = Buffer.allocUnsafeSlow(smallTotal);
    buffers.push(out.buffer as ArrayBuffer);
    for (const { plain, slot } of small) {
      const r = results[slot] as DecodeSlice;
      plain.copy(out, r.offset);
      r.buffer = buffers.length - 1;
    }
  }
  return { buffers, results, busyMs: performance.now() - started };
}

/**
 * Chunks at least this large keep the buffer zlib produced. Below it, Node
 * may have carved the buffer from its shared pool, which must not be
 * transferred.
 */
const OWN_BUFFER_MIN = 64 << 10;
