import { createHash } from 'node:crypto';
import { EstargzError } from './errors.js';

/** Name of the TOC's tar entry, the last entry of every eStargz blob. */
export const TOC_TAR_NAME = 'stargz.index.json';
export const PREFETCH_LANDMARK = '.prefetch.landmark';
export const NO_PREFETCH_LANDMARK = '.no.prefetch.landmark';
/** Content of both landmark files. */
export const LANDMARK_CONTENTS = 0x0f;
/** Manifest layer annotation holding the TOC digest. */
export const TOC_DIGEST_ANNOTATION = 'containerd.io/snapshot/stargz/toc.digest';
/** Manifest layer annotation holding the layer's uncompressed size (podman reads it for `blob`). */
export const UNCOMPRESSED_SIZE_ANNOTATION = 'io.containers.estargz.uncompressed-size';

export type TocEntryType = 'dir' | 'reg' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo' | 'chunk';
export const TOC_ENTRY_TYPES: ReadonlySet<string> = new Set<TocEntryType>([
  'dir', 'reg', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'chunk',
]);

/**
 * One entry of `stargz.index.json`, as JSON. Keys are the reference's; every
 * numeric field may be absent (Go's omitempty), and unknown keys are ignored.
 */
export interface TocEntryJson {
  name: string;
  type: TocEntryType;
  size?: number;
  /** RFC 3339, UTC, whole seconds; absent for mtime 0. */
  modtime?: string;
  linkName?: string;
  /** Raw tar mode: may carry S_IF* type bits. */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Written only when it changed for this uid; readers back-fill. */
  userName?: string;
  groupName?: string;
  /** Compressed offset of the gzip member that holds this payload. */
  offset?: number;
  /** Uncompressed offset inside that member (several files per member). */
  innerOffset?: number;
  devMajor?: number;
  devMinor?: number;
  /** Values are base64 (Go []byte). */
  xattrs?: Record<string, string>;
  /** sha256 of the whole regular file. */
  digest?: string;
  chunkOffset?: number;
  /** 0 or absent: to the end of the file. */
  chunkSize?: number;
  chunkDigest?: string;
}

export interface TocJson {
  version: number;
  entries: TocEntryJson[];
}

export function sha256Digest(bytes: Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(bytes).digest('hex');
}

export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;

/** Parses the TOC JSON bytes; checks only the outer shape (entries are checked by the index). */
export function parseTocJson(bytes: Uint8Array): TocJson {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (err) {
    throw new EstargzError('INVALID_TOC', `TOC JSON does not parse: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new EstargzError('INVALID_TOC', 'TOC JSON is not an object');
  }
  const { version, entries } = doc as { version?: unknown; entries?: unknown };
  if (version !== 1) throw new EstargzError('INVALID_TOC', `TOC version is ${JSON.stringify(version)}, only 1 is supported`);
  // A TOC without its entries list is damaged (or lying), not an empty layer:
  // even an empty layer's TOC lists its landmark.
  if (entries === undefined) throw new EstargzError('INVALID_TOC', 'TOC has no "entries" list');
  if (!Array.isArray(entries)) throw new EstargzError('INVALID_TOC', `TOC "entries" is ${entries === null ? 'null' : `a ${typeof entries}`}, not an array`);
  return { version, entries: entries as TocEntryJson[] };
}

/** Serializes a TOC as the reference does (tab indent, no trailing newline). */
export function serializeToc(toc: TocJson): Buffer {
  return Buffer.from(JSON.stringify(toc, null, '\t'), 'utf8');
}

/**
 * Why a name from the TOC (an entry name or a hardlink target) cannot name a
 * path inside the layer, or null when it can. Leading "/" and "./", repeated
 * and trailing slashes and ".." that stays inside the layer are only
 * normalized away (cleanEntryName), as tar extractors do; a ".." that climbs
 * above the layer's root, or a NUL byte (no file name holds one), is refused,
 * as containers/storage refuses it when it unpacks a layer.
 */
export function entryNameProblem(name: string): string | null {
  if (name.includes('\0')) return 'contains a NUL byte';
  let depth = 0;
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (depth === 0) return 'climbs above the layer root with ".."';
      depth--;
    } else {
      depth++;
    }
  }
  return null;
}

/** Mirrors Go's path.Clean("/" + name) without the leading slash: "./a/" → "a", "../x" → "x", "./" → "". */
export function cleanEntryName(name: string): string {
  // Most names are already clean ("usr/bin/x"): skip the split and join.
  if (name !== '' && name[0] !== '/' && name[0] !== '.' && !name.endsWith('/') && !name.includes('//') && !name.includes('/.')) return name;
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  return parts.join('/');
}

export function formatModtime(mtimeSeconds: number): string | undefined {
  if (mtimeSeconds === 0) return undefined;
  return new Date(mtimeSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Returns unix seconds, or NaN when the string is not a date. */
export function parseModtime(modtime: string | undefined): number {
  if (modtime === undefined || modtime === '') return 0;
  return Math.floor(Date.parse(modtime) / 1000);
}
