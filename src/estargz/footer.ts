import { EstargzError } from './errors.js';

/**
 * The footer is an empty gzip member whose FEXTRA field names the compressed
 * offset of the TOC member. Two layouts exist:
 * - eStargz (51 bytes): extra = 'S' 'G' LEN=22 "%016xSTARGZ"
 * - legacy stargz from google/crfs (47 bytes): extra = "%016xSTARGZ" with no subfield header
 */
export const FOOTER_SIZE = 51;
export const LEGACY_FOOTER_SIZE = 47;
export const MAX_FOOTER_SIZE = FOOTER_SIZE;

export interface Footer {
  tocOffset: number;
  /** Bytes the footer occupies at the end of the blob. */
  footerSize: number;
  legacy: boolean;
}

const GZIP_HEADER = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff];
/** An empty final stored deflate block, then CRC32=0 and ISIZE=0. */
const EMPTY_DEFLATE_AND_TRAILER = [0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];

export function encodeFooter(tocOffset: number): Buffer {
  const buf = Buffer.alloc(FOOTER_SIZE);
  Buffer.from(GZIP_HEADER).copy(buf, 0);
  buf.writeUInt16LE(26, 10); // XLEN
  buf.write('SG', 12, 'latin1');
  buf.writeUInt16LE(22, 14); // subfield LEN
  buf.write(offsetField(tocOffset), 16, 'latin1');
  Buffer.from(EMPTY_DEFLATE_AND_TRAILER).copy(buf, 38);
  return buf;
}

function offsetField(tocOffset: number): string {
  return tocOffset.toString(16).padStart(16, '0') + 'STARGZ';
}

/** Parses "%016xSTARGZ"; returns null with a reason when it is not that. */
function parseOffsetField(field: Buffer): number | string {
  const text = field.toString('latin1');
  if (!text.endsWith('STARGZ')) return 'extra field does not end in "STARGZ"';
  const hex = text.slice(0, 16);
  if (!/^[0-9a-fA-F]{16}$/.test(hex)) return `TOC offset ${JSON.stringify(hex)} is not 16 hex digits`;
  const offset = Number.parseInt(hex, 16);
  if (!Number.isSafeInteger(offset)) return `TOC offset 0x${hex} is too large`;
  return offset;
}

function checkGzipHeader(b: Buffer): string | null {
  if (b[0] !== 0x1f || b[1] !== 0x8b) return 'no gzip magic';
  if (b[2] !== 0x08) return 'compression method is not deflate';
  if (((b[3] ?? 0) & 0x04) === 0) return 'gzip header has no FEXTRA field';
  return null;
}

function parseCurrent(b: Buffer): Footer | string {
  const bad = checkGzipHeader(b);
  if (bad) return bad;
  const xlen = b.readUInt16LE(10);
  if (xlen !== 26) return `extra length is ${xlen}, expected 26`;
  if (b[12] !== 0x53 || b[13] !== 0x47) return 'extra subfield is not "SG"';
  const len = b.readUInt16LE(14);
  if (len !== 22) return `"SG" subfield length is ${len}, expected 22`;
  const offset = parseOffsetField(b.subarray(16, 38));
  if (typeof offset === 'string') return offset;
  return { tocOffset: offset, footerSize: FOOTER_SIZE, legacy: false };
}

function parseLegacy(b: Buffer): Footer | string {
  const bad = checkGzipHeader(b);
  if (bad) return bad;
  const xlen = b.readUInt16LE(10);
  if (xlen !== 22) return `extra length is ${xlen}, expected 22`;
  const offset = parseOffsetField(b.subarray(12, 34));
  if (typeof offset === 'string') return offset;
  return { tocOffset: offset, footerSize: LEGACY_FOOTER_SIZE, legacy: true };
}

/**
 * Parses the footer from the tail of a blob. `tail` is the last bytes of the
 * blob (at least the footer; more is fine). Throws NOT_ESTARGZ naming why
 * neither layout matched.
 */
export function parseFooter(tail: Buffer, blobSize: number): Footer {
  const reasons: string[] = [];
  for (const [size, parse, label] of [
    [FOOTER_SIZE, parseCurrent, 'eStargz footer'],
    [LEGACY_FOOTER_SIZE, parseLegacy, 'legacy stargz footer'],
  ] as const) {
    if (tail.length < size || blobSize < size) {
      reasons.push(`${label}: blob of ${blobSize} bytes is shorter than ${size}`);
      continue;
    }
    const result = parse(tail.subarray(tail.length - size));
    if (typeof result === 'string') {
      reasons.push(`${label}: ${result}`);
      continue;
    }
    if (result.tocOffset >= blobSize - size) {
      throw new EstargzError(
        'INVALID_TOC',
        `TOC offset ${result.tocOffset} in the ${label} is past the end of the blob's payload (${blobSize - size} bytes)`,
        { blobOffset: result.tocOffset },
      );
    }
    return result;
  }
  throw new EstargzError('NOT_ESTARGZ', `not an eStargz blob: ${reasons.join('; ')}`);
}
