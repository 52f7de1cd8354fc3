/**
 * Errors raised by the eStargz format library. Each carries a stable `code` so
 * that front ends (CLI exit status, FUSE errno mapping) decide once, from the
 * code, and the message says what failed and where.
 */
export type EstargzErrorCode =
  /** The blob has no eStargz footer: it is not eStargz (a plain gzip layer, say). */
  | 'NOT_ESTARGZ'
  /** The footer is there but the TOC it points at is not a valid TOC member. */
  | 'INVALID_TOC'
  /** The TOC's sha256 differs from the digest the caller trusts (manifest annotation). */
  | 'TOC_DIGEST_MISMATCH'
  /** A limit was hit (TOC size cap, decompression bound). */
  | 'LIMIT'
  /** A chunk inflated, but its bytes do not hash to its chunkDigest. */
  | 'CHUNK_DIGEST_MISMATCH'
  /** A chunk's compressed bytes are not a valid gzip member, or are too short. */
  | 'CHUNK_CORRUPT'
  /** The whole blob (or its uncompressed stream) does not hash to the layer digest (or diffID). */
  | 'BLOB_DIGEST_MISMATCH'
  /** The input given to the converter is not a tar archive we can convert. */
  | 'INVALID_TAR';

export interface EstargzErrorContext {
  /** Path of the file inside the layer, when the error concerns one. */
  path?: string;
  /** Offset of the chunk inside its file. */
  chunkOffset?: number;
  /** Compressed offset inside the blob. */
  blobOffset?: number;
  expected?: string;
  actual?: string;
}

export class EstargzError extends Error {
  override readonly name = 'EstargzError';
  constructor(
    readonly code: EstargzErrorCode,
    message: string,
    readonly context: EstargzErrorContext = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isEstargzError(err: unknown, code?: EstargzErrorCode): err is EstargzError {
  return err instanceof EstargzError && (code === undefined || err.code === code);
}
