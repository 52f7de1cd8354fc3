import { createHash } from 'node:crypto';
import { ZstdChunkedError } from './errors.js';
import { decompressPieces, ZstdDecodeError } from './zstd.js';

/**
 * The tar-split (vbatts/tar-split storage.Entry, one JSON object a line):
 * type 2 "segment" entries hold raw tar bytes (headers, padding, the end of
 * the archive), base64; type 1 "file" entries stand for a file's contents
 * (name, size, crc64 of the contents). The layer's tar is the segments with
 * each file's contents put back in order.
 */
export type TarSplitEntry =
  | { type: 'segment'; position: number; payload: Buffer }
  | { type: 'file'; position: number; name: string; size: number };

export interface TarSplitPosition {
  /** Compressed length and declared uncompressed length. */
  length: number;
  uncompressedLength: number;
}

/** Bound on the decoded tar-split: a million files take ~1 GB; c/storage streams it to a file. */
export const MAX_TARSPLIT_BYTES = 4 * 2 ** 30;
/** Bound on one JSON line: a segment holds one header with its PAX/GNU extensions (tar parser allows 64 MiB). */
const MAX_LINE_BYTES = 96 << 20;

export function tarSplitFault(message: string, code: 'INVALID_TARSPLIT' | 'LIMIT' = 'INVALID_TARSPLIT', path?: string): ZstdChunkedError {
  return new ZstdChunkedError(code, message, path === undefined ? { part: 'tar-split' } : { part: 'tar-split', path });
}

/** Checks the compressed tar-split against the manifest's tarSplitDigest (it is the manifest that vouches for it). */
export function checkTarSplitDigest(compressed: Uint8Array, tarSplitDigest: string): void {
  const actual = 'sha256:' + createHash('sha256').update(compressed).digest('hex');
  if (actual !== tarSplitDigest) {
    throw new ZstdChunkedError('TARSPLIT_DIGEST_MISMATCH', `the tar-split's sha256 is ${actual}, the manifest's tarSplitDigest is ${tarSplitDigest}`,
      { part: 'tar-split', expected: tarSplitDigest, actual });
  }
}

function parseLine(line: Buffer, expectPosition: number): TarSplitEntry {
  let e: unknown;
  try {
    e = JSON.parse(line.toString('utf8'));
  } catch (err) {
    throw tarSplitFault(`entry ${expectPosition} is not JSON: ${(err as Error).message}`);
  }
  if (typeof e !== 'object' || e === null || Array.isArray(e)) throw tarSplitFault(`entry ${expectPosition} is not an object`);
  const { type, name, name_raw: nameRaw, size, payload, position } = e as Record<string, unknown>;
  if (position !== expectPosition) throw tarSplitFault(`entry ${expectPosition} has position ${JSON.stringify(position)}`);
  if (type === 2) {
    if (typeof payload !== 'string') throw tarSplitFault(`segment ${expectPosition} has no base64 payload`);
    return { type: 'segment', position, payload: Buffer.from(payload, 'base64') };
  }
  if (type === 1) {
    if (nameRaw !== undefined) throw tarSplitFault(`file entry ${expectPosition} has a name that is not UTF-8 ("name_raw"), which no manifest entry can match`);
    if (typeof name !== 'string' || name === '') throw tarSplitFault(`file entry ${expectPosition} has no name`);
    const n = size ?? 0;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw tarSplitFault(`file entry ${JSON.stringify(name)} has size ${JSON.stringify(size)}`, 'INVALID_TARSPLIT', name);
    return { type: 'file', position, name, size: n };
  }
  throw tarSplitFault(`entry ${expectPosition} has unknown type ${JSON.stringify(type)}`);
}

/**
 * Decodes a (digest-checked) compressed tar-split into its entries, streaming:
 * memory holds one decoded piece and one line at a time. The decoded stream
 * must be exactly its declared length (it may not run past it).
 */
export async function* tarSplitEntries(compressed: Uint8Array, pos: TarSplitPosition, maxBytes = MAX_TARSPLIT_BYTES): AsyncGenerator<TarSplitEntry> {
  if (pos.uncompressedLength > maxBytes) throw tarSplitFault(`the tar-split is ${pos.uncompressedLength} bytes uncompressed, over the limit of ${maxBytes}`, 'LIMIT');
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let position = 0;
  let total = 0;
  try {
    for await (const piece of decompressPieces(compressed, pos.uncompressedLength)) {
      total += piece.length;
      let start = 0;
      for (let nl = piece.indexOf(0x0a); nl >= 0; nl = piece.indexOf(0x0a, start)) {
        const part = piece.subarray(start, nl);
        const line = pendingBytes ? Buffer.concat([...pending, part]) : part;
        pending = [];
        pendingBytes = 0;
        start = nl + 1;
        if (line.length === 0) continue;
        yield parseLine(line, position++);
      }
      if (start < piece.length) {
        pending.push(piece.subarray(start));
        pendingBytes += piece.length - start;
        if (pendingBytes > MAX_LINE_BYTES) throw tarSplitFault(`entry ${position} is over ${MAX_LINE_BYTES} bytes`, 'LIMIT');
      }
    }
  } catch (err) {
    if (err instanceof ZstdDecodeError) {
      throw tarSplitFault(err.fault === 'too-large' ? `decodes past its declared size of ${pos.uncompressedLength} bytes` : `does not decode: ${err.message}`);
    }
    throw err;
  }
  if (total !== pos.uncompressedLength) throw tarSplitFault(`decodes to ${total} bytes, not its declared ${pos.uncompressedLength}`);
  if (pendingBytes) yield parseLine(Buffer.concat(pending), position++);
}
