import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const TREE_DUMP = fileURLToPath(new URL('../../testkit/tree-dump.py', import.meta.url));

/** One entry of tree-dump.py's listing: what `lstat`, `readlink`, the xattrs and the contents say. */
export interface DumpEntry {
  path: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size?: number;
  sha256?: string;
  nlink?: number;
  ino?: number;
  linkname?: string;
  dev?: [number, number];
  xattrs?: Record<string, string>;
}

export async function dumpTree(dir: string): Promise<DumpEntry[]> {
  try {
    const { stdout } = await run('python3', [TREE_DUMP, dir], { maxBuffer: 256 << 20 });
    return JSON.parse(stdout) as DumpEntry[];
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('python3 is missing: install the Debian package python3 (scripts/install-system-deps.sh)');
    throw err;
  }
}

/**
 * The overlay view expected from `tar -x` of a layer: `.wh.X` becomes a 0:0
 * character device X (unless X exists), `.wh..wh..opq` becomes the opaque
 * xattrs on its directory.
 */
export function overlayView(entries: DumpEntry[]): DumpEntry[] {
  const byPath = new Map(entries.map((e) => [e.path, { ...e }]));
  for (const e of entries) {
    const slash = e.path.lastIndexOf('/');
    const dir = slash < 0 ? '' : e.path.slice(0, slash);
    const name = e.path.slice(slash + 1);
    if (!name.startsWith('.wh.')) continue;
    byPath.delete(e.path);
    if (name === '.wh..wh..opq') {
      const parent = byPath.get(dir);
      if (parent) parent.xattrs = { ...parent.xattrs, 'trusted.overlay.opaque': 'eQ==', 'user.overlay.opaque': 'eQ==' };
      continue;
    }
    const target = (dir ? `${dir}/` : '') + name.slice(4);
    if (!byPath.has(target)) byPath.set(target, { path: target, type: 'char', mode: 0, uid: 0, gid: 0, mtime: e.mtime, dev: [0, 0], xattrs: {} });
  }
  return [...byPath.values()].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
}

/** Replaces inode numbers by the set of paths that share each inode (hardlinks compared as groups, not by number). */
export function normalizeLinks(entries: DumpEntry[]): unknown[] {
  const groups = new Map<number, string[]>();
  for (const e of entries) if (e.ino !== undefined) groups.set(e.ino, [...(groups.get(e.ino) ?? []), e.path]);
  return entries.map(({ ino, ...rest }) => (ino === undefined ? rest : { ...rest, linkGroup: groups.get(ino)!.join(',') }));
}
