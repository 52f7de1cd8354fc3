/**
 * zstd decoding through the system's libzstd (native/zstd_decode.c, built by
 * `npm ci` with the FUSE addon). Loaded on first use, not at import, so code
 * that never meets a zstd layer does not need it built. Every decode is
 * bounded by a size the caller already trusts or limits: a frame never
 * expands past it.
 */
import { createRequire } from 'node:module';

interface NativeStream {
  /** [input bytes consumed, output (≤ outCapacity bytes), a frame ended exactly here]. */
  decode(src: Uint8Array, srcOffset: number, outCapacity: number): [number, Uint8Array, boolean];
}

interface ZstdAddon {
  decompress(src: Uint8Array, size: number): Uint8Array;
  Stream: new () => NativeStream;
  libzstdVersion: string;
}

const ADDON = '../../../build/Release/zstd_decode.node';

/** The addon; createRequire's cache makes every later call a lookup. */
export function zstdAddon(): ZstdAddon {
  try {
    return createRequire(import.meta.url)(ADDON) as ZstdAddon;
  } catch (err) {
    throw new Error(`the zstd addon is not built (${(err as Error).message.split('\n')[0]}): run npm ci (it builds native/ with node-gyp; needs the Debian packages build-essential and libzstd-dev)`);
  }
}

/** Why a decode failed: the addon's codes, kept apart so callers can name the fault. */
export type ZstdFault = 'too-large' | 'too-short' | 'corrupt';

export class ZstdDecodeError extends Error {
  constructor(readonly fault: ZstdFault, message: string) {
    super(message);
  }
}

function asFault(err: unknown): ZstdDecodeError {
  const code = (err as { code?: string }).code;
  const message = (err as Error).message;
  if (code === 'ZSTD_TOO_LARGE') return new ZstdDecodeError('too-large', message);
  if (code === 'ZSTD_TOO_SHORT') return new ZstdDecodeError('too-short', message);
  return new ZstdDecodeError('corrupt', message);
}

/**
 * Decodes every frame of `src` (skippable frames are skipped) into exactly
 * `size` bytes. The decoder gets one byte of room past `size`, so a frame
 * holding more is refused without writing more.
 */
export function decompressExact(src: Uint8Array, size: number): Buffer {
  let out: Uint8Array;
  try {
    out = zstdAddon().decompress(src, size);
  } catch (err) {
    throw asFault(err);
  }
  return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
}

/** Output piece size of the streaming decoder. */
const PIECE = 1 << 20;

/**
 * Decodes a zstd stream held in memory piece by piece (≤ 1 MiB each), and
 * refuses one that decodes to more than `maxBytes`: memory stays bounded by
 * what the consumer keeps. Throws ZstdDecodeError.
 */
export async function* decompressPieces(src: Uint8Array, maxBytes: number): AsyncGenerator<Buffer> {
  const stream = new (zstdAddon().Stream)();
  let offset = 0;
  let total = 0;
  let ended = true;
  for (;;) {
    let consumed: number;
    let piece: Uint8Array;
    let frameEnded: boolean;
    try {
      [consumed, piece, frameEnded] = stream.decode(src, offset, PIECE);
    } catch (err) {
      throw asFault(err);
    }
    // A call that did nothing says nothing about the last frame (libzstd then waits for the next one).
    if (consumed > 0 || piece.length > 0) ended = frameEnded;
    offset += consumed;
    if (piece.length > 0) {
      total += piece.length;
      if (total > maxBytes) throw new ZstdDecodeError('too-large', `the stream decodes to more than ${maxBytes} bytes`);
      yield Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    } else if (consumed === 0) {
      break;
    }
  }
  if (!ended) throw new ZstdDecodeError('corrupt', `the stream ends inside a frame (after ${total} bytes of output)`);
}
