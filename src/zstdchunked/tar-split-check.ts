import { isEstargzError } from '../estargz/errors.js';
import { paddedSize, TarParser, type TarHeader } from '../estargz/tar/parser.js';
import { parseModtime } from '../estargz/toc.js';
import type { ManifestEntry, ManifestJson } from './manifest.js';
import { checkTarSplitDigest, tarSplitEntries, tarSplitFault as bad, type TarSplitPosition } from './tar-split.js';

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
