import { Piscina } from 'piscina';
import { decodeChunk } from '../src/estargz/chunk.js';
import { isEstargzError } from '../src/estargz/errors.js';
import type { DecodeOutput, DecodeResult, DecodeTask } from './decode-types.js';

/** A buffer this worker can hand over whole: exactly the bytes, in an ArrayBuffer of its own. */
function ownBuffer(bytes: Buffer): ArrayBuffer {
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer) return bytes.buffer;
  const copy = new ArrayBuffer(bytes.byteLength);
  new Uint8Array(copy).set(bytes);
  return copy;
}

/**
 * Piscina task: inflate and sha256-verify a batch of chunks. Failures are
 * returned per chunk (one bad chunk does not fail its neighbours), and the
 * plain bytes go back as transferred ArrayBuffers.
 */
export default function decode(task: DecodeTask): unknown {
  const outputs: DecodeOutput[] = [];
  const transfer: ArrayBuffer[] = [];
  for (const item of task.items) {
    const member = new Uint8Array(task.buffer, item.offset, item.length);
    for (const ref of item.refs) {
      try {
        const plain = ownBuffer(decodeChunk(member, ref, task.decoder));
        outputs.push(plain);
        transfer.push(plain);
      } catch (err) {
        outputs.push({ code: isEstargzError(err) ? err.code : 'CHUNK_CORRUPT', message: (err as Error).message });
      }
    }
  }
  const result: DecodeResult = { outputs };
  // Piscina transfers the listed buffers and hands `result` to the caller.
  return Piscina.move({
    [Piscina.transferableSymbol]: transfer,
    [Piscina.valueSymbol]: result,
  } as unknown as ArrayBuffer);
}
