import type { EngineLayer } from '../engine/layer.js';
import type { LayerNode } from '../estargz/layer-index.js';
import { wrapLayerError } from './errors.js';
import type { LayerKey } from './key.js';

/** What the FUSE tree reads of a served layer: every failure comes out as a LayerError naming the layer and path. */
export interface LayerReader {
  readFile(node: LayerNode, offset: number, length: number, path?: string): Promise<Buffer>;
  /** readFile's bytes as the verified chunks' pieces, in order (a FUSE reply sends them without joining). */
  readFileParts(node: LayerNode, offset: number, length: number, path?: string): Promise<Buffer[]>;
  readBlob(offset: number, length: number): Promise<Buffer>;
  /** readBlob's bytes as pieces, in order (a FUSE reply sends them without joining). */
  readBlobParts(offset: number, length: number): Promise<Buffer[]>;
}

export function readerOf(key: LayerKey, layer: Pick<EngineLayer, 'readFile' | 'readFileParts' | 'readBlob' | 'readBlobParts'>): LayerReader {
  return {
    readFile: (node, offset, length, path = node.path) => layer.readFile(node, offset, length, path).catch((err: unknown) => { throw wrapLayerError('read', key, err, path); }),
    readFileParts: (node, offset, length, path = node.path) => layer.readFileParts(node, offset, length, path).catch((err: unknown) => { throw wrapLayerError('read', key, err, path); }),
    readBlob: (offset, length) => layer.readBlob(offset, length).catch((err: unknown) => { throw wrapLayerError('read', key, err, 'blob'); }),
    readBlobParts: (offset, length) => layer.readBlobParts(offset, length).catch((err: unknown) => { throw wrapLayerError('read', key, err, 'blob'); }),
  };
}
