import { mkdir, open as openFile, readdir, readFile, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../log/logger.js';
import type { StoreMetrics } from '../../metrics/store-metrics.js';
import type { Telemetry } from '../../metrics/telemetry.js';
import { ActivityClock } from '../activity.js';
import { decodeIndex, encodeIndex, RECORD_HEADER_BYTES, recordHeader, scanPack, type PackRecord } from './pack-format.js';
import { Sha256Hasher } from './sha256.js';

/**
 * Errors that mean "this disk cannot hold the cache": go memory-only instead
 * of failing reads. ENOENT on a write means the cache directory was removed
 * under the store.
 */
const DISK_UNUSABLE = new Set(['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS', 'EIO', 'ENOTDIR', 'ENOENT']);
/**
 * Writes wait until the store has been idle (no requests, no chunks
 * arriving) for this long… Appending to a pack is cheap, but a chunk once
 * written is read back from disk and hashed again, where one still queued is
 * served from memory: writing during a podman run (the background fetch's
 * chunks, read by the container moments later) made its run 0.05–0.1 s slower.
 */
const WRITE_DELAY_MS = 2000;
/**
 * …unless more than this many bytes wait (then the oldest are written at
 * once, down to half of it), or a write has waited MAX_WAIT_MS. The bound
 * is also the memory the queue holds.
 */
const DEFAULT_MAX_PENDING_BYTES = 32 << 20;
const MAX_WAIT_MS = 30_000;
/** Puts that come together are written together: the least time between a put and its write. */
const BATCH_DELAY_MS = 100;
/** At most this many bytes go in one write (one writev of headers and chunks). */
const BATCH_MAX_BYTES = 8 << 20;
/**
 * Puts past this many queued bytes are dropped (only a cache): past
 * maxPendingBytes the queue is written at the disk's pace, so it only grows
 * this far on a disk far slower than the registry.
 */
const MAX_QUEUE_BYTES = 256 << 20;
/** A pack is sealed (indexed, closed) at this size; smaller for a small cache, so eviction (a pack at a time) stays fine-grained. */
const PACK_MAX_BYTES = 64 << 20;
const PACK_MIN_BYTES = 256 << 10;
/** Packs opened for reading at once; idle ones beyond this are closed, least recently used first. */
const MAX_OPEN_READERS = 32;
/** A pack read from gets its mtime set to now at most this often (its place in the eviction order after a restart). */
const TOUCH_EVERY_MS = 60_000;
const PACK_NAME = /^(\d{8})\.pack$/;

export interface DiskCacheOptions {
  /** Bytes queued before writes start regardless of activity (default 32 MiB). */
  maxPendingBytes?: number;
  /** Size at which a pack is sealed (default: an eighth of the bound, 256 KiB to 64 MiB). */
  packBytes?: number;
}

interface PendingWrite {
  bytes: Buffer;
  queuedAt: number;
  /** Resolves the promises of the puts waiting for this write. */
  done: (() => void)[];
}

/** A pack file, and a handle for reading it while any get uses it. */
interface Pack {
  readonly id: number;
  readonly path: string;
  /** File length (headers and chunks) plus its index file once sealed: what it takes on disk. */
  bytes: number;
  /** Last write or read (ms since epoch), for eviction: least recently used pack first. */
  usedAt: number;
  touchedAt: number;
  evicted: boolean;
  /** Every record written to or found in it (some may have been dropped from the index since): the index's own entries, one object a chunk. */
  readonly records: Entry[];
  reader?: { fh: Promise<FileHandle>; users: number };
}

/** A chunk on disk: a pack's record, as the index holds it. */
interface Entry extends PackRecord {
  pack: Pack;
}

/** The pack being appended to. */
interface Writer {
  pack: Pack;
  fh: FileHandle;
}

/**
 * Verified plain chunks on disk, keyed by chunk digest, so identical chunks
 * are shared by every layer and image and survive a restart. Bounded in
 * bytes, least recently used pack out first.
 *
 * Chunks are appended to pack files (`<dir>/packs/<n>.pack`, format in
 * pack-format.ts), many per write. A file per chunk cost a create, a write,
 * a close and a rename each: reading every file of a layer cold took 0.94 s
 * with those files against 0.64 s without any disk writes (python image,
 * 1,190 files, 2 cores shared with FUSE and the decoders). A pack is one
 * writev per batch of chunks.
 *
 * A pack is sealed at PACK_MAX_BYTES (or on flush, which the engine does on
 * close and the daemon before a restart): its index is written (`<n>.idx`,
 * under a temporary name, renamed into place) and new chunks go to a new
 * pack. Opening the cache reads the indexes; a pack without one (the store
 * was killed) is scanned header by header up to the first record a crash
 * cut short. Nothing is fsync'd: what a power loss can leave (a short or
 * garbled pack or index) is caught on the way out, because every chunk read
 * from disk is hashed against the digest asked for (off the main thread past
 * 64 KiB, see sha256.ts). A damaged record is logged, counted
 * (`verification_failures_total{what="disk_cache"}`) and dropped from the
 * index, and the chunk is fetched again; its bytes stay in the pack until
 * the pack is evicted.
 *
 * A disk that is full or not writable (ENOSPC, EDQUOT, EROFS, EIO, …) turns
 * the cache off with one warning and drops what was queued: reads go on from
 * memory and the registry. No disk error is thrown to callers.
 *
 * Writes are behind: a put is queued (and served from the queue, from
 * memory, with no hashing) and written with others once the store has been
 * idle for WRITE_DELAY_MS, or at once while more than `maxPendingBytes`
 * wait (see drain()).
 */
export class DiskChunkCache {
  private readonly index = new Map<string, Entry>();
  private readonly packs = new Map<number, Pack>();
  private nextPackId = 1;
  private totalBytes = 0;
  private disabled: string | undefined;
  /** Queued writes, oldest first; an entry stays until its write is over, so a chunk being written is still served from here. */
  private readonly pending = new Map<string, PendingWrite>();
  private pendingBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private flushing = false;
  private writer: Writer | undefined;
  private readonly hasher: Sha256Hasher;
  private readonly log: Logger;
  private readonly metrics: StoreMetrics;
  private readonly packBytes: number;
  private readonly packDir: string;
  private readonly maxPendingBytes: number;
  /** Set while more than maxPendingBytes wait, until half of it is written. */
  private over = false;

  private constructor(readonly dir: string, readonly maxBytes: number, telemetry: Telemetry, private readonly activity: ActivityClock, opts: DiskCacheOptions) {
    this.log = telemetry.log;
    this.metrics = telemetry.metrics;
    this.hasher = new Sha256Hasher(telemetry.log);
    this.packBytes = opts.packBytes ?? Math.min(PACK_MAX_BYTES, Math.max(PACK_MIN_BYTES, Math.floor(maxBytes / 8)));
    this.packDir = join(dir, 'packs');
    this.maxPendingBytes = opts.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
  }

  /** Opens (and indexes) the cache directory; packs already there count, least recently used first out. */
  static async open(dir: string, maxBytes: number, telemetry: Telemetry, activity = new ActivityClock(), opts: DiskCacheOptions = {}): Promise<DiskChunkCache> {
    const cache = new DiskChunkCache(dir, maxBytes, telemetry, activity, opts);
    try {
      // The engine's spill files live in tmp/; what a crash left there goes now.
      await rm(join(dir, 'tmp'), { recursive: true, force: true });
      await mkdir(join(dir, 'tmp'), { recursive: true });
      await mkdir(cache.packDir, { recursive: true });
      await cache.removeOldLayout();
      await cache.loadPacks();
      await cache.evict();
    } catch (err) {
      cache.disable(err);
    }
    cache.report();
    return cache;
  }

  /** Versions before packs kept a file per chunk under `<dir>/<aa>/`: removed (in the background, it may be large), not read. */
  private async removeOldLayout(): Promise<void> {
    const old = (await readdir(this.dir)).filter((name) => /^[0-9a-f]{2}$/.test(name));
    if (!old.length) return;
    this.log.info({ dir: this.dir }, 'disk cache: removing the file-per-chunk layout of an earlier version');
    void Promise.all(old.map((name) => rm(join(this.dir, name), { recursive: true, force: true }))).catch(() => {}); // what stays is only disk space
  }

  private async loadPacks(): Promise<void> {
    const names = await readdir(this.packDir);
    const found: Pack[] = [];
    for (const name of names) {
      const id = PACK_NAME.exec(name)?.[1];
      if (id === undefined) {
        // Only the index of a pack that is there stays: an index left under its temporary name, or one whose pack is gone, goes.
        const indexOf = /^(\d{8})\.idx$/.exec(name)?.[1];
        if (indexOf === undefined || !names.includes(`${indexOf}.pack`)) await rm(join(this.packDir, name), { recursive: true, force: true });
        continue;
      }
      const pack = await this.loadPack(Number(id)).catch((err: Error) => {
        // One unreadable pack costs its chunks, not the cache: it goes, and they are fetched again when needed.
        this.log.warn({ pack: join(this.packDir, name), err: err.message }, 'disk cache: a pack could not be read; removed');
        return rm(join(this.packDir, name), { force: true }).then(() => undefined, () => undefined);
      });
      if (pack) found.push(pack);
    }
    // Oldest first, so a chunk found in two packs is indexed where it was written last.
    found.sort((a, b) => a.usedAt - b.usedAt || a.id - b.id);
    for (const pack of found) {
      this.packs.set(pack.id, pack);
      this.totalBytes += pack.bytes;
      for (const entry of pack.records) this.index.set(entry.hex, entry);
      this.nextPackId = Math.max(this.nextPackId, pack.id + 1);
    }
  }

  /** A pack's records from its index, or by scanning it when it has none (or a damaged one). */
  private async loadPack(id: number): Promise<Pack | undefined> {
    const path = this.packPath(id);
    const st = await stat(path).catch(() => undefined); // vanished since readdir
    if (!st?.isFile()) return undefined;
    const indexBuf = await readFile(this.indexPath(id)).catch(() => undefined); // no index: the pack was not sealed
    const indexed = indexBuf && decodeIndex(indexBuf);
    let records: PackRecord[];
    let sealed = false;
    if (indexed && indexed.packBytes <= st.size) {
      records = indexed.records;
      sealed = true;
    } else {
      if (indexed) this.log.warn({ pack: path, bytes: st.size, indexed: indexed.packBytes }, 'disk cache: a pack is shorter than its index says; reading its records from the pack');
      const fh = await openFile(path, 'r');
      try {
        records = (await scanPack(fh, st.size)).records;
      } finally {
        await fh.close();
      }
      if (indexBuf) await rm(this.indexPath(id), { force: true }); // damaged or for a longer pack: not to be trusted again
    }
    const pack: Pack = {
      id, path, bytes: st.size + (sealed ? indexBuf!.length : 0), usedAt: st.mtimeMs, touchedAt: st.mtimeMs, evicted: false, records: [],
    };
    for (const r of records) pack.records.push({ hex: r.hex, offset: r.offset, length: r.length, pack });
    if (!sealed && records.length) await this.writeIndex(pack, records).catch(() => {}); // sealed now, so the next open need not scan it again
    return pack;
  }

  private packPath(id: number): string {
    return join(this.packDir, `${String(id).padStart(8, '0')}.pack`);
  }

  private indexPath(id: number): string {
    return join(this.packDir, `${String(id).padStart(8, '0')}.idx`);
  }

  get enabled(): boolean {
    return this.disabled === undefined;
  }

  /** Bytes on disk: packs and their indexes. */
  get size(): number {
    return this.totalBytes;
  }

  has(digest: string): boolean {
    const hex = digest.slice(7);
    return this.enabled && (this.index.has(hex) || this.pending.has(hex));
  }

  /** The chunk's bytes if cached and intact (checked against `digest`; a damaged record is dropped and answered as a miss). Never throws. */
  async get(digest: string): Promise<Buffer | undefined> {
    const hex = digest.slice(7);
    const queued = this.pending.get(hex);
    if (queued) {
      this.metrics.cacheRequests.inc({ tier: 'disk', result: 'hit' });
      return queued.bytes;
    }
    const bytes = this.enabled ? await this.readVerified(hex, digest) : undefined;
    this.metrics.cacheRequests.inc({ tier: 'disk', result: bytes ? 'hit' : 'miss' });
    return bytes;
  }

  private async readVerified(hex: string, digest: string): Promise<Buffer | undefined> {
    const entry = this.index.get(hex);
    if (!entry) return undefined;
    const { pack } = entry;
    let read: Buffer | number;
    try {
      read = await this.readRecord(entry);
    } catch {
      // The pack is gone (removed by hand, or evicted meanwhile): nothing in it can be served.
      if (!pack.evicted) this.dropPack(pack);
      return undefined;
    }
    if (typeof read === 'number') return this.drop(hex, digest, entry, `the pack ends ${read} bytes into the chunk's ${entry.length}`);
    let hashed;
    try {
      hashed = await this.hasher.hash(read);
    } catch (err) {
      // Not the pack's fault: leave it, fetch the chunk this once.
      this.log.warn({ digest, err: (err as Error).message }, 'disk cache: could not hash a cached chunk; fetching it instead');
      return undefined;
    }
    if (hashed.hex !== hex) return this.drop(hex, digest, entry, 'sha256 differs');
    this.used(pack);
    return hashed.bytes;
  }

  /**
   * A record's bytes, or how many there were if the pack is shorter. Read
   * into memory the hasher takes as it is (shared memory for a large chunk:
   * hashed in place by its thread, see Sha256Hasher.allocate).
   */
  private async readRecord(entry: Entry): Promise<Buffer | number> {
    const fh = await this.acquireReader(entry.pack);
    try {
      const bytes = this.hasher.allocate(entry.length);
      let got = 0;
      while (got < entry.length) {
        const { bytesRead } = await fh.read(bytes, got, entry.length - got, entry.offset + got);
        if (bytesRead === 0) return got;
        got += bytesRead;
      }
      return bytes;
    } finally {
      this.releaseReader(entry.pack);
    }
  }

  private acquireReader(pack: Pack): Promise<FileHandle> {
    if (!pack.reader) {
      this.closeIdleReaders(MAX_OPEN_READERS - 1);
      const fh = openFile(pack.path, 'r');
      pack.reader = { fh, users: 0 };
      fh.catch(() => { if (pack.reader?.fh === fh) pack.reader = undefined; }); // the caller hears of the failure; the next get tries again
    }
    pack.reader.users++;
    return pack.reader.fh;
  }

  private releaseReader(pack: Pack): void {
    const reader = pack.reader;
    if (!reader) return;
    reader.users--;
    if (reader.users === 0 && pack.evicted) this.closeReader(pack);
  }

  private closeReader(pack: Pack): void {
    const reader = pack.reader;
    if (!reader) return;
    pack.reader = undefined;
    void reader.fh.then((fh) => fh.close()).catch(() => {}); // a handle that failed to open has nothing to close
  }

  /** Closes readers no get is using, least recently used packs first, until at most `keep` are open. */
  private closeIdleReaders(keep: number): void {
    const open = [...this.packs.values()].filter((p) => p.reader);
    if (open.length <= keep) return;
    for (const pack of open.filter((p) => p.reader!.users === 0).sort((a, b) => a.usedAt - b.usedAt)) {
      this.closeReader(pack);
      if (--open.length <= keep) return;
    }
  }

  /** Marks a pack used now; its mtime follows, now and then, so the order survives a restart. */
  private used(pack: Pack): void {
    const now = Date.now();
    pack.usedAt = now;
    if (now - pack.touchedAt < TOUCH_EVERY_MS) return;
    pack.touchedAt = now;
    void utimes(pack.path, now / 1000, now / 1000).catch(() => {}); // only the eviction order after a restart depends on it
  }

  /** A damaged record: counted, logged and taken out of the index (its bytes stay until the pack goes). */
  private drop(hex: string, digest: string, entry: Entry, problem: string): undefined {
    this.metrics.verificationFailures.inc({ what: 'disk_cache' });
    this.log.warn({ digest, path: entry.pack.path, offset: entry.offset, problem }, 'disk cache entry is damaged; dropped, the chunk is fetched again');
    if (this.index.get(hex) === entry) this.index.delete(hex);
    this.report();
    return undefined;
  }

  /**
   * Stores verified bytes (the caller has checked them against `digest`).
   * Resolves once they are on disk (or the write was given up); readers need
   * not wait for it.
   */
  put(digest: string, bytes: Buffer): Promise<void> {
    const hex = digest.slice(7);
    if (!this.enabled || this.index.has(hex) || bytes.length + RECORD_HEADER_BYTES > this.maxBytes) return Promise.resolve();
    this.activity.note();
    return new Promise((resolve) => {
      const queued = this.pending.get(hex);
      if (queued) {
        queued.done.push(resolve);
        return;
      }
      if (this.pendingBytes + bytes.length > MAX_QUEUE_BYTES) {
        resolve();
        return;
      }
      this.pending.set(hex, { bytes, queuedAt: performance.now(), done: [resolve] });
      this.pendingBytes += bytes.length;
      this.schedule();
    });
  }

  /** Writes everything queued now, for up to `timeoutMs` (what is left then is dropped: it is only a cache), and seals the pack being written. */
  async flush(timeoutMs = 5000): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.flushing = true;
    let deadline: NodeJS.Timeout | undefined;
    const expired = new Promise<'expired'>((resolve) => { deadline = setTimeout(() => resolve('expired'), timeoutMs); });
    try {
      while (this.pending.size || this.draining) {
        this.startDrain();
        if ((await Promise.race([this.draining, expired])) === 'expired') break;
      }
      for (const [hex, w] of this.pending) this.settle(hex, w);
      if (!this.draining) await this.seal();
    } finally {
      clearTimeout(deadline);
      this.flushing = false;
    }
  }

  /** Flushes, then closes every file the cache holds open. */
  async close(timeoutMs = 5000): Promise<void> {
    await this.flush(timeoutMs);
    for (const pack of this.packs.values()) if (pack.reader?.users === 0) this.closeReader(pack);
  }

  private schedule(): void {
    if (this.draining || this.flushing) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pendingBytes > this.maxPendingBytes) {
      this.startDrain();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.startDrain();
    }, Math.max(BATCH_DELAY_MS, WRITE_DELAY_MS - this.activity.idleMs()));
  }

  private startDrain(): void {
    // writeBatch() handles its own errors; this catch only keeps a bug from becoming an unhandled rejection.
    this.draining ??= this.drain().catch((err: unknown) => {
      this.log.error({ err: (err as Error).message }, 'disk cache: writing the queue failed');
    }).finally(() => {
      this.draining = undefined;
      if (this.pending.size && !this.flushing) this.schedule();
    });
  }

  /**
   * Writes the queue, oldest first, a batch (one writev) at a time: all of
   * it once the store is idle (or on a flush); while it is busy, only what
   * is over maxPendingBytes (down to half of it) or has waited MAX_WAIT_MS,
   * with a turn of the event loop between batches.
   */
  private async drain(): Promise<void> {
    while (this.pending.size && this.enabled) {
      const idle = this.flushing || this.activity.idleMs() >= WRITE_DELAY_MS;
      if (this.pendingBytes > this.maxPendingBytes) this.over = true;
      else if (this.pendingBytes <= this.maxPendingBytes / 2) this.over = false;
      const now = performance.now();
      const stale = (w: PendingWrite): boolean => now - w.queuedAt > MAX_WAIT_MS;
      if (!idle && !this.over && !stale(this.pending.values().next().value as PendingWrite)) return;
      if (!idle) await new Promise<void>((resolve) => setImmediate(resolve));
      // A batch fits in a pack (but for a chunk larger than a pack, which gets one of its own); busy, it takes only what is over half
      // the bound, or what has waited too long.
      const limit = Math.min(BATCH_MAX_BYTES, this.packBytes, idle ? Infinity : this.over ? this.pendingBytes - this.maxPendingBytes / 2 : Infinity);
      const batch: [string, PendingWrite][] = [];
      let bytes = 0;
      for (const item of this.pending) {
        const size = item[1].bytes.length + RECORD_HEADER_BYTES;
        if (batch.length && (bytes + size > limit || (!idle && !this.over && !stale(item[1])))) break;
        batch.push(item);
        bytes += size;
      }
      await this.writeBatch(batch, bytes);
      for (const [hex, w] of batch) this.settle(hex, w);
    }
  }

  /** Appends a batch to the pack being written (a new one when it would grow past its size), indexes it, and evicts what is over the bound. */
  private async writeBatch(batch: [string, PendingWrite][], bytes: number): Promise<void> {
    try {
      if (this.writer && this.writer.pack.bytes > 0 && this.writer.pack.bytes + bytes > this.packBytes) await this.seal();
      const writer = this.writer ?? await this.newPack();
      const { pack } = writer;
      const buffers: Buffer[] = [];
      const entries: Entry[] = [];
      let at = pack.bytes;
      for (const [hex, w] of batch) {
        buffers.push(recordHeader(hex, w.bytes.length), w.bytes);
        entries.push({ hex, offset: at + RECORD_HEADER_BYTES, length: w.bytes.length, pack });
        at += RECORD_HEADER_BYTES + w.bytes.length;
      }
      await writeAll(writer.fh, buffers, pack.bytes);
      pack.bytes = at;
      pack.usedAt = Date.now();
      this.totalBytes += bytes;
      for (const entry of entries) {
        pack.records.push(entry);
        this.index.set(entry.hex, entry);
      }
      if (pack.bytes >= this.packBytes) await this.seal();
      await this.evict();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (DISK_UNUSABLE.has(code)) {
        this.disable(err);
        return;
      }
      this.log.warn({ err: (err as Error).message }, 'disk cache write failed');
      // Where the pack ends is not known now: what it holds stays indexed, new chunks go to a new pack.
      await this.seal().catch(() => {});
    }
    this.report();
  }

  private async newPack(): Promise<Writer> {
    const id = this.nextPackId++;
    const now = Date.now();
    const pack: Pack = { id, path: this.packPath(id), bytes: 0, usedAt: now, touchedAt: now, evicted: false, records: [] };
    const fh = await openFile(pack.path, 'wx');
    this.packs.set(id, pack);
    this.writer = { pack, fh };
    return this.writer;
  }

  /** Closes the pack being written and writes its index; the next chunk starts a new pack. */
  private async seal(): Promise<void> {
    const writer = this.writer;
    if (!writer) return;
    this.writer = undefined;
    await writer.fh.close().catch(() => {}); // every write on it is over; a failed close loses nothing the index needs
    if (writer.pack.evicted) return;
    if (!writer.pack.bytes) {
      this.packs.delete(writer.pack.id);
      await unlink(writer.pack.path).catch(() => {}); // an empty pack is only a name; left, the next open skips it
      return;
    }
    try {
      const { pack } = writer;
      await this.writeIndex(pack, pack.records.filter((entry) => this.index.get(entry.hex) === entry));
    } catch (err) {
      // Not fatal: the next open scans the pack instead.
      this.log.warn({ err: (err as Error).message, pack: writer.pack.path }, 'disk cache: could not write a pack index');
    }
  }

  /** Writes a pack's index (the records of it still indexed) and counts it in the pack's size. */
  private async writeIndex(pack: Pack, records: PackRecord[]): Promise<void> {
    const encoded = encodeIndex(records, pack.bytes);
    const tmp = `${this.indexPath(pack.id)}.tmp`;
    await writeFile(tmp, encoded);
    await rename(tmp, this.indexPath(pack.id));
    pack.bytes += encoded.length;
    if (this.packs.has(pack.id)) this.totalBytes += encoded.length;
  }

  /** Least recently used packs out until the cache is within its bound (the pack being written last). */
  private async evict(): Promise<void> {
    while (this.totalBytes > this.maxBytes) {
      let oldest: Pack | undefined;
      for (const pack of this.packs.values()) {
        if (pack === this.writer?.pack) continue;
        if (!oldest || pack.usedAt < oldest.usedAt) oldest = pack;
      }
      if (!oldest) {
        if (!this.writer) return;
        oldest = this.writer.pack;
        await this.seal();
      }
      this.dropPack(oldest);
      await Promise.all([unlink(oldest.path), unlink(this.indexPath(oldest.id))].map((p) => p.catch(() => {}))); // already gone is the outcome wanted
    }
  }

  /** Takes a pack and every chunk in it out of the index (its files are the caller's to remove). */
  private dropPack(pack: Pack): void {
    if (!this.packs.delete(pack.id)) return;
    pack.evicted = true;
    this.totalBytes -= pack.bytes;
    for (const entry of pack.records) if (this.index.get(entry.hex) === entry) this.index.delete(entry.hex);
    if (!pack.reader?.users) this.closeReader(pack);
    this.report();
  }

  /** Takes a write off the queue (once: a flush that timed out may have dropped it meanwhile) and answers its puts. */
  private settle(hex: string, w: PendingWrite): void {
    if (this.pending.get(hex) !== w) return;
    this.pending.delete(hex);
    this.pendingBytes -= w.bytes.length;
    for (const d of w.done) d();
  }

  /** Turns the cache off for good (this run): one warning, the queue dropped (its puts answered), files left as they are. */
  private disable(err: unknown): void {
    if (this.disabled !== undefined) return;
    this.disabled = (err as Error).message ?? String(err);
    this.log.warn({ dir: this.dir, code: (err as NodeJS.ErrnoException).code, err: this.disabled }, 'disk cache unusable; continuing with the memory cache only');
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const [hex, w] of this.pending) this.settle(hex, w);
    const writer = this.writer;
    this.writer = undefined;
    void writer?.fh.close().catch(() => {}); // nothing more goes to it
    for (const pack of this.packs.values()) if (!pack.reader?.users) this.closeReader(pack);
    this.index.clear();
    this.report();
  }

  private report(): void {
    this.metrics.cacheBytes.set({ tier: 'disk' }, this.enabled ? this.totalBytes : 0);
    this.metrics.cacheEntries.set({ tier: 'disk' }, this.index.size);
  }
}

/**
 * Writes every buffer at `position`, in as few calls as the kernel allows
 * (one writev for a batch; each call is a turn of a busy event loop).
 */
async function writeAll(fh: FileHandle, buffers: Buffer[], position: number): Promise<void> {
  let rest = buffers;
  let at = position;
  while (rest.length) {
    const { bytesWritten } = await fh.writev(rest, at);
    at += bytesWritten;
    let skip = bytesWritten;
    const next: Buffer[] = [];
    for (const b of rest) {
      if (skip >= b.length) {
        skip -= b.length;
        continue;
      }
      next.push(skip ? b.subarray(skip) : b);
      skip = 0;
    }
    if (next.length && bytesWritten === 0) throw Object.assign(new Error('disk cache: a write made no progress'), { code: 'EIO' });
    rest = next;
  }
}
