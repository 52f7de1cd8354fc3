import { createHash } from 'node:crypto';
import { inflateRawSync } from 'node:zlib';
import { createRequire } from 'node:module';
import { EstargzError } from './errors.js';

/** How a chunk's compressed range becomes its bytes: a gzip member (eStargz), a zstd frame or known zeros (zstd:chunked). */
export type ChunkCodec = 'gzip' | 'zstd' | 'zeros';

/** What is needed to decode and check one chunk; plain data so it crosses to a worker. */
export interface ChunkRef {
  /** Absent: gzip (eStargz). */
  codec?: ChunkCodec;
  /** File the chunk belongs to (for error messages). */
  path: string;
  /** Offset of the chunk inside the file (for error messages). */
  fileOffset: number;
  /** Uncompressed bytes to skip inside the gzip member. */
  innerOffset: number;
  /** Uncompressed length of the chunk. */
  size: number;
  /** Expected sha256 of the chunk ("sha256:…"). */
  digest: string;
  /** Blob offset of the member (for error messages). */
  blobOffset: number;
}

/** node:zlib is the fast default; pako is the portable pure-JS decoder. */
export type Decoder = 'zlib' | 'pako';

/**
 * Extra inflated bytes allowed past the chunk on the fast path: the member also
 * holds the padding and the headers of the entries after the file. Past this,
 * the bounded decoder takes over so that a hostile member cannot inflate into
 * an unbounded buffer.
 */
const FAST_PATH_SLACK = 1 << 20;

const ENOUGH = Symbol('enough');

const FHCRC = 0x02;
const FEXTRA = 0x04;
const FNAME = 0x08;
const FCOMMENT = 0x10;

/**
 * Offset of the deflate data inside a gzip member. Chunks are inflated raw:
 * the gzip CRC32 is not checked because the sha256 of the chunk is, and a
 * damaged member then fails as a digest mismatch naming both digests.
 */
function deflateStart(member: Uint8Array, ref: ChunkRef): number {
  if (member.length < 10 || member[0] !== 0x1f || member[1] !== 0x8b || member[2] !== 8) {
    throw corrupt(ref, 'no gzip member header at the chunk offset');
  }
  const flags = member[3]!;
  let p = 10;
  if (flags & FEXTRA) p += 2 + ((member[p] ?? 0) | ((member[p + 1] ?? 0) << 8));
  for (const flag of [FNAME, FCOMMENT]) {
    if (flags & flag) {
      const nul = member.indexOf(0, p);
      if (nul < 0) throw corrupt(ref, 'gzip header is truncated');
      p = nul + 1;
    }
  }
  if (flags & FHCRC) p += 2;
  if (p > member.length) throw corrupt(ref, 'gzip header is truncated');
  return p;
}

function corrupt(ref: ChunkRef, why: string): EstargzError {
  return new EstargzError(
    'CHUNK_CORRUPT',
    `chunk of ${JSON.stringify(ref.path)} at file offset ${ref.fileOffset} (blob offset ${ref.blobOffset}): ${why}`,
    { path: ref.path, chunkOffset: ref.fileOffset, blobOffset: ref.blobOffset },
  );
}

type PakoInflate = typeof import('pako').Inflate;

/**
 * pako's Inflate, loaded on first use: the default decoder is node:zlib,
 * and loading pako made every decode worker ~10 ms slower to start (a cold
 * read waits for that when its worker is new). Cached by the module loader.
 */
function pakoInflate(): PakoInflate {
  return (createRequire(import.meta.url)('pako') as typeof import('pako')).Inflate;
}

/** Inflates raw deflate data, stopping once `need` bytes are out. */
function inflateBounded(deflated: Uint8Array, need: number, ref: ChunkRef): Buffer {
  const Inflate = pakoInflate();
  const inflate = new Inflate({ chunkSize: 64 * 1024, raw: true });
  const parts: Uint8Array[] = [];
  let got = 0;
  inflate.onData = (data: Uint8Array) => {
    parts.push(data);
    got += data.length;
    if (got >= need) throw ENOUGH;
  };
  inflate.onEnd = () => {};
  try {
    inflate.push(deflated, true);
  } catch (err) {
    if (err !== ENOUGH) throw err;
  }
  if (got < need) {
    const why = inflate.err ? `inflate failed: ${inflate.msg || `zlib error ${inflate.err}`}` : `inflates to ${got} bytes`;
    throw corrupt(ref, `${why}, expected at least ${need}`);
  }
  const all = Buffer.concat(parts, got);
  return all.subarray(0, need);
}

function inflateFast(deflated: Uint8Array, need: number, ref: ChunkRef): Buffer {
  try {
    // One right-sized output buffer instead of 16 KiB pieces concatenated at the end.
    const chunkSize = Math.max(64, Math.min(need + 1024, 64 << 20));
    const out = inflateRawSync(deflated, { maxOutputLength: need + FAST_PATH_SLACK, chunkSize });
    if (out.length >= need) return out;
  } catch {
    // Larger than the bound, or damaged: the bounded decoder stops at the
    // chunk's end and reports how far it got.
  }
  return inflateBounded(deflated, need, ref);
}

/**
 * Decodes one chunk and checks it: inflate the member, skip innerOffset, take
 * exactly `size` bytes, compare their sha256 with the chunk digest. Pure and
 * synchronous so that it runs as-is inside a worker.
 */
export function decodeChunk(compressed: Uint8Array, ref: ChunkRef, decoder: Decoder = 'zlib'): Buffer {
  const need = ref.innerOffset + ref.size;
  const deflated = compressed.subarray(deflateStart(compressed, ref));
  const inflated = decoder === 'zlib' ? inflateFast(deflated, need, ref) : inflateBounded(deflated, need, ref);
  const chunk = inflated.subarray(ref.innerOffset, need);
  const actual = 'sha256:' + createHash('sha256').update(chunk).digest('hex');
  if (actual !== ref.digest) {
    throw new EstargzError(
      'CHUNK_DIGEST_MISMATCH',
      `chunk of ${JSON.stringify(ref.path)} at file offset ${ref.fileOffset} (blob offset ${ref.blobOffset}) failed verification: expected ${ref.digest}, got ${actual}`,
      { path: ref.path, chunkOffset: ref.fileOffset, blobOffset: ref.blobOffset, expected: ref.digest, actual },
    );
  }
  return chunk;
}
