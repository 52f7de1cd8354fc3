import { NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, type LayerIndex, type LayerNode } from '../engine/layer-files.js';
import { MAX_NODE_INO, WHITEOUT_BIT } from './node-ids.js';

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';
const OPAQUE_XATTRS = ['trusted.overlay.opaque', 'user.overlay.opaque'];
const YES = Buffer.from('y');

/**
 * An entry of the overlay view: a layer node, or a whiteout (shown as a 0:0
 * character device) made from the `.wh.NAME` node `node`. `low` is its number
 * inside the layer's node-id slot (see node-ids.ts): the node's index number,
 * or WHITEOUT_BIT plus the `.wh.` node's, so it depends on the TOC only.
 */
export type ViewEntry =
  | { kind: 'node'; node: LayerNode; low: number }
  | { kind: 'whiteout'; node: LayerNode; low: number };

export interface Listing {
  names: string[];
  entries: ViewEntry[];
  byName: Map<string, ViewEntry>;
}

/**
 * The layer as overlayfs expects a lower directory: `.wh.NAME` entries are
 * shown as character devices 0:0 named NAME (unless a real NAME exists),
 * `.wh..wh..opq` marks its directory opaque (xattrs trusted.overlay.opaque and
 * user.overlay.opaque = "y"), and the prefetch landmarks are hidden at the
 * root. Listings are computed once per directory.
 */
export class DiffView {
  private readonly listings = new Map<LayerNode, Listing>();
  /** Index nodes by number (LayerNode.ino): node ids come back as numbers. */
  private readonly byIno: (LayerNode | undefined)[] = [];

  constructor(readonly index: LayerIndex) {
    for (const node of index.byPath.values()) {
      if (node.ino > MAX_NODE_INO) throw new RangeError(`layer index node ${node.ino} is beyond the node-id range`);
      this.byIno[node.ino] = node;
    }
  }

  root(): ViewEntry {
    return { kind: 'node', node: this.index.root, low: this.index.root.ino };
  }

  /** The entry a node-id's low part names, or undefined (a number this layer never gave out). */
  entryAt(low: number): ViewEntry | undefined {
    if (low >= WHITEOUT_BIT) {
      const node = this.byIno[low - WHITEOUT_BIT];
      return node ? { kind: 'whiteout', node, low } : undefined;
    }
    const node = this.byIno[low];
    return node ? { kind: 'node', node, low } : undefined;
  }

  /** The directory holding a node (for ".."); the root's is itself. */
  parentOf(node: LayerNode): LayerNode {
    if (node.path === '') return node;
    const slash = node.path.lastIndexOf('/');
    return this.index.byPath.get(slash < 0 ? '' : node.path.slice(0, slash)) ?? this.index.root;
  }

  /** The visible entries of a directory, in layer order. */
  list(dir: LayerNode): Listing {
    let listing = this.listings.get(dir);
    if (listing) return listing;
    const children = dir.children ?? new Map<string, LayerNode>();
    const isRoot = dir === this.index.root;
    const visible: [string, ViewEntry][] = [];
    for (const [name, child] of children) {
      if (name.startsWith(WHITEOUT_PREFIX)) {
        const target = name.slice(WHITEOUT_PREFIX.length);
        if (name !== OPAQUE_MARKER && target !== '' && !children.has(target)) {
          visible.push([target, { kind: 'whiteout', node: child, low: WHITEOUT_BIT + child.ino }]);
        }
        continue;
      }
      if (isRoot && (name === PREFETCH_LANDMARK || name === NO_PREFETCH_LANDMARK)) continue;
      visible.push([name, { kind: 'node', node: child, low: child.ino }]);
    }
    // Layer order, whiteouts where their entries are (see finaliseTree: a walk follows the blob).
    listing = { names: visible.map((v) => v[0]), entries: visible.map((v) => v[1]), byName: new Map(visible) };
    this.listings.set(dir, listing);
    return listing;
  }

  /** Resolves a path inside the layer ("" is the root); undefined when it is not visible. */
  lookup(path: string): ViewEntry | undefined {
    if (path === '') return this.root();
    let dir = this.index.root;
    const parts = path.split('/');
    for (let i = 0; i < parts.length; i++) {
      const entry = this.list(dir).byName.get(parts[i]!);
      if (!entry) return undefined;
      if (i === parts.length - 1) return entry;
      if (entry.kind !== 'node' || entry.node.type !== 'dir') return undefined;
      dir = entry.node;
    }
    return undefined;
  }

  isOpaque(node: LayerNode): boolean {
    return node.type === 'dir' && (node.children?.has(OPAQUE_MARKER) ?? false);
  }

  /** Extended attributes as overlayfs sees them: the layer's, plus the opaque marker. */
  xattrs(entry: ViewEntry): ReadonlyMap<string, Buffer> {
    if (entry.kind === 'whiteout') return NO_XATTRS;
    if (!this.isOpaque(entry.node)) return entry.node.xattrs;
    const out = new Map(entry.node.xattrs);
    for (const name of OPAQUE_XATTRS) out.set(name, YES);
    return out;
  }
}

const NO_XATTRS: ReadonlyMap<string, Buffer> = new Map();
