/**
 * The zstd:chunked layer writer of the tests and the benchmarks: a layer tar
 * laid out as podman 5's `push --compression-format zstd:chunked` lays it
 * out (src/zstdchunked/README.md describes the format and the podman-written
 * fixture it was checked against): the tar headers (with the previous
 * file's padding) in frames of their own, each chunk of a file in a zstd
 * frame of its own, runs of ≥ 1 KiB of zeros as `zeros` chunks, the end of
 * the archive in a last frame, then the manifest, the tar-split and the
 * footer as skippable frames, and the three annotations podman puts on the
 * layer.
 *
 * Chunks are cut at fixed `chunkSize` offsets (default 64 KiB): c/storage
 * cuts at rolling-checksum boundaries that average about that (the
 * podman-written fixture's 1.98 MB busybox has 38 chunks), so the frames the
 * store fetches and decodes are of the size podman's would be. Tests pass
 * small chunk sizes to exercise the reader's chunk rules.
 *
 * Every frame is compressed by the zstd command (level 3, podman's default)
 * in one process over a directory of one file per frame, not one process per
 * frame: a layer has thousands of frames. Not a reference: every blob is
 * checked with `zstd -dc` (it must give the tar back), and with `readBack`
 * the store's own reader must open it too. `alter` changes the manifest
 * entries before they are written, for tests of lying manifests (bad input).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BufferSource } from '../src/estargz/source.js';
import { TarParser } from '../src/estargz/tar/parser.js';
import { formatModtime } from '../src/estargz/toc.js';
import { MANIFEST_CHECKSUM_ANNOTATION, MANIFEST_POSITION_ANNOTATION, TARSPLIT_POSITION_ANNOTATION } from '../src/zstdchunked/annotations.js';
import { FOOTER_MAGIC, SKIPPABLE_MAGIC } from '../src/zstdchunked/footer.js';
import type { ManifestEntry } from '../src/zstdchunked/manifest.js';
import { openZstdChunked } from '../src/zstdchunked/open.js';

export const ZSTD_LAYER_MEDIA_TYPE = 'application/vnd.oci.image.layer.v1.tar+zstd';
export const DEFAULT_ZSTD_CHUNK_SIZE = 64 << 10;
/** c/storage makes a zeros chunk of a run of zeros this long or longer. */
const MIN_ZEROS_RUN = 1024;

export interface ZstdChunkedOptions {
  /** Where file data is cut into chunks (default 64 KiB). */
  chunkSize?: number;
  /** zstd level (default 3, podman's). */
  level?: number;
  /** Changes the manifest entries (offsets already set) before they are written: a lying manifest. */
  alter?: (entries: ManifestEntry[]) => void;
  /** Also open the blob with the store's reader (openZstdChunked) and throw if it refuses it. */
  readBack?: boolean;
}

export interface ZstdChunkedLayer {
  blob: Buffer;
  digest: string;
  annotations: Record<string, string>;
  /** sha256 of the compressed manifest: the key podman (≥ 5.1) looks the layer up by in an additional layer store. */
  manifestChecksum: string;
  /** Data frames (file chunks and tar header segments). */
  frames: number;
}

const TYPES: Record<string, string> = { '0': 'reg', '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo' };
const sha256 = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** `data` as one zstd frame (zstd command, stdin to stdout). */
export function zstdFrame(data: Buffer, level = 3): Buffer {
  return execFileSync('zstd', ['-q', '-c', `-${level}`], { input: data, maxBuffer: 256 << 20 });
}

/** One skippable frame (magic, uint32 LE length) around `data`. */
export function skippable(data: Buffer): Buffer {
  const h = Buffer.alloc(8);
  SKIPPABLE_MAGIC.copy(h);
  h.writeUInt32LE(data.length, 4);
  return Buffer.concat([h, data]);
}

/** A compressed metadata part (manifest or tar-split) and the uncompressed length the footer and annotation declare for it. */
export interface MetadataPart {
  z: Buffer;
  length: number;
}

/**
 * What follows the data frames (`payloadLength` bytes): the manifest, the
 * tar-split and the footer as skippable frames, and the layer annotations.
 * Offsets in the footer and annotations are of the skippable frames'
 * contents (past their 8-byte headers). The declared lengths are taken as
 * given, so that bad-input tests can make them lie.
 */
export function layerTail(payloadLength: number, manifest: MetadataPart, tarSplit: MetadataPart): { tail: Buffer; annotations: Record<string, string> } {
  const manifestOffset = payloadLength + 8;
  const tarSplitOffset = manifestOffset + manifest.z.length + 8;
  const footer = Buffer.alloc(64);
  [manifestOffset, manifest.z.length, manifest.length, 1, tarSplitOffset, tarSplit.z.length, tarSplit.length].forEach((v, i) => footer.writeBigUInt64LE(BigInt(v), i * 8));
  FOOTER_MAGIC.copy(footer, 56);
  return {
    tail: Buffer.concat([skippable(manifest.z), skippable(tarSplit.z), skippable(footer)]),
    annotations: {
      [MANIFEST_CHECKSUM_ANNOTATION]: sha256(manifest.z),
      [MANIFEST_POSITION_ANNOTATION]: `${manifestOffset}:${manifest.z.length}:${manifest.length}:1`,
      [TARSPLIT_POSITION_ANNOTATION]: `${tarSplitOffset}:${tarSplit.z.length}:${tarSplit.length}`,
    },
  };
}

/** Pieces of a file's data: fixed cuts at chunkSize, and runs of ≥ 1 KiB of zeros apart. */
function cutFile(data: Buffer, chunkSize: number): { start: number; end: number; zeros: boolean }[] {
  const out: { start: number; end: number; zeros: boolean }[] = [];
  let start = 0;
  let i = 0;
  while (i < data.length) {
    if (data[i] === 0) {
      let z = i;
      while (z < data.length && data[z] === 0) z++;
      if (z - i >= MIN_ZEROS_RUN) {
        if (i > start) out.push({ start, end: i, zeros: false });
        out.push({ start: i, end: z, zeros: true });
        start = i = z;
        continue;
      }
      i = z;
    } else {
      i++;
    }
    // A short run of zeros can carry a piece up to 1 KiB past chunkSize: harmless.
    if (i - start >= chunkSize) {
      out.push({ start, end: i, zeros: false });
      start = i;
    }
  }
  if (start < data.length) out.push({ start, end: data.length, zeros: false });
  return out;
}

/** Each buffer as a zstd frame of its own: one zstd process over a directory of one file per buffer. */
async function compressFrames(plain: Buffer[], level: number): Promise<Buffer[]> {
  const dir = await mkdtemp(join(tmpdir(), 'estargz-zstd-frames-'));
  try {
    const names = plain.map((_, i) => join(dir, String(i).padStart(8, '0')));
    for (const [i, p] of plain.entries()) await writeFile(names[i]!, p);
    execFileSync('zstd', ['-q', `-${level}`, '--rm', '-r', dir]);
    return await Promise.all(names.map((n) => readFile(`${n}.zst`)));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Writes `tar` (an uncompressed layer) as a zstd:chunked blob with its annotations; throws if the blob is not a zstd stream of the tar. */
export async function writeZstdChunked(tar: Buffer, opts: ZstdChunkedOptions = {}): Promise<ZstdChunkedLayer> {
  const chunkSize = opts.chunkSize ?? DEFAULT_ZSTD_CHUNK_SIZE;
  const level = opts.level ?? 3;
  const entries = new TarParser().push(tar);
  // First the plan: the plain bytes of every frame, in blob order, and which manifest entry takes which frame's offset.
  const plain: Buffer[] = [];
  /** Per frame: the manifest entries whose `offset` is where it starts. */
  const startsOf: ManifestEntry[][] = [];
  /** Per file: its `endOffset` is where frame `frame` starts (the frame after its last chunk's). */
  const pendingEnds: { entry: ManifestEntry; frame: number }[] = [];
  const frame = (b: Buffer): number => {
    plain.push(b);
    startsOf.push([]);
    return plain.length - 1;
  };
  const manifestEntries: ManifestEntry[] = [];
  const tarSplit: string[] = [];
  let position = 0;
  let cursor = 0;
  for (const e of entries) {
    // The header blocks (and the previous file's padding) in a frame of their own; tar-split keeps them verbatim.
    const segment = tar.subarray(cursor, e.dataOffset);
    frame(segment);
    tarSplit.push(JSON.stringify({ type: 2, payload: segment.toString('base64'), position: position++ }));
    const h = e.header;
    const type = TYPES[h.typeflag];
    if (!type) throw new Error(`zstd:chunked writer: tar entry ${h.name} has type ${h.typeflag}, which the format has no name for`);
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
    // The file's contents go where tar-split says; its payload is a CRC64 the store does not use (zeros).
    tarSplit.push(JSON.stringify({ type: 1, name: h.name, ...(e.payloadSize ? { size: e.payloadSize } : {}), payload: e.payloadSize ? 'AAAAAAAAAAA=' : null, position: position++ }));
    manifestEntries.push(m);
    if (e.payloadSize > 0) {
      const data = tar.subarray(e.dataOffset, e.dataOffset + e.payloadSize);
      m.digest = sha256(data);
      const pieces = cutFile(data, chunkSize);
      for (const [k, p] of pieces.entries()) {
        const f = frame(data.subarray(p.start, p.end));
        const c: ManifestEntry = k === 0 ? m : { type: 'chunk', name: h.name, chunkOffset: p.start };
        startsOf[f]!.push(c);
        if (pieces.length > 1) {
          c.chunkSize = p.end - p.start;
          c.chunkDigest = sha256(data.subarray(p.start, p.end));
          if (p.zeros) c.chunkType = 'zeros';
          if (k > 0) manifestEntries.push(c);
        }
      }
      // endOffset: where the file's last frame ends = the start of the next frame (there always is one: the next header or the trailer).
      pendingEnds.push({ entry: m, frame: plain.length });
    }
    cursor = e.dataOffset + e.payloadSize;
  }
  const trailer = tar.subarray(cursor);
  frame(trailer);
  tarSplit.push(JSON.stringify({ type: 2, payload: trailer.toString('base64'), position: position++ }));

  const compressed = await compressFrames(plain, level);
  const offsets: number[] = [];
  let at = 0;
  for (const c of compressed) {
    offsets.push(at);
    at += c.length;
  }
  for (const [f, es] of startsOf.entries()) for (const e of es) e.offset = offsets[f]!;
  for (const p of pendingEnds) p.entry.endOffset = offsets[p.frame]!;
  opts.alter?.(manifestEntries);

  const tarSplitPlain = Buffer.from(tarSplit.join('\n') + '\n');
  const tarSplitZ = zstdFrame(tarSplitPlain, level);
  const json = Buffer.from(JSON.stringify({ version: 1, entries: manifestEntries, tarSplitDigest: sha256(tarSplitZ) }));
  const manifestZ = zstdFrame(json, level);
  const { tail, annotations } = layerTail(at, { z: manifestZ, length: json.length }, { z: tarSplitZ, length: tarSplitPlain.length });
  const blob = Buffer.concat([...compressed, tail]);
  const back = execFileSync('zstd', ['-q', '-d', '-c'], { input: blob, maxBuffer: tar.length + (1 << 20) });
  if (!back.equals(tar)) throw new Error(`zstd:chunked writer: zstd -dc of the blob is not the layer tar (${back.length} vs ${tar.length} bytes)`);
  if (opts.readBack) await readBack(blob, annotations, tar.length);
  return { blob, digest: sha256(blob), annotations, manifestChecksum: sha256(manifestZ), frames: compressed.length };
}

/** The store's reader opens the blob (footer, annotations, manifest, tar-split all agree) and sees the tar's size. */
async function readBack(blob: Buffer, annotations: Record<string, string>, tarSize: number): Promise<void> {
  const z = await openZstdChunked(new BufferSource(blob), annotations);
  if (z.tarSize !== tarSize) throw new Error(`zstd:chunked writer: the store's reader sees a ${z.tarSize}-byte tar, the layer is ${tarSize}`);
}
