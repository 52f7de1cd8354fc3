import type { Chunk, LayerIndex, LayerNode } from '../estargz/layer-index.js';
import type { EstargzBlob } from '../estargz/open.js';
import type { ZstdChunkedBlob } from '../zstdchunked/open.js';
import type { TarSplitPosition } from '../zstdchunked/tar-split.js';
import type { ZstdRebuildPlan } from '../../workers/layer-digest.js';
import type { ChunkWant } from './chunk-loader.js';

/**
 * What the engine needs of a layer's format: its index (files and their
 * chunks, each chunk saying its codec) and where the chunk data ends (the
 * TOC or manifest follows; prefetch stays before it). zstd:chunked also
 * brings its verified tar-split: the whole-layer check rebuilds the tar from
 * it to hash the diff_id.
 */
export type LayerContent =
  | { format: 'estargz'; index: LayerIndex; payloadEnd: number; tocDigest?: string }
  | { format: 'zstd:chunked'; index: LayerIndex; payloadEnd: number; tarSplit: Buffer; tarSplitPosition: TarSplitPosition; tocDigest?: string };

/** An opened eStargz blob as the engine serves it. */
export function estargzContent(blob: EstargzBlob): LayerContent {
  return { format: 'estargz', index: blob.index, payloadEnd: blob.footer.tocOffset, tocDigest: blob.tocDigest };
}

/** An opened zstd:chunked blob as the engine serves it. */
export function zstdChunkedContent(blob: ZstdChunkedBlob): LayerContent {
  return { format: 'zstd:chunked', index: blob.index, payloadEnd: blob.payloadEnd, tarSplit: blob.tarSplit, tarSplitPosition: blob.tarSplitPosition, tocDigest: blob.tocDigest };
}

/**
 * Every chunk of every file, in blob order: what prefetch, the blob
 * read-ahead and background fetch walk. A hardlinked file is listed once
 * (under the first path met), so that no chunk is asked for twice.
 */
export function chunksInBlobOrder(index: LayerIndex): ChunkWant[] {
  const seen = new Set<LayerNode>();
  const list: ChunkWant[] = [];
  for (const [path, node] of index.byPath) {
    if (node.type !== 'reg' || seen.has(node)) continue;
    seen.add(node);
    for (const chunk of node.chunks) list.push({ chunk, path });
  }
  return list.sort((a, b) => a.chunk.blobOffset - b.chunk.blobOffset || a.chunk.innerOffset - b.chunk.innerOffset);
}

/** What the digest worker needs to rebuild a zstd:chunked layer's tar: its tar-split and each file's chunks. */
export function zstdRebuildPlan(content: Extract<LayerContent, { format: 'zstd:chunked' }>, layer: string): ZstdRebuildPlan {
  const files = new Map<string, readonly Chunk[]>();
  for (const [path, node] of content.index.byPath) if (node.type === 'reg') files.set(path, node.chunks);
  return { kind: 'zstd:chunked', tarSplit: content.tarSplit, tarSplitPosition: content.tarSplitPosition, files, layer };
}
