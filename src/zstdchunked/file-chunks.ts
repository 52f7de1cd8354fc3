import type { LayerNode } from '../estargz/layer-index.js';
import type { RangedSource } from '../estargz/source.js';
import { decodeZstdChunk, zerosChunk } from './chunk.js';
import type { CodedChunk } from './layer-index.js';

/**
 * Reads and verifies every chunk of a regular file of a zstd:chunked index,
 * in file order, straight from the source (no cache, no pool): the simple
 * path for the CLI and tests. 'zeros' chunks are not read.
 */
export async function* readZstdFileChunks(source: RangedSource, node: LayerNode, path: string = node.path): AsyncGenerator<{ chunk: CodedChunk; bytes: Buffer }> {
  for (const c of node.chunks) {
    const chunk = c as CodedChunk;
    const ref = { path, fileOffset: chunk.fileOffset, innerOffset: chunk.innerOffset, size: chunk.size, digest: chunk.digest, blobOffset: chunk.blobOffset };
    const bytes = chunk.codec === 'zeros' ? zerosChunk(ref) : decodeZstdChunk(await source.read(chunk.blobOffset, chunk.blobEnd - chunk.blobOffset), ref);
    yield { chunk, bytes };
  }
}
