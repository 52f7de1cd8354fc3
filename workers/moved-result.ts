import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/**
 * A task result whose buffers piscina hands back to the main thread
 * transferred, not copied: what `Piscina.move` does, without importing
 * piscina's entry point into every worker. That entry point is the pool
 * side (task queues, worker pool, histograms): ~8 MiB resident and ~50 ms
 * of start per worker thread, none of it used here. The worker side of
 * piscina (which runs this file) already loaded `common.js`; requiring it
 * by path gives the same module instance, whose `markMovable` stamps the
 * private symbol piscina's worker checks. The two public symbols are
 * `Symbol.for` names piscina documents.
 */
const piscinaDist = dirname(createRequire(import.meta.url).resolve('piscina'));
const common = createRequire(import.meta.url)(join(piscinaDist, 'common.js')) as { markMovable?: (value: object) => void };
if (typeof common.markMovable !== 'function') throw new Error(`piscina's ${join(piscinaDist, 'common.js')} has no markMovable: this piscina version moves results differently`);
const markMovable = common.markMovable;

const TRANSFERABLE = Symbol.for('Piscina.transferable');
const VALUE = Symbol.for('Piscina.valueOf');

/** `value` as the task's result, with `transfer` (its buffers) moved to the main thread. */
export function movedResult(value: unknown, transfer: readonly ArrayBufferLike[]): unknown {
  const moved = { [TRANSFERABLE]: transfer, [VALUE]: value };
  markMovable(moved);
  return moved;
}
