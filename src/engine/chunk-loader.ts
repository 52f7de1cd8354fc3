import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { EstargzError, type EstargzErrorCode } from '../estargz/errors.js';
import type { Chunk } from '../estargz/layer-index.js';
import type { FetchOperation } from '../metrics/store-metrics.js';
import type { Telemetry } from '../metrics/telemetry.js';
import { InFlight } from '../util/in-flight.js';
import type { DecodeFailure } from '../../workers/decode-types.js';
import type { DiskChunkCache } from './cache/disk-cache.js';
import type { MemoryChunkCache } from './cache/memory-cache.js';
import type { DecodeItem, DecodeOutput, DecodePool, Priority } from './decode-pool.js';
import { EngineError } from './errors.js';
import { cutRequests, groupRequests, planSpans, type Span } from './plan.js';

/** What the engine needs of a blob in a registry (RemoteBlob has it). */
export interface BlobFetcher {
  readonly size: number;
  /** `operation` labels the requests in the registry traffic metrics. */
  readRanges(ranges: readonly { offset: number; length: number }[], signal?: AbortSignal, operation?: FetchOperation): Promise<Buffer[]>;
  /**
   * The same, saying of each buffer whether it is the caller's alone (its
   * whole ArrayBuffer, held by no one else): such a buffer goes to a decode
   * worker as it is, with no copy on the main thread. A buffer in pooled
   * memory comes with `release`, called once its decode tasks are done and
   * nothing kept it (RemoteBlob's bodies: see BufferPool). Optional: without
   * it every buffer counts as shared.
   */
  readOwned?(ranges: readonly { offset: number; length: number }[], opts: { signal?: AbortSignal; operation?: FetchOperation }): Promise<{ data: Buffer; exclusive: boolean; release?: () => void }[]>;
}

export interface FetchTuning {
  /** Members closer than this are fetched as one range. */
  mergeGapBytes: number;
  /** Bytes per range (span). */
  maxSpanBytes: number;
  /** Ranges per multi-range request. */
  maxRanges: number;
  /** Bytes per request. */
  maxRequestBytes: number;
  /** Compressed bytes per decode task: small chunks are batched to amortize the worker round trip. */
  taskBytes: number;
  /** Bound on one fetch, retries included (config `[blob] fetching_timeout_sec`). */
  fetchTimeoutMs: number;
  /** On-demand reads also load this many following chunks of the same file (sequential readers). */
  readAheadChunks: number;
  /** …and the members that follow in the blob, this many bytes ahead at most when a read starts a window (files of a directory sit together). */
  readAheadBytes: number;
  /** The blob read-ahead doubles while readers read what it brought, up to this (see ReadAhead). */
  readAheadMaxBytes: number;
  /** A chunk that fails verification is fetched again this many times (a flipped or shifted range is a fault of that fetch)… */
  verifyRetries: number;
  /** …waiting this long before the first retry, doubling each time. */
  verifyRetryWaitMs: number;
}

/** The tuning the daemon's config sets (`[blob] chunk_size` as the merge gap, `fetching_timeout_sec`, `read_ahead_bytes`, `read_ahead_max_bytes`): no default here, the config table has them. */
export type FetchSettings = Pick<FetchTuning, 'mergeGapBytes' | 'fetchTimeoutMs' | 'readAheadBytes' | 'readAheadMaxBytes'>;

/** Defaults of the tuning no config key sets. */
export const DEFAULT_TUNING: Omit<FetchTuning, keyof FetchSettings> = {
  maxSpanBytes: 16 << 20,
  maxRanges: 64,
  maxRequestBytes: 32 << 20,
  taskBytes: 1 << 20,
  readAheadChunks: 2,
  verifyRetries: 3,
  verifyRetryWaitMs: 100,
};

/** A chunk to load, and the file it belongs to (for error messages). */
export interface ChunkWant {
  chunk: Chunk;
  path: string;
}

export interface LoaderDeps {
  log: Telemetry['log'];
  metrics: Telemetry['metrics'];
  fetcher: BlobFetcher;
  pool: DecodePool;
  memory: MemoryChunkCache;
  disk: DiskChunkCache | null;
  tuning: FetchTuning;
  /** Called with every compressed range fetched (for the layer's fetched-bytes accounting). */
  onFetched: (offset: number, end: number, op: FetchOperation) => void;
  /**
   * Offered every compressed range fetched for a reader (the layer holds
   * them for its whole-layer check, see HeldSpans); true: a reference was
   * kept, so the buffer must not be transferred to a worker nor its memory
   * reused; a promise: the same until it resolves (the bytes are being
   * written out).
   */
  hold?: (offset: number, data: Buffer, op: FetchOperation) => boolean | Promise<void>;
  /** How large fetches are cut, and how many pieces are in flight at once (the host scheduler's link estimate); absent: never cut. */
  pieces?: () => { bytes: number; window: number };
  /** Label for logs. */
  layer: string;
}

/** A chunk this loader is loading: its readers wait on the promise InFlight gave out for its digest. */
interface Deferred {
  want: ChunkWant;
  resolve: (b: Buffer) => void;
  reject: (e: unknown) => void;
}

/** Copies made for decode tasks are spread: after this many bytes, the next copy waits a turn of the event loop. */
const COPY_SLICE_BYTES = 1 << 20;

const OPERATION_PRIORITY: Record<FetchOperation, Priority> = {
  on_demand: 'foreground', prefetch: 'foreground', background: 'background',
  manifest: 'foreground', footer: 'foreground', toc: 'foreground', blob: 'foreground',
};

/**
 * Copies a slice into an ArrayBuffer of its own, so it can be transferred to
 * a worker (the fetched buffer may be shared: multi-range parts, identical
 * ranges fetched once for several readers). Not zero-filled: every byte is
 * overwritten.
 */
function ownArrayBuffer(buf: Buffer, start: number, end: number): ArrayBuffer {
  const copy = Buffer.allocUnsafeSlow(end - start);
  buf.copy(copy, 0, start, end);
  return copy.buffer as ArrayBuffer;
}

/** A worker's failure as the engine reports it: the layer, the file, the chunk's offset in it and the compressed range, then the cause. */
function failureError(out: DecodeFailure, layer: string): EstargzError {
  const { offset, length } = out.compressed;
  return new EstargzError(
    out.code as EstargzErrorCode,
    `layer ${out.layer ?? layer}: ${JSON.stringify(out.path)} at file offset ${out.chunkOffset}, compressed bytes [${offset}, ${offset + length}) of the blob: ${out.message}`,
    { path: out.path, chunkOffset: out.chunkOffset, blobOffset: offset },
  );
}

/**
 * Caches are keyed by digest, and a TOC may name a digest it does not hold:
 * a lying TOC that gives a cached chunk another size would otherwise be
 * served the cached bytes, short or long, with no digest covering the rest.
 */
function sizeMismatch(want: ChunkWant, actual: number, layer: string): EngineError {
  const c = want.chunk;
  return new EngineError(
    'CHUNK_SIZE_MISMATCH',
    `layer ${layer}: chunk of ${JSON.stringify(want.path)} at file offset ${c.fileOffset} (blob offset ${c.blobOffset}) is ${c.size} bytes in the TOC, but its digest ${c.digest} names ${actual} verified bytes: the TOC is inconsistent`,
    { layer, path: want.path, fileOffset: c.fileOffset, blobOffset: c.blobOffset },
  );
}

/**
 * Turns "these chunks" into verified plain bytes with the fewest registry
 * bytes: memory cache, then disk cache, then one plan for all misses: member
 * ranges merged into spans, spans grouped into multi-range requests, each
 * span decoded in the worker pool. A chunk wanted by several readers at once
 * is loaded once (keyed by its digest). A chunk that fails verification is
 * fetched once more before its readers get the error.
 */
export class ChunkLoader {
  /** Chunks being loaded, by digest. */
  private readonly inflight = new InFlight<string, Buffer>();
  /** Pieces of cut fetches in flight (see fetchAndDecode): the layer's, whichever load they belong to. */
  private readonly pieceSlots = new FetchSlots(2);

  constructor(private readonly deps: LoaderDeps) {}

  get tuning(): FetchTuning {
    return this.deps.tuning;
  }

  /** One promise per wanted chunk, in order. */
  load(wants: readonly ChunkWant[], op: FetchOperation): Promise<Buffer>[] {
    const owned: Deferred[] = [];
    const promises = wants.map((want) => {
      const digest = want.chunk.digest;
      const hit = this.deps.memory.get(digest);
      if (hit) return hit.length === want.chunk.size ? Promise.resolve(hit) : this.refuse(want, hit.length);
      const pending = this.inflight.join(digest);
      if (pending) return this.checked(pending, want);
      const d = this.inflight.defer(digest);
      owned.push({ want, resolve: d.resolve, reject: d.reject });
      return d.promise;
    });
    // Whatever goes wrong reaches the readers (rejecting a settled promise is a no-op), never the process.
    if (owned.length) this.resolveOwned(owned, op).catch((err: unknown) => { for (const d of owned) d.reject(err); });
    return promises;
  }

  /** Counts and logs a cached chunk whose size is not the TOC's; the error goes to its readers. */
  private refusal(want: ChunkWant, actual: number): EngineError {
    this.deps.metrics.verificationFailures.inc({ what: 'chunk' });
    const err = sizeMismatch(want, actual, this.deps.layer);
    this.deps.log.error({ layer: this.deps.layer, path: want.path, fileOffset: want.chunk.fileOffset, err: err.message }, 'chunk refused');
    return err;
  }

  private refuse(want: ChunkWant, actual: number): Promise<Buffer> {
    return Promise.reject(this.refusal(want, actual));
  }

  /** A load in flight for the same digest may have been started for a chunk of another size (same digest, lying TOC). */
  private checked(pending: Promise<Buffer>, want: ChunkWant): Promise<Buffer> {
    return pending.then((b) => (b.length === want.chunk.size ? b : this.refuse(want, b.length)));
  }

  /**
   * Decodes and caches the wanted chunks whose members lie inside bytes
   * already fetched (background fetch reads the blob in order itself).
   * Chunks cached or loading already are skipped. Returns how many chunks of
   * `buf` failed verification: those are fetched again on their own (a
   * reader may be waiting for them), and the caller knows its bytes were bad.
   */
  async ingest(offset: number, buf: Buffer, wants: readonly ChunkWant[], op: FetchOperation): Promise<number> {
    const owned: Deferred[] = [];
    const done: Promise<Buffer>[] = [];
    for (const want of wants) {
      const digest = want.chunk.digest;
      if (this.isCached(digest) || this.inflight.has(digest)) continue;
      const d = this.inflight.defer(digest);
      owned.push({ want, resolve: d.resolve, reject: d.reject });
      done.push(d.promise);
    }
    if (!owned.length) return 0;
    const byMember = new Map<number, Deferred[]>();
    for (const d of owned) byMember.set(d.want.chunk.blobOffset, [...(byMember.get(d.want.chunk.blobOffset) ?? []), d]);
    const members = [...new Map(owned.map((d) => [d.want.chunk.blobOffset, { offset: d.want.chunk.blobOffset, end: d.want.chunk.blobEnd }])).values()]
      .sort((a, b) => a.offset - b.offset);
    const failed: { d: Deferred; error: EstargzError }[] = [];
    // Never transferred: the caller goes on with `buf` (background fetch hashes it next).
    await this.decodeSpan({ offset, end: offset + buf.length, members }, buf, false, byMember, op, failed);
    if (failed.length) {
      this.deps.metrics.verificationFailures.inc({ what: 'chunk' }, failed.length);
      await this.fetchAndDecode(failed.map((f) => f.d), op, 1);
    }
    await Promise.allSettled(done);
    return failed.length;
  }

  /** Whether a chunk is in a cache (no I/O for memory; the disk index is in memory too). */
  isCached(digest: string): boolean {
    return this.deps.memory.has(digest) || (this.deps.disk?.has(digest) ?? false);
  }

  /** Whether a chunk is being loaded (fetched or decoded) for someone already. */
  isLoading(digest: string): boolean {
    return this.inflight.has(digest);
  }

  private async resolveOwned(owned: Deferred[], op: FetchOperation): Promise<void> {
    const misses: Deferred[] = [];
    if (this.deps.disk) {
      // get() counts hits and misses; the index answers absent chunks without I/O.
      const found = await Promise.all(owned.map((d) => this.deps.disk!.get(d.want.chunk.digest)));
      for (const [i, d] of owned.entries()) {
        const bytes = found[i];
        if (bytes && bytes.length !== d.want.chunk.size) {
          d.reject(this.refusal(d.want, bytes.length));
        } else if (bytes) {
          if (op !== 'background') this.deps.memory.put(d.want.chunk.digest, bytes);
          d.resolve(bytes);
        } else {
          misses.push(d);
        }
      }
    } else {
      misses.push(...owned);
    }
    if (misses.length) await this.fetchAndDecode(misses, op, 0);
  }

  private async fetchAndDecode(wanted: Deferred[], op: FetchOperation, attempt: number): Promise<void> {
    const { tuning, fetcher } = this.deps;
    const failed: { d: Deferred; error: EstargzError }[] = [];
    // A zstd:chunked 'zeros' chunk is known without its frame: never fetched, only checked against its digest (in a worker).
    const zeros = wanted.filter((d) => d.want.chunk.codec === 'zeros');
    const misses = zeros.length ? wanted.filter((d) => d.want.chunk.codec !== 'zeros') : wanted;
    const known = zeros.length
      ? this.decodeGroup({ start: 0, end: 0, members: [{ offset: 0, end: 0, wants: zeros }] }, new ArrayBuffer(0), 0, op, failed)
      : Promise.resolve();
    const byMember = new Map<number, Deferred[]>();
    for (const d of misses) {
      const list = byMember.get(d.want.chunk.blobOffset);
      if (list) list.push(d);
      else byMember.set(d.want.chunk.blobOffset, [d]);
    }
    const spans = planSpans(misses.map((d) => ({ offset: d.want.chunk.blobOffset, end: d.want.chunk.blobEnd })), tuning);
    const grouped = groupRequests(spans, tuning);
    // On a slow link a large fetch goes as pieces in blob order, a few in flight, each decoded as it arrives (see HostScheduler.pieces).
    const cut = this.deps.pieces?.() ?? { bytes: Infinity, window: 1 };
    const requests = cut.bytes < Infinity ? cutRequests(grouped, cut.bytes) : grouped;
    const queued = requests.length > grouped.length;
    if (queued) this.pieceSlots.resize(cut.window);
    await Promise.all([known, ...requests.map(async (request, i) => {
      let fetched: { data: Buffer; exclusive: boolean; release?: () => void }[];
      const ranges = request.map((s) => ({ offset: s.offset, length: s.end - s.offset }));
      // The first piece goes at once (it holds what a reader waits for); the others queue behind the
      // layer's earlier pieces, so that read-ahead arrives in blob order. A slot is held while its
      // piece is fetched, not while it decodes: the next piece is on the wire meanwhile.
      const slot = queued && i > 0;
      if (slot) await this.pieceSlots.take();
      const signal = AbortSignal.timeout(tuning.fetchTimeoutMs);
      try {
        // The registry client counts the requests (its traffic hook); `op` labels them.
        fetched = fetcher.readOwned
          ? await fetcher.readOwned(ranges, { signal, operation: op })
          : (await fetcher.readRanges(ranges, signal, op)).map((data) => ({ data, exclusive: false }));
      } catch (err) {
        for (const span of request) for (const m of span.members) for (const d of byMember.get(m.offset) ?? []) d.reject(err);
        return;
      } finally {
        if (slot) this.pieceSlots.give();
      }
      for (const [i, span] of request.entries()) {
        const { data, exclusive, release } = fetched[i]!;
        this.deps.onFetched(span.offset, span.end, op);
        const kept = this.deps.hold?.(span.offset, data, op) ?? false;
        // decodeSpan returns once every decode task reading `data` is over.
        await this.decodeSpan(span, data, exclusive && kept === false, byMember, op, failed);
        // Pooled memory goes back once nothing reads it: now, or once the held bytes are written out; never if held in memory.
        if (release && kept === false) release();
        else if (release && kept instanceof Promise) void kept.then(release);
      }
    })]);
    if (failed.length === 0) return;
    this.deps.metrics.verificationFailures.inc({ what: 'chunk' }, failed.length);
    const { verifyRetries, verifyRetryWaitMs } = tuning;
    if (attempt < verifyRetries) {
      // Bytes that fail their digest are a fault of that fetch (a flipped, shifted or stale range):
      // fetched again after a pause, as a 5xx would be, before any reader sees an error.
      const waitMs = verifyRetryWaitMs * 2 ** attempt;
      this.deps.log.warn({ layer: this.deps.layer, chunks: failed.length, attempt: attempt + 1, waitMs, first: failed[0]!.error.message }, 'chunks failed verification; fetching them again');
      await sleep(waitMs);
      await this.fetchAndDecode(failed.map((f) => f.d), op, attempt + 1);
    } else {
      this.deps.log.error({ layer: this.deps.layer, attempts: attempt + 1, err: failed[0]!.error.message }, 'chunk failed verification on every attempt; the read fails');
      for (const f of failed) f.d.reject(f.error);
    }
  }

  /**
   * Decodes every wanted chunk of a fetched span, in tasks of about
   * `taskBytes` compressed bytes. Shared memory goes to the workers as it
   * is. Otherwise each task needs an ArrayBuffer of its own (it is
   * transferred to a worker): a buffer that is the caller's alone and makes
   * one task goes as it is; otherwise each task's bytes are copied,
   * a turn of the event loop between copies of more than COPY_SLICE_BYTES,
   * so that a large span does not hold the main thread (FUSE replies) for
   * one long copy.
   */
  private async decodeSpan(span: Span, buf: Buffer, exclusive: boolean, byMember: Map<number, Deferred[]>, op: FetchOperation, failed: { d: Deferred; error: EstargzError }[]): Promise<void> {
    const groups: Group[] = [];
    for (const m of span.members) {
      const wants = byMember.get(m.offset);
      if (!wants?.length) continue;
      const last = groups.at(-1);
      const rel = { offset: m.offset - span.offset, end: m.end - span.offset, wants };
      if (last && rel.end - last.start <= this.deps.tuning.taskBytes) {
        last.members.push(rel);
        last.end = rel.end;
      } else {
        groups.push({ start: rel.offset, end: rel.end, members: [rel] });
      }
    }
    // Shared memory (RemoteBlob's answers) is read by the workers where it is: no copy, no transfer.
    const shared = buf.buffer instanceof SharedArrayBuffer ? buf.buffer : undefined;
    const whole = exclusive && groups.length === 1 && groups[0]!.start === 0 && groups[0]!.end === buf.length
      && buf.byteOffset === 0 && buf.buffer.byteLength === buf.length;
    const runs: Promise<void>[] = [];
    let copied = 0;
    for (const g of groups) {
      let task: ArrayBuffer | SharedArrayBuffer;
      let base = 0;
      if (shared) {
        task = shared;
        base = buf.byteOffset + g.start;
      } else if (whole) {
        task = buf.buffer as ArrayBuffer;
      } else {
        if (copied >= COPY_SLICE_BYTES) {
          await nextTurn();
          copied = 0;
        }
        task = ownArrayBuffer(buf, g.start, g.end);
        copied += g.end - g.start;
      }
      runs.push(this.decodeGroup(g, task, base, op, failed));
    }
    await Promise.all(runs);
  }

  /** One decode task: its chunks resolved (and cached) or listed as failed. The group's bytes start at `base` in `task`. */
  private async decodeGroup(g: Group, task: ArrayBuffer | SharedArrayBuffer, base: number, op: FetchOperation, failed: { d: Deferred; error: EstargzError }[]): Promise<void> {
    const items: DecodeItem[] = g.members.map((m) => ({
      offset: base + m.offset - g.start,
      length: m.end - m.offset,
      refs: m.wants.map((d) => ({
        path: d.want.path,
        fileOffset: d.want.chunk.fileOffset,
        innerOffset: d.want.chunk.innerOffset,
        size: d.want.chunk.size,
        digest: d.want.chunk.digest,
        blobOffset: d.want.chunk.blobOffset,
        ...(d.want.chunk.codec !== undefined && { codec: d.want.chunk.codec }),
      })),
    }));
    let outputs: DecodeOutput[];
    try {
      outputs = await this.deps.pool.run(task, items, OPERATION_PRIORITY[op], this.deps.layer);
    } catch (err) {
      for (const m of g.members) for (const d of m.wants) d.reject(err);
      return;
    }
    let k = 0;
    for (const m of g.members) {
      for (const d of m.wants) {
        const out = outputs[k++]!;
        if (Buffer.isBuffer(out)) {
          const bytes = out;
          const digest = d.want.chunk.digest;
          // Background work would churn the memory cache: it goes to disk, unless there is no disk.
          if (op !== 'background' || !this.deps.disk?.enabled) this.deps.memory.put(digest, bytes);
          // Resolves once written (or given up); the disk cache handles its own errors, and no reader waits for it.
          void this.deps.disk?.put(digest, bytes);
          d.resolve(bytes);
        } else {
          failed.push({ d, error: failureError(out, this.deps.layer) });
        }
      }
    }
  }
}

/** At most `size` fetches in flight, started in the order they asked. */
class FetchSlots {
  private free: number;
  private readonly waiting: (() => void)[] = [];

  constructor(private size: number) {
    this.free = size;
  }

  /** A new size: more slots free at once; fewer, as fetches in flight end. */
  resize(size: number): void {
    const n = Math.max(1, size);
    this.free += n - this.size;
    this.size = n;
    while (this.free > 0 && this.waiting.length) {
      this.free--;
      this.waiting.shift()!();
    }
  }

  take(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  give(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}

/** Members of a span decoded as one task; offsets relative to the span. */
interface Group {
  start: number;
  end: number;
  members: { offset: number; end: number; wants: Deferred[] }[];
}
