import { DIGEST_PATTERN, type TocEntryJson } from '../toc.js';
import { checkCount, checkId, checkString, decodeXattrs } from './fields.js';
import { invalid, invalidEntry } from './invalid.js';
import type { TocLimits } from './limits.js';
import type { Owner } from './owners.js';
import type { LayerTree } from './tree.js';
import type { LayerNode, NodeType } from './types.js';

/*
 * Turns an entry that is not a hardlink or a chunk into a node: where it goes
 * in the tree, then the attributes it carries.
 */

const MODE_PERM_MASK = 0o7777;

/**
 * The node for a directory, file, symlink or device entry, placed at `path`.
 * A directory entry at a path that already holds a directory (an implicit
 * parent made for earlier children, or an earlier entry) keeps that node and
 * its children: tar writers may list a directory after its contents, or
 * twice. Anything else gets a new node that replaces what was there. The
 * root can only be a directory.
 */
export function placeNode(tree: LayerTree, entry: TocEntryJson, path: string): LayerNode {
  const type = entry.type as NodeType;
  if (path === '' && type !== 'dir') throw invalid(`TOC entry ${JSON.stringify(entry.name)} for the root directory is a ${type}`, path);
  const existing = tree.byPath.get(path);
  if (existing && existing.type === 'dir' && type === 'dir') {
    existing.implicit = false;
    return existing;
  }
  const node = tree.newNode(path, type, false);
  tree.place(path, node);
  return node;
}

/** Sets the node's attributes from its entry: those every type has, then the type's own (symlink target, device numbers, size and digest). */
export function applyAttributes(node: LayerNode, entry: TocEntryJson, path: string, owner: Owner, mtime: number, limits: TocLimits): void {
  node.mode = checkCount(entry, 'mode', path) & MODE_PERM_MASK;
  node.uid = owner.uid;
  node.gid = owner.gid;
  node.userName = owner.userName;
  node.groupName = owner.groupName;
  node.mtime = mtime;
  node.xattrs = decodeXattrs(entry, path, limits);
  const type = node.type;
  if (type === 'symlink') node.linkName = checkString(entry, 'linkName', path);
  if (type === 'char' || type === 'block') {
    node.devMajor = checkId(entry, 'devMajor', path);
    node.devMinor = checkId(entry, 'devMinor', path);
  }
  if (type === 'reg') {
    node.size = checkCount(entry, 'size', path);
    const digest = checkString(entry, 'digest', path);
    if (digest && !DIGEST_PATTERN.test(digest)) throw invalidEntry(path, `digest ${JSON.stringify(digest)} is not a sha256 digest`);
    node.digest = digest || undefined;
  }
}
