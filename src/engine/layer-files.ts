/**
 * The files of a served layer, as the engine's users (the FUSE tree in
 * src/fs) see them: one index shape for every format the engine serves
 * (eStargz and zstd:chunked both build it), and the few names a view of it
 * needs. Named here so that the front end depends on the engine, not on a
 * format's internals; the index itself is built by the formats.
 */
export type { LayerIndex, LayerNode, NodeType } from '../estargz/layer-index.js';
/** The converter's prefetch markers at the root: part of the index, not of the layer's tree (a view hides them). */
export { NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK } from '../estargz/toc.js';
