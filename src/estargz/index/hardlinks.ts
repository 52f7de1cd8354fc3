import type { TocEntryJson } from '../toc.js';
import { checkString } from './fields.js';
import { invalid, invalidEntry } from './invalid.js';
import type { TocLimits } from './limits.js';
import { layerPath } from './names.js';
import type { LayerTree } from './tree.js';
import type { LayerNode } from './types.js';

/**
 * Resolves a hardlink entry to the node of its target and places that same
 * node at the link's path, so that every name of a file shares one inode,
 * its chunks and its link count. The target must be an earlier entry (tar
 * writes the file before its links), and not a directory, the root or the
 * link itself. A link to a link finds the shared node, so chains resolve to
 * the first file.
 */
export function linkHardlink(tree: LayerTree, entry: TocEntryJson, path: string, limits: TocLimits): LayerNode {
  const target = layerPath(checkString(entry, 'linkName', path), 'hardlink target', path, limits);
  if (target === path) throw invalidEntry(path, 'hardlink to itself');
  const node = tree.byPath.get(target);
  if (!node || node === tree.root) throw invalidEntry(path, `hardlink target ${JSON.stringify(entry.linkName)} is not an earlier entry`);
  if (node.type === 'dir') throw invalidEntry(path, `hardlink to directory ${JSON.stringify(target)}`);
  if (path === '') throw invalid('TOC entry for the root directory is a hardlink', path);
  // A name listed again for the file it already names is not a new link.
  if (tree.byPath.get(path) !== node) node.nlink++;
  tree.place(path, node);
  return node;
}
