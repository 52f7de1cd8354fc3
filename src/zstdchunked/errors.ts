/**
 * Errors raised by the zstd:chunked format library. Like EstargzError, each
 * carries a stable `code` (front ends decide from it once) and names the part
 * of the layer that is at fault, so a refusal says where to look. The chunk
 * codes are the eStargz ones: the engine treats a bad chunk alike whatever
 * its format.
 */
export type ZstdChunkedErrorCode =
  /** The blob does not end with a zstd:chunked footer, or the layer has no zstd:chunked annotations. */
  | 'NOT_ZSTD_CHUNKED'
  /** A zstd:chunked variant this reader does not serve (no tar-split, another manifest type). */
  | 'UNSUPPORTED'
  /** The footer is there but inconsistent with itself or the blob (offsets, lengths, frame headers). */
  | 'INVALID_FOOTER'
  /** The blob is not as long as its annotations say: truncated, or with bytes after its footer. */
  | 'BLOB_SIZE_MISMATCH'
  /** A layer annotation is malformed or disagrees with the footer. */
  | 'INVALID_ANNOTATION'
  /** The compressed manifest's sha256 is not the manifest-checksum annotation. */
  | 'MANIFEST_DIGEST_MISMATCH'
  /** The manifest does not decompress to its declared size, is not JSON, or its entries are inconsistent. */
  | 'INVALID_MANIFEST'
  /** The compressed tar-split's sha256 is not the manifest's tarSplitDigest. */
  | 'TARSPLIT_DIGEST_MISMATCH'
  /** The tar-split does not decode, is malformed, or disagrees with the manifest. */
  | 'INVALID_TARSPLIT'
  /** A bound was hit (manifest or tar-split size, entries, a chunk's size). */
  | 'LIMIT'
  /** A chunk decoded, but its bytes do not hash to its chunkDigest. */
  | 'CHUNK_DIGEST_MISMATCH'
  /** A chunk's bytes are not a zstd frame of exactly the chunk's size. */
  | 'CHUNK_CORRUPT'
  /** A file's contents given back for the tar rebuild are not its size. */
  | 'FILE_MISMATCH'
  /** The rebuilt layer tar does not hash to the diff_id, or the blob to its digest. */
  | 'DIGEST_MISMATCH';

/** Which part of the layer an error is about. */
export type LayerPart = 'footer' | 'annotations' | 'manifest' | 'tar-split' | 'chunk' | 'blob';

export interface ZstdChunkedErrorContext {
  part: LayerPart;
  /** Path of the file inside the layer, when the error concerns one. */
  path?: string;
  /** Offset of the chunk inside its file. */
  chunkOffset?: number;
  /** Compressed offset inside the blob. */
  blobOffset?: number;
  expected?: string;
  actual?: string;
}

export class ZstdChunkedError extends Error {
  override readonly name = 'ZstdChunkedError';
  constructor(
    readonly code: ZstdChunkedErrorCode,
    message: string,
    readonly context: ZstdChunkedErrorContext,
    options?: { cause?: unknown },
  ) {
    super(`zstd:chunked ${context.part}: ${message}`, options);
  }
}

export function isZstdChunkedError(err: unknown, code?: ZstdChunkedErrorCode): err is ZstdChunkedError {
  return err instanceof ZstdChunkedError && (code === undefined || err.code === code);
}
