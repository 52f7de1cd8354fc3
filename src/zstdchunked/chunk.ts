import { createHash } from 'node:crypto';
import type { ChunkRef } from '../estargz/chunk.js';
import { ZstdChunkedError } from './errors.js';
import { decompressExact, ZstdDecodeError } from './zstd.js';

function where(ref: ChunkRef): string {
  return `chunk of ${JSON.stringify(ref.path)} at file offset ${ref.fileOffset} (blob offset ${ref.blobOffset})`;
}

function context(ref: ChunkRef): { part: 'chunk'; path: string; chunkOffset: number; blobOffset: number } {
  return { part: 'chunk', path: ref.path, chunkOffset: ref.fileOffset, blobOffset: ref.blobOffset };
}

function verify(plain: Buffer, ref: ChunkRef): Buffer {
  const actual = 'sha256:' + createHash('sha256').update(plain).digest('hex');
  if (actual !== ref.digest) {
    throw new ZstdChunkedError('CHUNK_DIGEST_MISMATCH', `${where(ref)} failed verification: expected ${ref.digest}, got ${actual}`,
      { ...context(ref), expected: ref.digest, actual });
  }
  return plain;
}

/**
 * Decodes one zstd:chunked chunk and checks it: its range is exactly the
 * chunk's own zstd frame, which must decode to exactly `size` bytes (never
 * more: the decoder stops at the bound) hashing to the chunk digest. Pure and
 * synchronous, so it runs as-is inside a worker. `innerOffset` must be 0.
 */
export function decodeZstdChunk(frame: Uint8Array, ref: ChunkRef): Buffer {
  if (ref.innerOffset !== 0) throw new ZstdChunkedError('CHUNK_CORRUPT', `${where(ref)}: inner offset ${ref.innerOffset}, a zstd:chunked chunk is a frame of its own`, context(ref));
  let plain: Buffer;
  try {
    plain = decompressExact(frame, ref.size);
  } catch (err) {
    if (!(err instanceof ZstdDecodeError)) throw err;
    const why = err.fault === 'too-large' ? `decodes to more than its ${ref.size} bytes`
      : err.fault === 'too-short' ? `decodes to fewer than its ${ref.size} bytes (${err.message})`
        : `is not a valid zstd frame (${err.message})`;
    throw new ZstdChunkedError('CHUNK_CORRUPT', `${where(ref)} ${why}`, context(ref));
  }
  return verify(plain, ref);
}

/**
 * A 'zeros' chunk: its bytes are known without fetching its frame; they are
 * still checked against the chunk digest (a manifest that calls data zeros
 * is refused, not believed).
 */
export function zerosChunk(ref: ChunkRef): Buffer {
  return verify(Buffer.alloc(ref.size), ref);
}
