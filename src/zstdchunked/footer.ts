import { ZstdChunkedError } from './errors.js';

/**
 * The end of a zstd:chunked blob, as c/storage writes it (pkg/chunked/internal/minimal):
 *
 *   … data frames … | skippable header (8) | manifest | skippable header (8) | tar-split | skippable header (8) | footer (64)
 *
 * A skippable frame header is the magic 50 2A 4D 18 and a little-endian
 * uint32 length. The footer is seven little-endian uint64 (manifest offset,
 * compressed length, uncompressed length, type = 1, tar-split offset,
 * compressed length, uncompressed length) and the magic "GNUlInUx". Offsets
 * are of the frames' contents, past their 8-byte headers.
 */
export const SKIPPABLE_MAGIC = Buffer.from([0x50, 0x2a, 0x4d, 0x18]);
export const FOOTER_MAGIC = Buffer.from('GNUlInUx', 'latin1');
export const SKIPPABLE_HEADER_SIZE = 8;
export const FOOTER_DATA_SIZE = 64;
/** The footer's whole skippable frame. */
export const FOOTER_FRAME_SIZE = SKIPPABLE_HEADER_SIZE + FOOTER_DATA_SIZE;
/** Manifest type "CRFS": the only one c/storage writes or reads. */
export const MANIFEST_TYPE_CRFS = 1;

/** A skippable frame's contents: [offset, offset + length) of the blob, `uncompressedLength` once decoded. */
export interface FramePosition {
  offset: number;
  length: number;
  uncompressedLength: number;
}

export interface ZstdChunkedFooter {
  manifest: FramePosition;
  manifestType: number;
  tarSplit: FramePosition;
  /** Where the data frames end: the manifest frame's header. */
  payloadEnd: number;
}

function bad(message: string): ZstdChunkedError {
  return new ZstdChunkedError('INVALID_FOOTER', message, { part: 'footer' });
}

function u64(buf: Buffer, at: number, what: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`${what} is ${v}, past any blob size`);
  return Number(v);
}

/**
 * Parses the footer from the last bytes of the blob (`tail` ends at the
 * blob's end, `blobSize` long in all), and checks that the manifest, the
 * tar-split and the footer sit back to back at the end of the blob, each in
 * a skippable frame whose header gives its length, as c/storage writes them.
 * The frame headers are checked when `tail` reaches back to them.
 */
export function parseFooter(tail: Buffer, blobSize: number): ZstdChunkedFooter {
  if (blobSize < FOOTER_FRAME_SIZE || tail.length < FOOTER_FRAME_SIZE) {
    throw new ZstdChunkedError('NOT_ZSTD_CHUNKED', `the blob (${blobSize} bytes) is too short for a zstd:chunked footer`, { part: 'footer' });
  }
  const frame = tail.subarray(tail.length - FOOTER_FRAME_SIZE);
  const data = frame.subarray(SKIPPABLE_HEADER_SIZE);
  if (!data.subarray(56).equals(FOOTER_MAGIC)) {
    throw new ZstdChunkedError('NOT_ZSTD_CHUNKED', `the last 8 bytes are ${JSON.stringify(data.subarray(56).toString('latin1'))}, not the magic "GNUlInUx"`, { part: 'footer' });
  }
  if (!frame.subarray(0, 4).equals(SKIPPABLE_MAGIC) || frame.readUInt32LE(4) !== FOOTER_DATA_SIZE) {
    throw bad(`the footer is not in a skippable frame of ${FOOTER_DATA_SIZE} bytes (header ${frame.subarray(0, 8).toString('hex')})`);
  }
  const manifest = { offset: u64(data, 0, 'manifest offset'), length: u64(data, 8, 'manifest length'), uncompressedLength: u64(data, 16, 'manifest uncompressed length') };
  const manifestType = u64(data, 24, 'manifest type');
  const tarSplit = { offset: u64(data, 32, 'tar-split offset'), length: u64(data, 40, 'tar-split length'), uncompressedLength: u64(data, 48, 'tar-split uncompressed length') };
  if (manifestType !== MANIFEST_TYPE_CRFS) {
    throw new ZstdChunkedError('UNSUPPORTED', `manifest type ${manifestType}, only ${MANIFEST_TYPE_CRFS} is known`, { part: 'footer' });
  }
  if (tarSplit.offset === 0 || tarSplit.length === 0) {
    throw new ZstdChunkedError('UNSUPPORTED', 'the blob has no tar-split (an early zstd:chunked): the layer\'s tar cannot be rebuilt to check its diff_id', { part: 'footer' });
  }
  const footerStart = blobSize - FOOTER_FRAME_SIZE;
  if (tarSplit.offset + tarSplit.length !== footerStart) {
    throw bad(`the tar-split [${tarSplit.offset}, ${tarSplit.offset + tarSplit.length}) does not end where the footer frame starts (${footerStart}) in a blob of ${blobSize} bytes`);
  }
  if (manifest.offset + manifest.length + SKIPPABLE_HEADER_SIZE !== tarSplit.offset) {
    throw bad(`the manifest [${manifest.offset}, ${manifest.offset + manifest.length}) is not followed by the tar-split frame at ${tarSplit.offset - SKIPPABLE_HEADER_SIZE}`);
  }
  if (manifest.length === 0 || manifest.offset < SKIPPABLE_HEADER_SIZE) {
    throw bad(`the manifest position ${manifest.offset}:${manifest.length} is outside the blob`);
  }
  const payloadEnd = manifest.offset - SKIPPABLE_HEADER_SIZE;
  const tailStart = blobSize - tail.length;
  for (const [what, pos] of [['manifest', manifest], ['tar-split', tarSplit]] as const) {
    const header = pos.offset - SKIPPABLE_HEADER_SIZE;
    if (header < tailStart) continue;
    const h = tail.subarray(header - tailStart, header - tailStart + SKIPPABLE_HEADER_SIZE);
    if (!h.subarray(0, 4).equals(SKIPPABLE_MAGIC) || h.readUInt32LE(4) !== pos.length) {
      throw bad(`the ${what} at ${pos.offset} is not in a skippable frame of ${pos.length} bytes (header ${h.toString('hex')})`);
    }
  }
  return { manifest, manifestType, tarSplit, payloadEnd };
}
