import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';

/**
 * The disk cache's on-disk format: pack files of records, and a sealed
 * pack's index.
 *
 * A record is a 48-byte header and the chunk's plain bytes:
 *
 *   0  'EGZC'                 magic
 *   4  u8 version (1), 3 bytes zero
 *   8  u48 length (big-endian) of the bytes that follow the header
 *  14  2 bytes zero
 *  16  sha256 of those bytes (32 bytes)
 *
 * An index (`<n>.idx`, written when a pack is sealed) lists a pack's
 * records, so opening the cache reads one small file per pack instead of
 * every header:
 *
 *   0  'EGZI', u8 version (1), 3 bytes zero
 *   8  u32 record count, u48 pack length, 2 bytes zero
 *  20  per record: sha256 (32), u48 offset of the bytes, u48 length
 *  end sha256 of everything before it (32)
 *
 * Nothing here is trusted for content: every chunk read back is hashed
 * against the digest it is asked for. The header's and index's checks only
 * keep a torn or garbled file from being indexed wrongly.
 */

export const RECORD_HEADER_BYTES = 48;
const RECORD_MAGIC = Buffer.from('EGZC');
const INDEX_MAGIC = Buffer.from('EGZI');
const VERSION = 1;
const INDEX_HEAD_BYTES = 20;
const INDEX_ENTRY_BYTES = 44;
const DIGEST_BYTES = 32;
/** u48: what readUIntBE/writeUIntBE take at most. */
const MAX_U48 = 2 ** 48 - 1;

/** One chunk in a pack: its sha256 (hex) and where its bytes are. */
export interface PackRecord {
  hex: string;
  /** Offset of the chunk's bytes (after the header) in the pack. */
  offset: number;
  length: number;
}

export function recordHeader(hex: string, length: number): Buffer {
  if (!Number.isSafeInteger(length) || length < 0 || length > MAX_U48) throw new RangeError(`record length ${length} out of range`);
  const header = Buffer.alloc(RECORD_HEADER_BYTES);
  RECORD_MAGIC.copy(header, 0);
  header[4] = VERSION;
  header.writeUIntBE(length, 8, 6);
  header.write(hex, 16, DIGEST_BYTES, 'hex');
  return header;
}

/** The header's digest and length, or undefined if these 48 bytes are not a record header. */
export function parseRecordHeader(header: Buffer): { hex: string; length: number } | undefined {
  if (header.length < RECORD_HEADER_BYTES || !header.subarray(0, 4).equals(RECORD_MAGIC) || header[4] !== VERSION) return undefined;
  return { hex: header.toString('hex', 16, 16 + DIGEST_BYTES), length: header.readUIntBE(8, 6) };
}

export function encodeIndex(records: readonly PackRecord[], packBytes: number): Buffer {
  const out = Buffer.alloc(INDEX_HEAD_BYTES + records.length * INDEX_ENTRY_BYTES + DIGEST_BYTES);
  INDEX_MAGIC.copy(out, 0);
  out[4] = VERSION;
  out.writeUInt32BE(records.length, 8);
  out.writeUIntBE(packBytes, 12, 6);
  let at = INDEX_HEAD_BYTES;
  for (const r of records) {
    out.write(r.hex, at, DIGEST_BYTES, 'hex');
    out.writeUIntBE(r.offset, at + 32, 6);
    out.writeUIntBE(r.length, at + 38, 6);
    at += INDEX_ENTRY_BYTES;
  }
  createHash('sha256').update(out.subarray(0, at)).digest().copy(out, at);
  return out;
}

/** An index's records and the pack length it was written for, or undefined if it is not a whole, intact index. */
export function decodeIndex(buf: Buffer): { records: PackRecord[]; packBytes: number } | undefined {
  if (buf.length < INDEX_HEAD_BYTES + DIGEST_BYTES || !buf.subarray(0, 4).equals(INDEX_MAGIC) || buf[4] !== VERSION) return undefined;
  const count = buf.readUInt32BE(8);
  const end = INDEX_HEAD_BYTES + count * INDEX_ENTRY_BYTES;
  if (buf.length !== end + DIGEST_BYTES) return undefined;
  if (!createHash('sha256').update(buf.subarray(0, end)).digest().equals(buf.subarray(end))) return undefined;
  const packBytes = buf.readUIntBE(12, 6);
  const records: PackRecord[] = [];
  for (let at = INDEX_HEAD_BYTES; at < end; at += INDEX_ENTRY_BYTES) {
    const offset = buf.readUIntBE(at + 32, 6);
    const length = buf.readUIntBE(at + 38, 6);
    if (offset < RECORD_HEADER_BYTES || offset + length > packBytes) return undefined;
    records.push({ hex: buf.toString('hex', at, at + DIGEST_BYTES), offset, length });
  }
  return { records, packBytes };
}

/**
 * The records of a pack without an index (the one being written when the
 * store stopped without a flush): headers read one after another, up to the
 * first that is not whole or not a header (a write a crash cut short).
 * `validBytes` is where that is.
 */
export async function scanPack(fh: FileHandle, size: number): Promise<{ records: PackRecord[]; validBytes: number }> {
  const records: PackRecord[] = [];
  const header = Buffer.alloc(RECORD_HEADER_BYTES);
  let at = 0;
  while (at + RECORD_HEADER_BYTES <= size) {
    const { bytesRead } = await fh.read(header, 0, RECORD_HEADER_BYTES, at);
    if (bytesRead < RECORD_HEADER_BYTES) break;
    const parsed = parseRecordHeader(header);
    if (!parsed || at + RECORD_HEADER_BYTES + parsed.length > size) break;
    records.push({ hex: parsed.hex, offset: at + RECORD_HEADER_BYTES, length: parsed.length });
    at += RECORD_HEADER_BYTES + parsed.length;
  }
  return { records, validBytes: at };
}
