import type { LayerNode } from './layer-index.js';
import { hashFile } from './listing.js';
import { openEstargz, type OpenOptions } from './open.js';
import type { RangedSource } from './source.js';

export interface VerifySummary {
  tocDigest: string;
  entries: number;
  files: number;
  chunks: number;
  /** Uncompressed bytes of file content verified. */
  bytes: number;
}

/**
 * Checks a whole blob: footer, TOC (against `tocDigest` when given), then
 * every chunk of every regular file against its chunkDigest and every file
 * against its whole-file digest. Throws the first failure.
 */
export async function verifyBlob(source: RangedSource, opts: OpenOptions = {}): Promise<VerifySummary> {
  const blob = await openEstargz(source, opts);
  const seen = new Set<LayerNode>();
  let chunks = 0;
  let bytes = 0;
  for (const [path, node] of blob.index.byPath) {
    if (node.type !== 'reg' || seen.has(node)) continue;
    seen.add(node);
    await hashFile(source, node, path);
    chunks += node.chunks.length;
    bytes += node.size;
  }
  return { tocDigest: blob.tocDigest, entries: blob.index.records.length, files: seen.size, chunks, bytes };
}
