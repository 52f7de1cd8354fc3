import { NO_XATTRS } from './fields.js';
import { invalid } from './invalid.js';
import { splitPath } from './names.js';
import type { LayerNode, NodeType } from './types.js';

/**
 * The directory tree of a layer while it is built: numbers inodes in the
 * order nodes are made, creates the parent directories a TOC leaves out
 * (writers may list "a/b/f" without "a/" or "a/b/"), and applies tar's rule
 * that a later entry at a path replaces the earlier one, dropping what lay
 * below a replaced directory. `onForget` hears every path that stops existing
 * that way, so the TOC records for them can be dropped too.
 */
export class LayerTree {
  readonly root: LayerNode;
  /** Every path (hardlinks included) → node; the root is "". */
  readonly byPath = new Map<string, LayerNode>();
  private nextIno = 1;

  constructor(private readonly onForget: (path: string) => void = () => {}) {
    this.root = this.newNode('', 'dir', true);
    this.byPath.set('', this.root);
  }

  /** A fresh node with the next inode number, placed nowhere yet, with a directory's or an empty file's defaults. */
  newNode(path: string, type: NodeType, implicit: boolean): LayerNode {
    return {
      ino: this.nextIno++,
      path,
      type,
      mode: type === 'dir' ? 0o755 : 0,
      uid: 0,
      gid: 0,
      userName: '',
      groupName: '',
      size: 0,
      mtime: 0,
      linkName: '',
      devMajor: 0,
      devMinor: 0,
      xattrs: NO_XATTRS,
      digest: undefined,
      chunks: [],
      nlink: 1,
      children: type === 'dir' ? new Map() : null,
      implicit,
    };
  }

  /** The directory at `path`, created (implicit, with its own missing parents) when absent; refused when a non-directory is there. */
  ensureDir(path: string): LayerNode {
    const existing = this.byPath.get(path);
    if (existing) {
      if (existing.type !== 'dir') throw invalid(`TOC entry ${JSON.stringify(path)} is used as a directory but is a ${existing.type}`, path);
      return existing;
    }
    const { parent, name } = splitPath(path);
    const dir = this.ensureDir(parent);
    const node = this.newNode(path, 'dir', true);
    dir.children!.set(name, node);
    this.byPath.set(path, node);
    return node;
  }

  /** Places `node` at the non-root `path`, replacing whatever was there (a later tar entry wins). */
  place(path: string, node: LayerNode): void {
    const { parent, name } = splitPath(path);
    const dir = this.ensureDir(parent);
    const previous = dir.children!.get(name);
    if (previous && previous !== node) {
      // The replaced name no longer counts as a link of a multiply linked file.
      if (previous.type !== 'dir' && previous.nlink > 1) previous.nlink--;
      else this.forgetSubtree(path, previous);
    }
    dir.children!.set(name, node);
    this.byPath.set(path, node);
  }

  private forgetSubtree(path: string, node: LayerNode): void {
    if (node.children) {
      for (const [name, child] of node.children) this.forgetSubtree(`${path}/${name}`, child);
    }
    this.byPath.delete(path);
    this.onForget(path);
  }
}
