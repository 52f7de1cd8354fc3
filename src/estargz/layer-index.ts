import { setImmediate as nextTurn } from 'node:timers/promises';
import type { TocJson } from './toc.js';
import { ChunkTiler } from './index/chunk-tiler.js';
import { checkEntry, checkEntryList } from './index/entries.js';
import { checkModtime } from './index/fields.js';
import { finaliseTree } from './index/finalise.js';
import { linkHardlink } from './index/hardlinks.js';
import { DEFAULT_TOC_LIMITS, type TocLimits } from './index/limits.js';
import { setMemberEnds } from './index/member-ends.js';
import { layerPath } from './index/names.js';
import { applyAttributes, placeNode } from './index/nodes.js';
import { OwnerNames } from './index/owners.js';
import { prefetchHint } from './index/prefetch-hint.js';
import { RecordList } from './index/records.js';
import { LayerTree } from './index/tree.js';
import type { LayerIndex } from './index/types.js';

export type { Chunk, LayerIndex, LayerNode, NodeType, PrefetchHint, TocRecord } from './index/types.js';
export { DEFAULT_TOC_LIMITS, type TocLimits } from './index/limits.js';
export { DEFLATE_MAX_RATIO } from './index/member-ends.js';
export { compareNames } from './index/names.js';

export interface IndexOptions {
  /** Compressed offset of the TOC member: the end of the last data member. */
  tocOffset: number;
  /** Bounds on what a TOC may ask for (defaults: DEFAULT_TOC_LIMITS). */
  limits?: Partial<TocLimits>;
}

/**
 * Builds the filesystem index of a layer from its TOC: path → node, parent
 * directories the TOC leaves implicit, hardlinks resolved to one node, and each
 * file's chunks with the compressed range that holds them. Rejects a TOC whose
 * offsets, sizes or chunk lists are inconsistent, naming the entry.
 *
 * One pass over the entries in TOC order, so that the first bad entry is the
 * one reported and a hardlink sees exactly the entries before it; each step is
 * a module under ./index/. Whiteouts and opaque markers are ordinary entries
 * here: the overlay view (src/fs/diff-view.ts) interprets them.
 */
export function buildLayerIndex(toc: TocJson, opts: IndexOptions): LayerIndex {
  const builder = new IndexBuilder(toc, opts);
  for (const raw of builder.entries) builder.add(raw);
  return builder.finish();
}

/** Entries between two looks at the clock in buildLayerIndexYielding. */
const CLOCK_EVERY = 256;

/**
 * buildLayerIndex in slices of about `sliceMs` of the calling thread, with a
 * turn of the event loop between them. The store builds indexes on the thread
 * that answers every FUSE request: bookworm-like's 6,742 entries took 50–100 ms
 * in one piece, during which no container on the node got an answer.
 * The same checks, the same result, the same first error.
 */
export async function buildLayerIndexYielding(toc: TocJson, opts: IndexOptions & { sliceMs?: number }): Promise<LayerIndex> {
  const sliceMs = opts.sliceMs ?? 4;
  const builder = new IndexBuilder(toc, opts);
  const entries = builder.entries;
  let sliceStart = performance.now();
  for (let i = 0; i < entries.length; i++) {
    builder.add(entries[i]);
    if (i % CLOCK_EVERY === CLOCK_EVERY - 1 && performance.now() - sliceStart >= sliceMs) {
      await nextTurn();
      sliceStart = performance.now();
    }
  }
  return builder.finish();
}

/** One pass over the entries (add, in TOC order), then finish: the state buildLayerIndex keeps between entries. */
class IndexBuilder {
  readonly entries: readonly unknown[];
  private readonly limits: TocLimits;
  private readonly records = new RecordList();
  private readonly tree: LayerTree;
  private readonly owners = new OwnerNames();
  private readonly tiler: ChunkTiler;

  constructor(toc: TocJson, private readonly opts: IndexOptions) {
    this.limits = { ...DEFAULT_TOC_LIMITS, ...opts.limits };
    this.entries = checkEntryList(toc, this.limits);
    this.tree = new LayerTree((path) => this.records.supersede(path));
    this.tiler = new ChunkTiler(opts.tocOffset, this.limits);
  }

  add(raw: unknown): void {
    const { records, tree, owners, tiler, limits } = this;
    const entry = checkEntry(raw);
    const path = layerPath(entry.name, 'name', entry.name, limits);
    if (entry.type === 'chunk') {
      tiler.addChunkEntry(entry, path);
      return;
    }
    tiler.endFile();
    const owner = owners.resolve(entry, path);
    // A path listed twice: the later entry wins.
    records.supersede(path);
    const mtime = checkModtime(entry, path);
    if (entry.type === 'hardlink') {
      records.add(path, entry, linkHardlink(tree, entry, path, limits));
      return;
    }
    const node = placeNode(tree, entry, path);
    applyAttributes(node, entry, path, owner, mtime, limits);
    if (node.type === 'reg') tiler.startFile(node, path, entry);
    records.add(path, entry, node);
  }

  finish(): LayerIndex {
    const { tree, tiler } = this;
    tiler.endFile();
    setMemberEnds(tiler.chunks, tiler.paths, this.opts.tocOffset);
    const { nodeCount, totalFileBytes } = finaliseTree(tree.byPath);
    return { root: tree.root, byPath: tree.byPath, records: this.records.kept(), prefetch: prefetchHint(tree.root), totalFileBytes, nodeCount };
  }
}
