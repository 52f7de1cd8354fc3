import { compareNames } from './names.js';
import type { LayerNode } from './types.js';

export interface TreeTotals {
  /** Distinct nodes, the root included: a hardlinked file counts once. */
  nodeCount: number;
  /** Sum of the sizes of all distinct regular files. */
  totalFileBytes: number;
}

/**
 * Finishes the tree once every entry is in: each directory's children sorted
 * in name order (UTF-8 byte order, what readdir and tar listings show) and
 * its link count set to 2 + subdirectories, as a filesystem reports it; and
 * the totals the store reports, counting a hardlinked file once.
 */
export function finaliseTree(byPath: ReadonlyMap<string, LayerNode>): TreeTotals {
  let totalFileBytes = 0;
  let nodeCount = 0;
  // Only a hardlinked file is at several paths: count it once.
  const visited = new Set<LayerNode>();
  for (const node of byPath.values()) {
    if (node.nlink > 1 && node.type !== 'dir') {
      if (visited.has(node)) continue;
      visited.add(node);
    }
    nodeCount++;
    if (node.type === 'reg') totalFileBytes += node.size;
    if (node.children) finaliseDir(node);
  }
  return { nodeCount, totalFileBytes };
}

function finaliseDir(node: LayerNode): void {
  const children = node.children!;
  // Tars are usually in name order already: re-sort only when they are not.
  let inOrder = true;
  let prev: string | undefined;
  let subdirs = 0;
  for (const [name, child] of children) {
    if (prev !== undefined && compareNames(prev, name) > 0) inOrder = false;
    if (child.type === 'dir') subdirs++;
    prev = name;
  }
  if (!inOrder) node.children = new Map([...children.entries()].sort((a, b) => compareNames(a[0], b[0])));
  node.nlink = 2 + subdirs;
}
