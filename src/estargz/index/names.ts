import { cleanEntryName, entryNameProblem } from '../toc.js';
import { invalid } from './invalid.js';
import type { TocLimits } from './limits.js';

/** Moves UTF-16 surrogates above the rest of the BMP, so unit order becomes code-point order. */
function codePointRank(unit: number): number {
  if (unit >= 0xd800 && unit <= 0xdfff) return unit + 0x2000;
  if (unit >= 0xe000) return unit - 0x800;
  return unit;
}

/**
 * Compares names in code-point order, which is UTF-8 byte order (what tar and
 * Go sort by), not JavaScript's UTF-16 order. Allocation-free. Listings
 * (`layer ls`) sort with it; directories keep layer order (see finaliseTree).
 */
export function compareNames(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

/**
 * Normalizes a name from the TOC (entry name or hardlink target) to a path
 * inside the layer, refusing one that escapes it, holds a NUL, or is longer
 * or deeper than a filesystem allows. `what` says which name it is, `at`
 * which entry, for the error.
 */
export function layerPath(name: string, what: string, at: string, limits: TocLimits): string {
  const clean = plainAsciiPath(name, limits);
  if (clean !== undefined) return clean;
  const problem = entryNameProblem(name);
  if (problem) throw invalid(`TOC entry ${JSON.stringify(at.slice(0, 300))}: ${what} ${problem}`, at);
  const path = cleanEntryName(name);
  if (path === '') return path;
  if (Buffer.byteLength(path) > limits.maxPathBytes) throw invalid(`TOC entry ${JSON.stringify(path.slice(0, 300))}…: ${what} is over ${limits.maxPathBytes} bytes`, path);
  let depth = 0;
  for (const part of path.split('/')) {
    depth++;
    if (Buffer.byteLength(part) > limits.maxComponentBytes) {
      throw invalid(`TOC entry ${JSON.stringify(path)}: ${what} has a component over ${limits.maxComponentBytes} bytes`, path);
    }
  }
  if (depth > limits.maxDepth) throw invalid(`TOC entry ${JSON.stringify(path.slice(0, 300))}…: ${what} is ${depth} levels deep, over the limit of ${limits.maxDepth}`, path);
  return path;
}

/**
 * The common case in one pass, without splitting or allocating: an ASCII
 * name of ordinary components ("usr/lib/x", "usr/lib/" for a directory),
 * within the limits, is its own clean path (minus a trailing slash).
 * Anything else (a leading or doubled slash, "." or "..", a NUL, non-ASCII,
 * a limit reached) is left to the general path: undefined.
 */
function plainAsciiPath(name: string, limits: TocLimits): string | undefined {
  const end = name.length > 1 && name.charCodeAt(name.length - 1) === 0x2f ? name.length - 1 : name.length;
  if (end === 0 || end > limits.maxPathBytes) return undefined;
  let start = 0;
  let depth = 0;
  for (let i = 0; i <= end; i++) {
    const c = i < end ? name.charCodeAt(i) : 0x2f;
    if (c === 0x2f) {
      const len = i - start;
      // An empty component (leading or doubled slash), ".", "..", or one over the limit.
      if (len === 0 || len > limits.maxComponentBytes) return undefined;
      if (name.charCodeAt(start) === 0x2e && (len === 1 || (len === 2 && name.charCodeAt(start + 1) === 0x2e))) return undefined;
      depth++;
      start = i + 1;
    } else if (c === 0 || c >= 0x80) {
      return undefined;
    }
  }
  if (depth > limits.maxDepth) return undefined;
  return end === name.length ? name : name.slice(0, end);
}

/** Splits a non-root path into its parent directory's path ("" for the root) and its last component. */
export function splitPath(path: string): { parent: string; name: string } {
  const slash = path.lastIndexOf('/');
  return { parent: slash < 0 ? '' : path.slice(0, slash), name: path.slice(slash + 1) };
}
