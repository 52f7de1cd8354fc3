import { decodeChunk } from '../src/estargz/chunk.js';
import { isEstargzError } from '../src/estargz/errors.js';
import type { DecodeResult, DecodeTask } from './decode-types.js';

/**
 * Decodes and verifies every chunk of a task; failures are per chunk (one bad
 * chunk does not fail its neighbours). Shared by the worker and by the
 * pool's on-thread mode.
 */
export function decodeBatch(task: DecodeTask): DecodeResult {
  const started = performance.now();
  const plains: Buffer[] = [];
  const results: DecodeResult['results'] = [];
  let total = 0;
  for (const item of task.items) {
    const member = new Uint8Array(task.buffer, item.offset, item.length);
    for (const ref of item.refs) {
      try {
        const plain = decodeChunk(member, ref, task.decoder);
        plains.push(plain);
        results.push(plain.length);
        total += plain.length;
      } catch (err) {
        results.push({ code: isEstargzError(err) ? err.code : 'CHUNK_CORRUPT', message: (err as Error).message });
      }
    }
  }
  // Not from Node's shared pool: this ArrayBuffer is the result's alone, so it can be transferred.
  const out = Buffer.allocUnsafeSlow(total);
  let at = 0;
  for (const p of plains) at += p.copy(out, at);
  return { buffer: out.buffer as ArrayBuffer, results, busyMs: performance.now() - started };
}
