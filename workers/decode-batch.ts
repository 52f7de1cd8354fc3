import { decodeChunk, type Decoder } from '../src/estargz/chunk.js';
import { isEstargzError } from '../src/estargz/errors.js';
import { decodeZstdChunk, zerosChunk } from '../src/zstdchunked/chunk.js';
import { isZstdChunkedError } from '../src/zstdchunked/errors.js';
import type { CodedChunkRef, DecodeResult, DecodeTask } from './decode-types.js';

/** The codec switch: gzip members (eStargz), zstd frames and zeros chunks (zstd:chunked). */
function decodeRef(member: Uint8Array, ref: CodedChunkRef, decoder: Decoder): Buffer {
  if (ref.codec === 'zstd') return decodeZstdChunk(member, ref);
  if (ref.codec === 'zeros') return zerosChunk(ref);
  return decodeChunk(member, ref, decoder);
}

/**
 * Decodes and verifies every chunk of a task; failures are per chunk (one bad
 * chunk does not fail its neighbours). Shared by the worker and by the
 * pool's on-thread mode.
 */
export function decodeBatch(task: DecodeTask): DecodeResult {
  const started = performance.now();
  // A verified chunk is exactly ref.size bytes, so the shared buffer for the
  // tiny ones can be sized before decoding: each chunk is copied in while it
  // is still in cache, and zlib's buffer dies young instead of being held
  // (with its external-memory accounting) until the end of the task.
  const tinyRefs = task.items.flatMap((item) => item.refs).filter((ref) => ref.size < OWN_BUFFER_MIN);
  // Not from Node's shared pool: this ArrayBuffer is the result's alone, so it can be transferred.
  const tiny = tinyRefs.length > 0 ? Buffer.allocUnsafeSlow(tinyRefs.reduce((n, ref) => n + ref.size, 0)) : null;
  const buffers: ArrayBuffer[] = tiny ? [tiny.buffer as ArrayBuffer] : [];
  const handedOver = new Set<ArrayBufferLike>(buffers);
  const results: DecodeResult['results'] = [];
  let tinyUsed = 0;
  for (const item of task.items) {
    const member = new Uint8Array(task.buffer, item.offset, item.length);
    for (const ref of item.refs) {
      try {
        const plain = decodeRef(member, ref, task.decoder);
        if (plain.length < OWN_BUFFER_MIN) {
          plain.copy(tiny!, tinyUsed);
          results.push({ buffer: 0, offset: tinyUsed, length: plain.length });
          tinyUsed += plain.length;
        } else {
          // zlib's output buffer for a large chunk is its own: hand it over as it is, no copy. A
          // smaller one may sit in Node's shared pool (never transferable), or share its memory:
          // it gets an ArrayBuffer of its own, copied here rather than on the main thread.
          const own = plain.length >= KEEP_ZLIB_BUFFER_MIN && !handedOver.has(plain.buffer) ? plain : copyOut(plain);
          handedOver.add(own.buffer);
          buffers.push(own.buffer as ArrayBuffer);
          results.push({ buffer: buffers.length - 1, offset: own.byteOffset, length: own.length });
        }
      } catch (err) {
        results.push({
          code: isEstargzError(err) || isZstdChunkedError(err) ? err.code : 'CHUNK_CORRUPT',
          message: (err as Error).message,
          path: ref.path,
          chunkOffset: ref.fileOffset,
          compressed: { offset: ref.blobOffset, length: item.length },
          ...(task.layer !== undefined && { layer: task.layer }),
        });
      }
    }
  }
  return { buffers, results, busyMs: performance.now() - started };
}

/** A copy of `b` in an ArrayBuffer of exactly its size (never Node's shared pool). */
function copyOut(b: Buffer): Buffer {
  const own = Buffer.allocUnsafeSlow(b.length);
  b.copy(own);
  return own;
}

/**
 * Chunks below this size are copied back to back into one buffer per task,
 * and copied again on the main thread if they go into the memory cache (a
 * view would keep the whole task buffer alive): at this size that copy
 * comes from Node's 8 KiB pool, no new ArrayBuffer. Larger chunks come back
 * each in an ArrayBuffer of its own, so the memory cache keeps them as they
 * are. With 64 KiB here, the main thread re-copied every chunk of 4–64 KiB
 * (most files of a typical image), each copy a new ArrayBuffer: main-thread
 * time, and external memory, of which V8 runs a full GC for every 64 MiB
 * allocated.
 */
const OWN_BUFFER_MIN = 4 << 10;

/**
 * Chunks at least this large keep the buffer zlib produced. Below it, Node
 * may have carved the buffer from its shared pool, which must not be
 * transferred.
 */
const KEEP_ZLIB_BUFFER_MIN = 64 << 10;
