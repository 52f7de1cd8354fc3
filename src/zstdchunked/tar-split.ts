import { createHash } from 'node:crypto';
import { isEstargzError } from '../estargz/errors.js';
import { parseModtime } from '../estargz/toc.js';
import { paddedSize, TarParser, type TarHeader } from '../estargz/tar/parser.js';
import { ZstdChunkedError } from './errors.js';
import type { ManifestEntry, ManifestJson } from './manifest.js';
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

function bad(message: string, code: 'INVALID_TARSPLIT' | 'LIMIT' = 'INVALID_TARSPLIT', path?: string): ZstdChunkedError {
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
    throw bad(`entry ${expectPosition} is not JSON: ${(err as Error).message}`);
  }
  if (typeof e !== 'object' || e === null || Array.isArray(e)) throw bad(`entry ${expectPosition} is not an object`);
  const { type, name, name_raw: nameRaw, size, payload, position } = e as Record<string, unknown>;
  if (position !== expectPosition) throw bad(`entry ${expectPosition} has position ${JSON.stringify(position)}`);
  if (type === 2) {
    if (typeof payload !== 'string') throw bad(`segment ${expectPosition} has no base64 payload`);
    return { type: 'segment', position, payload: Buffer.from(payload, 'base64') };
  }
  if (type === 1) {
    if (nameRaw !== undefined) throw bad(`file entry ${expectPosition} has a name that is not UTF-8 ("name_raw"), which no manifest entry can match`);
    if (typeof name !== 'string' || name === '') throw bad(`file entry ${expectPosition} has no name`);
    const n = size ?? 0;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw bad(`file entry ${JSON.stringify(name)} has size ${JSON.stringify(size)}`, 'INVALID_TARSPLIT', name);
    return { type: 'file', position, name, size: n };
  }
  throw bad(`entry ${expectPosition} has unknown type ${JSON.stringify(type)}`);
}

/**
 * Decodes a (digest-checked) compressed tar-split into its entries, streaming:
 * memory holds one decoded piece and one line at a time. The decoded stream
 * must be exactly its declared length (it may not run past it).
 */
export async function* tarSplitEntries(compressed: Uint8Array, pos: TarSplitPosition, maxBytes = MAX_TARSPLIT_BYTES): AsyncGenerator<TarSplitEntry> {
  if (pos.uncompressedLength > maxBytes) throw bad(`the tar-split is ${pos.uncompressedLength} bytes uncompressed, over the limit of ${maxBytes}`, 'LIMIT');
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
        if (pendingBytes > MAX_LINE_BYTES) throw bad(`entry ${position} is over ${MAX_LINE_BYTES} bytes`, 'LIMIT');
      }
    }
  } catch (err) {
    if (err instanceof ZstdDecodeError) {
      throw bad(err.fault === 'too-large' ? `decodes past its declared size of ${pos.uncompressedLength} bytes` : `does not decode: ${err.message}`);
    }
    throw err;
  }
  if (total !== pos.uncompressedLength) throw bad(`decodes to ${total} bytes, not its declared ${pos.uncompressedLength}`);
  if (pendingBytes) yield parseLine(Buffer.concat(pending), position++);
}

const TAR_TYPES: Record<string, string> = { '0': 'reg', '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo' };

/** What the tar-split says of the layer's tar. */
export interface TarSplitSummary {
  /** Entries (headers) in the tar. */
  headers: number;
  /** Length of the uncompressed layer tar (the info's diff-size). */
  tarSize: number;
}

function unixSeconds(s: string | undefined): number {
  const t = parseModtime(s);
  return Number.isNaN(t) ? NaN : t;
}

function xattrsOf(e: ManifestEntry): Map<string, string> {
  return new Map(Object.entries(e.xattrs ?? {}));
}

/** The differences between a tar header and its manifest entry (c/storage ensureFileMetadataAttributesMatch's fields). */
function differences(h: TarHeader, e: ManifestEntry): string[] {
  const out: string[] = [];
  const type = TAR_TYPES[h.typeflag];
  if (type !== e.type) out.push(`type ${JSON.stringify(type ?? h.typeflag)} != ${JSON.stringify(e.type)}`);
  if (h.linkname !== (e.linkName ?? '')) out.push(`linkName ${JSON.stringify(h.linkname)} != ${JSON.stringify(e.linkName ?? '')}`);
  if ((h.mode & 0o7777) !== ((e.mode ?? 0) & 0o7777)) out.push(`mode ${(h.mode & 0o7777).toString(8)} != ${((e.mode ?? 0) & 0o7777).toString(8)}`);
  const size = type === 'reg' ? h.size : 0;
  if (size !== (e.size ?? 0)) out.push(`size ${size} != ${e.size ?? 0}`);
  if (h.uid !== (e.uid ?? 0)) out.push(`uid ${h.uid} != ${e.uid ?? 0}`);
  if (h.gid !== (e.gid ?? 0)) out.push(`gid ${h.gid} != ${e.gid ?? 0}`);
  if (Math.floor(h.mtime) !== unixSeconds(e.modtime)) out.push(`modtime ${Math.floor(h.mtime)} != ${JSON.stringify(e.modtime)}`);
  if (h.devmajor !== (e.devMajor ?? 0) || h.devminor !== (e.devMinor ?? 0)) {
    if (type === 'char' || type === 'block') out.push(`device ${h.devmajor}:${h.devminor} != ${e.devMajor ?? 0}:${e.devMinor ?? 0}`);
  }
  const mine = xattrsOf(e);
  const theirs = new Map([...h.xattrs].map(([k, v]) => [k, v.toString('base64')]));
  if (mine.size !== theirs.size || [...mine].some(([k, v]) => theirs.get(k) !== v)) out.push('xattrs differ');
  return out;
}

/**
 * Reads the tar header(s) at the start of a segment, after the previous
 * file's padding: tar-split gives each header (with its extensions) a
 * segment of its own, the previous file's padding in front. Returns 'end' at
 * the end-of-archive blocks.
 */
function headerOf(segment: Buffer, padding: number, position: number): { header: TarHeader; padding: number } | 'end' | 'nothing' {
  if (segment.length < padding) throw bad(`segment ${position} has ${segment.length} bytes, fewer than the ${padding} bytes of the previous file's padding`);
  const rest = segment.subarray(padding);
  // Padding alone: the header follows in the next segment.
  if (rest.length === 0) return 'nothing';
  const parser = new TarParser();
  let entries;
  try {
    entries = parser.push(rest);
  } catch (err) {
    if (isEstargzError(err)) throw bad(`segment ${position}: ${err.message}`);
    throw err;
  }
  const first = entries[0];
  if (!first) {
    if (parser.done) return 'end';
    throw bad(`segment ${position} does not hold a whole tar header`);
  }
  if (first.headerOffset !== 0 || first.dataOffset !== rest.length) throw bad(`segment ${position} holds more than one tar header`);
  return { header: first.header, padding: paddedSize(first.payloadSize) - first.payloadSize };
}

/**
 * Checks that the tar-split describes exactly the manifest's entries (c/storage
 * refuses a layer whose TOC and tar-split differ: the tree podman sees would
 * not be the tar it exports): every header has the manifest entry of its name
 * with the same type, link, mode, size, owner, mtime, device and xattrs; every
 * file entry follows its header with its size; no manifest entry is left over.
 */
export async function validateTarSplit(compressed: Uint8Array, pos: TarSplitPosition, manifest: ManifestJson): Promise<TarSplitSummary> {
  checkTarSplitDigest(compressed, manifest.tarSplitDigest);
  const pendingNames = new Map<string, ManifestEntry>();
  for (const e of manifest.entries) if (e.type !== 'chunk') pendingNames.set(e.name, e);
  let padding = 0;
  let last: { header: TarHeader; fileSeen: boolean } | null = null;
  let headers = 0;
  let tarSize = 0;
  let ended = false;
  for await (const entry of tarSplitEntries(compressed, pos)) {
    if (entry.type === 'segment') {
      tarSize += entry.payload.length;
      if (ended) continue;
      const parsed = headerOf(entry.payload, padding, entry.position);
      padding = 0;
      if (parsed === 'nothing') continue;
      if (parsed === 'end') {
        ended = true;
        continue;
      }
      if (last && !last.fileSeen) throw bad(`the header of ${JSON.stringify(last.header.name)} has no file entry`, 'INVALID_TARSPLIT', last.header.name);
      const h = parsed.header;
      const e = pendingNames.get(h.name);
      if (!e) throw bad(`the tar has an entry ${JSON.stringify(h.name)} that the manifest does not list (or lists twice)`, 'INVALID_TARSPLIT', h.name);
      pendingNames.delete(h.name);
      const diff = differences(h, e);
      if (diff.length) throw bad(`the tar's entry ${JSON.stringify(h.name)} differs from the manifest's: ${diff.join(', ')}`, 'INVALID_TARSPLIT', h.name);
      last = { header: h, fileSeen: false };
      padding = parsed.padding;
      headers++;
    } else {
      tarSize += entry.size;
      if (!last || last.fileSeen || entry.name !== last.header.name) {
        throw bad(`file entry ${JSON.stringify(entry.name)} does not follow its header`, 'INVALID_TARSPLIT', entry.name);
      }
      const payload = TAR_TYPES[last.header.typeflag] === 'reg' ? last.header.size : 0;
      if (entry.size !== payload) throw bad(`file entry ${JSON.stringify(entry.name)} has size ${entry.size}, its header says ${payload}`, 'INVALID_TARSPLIT', entry.name);
      last.fileSeen = true;
    }
  }
  if (last && !last.fileSeen) throw bad(`the header of ${JSON.stringify(last.header.name)} has no file entry`, 'INVALID_TARSPLIT', last.header.name);
  if (!ended) throw bad('the tar has no end-of-archive blocks');
  if (pendingNames.size) {
    const names = [...pendingNames.keys()].slice(0, 5).map((n) => JSON.stringify(n)).join(', ');
    throw bad(`the manifest lists ${pendingNames.size} entries the tar does not have, e.g. ${names}`, 'INVALID_TARSPLIT', [...pendingNames.keys()][0]);
  }
  return { headers, tarSize };
}

/**
 * A file's verified contents, in order, for the rebuild. `name` is the tar
 * entry's name as the tar-split gives it (the manifest's entry name).
 */
export type FileContents = (name: string, size: number) => AsyncIterable<Uint8Array>;

/**
 * Rebuilds the layer's uncompressed tar from the (validated) tar-split and
 * each file's contents, streaming: the whole-layer check hashes what this
 * yields against the diff_id. Memory holds one tar-split piece and whatever
 * one `contents` piece is.
 */
export async function* rebuildTar(compressed: Uint8Array, pos: TarSplitPosition, contents: FileContents): AsyncGenerator<Uint8Array> {
  for await (const entry of tarSplitEntries(compressed, pos)) {
    if (entry.type === 'segment') {
      if (entry.payload.length) yield entry.payload;
      continue;
    }
    if (entry.size === 0) continue;
    let got = 0;
    for await (const piece of contents(entry.name, entry.size)) {
      got += piece.length;
      if (got > entry.size) break;
      yield piece;
    }
    if (got !== entry.size) {
      throw new ZstdChunkedError('FILE_MISMATCH', `the contents of ${JSON.stringify(entry.name)} came back as ${got > entry.size ? 'more than' : got} bytes, the tar-split says ${entry.size}`,
        { part: 'blob', path: entry.name });
    }
  }
}
