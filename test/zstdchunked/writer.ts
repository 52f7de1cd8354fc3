import { createHash } from 'node:crypto';
import { formatModtime } from '../../src/estargz/toc.js';
import { TarParser } from '../../src/estargz/tar/parser.js';
import {
  MANIFEST_CHECKSUM_ANNOTATION,
  MANIFEST_POSITION_ANNOTATION,
  TARSPLIT_POSITION_ANNOTATION,
} from '../../src/zstdchunked/annotations.js';
import { FOOTER_MAGIC, SKIPPABLE_MAGIC } from '../../src/zstdchunked/footer.js';
import type { ManifestEntry } from '../../src/zstdchunked/manifest.js';
import { zstdCompress } from './remake.js';

const TYPES: Record<string, string> = { '0': 'reg', '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo' };
const sha = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

function skippable(data: Buffer): Buffer {
  const h = Buffer.alloc(8);
  SKIPPABLE_MAGIC.copy(h);
  h.writeUInt32LE(data.length, 4);
  return Buffer.concat([h, data]);
}

/**
 * A test-only zstd:chunked writer, laid out as c/storage's compressor lays
 * its blobs out (the fixture shows it): tar headers (with the previous
 * file's padding) in a frame, each chunk of a file in a frame of its own,
 * the end of the archive in a last frame; then manifest, tar-split and
 * footer. Files are cut into chunks at `chunkSize` and around runs of
 * zeros of ≥ 1 KiB (zeros chunks), to exercise the reader's chunk rules.
 * Not a reference: the tests check its output with the zstd command.
 * `alter` changes the manifest entries before they are written (bad input).
 */
export function writeZstdChunked(tar: Buffer, chunkSize: number, alter?: (entries: ManifestEntry[]) => void): { blob: Buffer; annotations: Record<string, string> } {
  const parser = new TarParser();
  const tarEntries = parser.push(tar);
  const frames: Buffer[] = [];
  let at = 0;
  const frame = (plain: Buffer): number => {
    const offset = at;
    const f = zstdCompress(plain);
    frames.push(f);
    at += f.length;
    return offset;
  };
  const manifestEntries: ManifestEntry[] = [];
  const tarSplit: string[] = [];
  let pos = 0;
  let cursor = 0;
  for (const e of tarEntries) {
    const segment = tar.subarray(cursor, e.dataOffset);
    frame(segment);
    tarSplit.push(JSON.stringify({ type: 2, payload: segment.toString('base64'), position: pos++ }));
    const h = e.header;
    const type = TYPES[h.typeflag]!;
    const m: ManifestEntry = { type, name: h.name };
    if (h.linkname) m.linkName = h.linkname;
    if (h.mode) m.mode = h.mode;
    if (type === 'reg' && h.size) m.size = h.size;
    if (h.uid) m.uid = h.uid;
    if (h.gid) m.gid = h.gid;
    const modtime = formatModtime(Math.floor(h.mtime));
    if (modtime) m.modtime = modtime;
    if (h.devmajor) m.devMajor = h.devmajor;
    if (h.devminor) m.devMinor = h.devminor;
    if (h.xattrs.size) m.xattrs = Object.fromEntries([...h.xattrs].map(([k, v]) => [k, v.toString('base64')]));
    const data = tar.subarray(e.dataOffset, e.dataOffset + e.payloadSize);
    tarSplit.push(JSON.stringify({ type: 1, name: h.name, ...(e.payloadSize ? { size: e.payloadSize } : {}), payload: e.payloadSize ? 'AAAAAAAAAAA=' : null, position: pos++ }));
    const entries: ManifestEntry[] = [m];
    if (e.payloadSize > 0) {
      m.digest = sha(data);
      // Cut points: every chunkSize bytes, and around runs of ≥ 1 KiB of zeros.
      const pieces: { start: number; end: number; zeros: boolean }[] = [];
      let start = 0;
      for (let i = 0; i < data.length;) {
        let z = i;
        while (z < data.length && data[z] === 0) z++;
        if (z - i >= 1024) {
          if (i > start) pieces.push({ start, end: i, zeros: false });
          pieces.push({ start: i, end: z, zeros: true });
          start = i = z;
        } else if (z > i) {
          i = z;
        } else {
          i++;
        }
        if (i - start >= chunkSize) {
          pieces.push({ start, end: i, zeros: false });
          start = i;
        }
      }
      if (start < data.length) pieces.push({ start, end: data.length, zeros: false });
      for (const [k, p] of pieces.entries()) {
        const offset = frame(data.subarray(p.start, p.end));
        if (k === 0) m.offset = offset;
        if (pieces.length > 1) {
          const c: ManifestEntry = k === 0 ? m : { type: 'chunk', name: h.name, chunkOffset: p.start };
          c.offset = offset;
          c.chunkSize = p.end - p.start;
          c.chunkDigest = sha(data.subarray(p.start, p.end));
          if (p.zeros) c.chunkType = 'zeros';
          if (k > 0) entries.push(c);
        }
      }
      m.endOffset = at;
    }
    manifestEntries.push(...entries);
    cursor = e.dataOffset + e.payloadSize;
  }
  const trailer = tar.subarray(cursor);
  frame(trailer);
  tarSplit.push(JSON.stringify({ type: 2, payload: trailer.toString('base64'), position: pos++ }));

  alter?.(manifestEntries);
  const tarSplitPlain = Buffer.from(tarSplit.join('\n') + '\n');
  const tarSplitZ = zstdCompress(tarSplitPlain);
  const json = Buffer.from(JSON.stringify({ version: 1, entries: manifestEntries, tarSplitDigest: sha(tarSplitZ) }));
  const manifestZ = zstdCompress(json);
  const manifestOffset = at + 8;
  const tarSplitOffset = manifestOffset + manifestZ.length + 8;
  const footer = Buffer.alloc(64);
  [manifestOffset, manifestZ.length, json.length, 1, tarSplitOffset, tarSplitZ.length, tarSplitPlain.length].forEach((v, i) => footer.writeBigUInt64LE(BigInt(v), i * 8));
  FOOTER_MAGIC.copy(footer, 56);
  return {
    blob: Buffer.concat([...frames, skippable(manifestZ), skippable(tarSplitZ), skippable(footer)]),
    annotations: {
      [MANIFEST_CHECKSUM_ANNOTATION]: sha(manifestZ),
      [MANIFEST_POSITION_ANNOTATION]: `${manifestOffset}:${manifestZ.length}:${json.length}:1`,
      [TARSPLIT_POSITION_ANNOTATION]: `${tarSplitOffset}:${tarSplitZ.length}:${tarSplitPlain.length}`,
    },
  };
}
