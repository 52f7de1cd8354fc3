/**
 * A small in-memory, read-only filesystem on the new FUSE binding, for the
 * binding's tests: node ids are assigned once per node (stable), except
 * under /cycle, where every lookup answers a fresh node id with no entry
 * caching, so each stat makes the kernel drop the old inode (a
 * lookup/forget cycle). It counts what it was asked.
 */
import { fuseError } from '../../src/fuse/protocol.js';
import type { AttrReply, DirEntryPlus, Entry, FuseOperations, StatFs } from '../../src/fuse/types.js';

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

/** Content of the patterned files: period 1 MiB, so any read of ≤ 1 MiB is a slice of a 2 MiB buffer. */
export const PERIOD = 1 << 20;
export function patternByte(i: number): number {
  const k = i % PERIOD;
  return (k * 7 + (k >>> 8) + 3) & 0xff;
}
export function patternBytes(offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = patternByte(offset + i);
  return b;
}

interface ToyNode {
  id: number;
  mode: number;
  size: number;
  nlink: number;
  mtime: number;
  /** Bytes for small files; patterned files have none. */
  data?: Buffer;
  /** Patterned, answered as a list of pieces of this many bytes (as the store answers a read spanning several chunks). */
  pieceBytes?: number;
  target?: string;
  xattrs?: Map<string, Buffer>;
  /** Directory: names in listing order → node id. */
  children?: Map<string, number>;
  parent: number;
}

export interface ToyTreeSpec {
  /** Directories under /many: many/dNN/fNNN. */
  manyDirs: number;
  manyFiles: number;
  /** Size of /huge.bin (patterned). */
  hugeSize: number;
  /** Entry and attribute timeouts in seconds (default 3600); 0 makes every open look names up again. */
  ttl?: number;
  /** Reads answer after this long (default 0): keeps requests in flight. */
  readDelayMs?: number;
  /** The session's busy polling (SessionOptions.busyPollUs; default 0: off). */
  busyPollUs?: number;
  /** forget() throws (a filesystem bug): the session must still answer everything else. */
  forgetThrows?: boolean;
}

/** What a successor needs to answer for node ids this instance handed out: the /cycle nodes. */
export interface ToyState {
  nextId: number;
  cycle: number[];
}

export interface ToyStats {
  ops: Record<string, number>;
  /** Sizes of READ requests seen: size → count. */
  readSizes: Record<string, number>;
  /** /cycle nodes handed to the kernel and not yet forgotten. */
  cycleLive: number;
  /** /cycle lookups answered. */
  cycleLookups: number;
}

export class ToyFs implements FuseOperations {
  private readonly nodes = new Map<number, ToyNode>();
  private nextId = 1;
  private readonly cycleDir: number;
  private readonly wave: Buffer;
  readonly counts = new Map<string, number>();
  readonly readSizes = new Map<number, number>();
  private cycleLive = 0;
  private cycleLookups = 0;
  private readonly ttl: number;
  private readonly readDelayMs: number;
  private readonly forgetThrows: boolean;

  constructor(spec: ToyTreeSpec) {
    this.ttl = spec.ttl ?? 3600;
    this.readDelayMs = spec.readDelayMs ?? 0;
    this.forgetThrows = spec.forgetThrows ?? false;
    const now = 1_700_000_000;
    this.wave = patternBytes(0, 2 * PERIOD);
    const root = this.add(0, '', { mode: S_IFDIR | 0o755, size: 4096, nlink: 2, mtime: now, children: new Map() });
    this.add(root, 'hello.txt', {
      mode: S_IFREG | 0o644, size: 12, nlink: 1, mtime: now, data: Buffer.from('hello world\n'),
      xattrs: new Map([['user.greeting', Buffer.from('hi there')], ['user.empty', Buffer.alloc(0)]]),
    });
    this.add(root, 'big.bin', { mode: S_IFREG | 0o600, size: 3 * PERIOD + 12345, nlink: 1, mtime: now });
    this.add(root, 'huge.bin', { mode: S_IFREG | 0o644, size: spec.hugeSize, nlink: 1, mtime: now });
    // 4000-byte pieces: a 1 MiB read is 263 of them, more than one vectored reply takes (joined first); smaller reads go as they are.
    this.add(root, 'pieces.bin', { mode: S_IFREG | 0o644, size: 3 * PERIOD + 12345, nlink: 1, mtime: now, pieceBytes: 4000 });
    this.add(root, 'link', { mode: S_IFLNK | 0o777, size: 9, nlink: 1, mtime: now, target: 'hello.txt' });
    const dir = this.add(root, 'dir', { mode: S_IFDIR | 0o750, size: 4096, nlink: 2, mtime: now, children: new Map() });
    this.add(dir, 'exec.sh', { mode: S_IFREG | 0o755, size: 10, nlink: 1, mtime: now, data: Buffer.from('#!/bin/sh\n') });
    const many = this.add(root, 'many', { mode: S_IFDIR | 0o755, size: 4096, nlink: 2 + spec.manyDirs, mtime: now, children: new Map() });
    for (let d = 0; d < spec.manyDirs; d++) {
      const dn = `d${String(d).padStart(2, '0')}`;
      const sub = this.add(many, dn, { mode: S_IFDIR | 0o755, size: 4096, nlink: 2, mtime: now, children: new Map() });
      for (let f = 0; f < spec.manyFiles; f++) {
        const data = Buffer.from(`many/${dn}/f${f}\n`);
        this.add(sub, `f${String(f).padStart(3, '0')}`, { mode: S_IFREG | 0o644, size: data.length, nlink: 1, mtime: now, data });
      }
    }
    this.cycleDir = this.add(root, 'cycle', { mode: S_IFDIR | 0o755, size: 4096, nlink: 2, mtime: now, children: new Map() });
  }

  private add(parent: number, name: string, n: Omit<ToyNode, 'id' | 'parent'>): number {
    const id = this.nextId++;
    this.nodes.set(id, { ...n, id, parent });
    if (parent) this.nodes.get(parent)!.children!.set(name, id);
    return id;
  }

  private count(op: string): void {
    this.counts.set(op, (this.counts.get(op) ?? 0) + 1);
  }

  private node(id: number): ToyNode {
    const n = this.nodes.get(id);
    if (!n) throw fuseError('ESTALE');
    return n;
  }

  private entryOf(n: ToyNode): Entry {
    return {
      nodeid: n.id,
      attr: { ino: n.id, mode: n.mode, size: n.size, nlink: n.nlink, mtime: n.mtime, ctime: n.mtime, atime: n.mtime, uid: 0, gid: 0 },
      entryTimeout: this.ttl,
      attrTimeout: this.ttl,
    };
  }

  stats(): ToyStats {
    return {
      ops: Object.fromEntries(this.counts),
      readSizes: Object.fromEntries([...this.readSizes].map(([k, v]) => [String(k), v])),
      cycleLive: this.cycleLive,
      cycleLookups: this.cycleLookups,
    };
  }

  lookup(parent: number, name: string): Entry | null {
    this.count('lookup');
    if (parent === this.cycleDir) {
      // A fresh node each time, not cached: the kernel drops the old inode (FORGET).
      const id = this.nextId++;
      this.nodes.set(id, { id, parent, mode: S_IFREG | 0o644, size: 0, nlink: 1, mtime: 0 });
      this.cycleLive++;
      this.cycleLookups++;
      return { ...this.entryOf(this.nodes.get(id)!), entryTimeout: 0, attrTimeout: 0 };
    }
    if (parent === 1 && name === 'reply-then-throw') return this.replyThenThrow();
    const id = this.node(parent).children?.get(name);
    if (id === undefined) return null;
    return this.entryOf(this.node(id));
  }

  forget(nodeid: number, nlookup: number): void {
    this.count('forget');
    if (this.forgetThrows) throw new Error('toy: forget is broken');
    const n = this.nodes.get(nodeid);
    if (n && n.parent === this.cycleDir) {
      this.nodes.delete(nodeid);
      this.cycleLive--;
    }
  }

  getattr(nodeid: number): AttrReply {
    this.count('getattr');
    const e = this.entryOf(this.node(nodeid));
    return { attr: e.attr, attrTimeout: this.node(nodeid).parent === this.cycleDir ? 0 : this.ttl };
  }

  readdirplus(nodeid: number, offset: number): DirEntryPlus[] {
    this.count('readdirplus');
    const n = this.node(nodeid);
    if (!n.children) throw fuseError('ENOTDIR');
    const all: DirEntryPlus[] = [
      { name: '.', offset: 1, entry: this.entryOf(n) },
      { name: '..', offset: 2, entry: this.entryOf(this.nodes.get(n.parent) ?? n) },
    ];
    let i = 2;
    for (const [name, id] of n.children) all.push({ name, offset: ++i, entry: this.entryOf(this.node(id)) });
    return all.slice(offset);
  }

  /**
   * hello.txt's entry, whose node id can be read once only: the session reads
   * it to fill the answer and again after the answer went out (to count the
   * kernel's reference), where it throws. A bug in a reply step, made on purpose.
   */
  private replyThenThrow(): Entry {
    const e = this.entryOf(this.node(this.node(1).children!.get('hello.txt')!));
    let reads = 0;
    return Object.defineProperty({ ...e }, 'nodeid', {
      get: () => {
        if (reads++ > 0) throw new Error('toy: node id read after the answer');
        return e.nodeid;
      },
    });
  }

  read(nodeid: number, offset: number, size: number): Uint8Array | Uint8Array[] | Promise<Uint8Array | Uint8Array[]> {
    if (this.readDelayMs > 0) {
      return new Promise((resolve, reject) => setTimeout(() => {
        try { resolve(this.readNow(nodeid, offset, size)); } catch (err) { reject(err); }
      }, this.readDelayMs));
    }
    return this.readNow(nodeid, offset, size);
  }

  exportState(): ToyState {
    const cycle = [...this.nodes.values()].filter((n) => n.parent === this.cycleDir).map((n) => n.id);
    return { nextId: this.nextId, cycle };
  }

  /** Merges: nodes already known stay. */
  importState(s: ToyState): void {
    this.nextId = Math.max(this.nextId, s.nextId);
    for (const id of s.cycle) {
      if (this.nodes.has(id)) continue;
      this.nodes.set(id, { id, parent: this.cycleDir, mode: S_IFREG | 0o644, size: 0, nlink: 1, mtime: 0 });
      this.cycleLive++;
    }
  }

  private readNow(nodeid: number, offset: number, size: number): Uint8Array | Uint8Array[] {
    this.count('read');
    this.readSizes.set(size, (this.readSizes.get(size) ?? 0) + 1);
    const n = this.node(nodeid);
    if ((n.mode & 0o170000) === S_IFDIR) throw fuseError('EISDIR');
    const len = Math.max(0, Math.min(size, n.size - offset));
    if (n.data) return n.data.subarray(offset, offset + len);
    const at = offset % PERIOD;
    const bytes = this.wave.subarray(at, at + len);
    if (!n.pieceBytes) return bytes;
    const pieces: Uint8Array[] = [];
    for (let p = 0; p < bytes.length; p += n.pieceBytes) pieces.push(bytes.subarray(p, p + n.pieceBytes));
    return pieces;
  }

  readlink(nodeid: number): string {
    this.count('readlink');
    const t = this.node(nodeid).target;
    if (t === undefined) throw fuseError('EINVAL');
    return t;
  }

  getxattr(nodeid: number, name: string): Buffer | null {
    this.count('getxattr');
    return this.node(nodeid).xattrs?.get(name) ?? null;
  }

  listxattr(nodeid: number): string[] {
    this.count('listxattr');
    return [...(this.node(nodeid).xattrs?.keys() ?? [])];
  }

  statfs(): Partial<StatFs> {
    this.count('statfs');
    return { blocks: 1000, bfree: 0, bavail: 0, files: this.nodes.size, ffree: 0, bsize: 4096, namelen: 255 };
  }
}
