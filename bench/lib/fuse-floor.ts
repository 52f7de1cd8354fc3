/**
 * The floor of the FUSE binding for the metadata and warm workloads: a
 * trivial filesystem on the store's own binding (src/fuse/: READDIRPLUS, no
 * OPEN, 1 MiB reads, busy polling, a day of entry/attr caching as the store
 * gives a layer's content) serving a layer's tree from memory (names, types, sizes; file
 * content is zeros), answering every request immediately. The same commands
 * as W6, W3 and W5 run on it: whatever the store takes above these times is
 * the store's own work; these times themselves are the binding's per-request
 * cost (kernel → /dev/fuse → JS → reply), which no change inside the store
 * removes.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fuseError } from '../../src/fuse/protocol.js';
import { FuseSession } from '../../src/fuse/session.js';
import { DEFAULT_CONFIG } from '../../src/daemon/config.js';
import type { DirEntryPlus, Entry, FuseOperations } from '../../src/fuse/types.js';
import tar from 'tar-stream';
import { ddSeconds, timeBash, q } from './store-workloads.js';

const DAY = 86_400;
const MTIME = 1_700_000_000;
interface FloorNode {
  type: 'dir' | 'file' | 'symlink';
  size: number;
  ino: number;
  mode: number;
  children?: string[];
  link?: string;
}

async function treeOf(tarBuf: Buffer): Promise<Map<string, FloorNode>> {
  const nodes = new Map<string, FloorNode>([['/', { type: 'dir', size: 4096, ino: 1, mode: 0o755, children: [] }]]);
  let ino = 1;
  const add = (path: string, node: Omit<FloorNode, 'ino'>): void => {
    if (nodes.has(path)) return;
    nodes.set(path, { ...node, ino: ++ino });
    const parent = path.slice(0, path.lastIndexOf('/')) || '/';
    if (!nodes.has(parent)) add(parent, { type: 'dir', size: 4096, mode: 0o755, children: [] });
    nodes.get(parent)!.children!.push(path.slice(path.lastIndexOf('/') + 1));
  };
  const ex = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('finish', resolve);
    ex.on('error', reject);
  });
  ex.on('entry', (h, stream, next) => {
    const name = '/' + h.name.replace(/^\.?\/+/, '').replace(/\/+$/, '');
    if (name !== '/') {
      if (h.type === 'directory') add(name, { type: 'dir', size: 4096, mode: h.mode ?? 0o755, children: [] });
      else if (h.type === 'symlink') add(name, { type: 'symlink', size: (h.linkname ?? '').length, mode: 0o777, link: h.linkname ?? '' });
      else add(name, { type: 'file', size: h.size ?? 0, mode: h.mode ?? 0o644 });
    }
    stream.on('end', () => next());
    stream.resume();
  });
  ex.end(tarBuf);
  await done;
  return nodes;
}

export interface FloorResult {
  /** `find diff -printf` (W6), cold mount. */
  metadataWalk: number;
  /** `find -type f -exec cat {} +` on a fresh mount: every read answered from memory (W3 with free fetch and decode). */
  readAllCold: number;
  /** The same again (W5: contents in the page cache). */
  readAllWarm: number;
  /** `dd bs=1M` of the layer's largest file with its page cache dropped first (the warm-dd path): dd's own seconds, and bytes. */
  seqRead: { seconds: number; bytes: number; path: string };
}

/** Mounts the layer's tree and runs the three commands; a new mount each pass, so every pass starts cold. */
export async function fuseFloor(tarBuf: Buffer, passes: number): Promise<FloorResult[]> {
  const nodes = await treeOf(tarBuf);
  const zeros = Buffer.alloc(1 << 20);
  // Node ids: the tree's inode numbers; children by name per directory.
  const byIno = new Map<number, FloorNode>();
  const kids = new Map<number, [string, FloorNode][]>();
  for (const [path, n] of nodes) {
    byIno.set(n.ino, n);
    if (path === '/') continue;
    const parent = nodes.get(path.slice(0, path.lastIndexOf('/')) || '/')!;
    kids.set(parent.ino, [...(kids.get(parent.ino) ?? []), [path.slice(path.lastIndexOf('/') + 1), n]]);
  }
  const node = (id: number): FloorNode => {
    const n = byIno.get(id);
    if (!n) throw fuseError('ESTALE');
    return n;
  };
  const entry = (n: FloorNode): Entry => ({
    nodeid: n.ino,
    attr: { ino: n.ino, mode: (n.type === 'dir' ? 0o040000 : n.type === 'symlink' ? 0o120000 : 0o100000) | n.mode, size: n.size, nlink: 1, mtime: MTIME, atime: MTIME, ctime: MTIME },
    entryTimeout: DAY,
    attrTimeout: DAY,
  });
  const ops: FuseOperations = {
    lookup: (parent, name) => {
      const hit = kids.get(parent)?.find(([k]) => k === name);
      return hit ? entry(hit[1]) : null;
    },
    getattr: (id) => ({ attr: entry(node(id)).attr, attrTimeout: DAY }),
    readdirplus: (id, offset) => {
      const list = kids.get(node(id).ino) ?? [];
      const out: DirEntryPlus[] = [];
      for (let i = offset; i < list.length; i++) out.push({ name: list[i]![0], offset: i + 1, entry: entry(list[i]![1]) });
      return out;
    },
    readlink: (id) => node(id).link ?? '',
    read: (id, offset, size) => zeros.subarray(0, Math.max(0, Math.min(size, node(id).size - offset))),
  };
  const out: FloorResult[] = [];
  /** Runs `fn` on a new mount of the tree (so the kernel has cached nothing). */
  const onMount = async <T>(fn: (mnt: string) => Promise<T>): Promise<T> => {
    const base = await mkdtemp(join(tmpdir(), 'estargz-bench-floor-'));
    const mnt = join(base, 'mnt');
    await mkdir(mnt);
    // Busy polling as the store does it (config fuse_busy_poll_usec).
    const session = await FuseSession.mount(ops, { mountpoint: mnt, subtype: 'floor' }, { busyPollUs: DEFAULT_CONFIG.fuse_busy_poll_usec });
    try {
      return await fn(mnt);
    } finally {
      await session.close();
      await rm(base, { recursive: true, force: true }).catch(() => {});
    }
  };
  let largest = { path: '', size: -1 };
  for (const [path, n] of nodes) if (n.type === 'file' && n.size > largest.size) largest = { path, size: n.size };
  for (let i = 0; i < passes; i++) {
    const metadataWalk = await onMount(async (mnt) => (await timeBash(`find ${q(mnt)} -printf '%p %s %m\\n' > /dev/null`)).seconds);
    const [readAllCold, readAllWarm] = await onMount(async (mnt) => [
      (await timeBash(`cd ${q(mnt)} && find . -type f -exec cat {} + > /dev/null`)).seconds,
      (await timeBash(`cd ${q(mnt)} && find . -type f -exec cat {} + > /dev/null`)).seconds,
    ]);
    const seqRead = await onMount(async (mnt) => {
      const file = q(join(mnt, largest.path));
      await timeBash(`dd if=${file} of=/dev/null bs=1M status=none`);
      await timeBash(`dd if=${file} iflag=nocache count=0 status=none`);
      return { seconds: await ddSeconds(join(mnt, largest.path)), bytes: largest.size, path: largest.path.slice(1) };
    });
    out.push({ metadataWalk, readAllCold: readAllCold!, readAllWarm: readAllWarm!, seqRead });
  }
  return out;
}
