import { createHash } from 'node:crypto';
import { ZstdChunkedError } from './errors.js';
import { decompressExact, ZstdDecodeError } from './zstd.js';

/** c/storage refuses manifests over 150 MiB (compressed or not): the same bound here. */
export const MAX_MANIFEST_BYTES = 150 << 20;

/**
 * One manifest entry (c/storage minimal.FileMetadata). Keys are c/storage's;
 * every field but type and name may be absent (Go's omitempty).
 */
export interface ManifestEntry {
  type: string;
  name: string;
  linkName?: string;
  /** Raw tar mode: may carry S_IF* type bits. */
  mode?: number;
  size?: number;
  uid?: number;
  gid?: number;
  /** RFC 3339. */
  modtime?: string;
  accesstime?: string;
  changetime?: string;
  devMajor?: number;
  devMinor?: number;
  /** Values are base64. */
  xattrs?: Record<string, string>;
  /** sha256 of the whole file. */
  digest?: string;
  /** Blob offset of the file's first frame (reg), or of the chunk's frame (chunk, and reg for its first chunk). */
  offset?: number;
  /** Blob offset where the file's last frame ends (reg). */
  endOffset?: number;
  chunkSize?: number;
  chunkOffset?: number;
  chunkDigest?: string;
  /** "" (data) or "zeros". */
  chunkType?: string;
}

export interface ManifestJson {
  version: number;
  entries: ManifestEntry[];
  /** sha256 of the compressed tar-split. */
  tarSplitDigest: string;
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

function bad(code: 'INVALID_MANIFEST' | 'LIMIT' | 'UNSUPPORTED', message: string, blobOffset?: number): ZstdChunkedError {
  return new ZstdChunkedError(code, message, blobOffset === undefined ? { part: 'manifest' } : { part: 'manifest', blobOffset });
}

export function sha256Digest(bytes: Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(bytes).digest('hex');
}

/**
 * Checks the compressed manifest against the trusted checksum, decodes it
 * into exactly its declared size (the decoder stops there: a manifest cannot
 * expand past it) and parses it. Returns the parsed manifest and the decoded
 * JSON bytes.
 */
export function decodeManifest(compressed: Uint8Array, opts: { checksum: string; uncompressedLength: number; blobOffset: number; maxBytes?: number }): { manifest: ManifestJson; json: Buffer } {
  const max = opts.maxBytes ?? MAX_MANIFEST_BYTES;
  if (compressed.length > max || opts.uncompressedLength > max) {
    throw bad('LIMIT', `the manifest is ${compressed.length} bytes compressed, ${opts.uncompressedLength} uncompressed: over the limit of ${max}`, opts.blobOffset);
  }
  const actual = sha256Digest(compressed);
  if (actual !== opts.checksum) {
    throw new ZstdChunkedError('MANIFEST_DIGEST_MISMATCH', `the manifest's sha256 is ${actual}, the manifest-checksum annotation says ${opts.checksum}`,
      { part: 'manifest', blobOffset: opts.blobOffset, expected: opts.checksum, actual });
  }
  let json: Buffer;
  try {
    json = decompressExact(compressed, opts.uncompressedLength);
  } catch (err) {
    if (!(err instanceof ZstdDecodeError)) throw err;
    const why = err.fault === 'too-large' ? `decompresses past its declared size of ${opts.uncompressedLength} bytes`
      : err.fault === 'too-short' ? `decompresses to fewer bytes than its declared ${opts.uncompressedLength}: ${err.message}`
        : `is not a valid zstd frame: ${err.message}`;
    throw bad('INVALID_MANIFEST', `the manifest ${why}`, opts.blobOffset);
  }
  return { manifest: parseManifestJson(json), json };
}

/** Parses the manifest JSON; checks the outer shape (entries are checked by the index). */
export function parseManifestJson(json: Uint8Array): ManifestJson {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(json.buffer, json.byteOffset, json.byteLength).toString('utf8'));
  } catch (err) {
    throw bad('INVALID_MANIFEST', `the manifest JSON does not parse: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw bad('INVALID_MANIFEST', 'the manifest JSON is not an object');
  const { version, entries, tarSplitDigest } = doc as Record<string, unknown>;
  if (version !== 1) throw bad('INVALID_MANIFEST', `the manifest version is ${JSON.stringify(version)}, only 1 is known`);
  if (!Array.isArray(entries)) throw bad('INVALID_MANIFEST', `the manifest "entries" is ${entries === undefined ? 'missing' : 'not an array'}`);
  if (tarSplitDigest === undefined || tarSplitDigest === '') {
    throw bad('UNSUPPORTED', 'the manifest has no tarSplitDigest: the tar-split cannot be trusted, so the layer\'s tar cannot be rebuilt');
  }
  if (typeof tarSplitDigest !== 'string' || !DIGEST.test(tarSplitDigest)) {
    throw bad('INVALID_MANIFEST', `the manifest's tarSplitDigest ${JSON.stringify(tarSplitDigest)} is not a sha256 digest`);
  }
  for (const e of entries) {
    if (typeof e !== 'object' || e === null || Array.isArray(e)) throw bad('INVALID_MANIFEST', `a manifest entry is not an object: ${JSON.stringify(e).slice(0, 200)}`);
  }
  return { version, entries: entries as ManifestEntry[], tarSplitDigest };
}
