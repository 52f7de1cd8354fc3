import type { EngineLayer } from '../engine/layer.js';
import type { LayerNode } from '../estargz/layer-index.js';
import { wrapLayerError } from './errors.js';
import type { LayerKey } from './key.js';

/**
 * What the FUSE tree reads of a served layer: the bytes as the pieces of the
 * verified chunks (or blob blocks) that hold them, in order, which a FUSE
 * reply sends without joining; every failure comes out as a LayerError
 * naming the layer and path.
 */
export interface LayerReader {
  readFileParts(node: LayerNode, offset: number, length: number, path?: string): Promise<Buffer[]>;
  readBlobParts(offset: number, length: number): Promise<Buffer[]>;
}

export function readerOf(key: LayerKey, layer: Pick<EngineLayer, 'readFileParts' | 'readBlobParts'>): LayerReader {
  return {
    readFileParts: (node, offset, length, path = node.path) => layer.readFileParts(node, offset, length, path).catch((err: unknown) => { throw wrapLayerError('read', key, err, path); }),
    readBlobParts: (offset, length) => layer.readBlobParts(offset, length).catch((err: unknown) => { throw wrapLayerError('read', key, err, 'blob'); }),
  };
}
