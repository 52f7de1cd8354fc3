import { parseModtime, type TocEntryJson } from '../toc.js';
import { invalidEntry } from './invalid.js';
import type { TocLimits } from './limits.js';

/*
 * Typed reads of one TOC entry's fields. The TOC is JSON from the blob: any
 * field may be missing (Go's omitempty, read as 0 or ""), or of the wrong
 * type, and each read names the entry and the key when it is.
 */

/** uid, gid, device numbers: 32 bits in the kernel and in FUSE's replies. */
const MAX_ID = 0xffff_ffff;

/** Shared by every node without xattrs (nearly all of them): one Map per node is measurable garbage on a large TOC. */
export const NO_XATTRS: ReadonlyMap<string, Buffer> = new Map();

export function checkCount(entry: TocEntryJson, key: keyof TocEntryJson, path: string): number {
  const v = entry[key];
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw invalidEntry(path, `"${key}" is ${JSON.stringify(v)}, expected a non-negative integer`);
  }
  return v;
}

export function checkId(entry: TocEntryJson, key: 'uid' | 'gid' | 'devMajor' | 'devMinor', path: string): number {
  const v = checkCount(entry, key, path);
  if (v > MAX_ID) throw invalidEntry(path, `"${key}" is ${v}, over the 32-bit limit`);
  return v;
}

export function checkString(entry: TocEntryJson, key: keyof TocEntryJson, path: string): string {
  const v = entry[key];
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw invalidEntry(path, `"${key}" is not a string`);
  return v;
}

/** The entry's modification time in unix seconds (0 when absent). */
export function checkModtime(entry: TocEntryJson, path: string): number {
  const mtime = parseModtime(checkString(entry, 'modtime', path));
  if (Number.isNaN(mtime)) throw invalidEntry(path, `modtime ${JSON.stringify(entry.modtime)} is not an RFC 3339 time`);
  return mtime;
}

/** Base64 xattr values to bytes, refusing names listxattr cannot return and sizes the kernel refuses. */
export function decodeXattrs(entry: TocEntryJson, path: string, limits: TocLimits): ReadonlyMap<string, Buffer> {
  const x = entry.xattrs;
  if (x === undefined || x === null) return NO_XATTRS;
  if (typeof x !== 'object' || Array.isArray(x)) throw invalidEntry(path, '"xattrs" is not an object');
  const names = Object.keys(x);
  if (names.length > limits.maxXattrs) throw invalidEntry(path, `${names.length} xattrs, over the limit of ${limits.maxXattrs}`);
  if (names.length === 0) return NO_XATTRS;
  const out = new Map<string, Buffer>();
  for (const [k, v] of Object.entries(x)) {
    // listxattr replies are NUL-separated names: a NUL inside one would split it.
    if (k === '' || k.includes('\0') || Buffer.byteLength(k) > limits.maxXattrNameBytes) {
      throw invalidEntry(path, `xattr name ${JSON.stringify(k.slice(0, 300))} is empty, has a NUL byte or is over ${limits.maxXattrNameBytes} bytes`);
    }
    if (typeof v !== 'string') throw invalidEntry(path, `xattr ${JSON.stringify(k)} is not a base64 string`);
    const value = Buffer.from(v, 'base64');
    if (value.length > limits.maxXattrValueBytes) {
      throw invalidEntry(path, `xattr ${JSON.stringify(k)} is ${value.length} bytes, over the limit of ${limits.maxXattrValueBytes}`);
    }
    out.set(k, value);
  }
  return out;
}
