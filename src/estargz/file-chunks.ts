import { decodeChunk, type Decoder } from './chunk.js';
import type { Chunk, LayerNode } from './layer-index.js';
import type { RangedSource } from './source.js';

/**
 * Reads and verifies every chunk of a regular file, in file order, straight
 * from the source (no cache, no pool): the simple path the CLI and tests use.
 * Chunks that share a gzip member (innerOffset) read that member once.
 */
export async function* readFileChunks(
  source: RangedSource,
  node: LayerNode,
  path: string = node.path,
  decoder: Decoder = 'zlib',
): AsyncGenerator<{ chunk: Chunk; bytes: Buffer }> {
  let member: { offset: number; bytes: Buffer } | null = null;
  for (const chunk of node.chunks) {
    if (!member || member.offset !== chunk.blobOffset) {
      member = { offset: chunk.blobOffset, bytes: await source.read(chunk.blobOffset, chunk.blobEnd - chunk.blobOffset) };
    }
    const bytes = decodeChunk(member.bytes, {
      path,
      fileOffset: chunk.fileOffset,
      innerOffset: chunk.innerOffset,
      size: chunk.size,
      digest: chunk.digest,
      blobOffset: chunk.blobOffset,
    }, decoder);
    yield { chunk, bytes };
  }
}
