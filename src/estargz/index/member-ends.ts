import { invalidEntry } from './invalid.js';
import type { Chunk } from './types.js';

/**
 * Most bytes a deflate stream can inflate to per compressed byte: a match of
 * 258 bytes costs at least two bits (a one-bit length code and a one-bit
 * distance code), so 258 × 4 = 1032. A chunk that needs more plain bytes from
 * its member than the member's length × this cannot be decoded from it: the
 * TOC lies about its size, innerOffset, or where the member ends.
 */
export const DEFLATE_MAX_RATIO = 1032;

/**
 * Sets each chunk's `blobEnd`: the TOC gives only where a member starts, so a
 * member ends where the next member starts, and the last one at the TOC.
 * Rejects two chunks at the same place (blob offset and inner offset), naming
 * the later entry; two chunks of one member whose plain ranges overlap; and a
 * chunk that needs more plain bytes than its member can inflate to. `paths[i]`
 * is the file of `chunks[i]`, in TOC order. Chunks are nearly always listed in
 * blob order already; they are sorted (by index) only when they are not.
 */
export function setMemberEnds(chunks: readonly Chunk[], paths: readonly string[], tocOffset: number): void {
  const before = (a: Chunk, b: Chunk): number => a.blobOffset - b.blobOffset || a.innerOffset - b.innerOffset;
  let order: number[] | null = null;
  for (let i = 1; i < chunks.length; i++) {
    if (before(chunks[i - 1]!, chunks[i]!) > 0) {
      order = chunks.map((_, k) => k).sort((a, b) => before(chunks[a]!, chunks[b]!) || a - b);
      break;
    }
  }
  const at = (k: number): number => (order ? order[k]! : k);
  let nextStart = tocOffset;
  let groupOffset = -1;
  for (let k = chunks.length - 1; k >= 0; k--) {
    const c = chunks[at(k)]!;
    const path = paths[at(k)]!;
    if (k + 1 < chunks.length) {
      const next = chunks[at(k + 1)]!;
      if (before(c, next) === 0) {
        const later = paths[Math.max(at(k), at(k + 1))]!;
        throw invalidEntry(later, `chunk at blob offset ${c.blobOffset} (inner offset ${c.innerOffset}) duplicates another chunk's offset`);
      }
      if (c.blobOffset === next.blobOffset && c.innerOffset + c.size > next.innerOffset) {
        throw invalidEntry(path, `chunk at blob offset ${c.blobOffset}, inner range [${c.innerOffset}, ${c.innerOffset + c.size}), overlaps the chunk of ${JSON.stringify(paths[at(k + 1)])} at inner offset ${next.innerOffset}`);
      }
    }
    if (c.blobOffset !== groupOffset) {
      if (groupOffset >= 0) nextStart = groupOffset;
      groupOffset = c.blobOffset;
    }
    c.blobEnd = nextStart;
    const memberBytes = c.blobEnd - c.blobOffset;
    if (c.innerOffset + c.size > memberBytes * DEFLATE_MAX_RATIO) {
      throw invalidEntry(path, `chunk at file offset ${c.fileOffset} needs ${c.innerOffset + c.size} plain bytes (inner offset ${c.innerOffset} + size ${c.size}) from a member of ${memberBytes} bytes at blob offset ${c.blobOffset}, more than deflate can inflate it to`);
    }
  }
}
