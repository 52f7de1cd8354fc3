/**
 * The floor of the FUSE binding for the metadata and warm workloads: a
 * trivial fuse-native filesystem (same mount options as the store: use_ino,
 * max_readahead=1 MiB, kernel cache, 60 s entry/attr timeouts) serving a
 * layer's tree from memory (names, types, sizes; file content is zeros),
 * answering every request immediately. The same commands as W6, W3 and W5
 * run on it: whatever the store takes above these times is the store's own
 * work; these times themselves are the binding's per-request cost (kernel →
 * libfuse thread → uv_async → JS → reply), which no change inside the store
 * removes.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fuse from 'fuse-native';
import tar from 'tar-stream';
import { ddSeconds, timeBash, q } from './store-workloads.js';

/** fuse-native wants negative errno values. */
const ENOENT = -2;

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

class FloorFuse extends Fuse {
  protected override _fuseOptions(): string {
    const base = super._fuseOptions();
    return base ? `${base},use_ino,max_readahead=1048576` : '-ouse_ino,max_readahead=1048576';
  }
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
  const now = new Date();
  type Cb = (...a: unknown[]) => void;
  const ops: Record<string, Cb> = {
    getattr: (p, cb) => {
      const n = nodes.get(p as string);
      if (!n) return (cb as Cb)(ENOENT);
      const type = n.type === 'dir' ? 0o040000 : n.type === 'symlink' ? 0o120000 : 0o100000;
      (cb as Cb)(0, { ino: n.ino, mtime: now, atime: now, ctime: now, nlink: 1, size: n.size, mode: type | n.mode, uid: 0, gid: 0, dev: 0, rdev: 0, blksize: 4096, blocks: Math.ceil(n.size / 512) });
    },
    readdir: (p, cb) => {
      const n = nodes.get(p as string);
      if (!n?.children) return (cb as Cb)(ENOENT);
      (cb as Cb)(0, n.children);
    },
    readlink: (p, cb) => (cb as Cb)(0, nodes.get(p as string)?.link ?? ''),
    // The store's operation set: no open/release/opendir/releasedir (libfuse answers those itself).
    read: (p, _fd, buf, len, pos, cb) => {
      const n = nodes.get(p as string);
      const k = Math.max(0, Math.min(len as number, (n?.size ?? 0) - (pos as number)));
      for (let at = 0; at < k; at += zeros.length) zeros.copy(buf as Buffer, at, 0, Math.min(zeros.length, k - at));
      (cb as Cb)(k);
    },
  };
  const out: FloorResult[] = [];
  /** Runs `fn` on a new mount of the tree (so the kernel has cached nothing). */
  const onMount = async <T>(fn: (mnt: string) => Promise<T>): Promise<T> => {
    const base = await mkdtemp(join(tmpdir(), 'estargz-bench-floor-'));
    const mnt = join(base, 'mnt');
    const fuse = new FloorFuse(mnt, ops, { mkdir: true, kernelCache: true, entryTimeout: 60, attrTimeout: 60 });
    await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
    try {
      return await fn(mnt);
    } finally {
      await new Promise<void>((resolve) => fuse.unmount(() => resolve()));
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
