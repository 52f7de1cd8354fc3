/**
 * A FUSE connection served from the JS main thread: the addon hands over
 * batches of decoded requests, this class calls the filesystem's handlers
 * and sends each answer back through the addon. Every request gets exactly
 * one reply (FORGET, BATCH_FORGET and INTERRUPT get none, by protocol).
 *
 * The session also counts the lookup references the kernel holds (lookups
 * and READDIRPLUS entries it took, minus forgets): a successor taking over
 * the connection needs to know them, and tests check they balance.
 */
import { close, constants as fsConstants, write } from 'node:fs';
import { constants } from 'node:os';
import { resolve } from 'node:path';
import { loadAddon, type FuseAddon, type NativeSession } from './native.js';
import { mountConnection, raiseReadahead, unmountConnection, type MountParams } from './mount.js';
import {
  ENTRY_STRIDE, Ent, InitFlag, KERNEL_MAJOR, KERNEL_MINOR, MAX_BATCH, MAX_PAGES, MAX_REPLY_PARTS, MAX_WRITE, MIN_DIRENT, MIN_DIRENTPLUS,
  FuseError, Notify, Op, opName, OUT_HEADER, REQ_STRIDE, Req, SCRATCH_ROWS, toErrno, type OpName,
} from './protocol.js';
import type { Attr, Awaitable, DirEntry, DirEntryPlus, Entry, FuseOperations, Negotiated, Notifier, RequestContext } from './types.js';

const E = constants.errno;
const W_OK = fsConstants.W_OK;

export interface SessionOptions {
  /** Seconds the kernel may keep a name (default 1); a lookup answer may set its own. */
  entryTimeout?: number;
  /** Seconds the kernel may keep attributes (default 1); an answer may set its own. */
  attrTimeout?: number;
  /** Seconds the kernel may remember that a name is absent (default 0: ENOENT, not cached). */
  negativeTimeout?: number;
  /** Read-ahead window (default 1 MiB): answered in INIT and set on the mount's sysfs entry, since the kernel offers only 128 KiB. */
  maxReadahead?: number;
  /** Ask for READDIRPLUS (default: when the filesystem implements readdirplus). Always plus, never "auto". */
  readdirplus?: boolean;
  /** Background requests (read-ahead) the kernel may have outstanding (default 64). */
  maxBackground?: number;
  /**
   * Busy polling (default 0: off): after answering a batch, the JS thread
   * keeps reading /dev/fuse for up to this many µs while nothing else is ready
   * on Node's loop, instead of sleeping in epoll and being woken for the next
   * request. A caller walking a tree sends its next request a few µs after the
   * last reply; on a VM, sleeping and waking costs about half of each round
   * trip. Only while every request read was answered (one left waiting ends
   * it, as does any other fd ready on the loop); at most 2 ms per wake-up.
   */
  busyPollUs?: number;
  /** A handler threw something that is not an errno (a bug): it is answered EIO and passed here. */
  onError?: (err: unknown, op: OpName | number) => void;
}

const isPromise = <T>(v: Awaitable<T>): v is Promise<T> => typeof (v as Promise<T> | undefined)?.then === 'function';
const isDot = (name: string): boolean => name === '.' || name === '..';
const textEncoder = new TextEncoder();

/** Requests a successor may execute again for a dead predecessor: they change nothing. */
const REPLAYABLE: ReadonlySet<number> = new Set([
  Op.INIT, Op.LOOKUP, Op.GETATTR, Op.READ, Op.READDIR, Op.READDIRPLUS, Op.READLINK, Op.GETXATTR, Op.LISTXATTR,
  Op.STATFS, Op.ACCESS, Op.OPEN, Op.OPENDIR, Op.RELEASE, Op.RELEASEDIR,
]);

/** A keeper's placeholder filesystem between INIT and detach: nothing is answered, all stays journaled. */
const pending = <T>(): Promise<T> => new Promise<T>(() => {});
const HOLD_OPS: FuseOperations = {
  lookup: pending, getattr: pending, readdirplus: pending, read: pending, readlink: pending, getxattr: pending,
  listxattr: pending, statfs: pending, mkdir: pending, rmdir: pending, unlink: pending, create: pending,
};

export class FuseSession {
  private readonly native: NativeSession;
  private readonly requests = new Float64Array(MAX_BATCH * REQ_STRIDE);
  private readonly scratch = new Float64Array(SCRATCH_ROWS * ENTRY_STRIDE);
  private readonly refs = new Map<number, number>();
  private readonly counts = new Float64Array(64);
  private readonly entryTimeout: number;
  private readonly attrTimeout: number;
  private readonly negativeTimeout: number;
  private negotiatedParams: Negotiated | undefined;
  private state: 'serving' | 'closing' | 'closed' | 'detached' = 'serving';
  private readonly initWaiters: { resolve: (n: Negotiated) => void; reject: (e: Error) => void }[] = [];
  private endedResolve!: (errno: number) => void;
  /** Resolves with the errno that ended the connection (ENODEV: it was unmounted), or 0 after close()/detach(). */
  readonly ended: Promise<number>;

  private constructor(
    private readonly addon: FuseAddon,
    readonly fd: number,
    private readonly ops: FuseOperations,
    private readonly opts: SessionOptions,
    private mountpoint: string | undefined,
    negotiated: Negotiated | undefined,
  ) {
    this.entryTimeout = opts.entryTimeout ?? 1;
    this.attrTimeout = opts.attrTimeout ?? 1;
    this.negativeTimeout = opts.negativeTimeout ?? 0;
    this.negotiatedParams = negotiated;
    this.ended = new Promise((r) => { this.endedResolve = r; });
    this.native = new addon.Session(fd, (count, extras, ended) => this.onBatch(count, extras, ended), this.requests, this.scratch);
    if (opts.busyPollUs) this.native.setBusyPoll(opts.busyPollUs);
    this.native.start();
    ops.attach?.(this.notifier);
  }

  /**
   * INVAL_INODE messages go out one at a time: one that the kernel holds up
   * (on a page lock, until a READ is answered) then keeps one thread of the
   * pool, not all of them (the pool also serves the disk cache that the READ
   * may need). INVAL_ENTRY messages do not queue behind them: an rmdir's
   * answer waits for its INVAL_INODEs while its INVAL_ENTRY waits for the
   * rmdir's lock.
   */
  private inodeInvalTail: Promise<unknown> = Promise.resolve();
  private readonly queuedInodeInvals = new Map<string, Promise<number>>();

  /**
   * Cache invalidations for the filesystem (see Notifier), written on the
   * connection's fd from the thread pool, never from this thread: the kernel
   * may make the write wait for a request that this thread must answer.
   */
  readonly notifier: Notifier = {
    invalInode: (nodeid, offset, length) => {
      if (this.state !== 'serving') return Promise.resolve(E.ENOTCONN);
      // One already queued and not yet written does the job: it goes out after whatever change the caller made.
      const key = `${nodeid} ${offset} ${length}`;
      const queued = this.queuedInodeInvals.get(key);
      if (queued) return queued;
      const m = Buffer.alloc(OUT_HEADER + 24);
      m.writeUInt32LE(m.length, 0);
      m.writeInt32LE(Notify.INVAL_INODE, 4);
      m.writeBigUInt64LE(BigInt(nodeid), OUT_HEADER);
      m.writeBigInt64LE(BigInt(offset), OUT_HEADER + 8);
      m.writeBigInt64LE(BigInt(length), OUT_HEADER + 16);
      const sent = this.inodeInvalTail.then(() => {
        this.queuedInodeInvals.delete(key);
        return this.notify(m);
      });
      this.queuedInodeInvals.set(key, sent);
      this.inodeInvalTail = sent;
      return sent;
    },
    invalEntry: (parent, name) => {
      const bytes = Buffer.from(name);
      const m = Buffer.alloc(OUT_HEADER + 16 + bytes.length + 1);
      m.writeUInt32LE(m.length, 0);
      m.writeInt32LE(Notify.INVAL_ENTRY, 4);
      m.writeBigUInt64LE(BigInt(parent), OUT_HEADER);
      m.writeUInt32LE(bytes.length, OUT_HEADER + 8);
      bytes.copy(m, OUT_HEADER + 16);
      // After this turn (the answer to the request that holds the directory's lock goes first) and in the thread pool (the write waits for that lock).
      return new Promise((done) => setImmediate(() => done(this.notify(m))));
    },
  };

  /** One notify message in one write(2), as /dev/fuse wants, in the thread pool; the errno, else 0. */
  private notify(m: Buffer): Promise<number> {
    // After close() the fd number may belong to another file: nothing may be written.
    if (this.state !== 'serving') return Promise.resolve(E.ENOTCONN);
    return new Promise((done) => write(this.fd, m, (err) => done(err ? -(err.errno ?? -E.EIO) : 0)));
  }

  /** Opens /dev/fuse, mounts it (as root) and resolves once INIT is answered. */
  static async mount(ops: FuseOperations, params: MountParams, opts: SessionOptions = {}): Promise<FuseSession> {
    const addon = loadAddon();
    params = { ...params, mountpoint: resolve(params.mountpoint) };
    const fd = mountConnection(addon, params);
    const session = new FuseSession(addon, fd, ops, opts, params.mountpoint, undefined);
    try {
      await session.initialized();
      await raiseReadahead(params.mountpoint, opts.maxReadahead ?? MAX_WRITE);
    } catch (err) {
      await session.close();
      throw err;
    }
    return session;
  }

  /**
   * Serves a connection that is already mounted and initialized (handed over
   * by a predecessor, or inherited, e.g. as fd 3 through spawn's stdio): no
   * mount and no INIT; `negotiated` is what the predecessor's INIT settled.
   * `mountpoint`, if given, is unmounted by close().
   */
  static adopt(fd: number, ops: FuseOperations, negotiated: Negotiated, opts: SessionOptions & { mountpoint?: string } = {}): FuseSession {
    return new FuseSession(loadAddon(), fd, ops, opts, opts.mountpoint, negotiated);
  }

  /** What INIT settled (undefined until it happened). Pass it to the successor's adopt(). */
  get negotiated(): Negotiated | undefined {
    return this.negotiatedParams;
  }

  /** Replies the kernel refused: requests interrupted before their answer, or (a bug) answered twice. */
  get refusedReplies(): number {
    return this.native.refusedReplies();
  }

  /** How often busy polling's spins find the next request (0..1; it spins only on a probe while below 0.5). */
  get busyPollScore(): number {
    return this.native.busyPollScore();
  }

  /** Node id → lookup references the kernel holds. */
  get lookupRefs(): ReadonlyMap<number, number> {
    return this.refs;
  }

  /** Requests seen per operation since start. */
  opCounts(): Partial<Record<OpName, number>> {
    const out: Partial<Record<OpName, number>> = {};
    this.counts.forEach((n, op) => { if (n > 0) out[opName.get(op) ?? ('OP' + op) as OpName] = n; });
    return out;
  }

  private initialized(): Promise<Negotiated> {
    if (this.negotiatedParams) return Promise.resolve(this.negotiatedParams);
    return new Promise((resolve, reject) => this.initWaiters.push({ resolve, reject }));
  }

  /** Unmounts (if this session knows its mountpoint), stops reading and closes the fd. */
  async close(): Promise<void> {
    if (this.state !== 'serving') return;
    this.state = 'closing';
    if (this.mountpoint) unmountConnection(this.addon, this.mountpoint);
    this.native.stop();
    await new Promise<void>((r) => close(this.fd, () => r()));
    this.finish(0);
  }

  /**
   * Stops reading without unmounting or closing: the fd (still mounted) and
   * the negotiated parameters go to a successor. Replies to requests already
   * being answered still go out.
   */
  detach(): { fd: number; negotiated: Negotiated | undefined } {
    if (this.state === 'serving') {
      this.state = 'detached';
      this.native.stop();
      this.finish(0);
    }
    return { fd: this.fd, negotiated: this.negotiatedParams };
  }

  private finish(errno: number): void {
    for (const w of this.initWaiters.splice(0)) w.reject(new Error(`the FUSE connection ended before INIT (errno ${errno})`));
    this.endedResolve(errno);
  }

  // --- Dispatch ----------------------------------------------------------------

  private onBatch(count: number, extras: (string | Float64Array | undefined)[], ended: number): void {
    const r = this.requests;
    for (let i = 0; i < count; i++) {
      const b = i * REQ_STRIDE;
      const opcode = r[b + Req.OPCODE]!;
      const unique = r[b + Req.UNIQUE]!;
      try {
        this.dispatch(opcode, unique, r[b + Req.NODEID]!, b, extras[i]);
      } catch (err) {
        // Handlers' throws are answered inside dispatch; what gets here (a
        // forget handler's, a bug) must not cost the rest of the batch its
        // replies: the kernel would wait for them for good.
        this.opts.onError?.(err, opName.get(opcode) ?? opcode);
        // Unless it threw after its answer went out (a second one would be refused, and counted twice).
        if (opcode !== Op.FORGET && opcode !== Op.BATCH_FORGET && opcode !== Op.INTERRUPT && this.native.lastReplied() !== unique) this.error(unique, E.EIO);
      }
    }
    if (ended) {
      if (this.state === 'serving') {
        // The kernel ended the connection (unmounted, or aborted through fusectl).
        this.state = 'closed';
        this.mountpoint = undefined;
        close(this.fd, () => {});
      }
      this.finish(ended);
    }
  }

  private ctx(b: number): RequestContext {
    const r = this.requests;
    return { uid: r[b + Req.UID]!, gid: r[b + Req.GID]!, pid: r[b + Req.PID]! };
  }

  private dispatch(opcode: number, unique: number, nodeid: number, b: number, extra: string | Float64Array | undefined): void {
    this.counts[opcode & 63]!++;
    const r = this.requests;
    const ops = this.ops;
    const name = typeof extra === 'string' ? extra : '';
    switch (opcode) {
      case Op.INIT:
        return this.init(unique, r[b + Req.A0]!, r[b + Req.A1]!, r[b + Req.A2]!, r[b + Req.A3]!, r[b + Req.A4]!);
      case Op.LOOKUP:
        return this.answer(unique, opcode, () => ops.lookup(nodeid, name, this.ctx(b)), (e) => this.replyEntry(unique, e, true));
      case Op.FORGET:
        return this.forget(nodeid, r[b + Req.A0]!);
      case Op.BATCH_FORGET:
        if (extra instanceof Float64Array) for (let k = 0; k + 1 < extra.length; k += 2) this.forget(extra[k]!, extra[k + 1]!);
        return;
      case Op.GETATTR:
        return this.answer(unique, opcode, () => ops.getattr(nodeid, this.ctx(b)), (a) => {
          this.fillAttr(0, a.attr);
          this.scratch[Ent.ATTR_VALID] = a.attrTimeout ?? this.attrTimeout;
          this.native.replyAttr(unique);
        });
      case Op.READDIR:
      case Op.READDIRPLUS:
        return this.readdir(unique, nodeid, opcode === Op.READDIRPLUS, r[b + Req.A0]!, r[b + Req.A1]!, b);
      case Op.READ: {
        const size = r[b + Req.A1]!;
        if (!ops.read) return this.error(unique, E.ENOSYS);
        return this.answer(unique, opcode, () => ops.read!(nodeid, r[b + Req.A0]!, size, this.ctx(b)), (data) => this.replyRead(unique, data, size));
      }
      case Op.READLINK:
        if (!ops.readlink) return this.error(unique, E.ENOSYS);
        return this.answer(unique, opcode, () => ops.readlink!(nodeid, this.ctx(b)), (t) => {
          this.native.replyData(unique, typeof t === 'string' ? Buffer.from(t) : t);
        });
      case Op.GETXATTR: {
        const size = r[b + Req.A0]!;
        if (!ops.getxattr) return this.error(unique, E.ENODATA);
        return this.answer(unique, opcode, () => ops.getxattr!(nodeid, name, this.ctx(b)), (v) => {
          if (v === null) return this.error(unique, E.ENODATA);
          this.replySized(unique, size, typeof v === 'string' ? Buffer.from(v) : v);
        });
      }
      case Op.LISTXATTR: {
        const size = r[b + Req.A0]!;
        if (!ops.listxattr) return this.replySized(unique, size, new Uint8Array(0));
        return this.answer(unique, opcode, () => ops.listxattr!(nodeid, this.ctx(b)), (names) => {
          this.replySized(unique, size, textEncoder.encode(names.map((n) => n + '\0').join('')));
        });
      }
      case Op.STATFS:
        return this.answer(unique, opcode, () => ops.statfs?.(nodeid, this.ctx(b)) ?? {}, (s) => {
          this.native.replyStatfs(unique, s.blocks ?? 0, s.bfree ?? 0, s.bavail ?? 0, s.files ?? 0, s.ffree ?? 0, s.bsize ?? 4096, s.namelen ?? 255, s.frsize ?? s.bsize ?? 4096);
        });
      case Op.ACCESS: {
        const mask = r[b + Req.A0]!;
        const check = ops.access ? () => ops.access!(nodeid, mask, this.ctx(b)) : () => { if (mask & W_OK) throw new FuseError(E.EROFS); };
        return this.answer(unique, opcode, check, () => this.error(unique, 0));
      }
      // No OPEN/OPENDIR at all: ENOSYS tells the kernel not to ask again for this
      // connection, and it then keeps files' page cache and directories' listings.
      case Op.OPEN:
      case Op.OPENDIR:
        return this.error(unique, E.ENOSYS);
      case Op.RELEASE:
      case Op.RELEASEDIR:
      case Op.DESTROY:
        return this.error(unique, 0);
      case Op.MKDIR:
        if (!ops.mkdir) return this.error(unique, E.EROFS);
        return this.answer(unique, opcode, () => ops.mkdir!(nodeid, name, r[b + Req.A0]!, this.ctx(b)), (e) => this.replyEntry(unique, e, false));
      case Op.RMDIR:
        if (!ops.rmdir) return this.error(unique, E.EROFS);
        return this.answer(unique, opcode, () => ops.rmdir!(nodeid, name, this.ctx(b)), () => this.error(unique, 0));
      case Op.UNLINK:
        if (!ops.unlink) return this.error(unique, E.EROFS);
        return this.answer(unique, opcode, () => ops.unlink!(nodeid, name, this.ctx(b)), () => this.error(unique, 0));
      case Op.CREATE:
        if (!ops.create) return this.error(unique, E.EROFS);
        return this.answer(unique, opcode, () => ops.create!(nodeid, name, r[b + Req.A1]!, r[b + Req.A0]!, this.ctx(b)), () => this.error(unique, E.EIO));
      // Everything else that would change the tree: the filesystem is read-only.
      case Op.SETATTR: case Op.SYMLINK: case Op.MKNOD: case Op.RENAME: case Op.RENAME2: case Op.LINK:
      case Op.WRITE: case Op.SETXATTR: case Op.REMOVEXATTR: case Op.FALLOCATE: case Op.COPY_FILE_RANGE: case Op.TMPFILE:
        return this.error(unique, E.EROFS);
      default:
        // FLUSH, FSYNC, locks, ioctl, poll, lseek, syncfs, …: ENOSYS makes the kernel stop asking or do it itself.
        return this.error(unique, E.ENOSYS);
    }
  }

  /**
   * Runs a handler and replies with its value (synchronously when the value
   * is not a promise) or with its errno. A reply that throws (a malformed
   * value) becomes EIO, so the kernel is never left waiting.
   */
  private answer<T>(unique: number, op: number, produce: () => Awaitable<T>, reply: (v: T) => void): void {
    let v: Awaitable<T>;
    try {
      v = produce();
    } catch (err) {
      return this.fail(unique, op, err);
    }
    if (isPromise(v)) {
      v.then((x) => this.deliver(unique, op, reply, x), (err: unknown) => this.fail(unique, op, err));
    } else {
      this.deliver(unique, op, reply, v);
    }
  }

  private deliver<T>(unique: number, op: number, reply: (v: T) => void, v: T): void {
    // After close() the fd number may belong to another file: nothing may be written.
    if (this.state === 'closing' || this.state === 'closed') return;
    try {
      reply(v);
    } catch (err) {
      // A reply step that threw after its answer went out must not answer again.
      if (this.native.lastReplied() === unique) this.opts.onError?.(err, opName.get(op) ?? op);
      else this.fail(unique, op, err);
    }
  }

  private fail(unique: number, op: number, err: unknown): void {
    const errno = toErrno(err);
    if (errno === E.EIO && this.opts.onError) this.opts.onError(err, opName.get(op) ?? op);
    this.error(unique, errno);
  }

  private error(unique: number, errno: number): void {
    if (this.state === 'serving' || this.state === 'detached') this.native.replyError(unique, errno);
  }

  // --- Replies -----------------------------------------------------------------

  private fillAttr(row: number, a: Attr): void {
    const s = this.scratch;
    const o = row * ENTRY_STRIDE;
    const size = a.size ?? 0;
    s[o + Ent.INO] = a.ino;
    s[o + Ent.SIZE] = size;
    s[o + Ent.BLOCKS] = a.blocks ?? Math.ceil(size / 512);
    s[o + Ent.ATIME] = a.atime ?? 0;
    s[o + Ent.MTIME] = a.mtime ?? 0;
    s[o + Ent.CTIME] = a.ctime ?? 0;
    s[o + Ent.MODE] = a.mode;
    s[o + Ent.NLINK] = a.nlink ?? 1;
    s[o + Ent.UID] = a.uid ?? 0;
    s[o + Ent.GID] = a.gid ?? 0;
    s[o + Ent.RDEV] = a.rdev ?? 0;
    s[o + Ent.BLKSIZE] = a.blksize ?? 4096;
  }

  private fillEntry(row: number, e: Entry): void {
    const s = this.scratch;
    const o = row * ENTRY_STRIDE;
    s[o + Ent.NODEID] = e.nodeid;
    s[o + Ent.GENERATION] = e.generation ?? 0;
    s[o + Ent.ENTRY_VALID] = e.entryTimeout ?? (e.nodeid === 0 ? this.negativeTimeout : this.entryTimeout);
    s[o + Ent.ATTR_VALID] = e.attrTimeout ?? this.attrTimeout;
    this.fillAttr(row, e.attr);
  }

  /**
   * A read's bytes, cut to the `size` asked. Several buffers go out in one
   * writev as they are: joining them would allocate and copy the whole reply
   * (a 1 MiB read of 64 KiB zstd:chunked chunks: sixteen parts).
   */
  private replyRead(unique: number, data: Uint8Array | readonly Uint8Array[], size: number): void {
    if (!Array.isArray(data)) {
      const buf = data as Uint8Array;
      this.native.replyData(unique, buf, 0, Math.min(buf.byteLength, size));
      return;
    }
    const parts = data as readonly Uint8Array[];
    let total = 0;
    for (const p of parts) total += p.byteLength;
    if (parts.length <= MAX_REPLY_PARTS && total <= size) this.native.replyDataVec(unique, parts);
    else this.native.replyData(unique, Buffer.concat(parts), 0, Math.min(total, size));
  }

  private replyEntry(unique: number, e: Entry | null, lookup: boolean): void {
    if (e === null) {
      if (!lookup || this.negativeTimeout <= 0) return this.error(unique, E.ENOENT);
      e = { nodeid: 0, attr: { ino: 0, mode: 0 } };
    }
    this.fillEntry(0, e);
    if (this.native.replyEntry(unique) === 0 && e.nodeid !== 0) this.ref(e.nodeid);
  }

  /** getxattr/listxattr: size 0 asks for the length; a buffer too small is ERANGE. */
  private replySized(unique: number, size: number, value: Uint8Array): void {
    if (size === 0) this.native.replyXattrSize(unique, value.byteLength);
    else if (value.byteLength > size) this.error(unique, E.ERANGE);
    else this.native.replyData(unique, value);
  }

  private readdir(unique: number, nodeid: number, plus: boolean, offset: number, size: number, b: number): void {
    const ops = this.ops;
    const max = Math.min(SCRATCH_ROWS, Math.ceil(size / (plus ? MIN_DIRENTPLUS : MIN_DIRENT)));
    if (plus && ops.readdirplus) {
      return this.answer(unique, Op.READDIRPLUS, () => ops.readdirplus!(nodeid, offset, size, this.ctx(b)), (list) => this.packPlus(unique, size, list, max));
    }
    if (ops.readdir) {
      return this.answer(unique, Op.READDIR, () => ops.readdir!(nodeid, offset, size, this.ctx(b)), (list) => this.packPlain(unique, size, list, max));
    }
    if (ops.readdirplus) {
      // Plain READDIR on a filesystem that only lists with attributes: drop them.
      return this.answer(unique, Op.READDIR, () => ops.readdirplus!(nodeid, offset, size, this.ctx(b)), (list) => this.packPlain(unique, size, list.map((d) => ({ name: d.name, offset: d.offset, ino: d.entry.attr.ino, mode: d.entry.attr.mode })), max));
    }
    this.error(unique, E.ENOSYS);
  }

  private packPlain(unique: number, size: number, list: DirEntry[], max: number): void {
    const n = Math.min(list.length, max);
    const names = new Array<string>(n);
    const s = this.scratch;
    for (let i = 0; i < n; i++) {
      const d = list[i]!;
      const o = i * ENTRY_STRIDE;
      names[i] = d.name;
      s[o + Ent.INO] = d.ino;
      s[o + Ent.MODE] = d.mode;
      s[o + Ent.DIR_OFF] = d.offset;
    }
    this.native.replyDir(unique, false, size, n, names);
  }

  private packPlus(unique: number, size: number, list: DirEntryPlus[], max: number): void {
    const n = Math.min(list.length, max);
    const names = new Array<string>(n);
    for (let i = 0; i < n; i++) {
      const d = list[i]!;
      names[i] = d.name;
      this.fillEntry(i, d.entry);
      this.scratch[i * ENTRY_STRIDE + Ent.DIR_OFF] = d.offset;
    }
    const sent = this.native.replyDir(unique, true, size, n, names);
    // The kernel took a lookup reference for each entry it got, except . and .. and node id 0.
    for (let i = 0; i < sent; i++) {
      const d = list[i]!;
      if (d.entry.nodeid !== 0 && !isDot(d.name)) this.ref(d.entry.nodeid);
    }
  }

  // --- Lookup references ---------------------------------------------------------

  private ref(nodeid: number): void {
    this.refs.set(nodeid, (this.refs.get(nodeid) ?? 0) + 1);
  }

  private forget(nodeid: number, nlookup: number): void {
    const left = (this.refs.get(nodeid) ?? 0) - nlookup;
    if (left > 0) this.refs.set(nodeid, left);
    else this.refs.delete(nodeid);
    try {
      this.ops.forget?.(nodeid, nlookup);
    } catch (err) {
      // No reply to carry an error; the other forgets of a batch still count.
      this.opts.onError?.(err, 'FORGET');
    }
  }

  // --- Kept connections (a keeper process holds the fd; see src/fuse/keeper.ts) -----

  /**
   * Serves a live connection (fd inherited from a keeper) like adopt(), but
   * records every request read in the in-flight journal `journalFd` until it
   * is answered, and first answers the live entries of `orphans` (journals of
   * predecessors that died holding requests). `negotiated` undefined: INIT
   * has not been answered yet and this session answers it.
   */
  static serveKept(fd: number, ops: FuseOperations, negotiated: Negotiated | undefined, journalFd: number, orphans: readonly number[], opts: SessionOptions & { mountpoint?: string } = {}): FuseSession {
    const session = new FuseSession(loadAddon(), fd, ops, opts, opts.mountpoint, negotiated);
    // The poll the constructor started reads nothing before this turn ends:
    // the journal is in place before the first read, and the orphans'
    // requests are dispatched before any new one.
    session.native.setJournal(journalFd);
    for (const o of orphans) session.adoptJournal(o);
    return session;
  }

  /**
   * Mounts with a journal, answers INIT, raises read-ahead, and stops
   * reading: what a keeper does before it starts any server. Requests that
   * arrive before detaching are left unanswered in the journal for the first
   * server to answer. Returns the fd (still mounted) and what INIT settled.
   */
  static async mountKept(params: MountParams, journalFd: number, opts: SessionOptions = {}): Promise<{ fd: number; negotiated: Negotiated }> {
    const addon = loadAddon();
    const mountpoint = resolve(params.mountpoint);
    const fd = mountConnection(addon, { ...params, mountpoint });
    const session = new FuseSession(addon, fd, HOLD_OPS, { readdirplus: true, ...opts }, undefined, undefined);
    session.native.setJournal(journalFd);
    try {
      const negotiated = await session.initialized();
      await raiseReadahead(mountpoint, opts.maxReadahead ?? MAX_WRITE);
      session.detach();
      return { fd, negotiated };
    } catch (err) {
      session.detach();
      unmountConnection(addon, mountpoint);
      await new Promise<void>((r) => close(fd, () => r()));
      throw err;
    }
  }

  /**
   * Answers the live entries of a dead predecessor's journal: requests that
   * only read are executed again (their answer is the same), the others
   * (INIT aside) get EIO, since they may have taken effect already. Each is
   * first recorded in this session's journal. Returns how many were taken.
   */
  adoptJournal(fd: number): number {
    const r = this.requests;
    let total = 0;
    for (let from = 0; from >= 0;) {
      const extras: (string | undefined)[] = [];
      const { count, next } = this.native.adoptJournal(fd, from, extras);
      for (let i = 0; i < count; i++) {
        const b = i * REQ_STRIDE;
        const opcode = r[b + Req.OPCODE]!;
        const unique = r[b + Req.UNIQUE]!;
        if (REPLAYABLE.has(opcode)) this.dispatch(opcode, unique, r[b + Req.NODEID]!, b, extras[i]);
        else this.error(unique, E.EIO);
      }
      total += count;
      from = next;
    }
    return total;
  }

  /** Requests read and not yet answered (journaled sessions only). */
  inFlight(): number {
    return this.native.journalUsed();
  }

  // --- INIT ----------------------------------------------------------------------

  private init(unique: number, major: number, minor: number, maxReadahead: number, flags: number, flags2: number): void {
    if (major !== KERNEL_MAJOR) {
      // A newer major: answer with ours and the kernel retries INIT with it; an older one cannot work.
      if (major > KERNEL_MAJOR) this.native.replyInit(unique, KERNEL_MAJOR, KERNEL_MINOR, 0, 0, 0, 0, 0, 0, 0, 0);
      else this.error(unique, E.EPROTO);
      return;
    }
    const plus = this.opts.readdirplus ?? this.ops.readdirplus !== undefined;
    const wanted = InitFlag.ASYNC_READ | InitFlag.PARALLEL_DIROPS | InitFlag.CACHE_SYMLINKS | InitFlag.MAX_PAGES
      | InitFlag.NO_OPEN_SUPPORT | InitFlag.NO_OPENDIR_SUPPORT | InitFlag.EXPLICIT_INVAL_DATA
      | (plus ? InitFlag.DO_READDIRPLUS : 0);
    const maxBackground = this.opts.maxBackground ?? 64;
    const n: Negotiated = {
      major: KERNEL_MAJOR,
      minor: Math.min(minor, KERNEL_MINOR),
      flags: (flags & wanted) >>> 0,
      flags2: 0,
      maxReadahead: Math.min(maxReadahead, this.opts.maxReadahead ?? MAX_WRITE),
      maxWrite: MAX_WRITE,
      maxPages: MAX_PAGES,
      maxBackground,
      congestionThreshold: Math.floor(maxBackground * 3 / 4),
      timeGran: 1,
    };
    void flags2;
    const rc = this.native.replyInit(unique, n.major, n.minor, n.maxReadahead, n.flags, n.flags2, n.maxBackground, n.congestionThreshold, n.maxWrite, n.timeGran, n.maxPages);
    if (rc !== 0) {
      for (const w of this.initWaiters.splice(0)) w.reject(new Error(`INIT reply failed (errno ${rc})`));
      return;
    }
    this.negotiatedParams = n;
    for (const w of this.initWaiters.splice(0)) w.resolve(n);
  }
}
