import { Piscina } from 'piscina';
import { decodeBatch } from './decode-batch.js';
import type { DecodeTask } from './decode-types.js';
import { lowerThreadPriority } from './thread-priority.js';

// Decoding is the store's heaviest CPU work: the main thread (FUSE) goes first.
lowerThreadPriority();

/** Piscina task: inflate and sha256-verify a batch of chunks; the plain bytes go back transferred. */
export default function decode(task: DecodeTask): unknown {
  const result = decodeBatch(task);
  return Piscina.move({
    [Piscina.transferableSymbol]: result.buffers,
    [Piscina.valueSymbol]: result,
  } as unknown as ArrayBuffer);
}
