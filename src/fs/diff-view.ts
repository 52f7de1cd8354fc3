import { compareNames, type LayerIndex, type LayerNode } from '../estargz/layer-index.js';
import { NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK } from '../estargz/toc.js';

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';
const OPAQUE_XATTRS = ['trusted.overlay.opaque', 'user.overlay.opaque'];
const YES = Buffer.from('y');

/** An entry of the overlay view: a layer node, or a whiteout shown as a 0:0 character device. */
export type ViewEntry =
  | { kind: 'node'; node: LayerNode; ino: number }
  | { kind: 'whiteout'; ino: number; mtime: number };

/**
 * The layer as overlayfs expects a lower directory: `.wh.NAME` entries are
 * shown as character devices 0:0 named NAME (unless a real NAME exists),
 * `.wh..wh..opq` marks its directory opaque (xattrs trusted.overlay.opaque and
 * user.overlay.opaque = "y"), and the prefetch landmarks are hidden at the
 * root. Listings are computed once per directory.
 */
export class DiffView {
  private readonly listings = new Map<LayerNode, Map<string, ViewEntry>>();
  private nextWhiteoutIno: number;

  constructor(readonly index: LayerIndex, private readonly inoBase: number) {
    this.nextWhiteoutIno = inoBase + index.nodeCount + 1;
  }

  /** Inode numbers this view may use: [inoBase, inoBase + span). */
  static inoSpan(index: LayerIndex): number {
    let whiteouts = 0;
    for (const path of index.byPath.keys()) if (path.slice(path.lastIndexOf('/') + 1).startsWith(WHITEOUT_PREFIX)) whiteouts++;
    return index.nodeCount + whiteouts + 2;
  }

  root(): ViewEntry {
    return this.entryFor(this.index.root);
  }

  private entryFor(node: LayerNode): ViewEntry {
    return { kind: 'node', node, ino: this.inoBase + node.ino };
  }

  /** The visible entries of a directory, sorted by name. */
  list(dir: LayerNode): Map<string, ViewEntry> {
    let listing = this.listings.get(dir);
    if (listing) return listing;
    listing = new Map();
    const children = dir.children ?? new Map<string, LayerNode>();
    const isRoot = dir === this.index.root;
    const names: string[] = [];
    for (const [name, child] of children) {
      if (name.startsWith(WHITEOUT_PREFIX)) {
        const target = name.slice(WHITEOUT_PREFIX.length);
        if (name !== OPAQUE_MARKER && target !== '' && !children.has(target)) {
          listing.set(target, { kind: 'whiteout', ino: this.nextWhiteoutIno++, mtime: child.mtime });
          names.push(target);
        }
        continue;
      }
      if (isRoot && (name === PREFETCH_LANDMARK || name === NO_PREFETCH_LANDMARK)) continue;
      listing.set(name, this.entryFor(child));
      names.push(name);
    }
    // Whiteout names join the real ones: keep the listing in byte order.
    const sorted = new Map([...listing.entries()].sort((a, b) => compareNames(a[0], b[0])));
    this.listings.set(dir, sorted);
    return sorted;
  }

  /** Resolves a path inside the layer ("" is the root); undefined when it is not visible. */
  lookup(path: string): ViewEntry | undefined {
    if (path === '') return this.root();
    let dir = this.index.root;
    const parts = path.split('/');
    for (let i = 0; i < parts.length; i++) {
      const entry = this.list(dir).get(parts[i]!);
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
    if (entry.kind === 'whiteout') return new Map();
    if (!this.isOpaque(entry.node)) return entry.node.xattrs;
    const out = new Map(entry.node.xattrs);
    for (const name of OPAQUE_XATTRS) out.set(name, YES);
    return out;
  }
}
