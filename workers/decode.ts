import { createHash } from 'node:crypto';
import { Piscina } from 'piscina';
import { decodeBatch } from './decode-batch.js';
import type { DecodeTask, HashResult, HashTask } from './decode-types.js';

/** Piscina task: inflate and sha256-verify a batch of chunks; the plain bytes go back transferred. */
export default function decode(task: DecodeTask): unknown {
  const result = decodeBatch(task);
  return Piscina.move({
    [Piscina.transferableSymbol]: result.buffers,
    [Piscina.valueSymbol]: result,
  } as unknown as ArrayBuffer);
}

/** Piscina task `sha256`: the digest of a buffer, which goes back transferred (no copy either way). */
export function sha256(task: HashTask): unknown {
  const hex = createHash('sha256').update(new Uint8Array(task.buffer)).digest('hex');
  const result: HashResult = { hex, buffer: task.buffer };
  return Piscina.move({
    [Piscina.transferableSymbol]: [task.buffer],
    [Piscina.valueSymbol]: result,
  } as unknown as ArrayBuffer);
}
