import { randomBytes } from 'node:crypto';
import { mkdir, open as openFile, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import type { Logger } from '../../log/logger.js';
import type { StoreMetrics } from '../../metrics/store-metrics.js';
import type { Telemetry } from '../../metrics/telemetry.js';
import { ActivityClock } from '../activity.js';
import { Sha256Hasher } from './sha256.js';

const HEX_DIGEST = /^[0-9a-f]{64}$/;
/**
 * Errors that mean "this disk cannot hold the cache": go memory-only instead
 * of failing reads. ENOENT on a write means the cache directory was removed
 * under the store.
 */
const DISK_UNUSABLE = new Set(['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS', 'EIO', 'ENOTDIR', 'ENOENT']);
/** Writes wait until the store has been idle (no requests, no chunks arriving) for this long… */
const WRITE_DELAY_MS = 2000;
/**
 * …unless more than this many bytes wait (then the oldest are written at
 * once, down to half of it), or a write has waited MAX_WAIT_MS (then the
 * old ones are written, a slice at a time). The bound is also the memory
 * the queue holds: at 128 MiB, the cold pass of the soak kept that much in
 * young buffers, and the forced flush that followed (with the GC of it) was
 * a 135 ms stall.
 */
const DEFAULT_MAX_PENDING_BYTES = 32 << 20;
const MAX_WAIT_MS = 30_000;
/** Files written at once while idle or over the bound (see drain)… */
const WRITES_IN_FLIGHT = 4;
/** …and while more than twice the bound waits. */
const WRITES_IN_FLIGHT_FAR_OVER = 16;
/** A busy store's writes go in slices of this many bytes… */
const SLICE_BYTES = 2 << 20;
/** …with a turn of the event loop between slices, and this long between slices of writes that are only old (not over the bound). */
const SLICE_PAUSE_MS = 50;

export interface DiskCacheOptions {
  /** Bytes queued for writing before writes start regardless of activity (default 32 MiB). */
  maxPendingBytes?: number;
}

interface PendingWrite {
  bytes: Buffer;
  queuedAt: number;
  /** Resolves the promises of the puts waiting for this write. */
  done: (() => void)[];
}

/**
 * Verified plain chunks on disk, content-addressed by chunk digest
 * (`<dir>/<aa>/<64 hex>`), so identical chunks are shared by every layer and
 * image and survive a restart. Bounded in bytes with least-recently-used
 * eviction.
 *
 * Crash consistency. A file is written under `<dir>/tmp/` and renamed into
 * place, so a store killed mid-write leaves a temporary file (removed by the
 * next `open`), never a partial file under a digest's name. Nothing is
 * fsync'd: a killed process loses nothing the kernel already has, and what a
 * power loss could leave (a short, empty or garbled file) is caught on the
 * way out, because every read from disk is checked before it is served:
 * length against the index, then sha256 against the file's name (off the
 * main thread for chunks past 64 KiB, see sha256.ts). A damaged file is
 * logged, counted (`verification_failures_total{what="disk_cache"}`),
 * deleted and answered as a miss, so the chunk is fetched again.
 *
 * A disk that is full or not writable (ENOSPC, EDQUOT, EROFS, EIO, …) turns
 * the cache off with one warning and drops what was queued: reads go on from
 * memory and the registry. No disk error is thrown to callers.
 *
 * Writes are behind: a put is queued and written once the store has been
 * idle for WRITE_DELAY_MS (or at once, in small slices, while more than
 * `maxPendingBytes` wait, or one has waited MAX_WAIT_MS; see drain()). Creating a file
 * took about 1 ms on the benchmark VM's disk; made during a burst of reads,
 * the cache files took half the time of reading every file of a layer cold
 * (0.75 s without them against 1.6 s), on two cores shared with FUSE and the
 * decoders. Queued chunks are served from the queue, and `flush` writes them
 * out (the engine calls it on close). A pack file per fetched span would make
 * the writes themselves cheap; this only moves them out of the way.
 */
export class DiskChunkCache {
  private readonly index: LRUCache<string, number>;
  private disabled: string | undefined;
  /** Queued writes, oldest first; an entry stays until its write is over, so a chunk being written is still served from here. */
  private readonly pending = new Map<string, PendingWrite>();
  private pendingBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private flushing = false;
  private readonly hasher: Sha256Hasher;
  private readonly log: Logger;
  private readonly metrics: StoreMetrics;

  private readonly maxPendingBytes: number;

  private constructor(readonly dir: string, readonly maxBytes: number, telemetry: Telemetry, private readonly activity: ActivityClock, opts: DiskCacheOptions) {
    this.log = telemetry.log;
    this.metrics = telemetry.metrics;
    this.hasher = new Sha256Hasher(telemetry.log);
    this.maxPendingBytes = opts.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    this.index = new LRUCache<string, number>({
      maxSize: Math.max(1, maxBytes),
      sizeCalculation: (n) => Math.max(1, n),
      maxEntrySize: Math.max(1, maxBytes),
      dispose: (_size, hex, reason) => {
        // Already gone (removed by hand, or by drop()) is the outcome wanted; any other failure leaves a file the next open indexes again.
        if (reason === 'evict' || reason === 'delete') void unlink(this.pathOf(hex)).catch(() => {});
        this.report();
      },
    });
  }

  /** Opens (and indexes) the cache directory; files already there count, oldest first out. */
  static async open(dir: string, maxBytes: number, telemetry: Telemetry, activity = new ActivityClock(), opts: DiskCacheOptions = {}): Promise<DiskChunkCache> {
    const cache = new DiskChunkCache(dir, maxBytes, telemetry, activity, opts);
    try {
      // Writes a crash cut short: never renamed into place, so never indexed.
      const unfinished = await readdir(join(dir, 'tmp')).catch(() => []); // no tmp/ yet: a new cache, nothing unfinished
      if (unfinished.length) cache.log.info({ dir, files: unfinished.length }, 'disk cache: removing writes left unfinished by the last run');
      await rm(join(dir, 'tmp'), { recursive: true, force: true });
      await mkdir(join(dir, 'tmp'), { recursive: true });
      // All 256 fan-out directories up front: a put is then write + rename, no mkdir.
      await Promise.all(Array.from({ length: 256 }, (_, i) => mkdir(join(dir, i.toString(16).padStart(2, '0')), { recursive: true })));
      const found: { hex: string; size: number; mtime: number }[] = [];
      for (const sub of await readdir(dir)) {
        if (!/^[0-9a-f]{2}$/.test(sub)) continue;
        for (const name of await readdir(join(dir, sub))) {
          if (!HEX_DIGEST.test(name) || name.slice(0, 2) !== sub) continue;
          const st = await stat(join(dir, sub, name)).catch(() => undefined); // vanished since readdir: not indexed
          if (st?.isFile()) found.push({ hex: name, size: st.size, mtime: st.mtimeMs });
        }
      }
      found.sort((a, b) => a.mtime - b.mtime);
      for (const f of found) cache.index.set(f.hex, f.size);
    } catch (err) {
      cache.disable(err);
    }
    cache.report();
    return cache;
  }

  private pathOf(hex: string): string {
    return join(this.dir, hex.slice(0, 2), hex);
  }

  get enabled(): boolean {
    return this.disabled === undefined;
  }

  get size(): number {
    return this.index.calculatedSize;
  }

  has(digest: string): boolean {
    const hex = digest.slice(7);
    return this.enabled && (this.index.has(hex) || this.pending.has(hex));
  }

  /** The chunk's bytes if cached and intact (checked against `digest`; a damaged file is deleted and answered as a miss). Never throws. */
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
    const expected = this.index.peek(hex);
    if (expected === undefined) return undefined;
    const path = this.pathOf(hex);
    let read: Buffer | number;
    try {
      read = await this.readExpected(path, expected);
    } catch {
      this.index.delete(hex); // gone (removed by hand, or evicted meanwhile)
      return undefined;
    }
    if (typeof read === 'number') return this.drop(hex, digest, `${read} bytes, ${expected} expected`);
    const bytes = read;
    let hashed;
    try {
      hashed = await this.hasher.hash(bytes);
    } catch (err) {
      // Not the file's fault: leave it, fetch the chunk this once.
      this.log.warn({ digest, err: (err as Error).message }, 'disk cache: could not hash a cached chunk; fetching it instead');
      return undefined;
    }
    if (hashed.hex !== hex) return this.drop(hex, digest, 'sha256 differs');
    this.index.get(hex); // recency
    return hashed.bytes;
  }

  /**
   * A cache file's bytes, if it is `expected` bytes long (else its length).
   * Read into memory the hasher takes as it is (shared memory for a large
   * chunk: hashed in place by its thread, see Sha256Hasher.allocate), where
   * readFile made a buffer that went to the thread and came back as a
   * second ArrayBuffer.
   */
  private async readExpected(path: string, expected: number): Promise<Buffer | number> {
    const fh = await openFile(path, 'r');
    try {
      const { size } = await fh.stat();
      if (size !== expected) return size;
      const bytes = this.hasher.allocate(expected);
      let got = 0;
      while (got < expected) {
        const { bytesRead } = await fh.read(bytes, got, expected - got, got);
        if (bytesRead === 0) return got; // shrunk since the stat
        got += bytesRead;
      }
      return bytes;
    } finally {
      await fh.close();
    }
  }

  /** A damaged cache file: counted, logged, taken out of the index and deleted before the caller hears of the miss. */
  private async drop(hex: string, digest: string, problem: string): Promise<undefined> {
    const path = this.pathOf(hex);
    this.metrics.verificationFailures.inc({ what: 'disk_cache' });
    this.log.warn({ digest, path, problem }, 'disk cache file is damaged; dropped, the chunk is fetched again');
    this.index.delete(hex);
    // The index's dispose unlinks too, without waiting; this one is awaited, so the file is gone once get() answers.
    await unlink(path).catch(() => {}); // already gone is as good; a file that stays is out of the index and checked again if re-indexed
    return undefined;
  }

  /**
   * Stores verified bytes (the caller has checked them against `digest`).
   * Resolves once they are on disk (or the write was given up); readers need
   * not wait for it.
   */
  put(digest: string, bytes: Buffer): Promise<void> {
    const hex = digest.slice(7);
    if (!this.enabled || this.index.has(hex) || bytes.length > this.maxBytes) return Promise.resolve();
    this.activity.note();
    return new Promise((resolve) => {
      const queued = this.pending.get(hex);
      if (queued) {
        queued.done.push(resolve);
        return;
      }
      this.pending.set(hex, { bytes, queuedAt: performance.now(), done: [resolve] });
      this.pendingBytes += bytes.length;
      this.schedule();
    });
  }

  /** Writes everything queued now, for up to `timeoutMs`; what is left then is dropped (it is only a cache). */
  async flush(timeoutMs = 5000): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.flushing = true;
    let deadline: NodeJS.Timeout | undefined;
    const expired = new Promise<'expired'>((resolve) => { deadline = setTimeout(() => resolve('expired'), timeoutMs); });
    try {
      while (this.pending.size) {
        this.startDrain();
        if ((await Promise.race([this.draining, expired])) === 'expired') break;
      }
      for (const [hex, w] of this.pending) this.settle(hex, w);
    } finally {
      clearTimeout(deadline);
      this.flushing = false;
    }
  }

  private schedule(): void {
    if (this.draining) return;
    if (this.pendingBytes > this.maxPendingBytes) {
      this.startDrain();
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.startDrain();
    }, Math.max(10, WRITE_DELAY_MS - this.activity.idleMs()));
  }

  private startDrain(): void {
    // write() handles its own errors; this catch only keeps a bug from becoming an unhandled rejection.
    this.draining ??= this.drain().catch((err: unknown) => {
      this.log.error({ err: (err as Error).message }, 'disk cache: writing the queue failed');
    }).finally(() => {
      this.draining = undefined;
      if (this.pending.size && !this.flushing) this.schedule();
    });
  }

  /**
   * Writes queued chunks, oldest first. Idle (or flushing), everything goes;
   * busy, only what is over the bound (down to half of it) or has waited too
   * long, in slices of SLICE_BYTES: a turn of the event loop between slices
   * when over the bound (memory must come down), a pause of SLICE_PAUSE_MS
   * when the writes are only old. So a forced flush is many small steps
   * among the reads, not one long burst. Idle or over the bound, several
   * files are written at once (WRITES_IN_FLIGHT, more when far over): one
   * at a time, each file's steps (open, write, close, rename) waited for
   * their turns of a busy event loop, and the cold pass of the soak queued
   * chunks faster than that (350 MiB waited at its end, though the disk
   * takes 280 MiB/s). Dropping puts past a cap instead cost fetches: chunks
   * read ahead were dropped and fetched again (with a cap of 4 × 32 MiB, the
   * soak's warm phase fetched 300–560 MiB that had been read cold).
   */
  private async drain(): Promise<void> {
    let over = false;
    let slice = 0;
    /** Writes started and not over, and their bytes (still in pendingBytes until settled, but no longer waiting). */
    const writing = new Set<Promise<void>>();
    let writingBytes = 0;
    try {
      for (const [hex, w] of this.pending) {
        let idle: boolean;
        for (;;) {
          idle = this.flushing || this.activity.idleMs() >= WRITE_DELAY_MS;
          const waiting = this.pendingBytes - writingBytes;
          if (waiting > this.maxPendingBytes) over = true;
          else if (waiting <= this.maxPendingBytes / 2) {
            // Down to half once the writes under way are over: puts may have come meanwhile, so look again then.
            if (over && !idle && writing.size > 0) {
              await Promise.race(writing);
              continue;
            }
            over = false;
          }
          break;
        }
        const waitedTooLong = performance.now() - w.queuedAt > MAX_WAIT_MS;
        if (!idle && !over && !waitedTooLong) return;
        if (slice >= SLICE_BYTES) {
          slice = 0;
          if (idle || over) await new Promise<void>((resolve) => setImmediate(resolve));
          else await new Promise<void>((resolve) => setTimeout(resolve, SLICE_PAUSE_MS));
        }
        // The entry may have been settled meanwhile (a flush that timed out, the cache turned off).
        if (this.pending.get(hex) !== w) continue;
        const size = w.bytes.length;
        const done: Promise<void> = (this.enabled ? this.write(hex, w.bytes) : Promise.resolve()).then(() => {
          writing.delete(done);
          writingBytes -= size;
          this.settle(hex, w);
        });
        writing.add(done);
        writingBytes += size;
        slice += size;
        const farOver = this.pendingBytes - writingBytes > 2 * this.maxPendingBytes;
        while (writing.size >= (farOver ? WRITES_IN_FLIGHT_FAR_OVER : idle || over ? WRITES_IN_FLIGHT : 1)) await Promise.race(writing);
      }
    } finally {
      await Promise.all(writing);
    }
  }

  /** Takes a write off the queue (once: a flush that timed out may have dropped it meanwhile) and answers its puts. */
  private settle(hex: string, w: PendingWrite): void {
    if (this.pending.get(hex) !== w) return;
    this.pending.delete(hex);
    this.pendingBytes -= w.bytes.length;
    for (const d of w.done) d();
  }

  private async write(hex: string, bytes: Buffer): Promise<void> {
    const tmp = join(this.dir, 'tmp', `${hex}.${randomBytes(6).toString('hex')}`);
    try {
      await writeWhole(tmp, bytes);
      await rename(tmp, this.pathOf(hex));
      this.index.set(hex, bytes.length);
    } catch (err) {
      await unlink(tmp).catch(() => {}); // may not exist (writeFile failed to create it); the next open clears tmp/ anyway
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (DISK_UNUSABLE.has(code)) this.disable(err);
      else this.log.warn({ err: (err as Error).message, hex }, 'disk cache write failed');
    }
  }

  /** Turns the cache off for good (this run): one warning, the queue dropped (its puts answered), files left as they are. */
  private disable(err: unknown): void {
    if (this.disabled !== undefined) return;
    this.disabled = (err as Error).message ?? String(err);
    this.log.warn({ dir: this.dir, code: (err as NodeJS.ErrnoException).code, err: this.disabled }, 'disk cache unusable; continuing with the memory cache only');
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const [hex, w] of this.pending) this.settle(hex, w);
  }

  private report(): void {
    this.metrics.cacheBytes.set({ tier: 'disk' }, this.index.calculatedSize);
    this.metrics.cacheEntries.set({ tier: 'disk' }, this.index.size);
  }
}

/**
 * Writes a new file in as few steps as the kernel allows (one write call
 * for the whole chunk where writeFile makes one per 512 KiB): each step is a
 * turn of the event loop, and a busy loop makes turns slow.
 */
async function writeWhole(path: string, bytes: Buffer): Promise<void> {
  const fh = await openFile(path, 'w');
  try {
    for (let at = 0; at < bytes.length;) {
      const { bytesWritten } = await fh.write(bytes, at, bytes.length - at, at);
      at += bytesWritten;
    }
  } finally {
    await fh.close();
  }
}
