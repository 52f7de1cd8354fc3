import type { LayerNode } from '../estargz/layer-index.js';
import type { EstargzBlob } from '../estargz/open.js';
import { logger } from '../log/logger.js';
import {
  bytesServed,
  layerFetched,
  layerPrefetched,
  layerSize,
  setLayerState,
  trackLayer,
  untrackLayer,
  type FetchOperation,
  type LayerStateName,
} from '../metrics/registry.js';
import { BackgroundFetch, type BackgroundFetchOptions, type BackgroundState } from './background-fetch.js';
import { BlobReader, type BlobReaderOptions } from './blob-reader.js';
import { EngineError } from './errors.js';
import type { BlobFetcher, ChunkLoader, ChunkWant } from './chunk-loader.js';
import { RangeSet } from './plan.js';

export interface LayerFetchOptions {
  /** Skip prefetch altogether (config `noprefetch`). */
  noPrefetch: boolean;
  /** Bytes to prefetch when the blob has no landmark (config `prefetch_size`). */
  prefetchSize: number;
  /** A prefetch still running after this long is no longer waited for (config `prefetch_timeout_sec`). */
  prefetchTimeoutMs: number;
  /** Skip background fetch (config `no_background_fetch`). */
  noBackgroundFetch: boolean;
  background: BackgroundFetchOptions;
  blobReader: BlobReaderOptions;
}

export interface LayerParams {
  /** Short label for logs and metrics (bounded cardinality: a digest prefix). */
  id: string;
  blobDigest: string;
  /** The config's diff_id for this layer: checked once the whole layer was fetched. */
  diffID?: string;
  fetcher: BlobFetcher;
  estargz: EstargzBlob;
}

/**
 * A resolved layer as the engine serves it: file reads through verified
 * chunks, raw blob reads, prefetch, background fetch and the whole-layer
 * check (blob digest and diffID, which the reference store never checks).
 */
export class EngineLayer {
  private readonly fetched = new RangeSet();
  private prefetchedBytes = 0;
  private lastForeground = 0;
  private stateName: LayerStateName = 'lazy';
  private failure: string | undefined;
  private closed = false;
  private prefetchRun: Promise<void> | undefined;
  private readonly background: BackgroundFetch;
  private readonly blobReader: BlobReader;
  private chunkList: ChunkWant[] | undefined;
  /** Blob offset up to which on-demand reads have asked for the following members. */
  private readAheadFrontier = 0;
  /** The current read-ahead step: grows while reads stay in order, back to the first step on a jump. */
  private readAheadStep = 0;
  private readonly tracked: boolean;

  constructor(
    readonly params: LayerParams,
    private readonly loader: ChunkLoader,
    private readonly opts: LayerFetchOptions,
  ) {
    this.blobReader = new BlobReader(params.fetcher, params.blobDigest, opts.blobReader, (o, e) => this.noteFetched(o, e, 'blob'));
    this.background = new BackgroundFetch({
      layer: params.id,
      blobDigest: params.blobDigest,
      diffID: params.diffID,
      fetcher: params.fetcher,
      loader,
      chunks: () => this.allChunks(),
      lastForeground: () => this.lastForeground,
      onFetched: (o, e, op) => this.noteFetched(o, e, op),
    }, opts.background, (state, reason) => this.onBackgroundState(state, reason));
    this.tracked = trackLayer(params.id);
    if (this.tracked) layerSize.set({ layer: params.id }, params.fetcher.size);
    this.setState('lazy');
  }

  get size(): number {
    return this.params.fetcher.size;
  }

  get state(): LayerStateName {
    return this.stateName;
  }

  /** Why the layer failed, or why its background fetch stopped short. */
  get failureReason(): string | undefined {
    return this.failure;
  }

  get fetchedBytes(): number {
    return this.fetched.bytes;
  }

  get prefetchBytes(): number {
    return this.prefetchedBytes;
  }

  private setState(s: LayerStateName, reason?: string): void {
    this.stateName = s;
    if (reason) this.failure = reason;
    else if (s === 'complete') this.failure = undefined;
    setLayerState(this.params.id, s);
  }

  /** Called for every compressed range this layer fetched. */
  noteFetched(offset: number, end: number, op: FetchOperation): void {
    this.fetched.add(offset, end);
    if (op === 'prefetch') this.prefetchedBytes += end - offset;
    if (this.tracked) {
      layerFetched.set({ layer: this.params.id }, this.fetched.bytes);
      layerPrefetched.set({ layer: this.params.id }, this.prefetchedBytes);
    }
  }

  /** Reads file bytes [offset, offset + length), every byte from a verified chunk. */
  async readFile(node: LayerNode, offset: number, length: number, path: string = node.path): Promise<Buffer> {
    this.lastForeground = Date.now();
    const end = Math.min(node.size, offset + length);
    if (node.type !== 'reg' || offset >= end) return Buffer.alloc(0);
    const chunks = node.chunks;
    // First chunk that ends after `offset` (chunks are in file order).
    let lo = 0;
    let hi = chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (chunks[mid]!.fileOffset + chunks[mid]!.size <= offset) lo = mid + 1;
      else hi = mid;
    }
    const wants: ChunkWant[] = [];
    let next = lo;
    for (; next < chunks.length && chunks[next]!.fileOffset < end; next++) wants.push({ chunk: chunks[next]!, path });
    const loads = this.loader.load(wants, 'on_demand');
    // Read-ahead goes in a request of its own, so that this read waits only for its own bytes;
    // it is not waited for, and its failures are not this read's.
    const extra = this.readAhead(node, next, path, wants[0]!.chunk.blobOffset, wants.at(-1)!.chunk.blobEnd);
    // Dropped on purpose: a read-ahead failure is met again, and reported, by the read that needs that chunk.
    if (extra.length) for (const p of this.loader.load(extra, 'on_demand')) p.catch(() => {});
    const datas = await Promise.all(loads);
    const parts = wants.map(({ chunk }, i) => datas[i]!.subarray(Math.max(offset, chunk.fileOffset) - chunk.fileOffset, Math.min(end, chunk.fileOffset + chunk.size) - chunk.fileOffset));
    const out = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    // The last line of defence for "no byte that no digest covers": the index guarantees that chunks tile
    // the file and the loader that each is exactly its size; a read that still comes out short is refused.
    if (out.length !== end - offset) {
      throw new EngineError('SHORT_READ', `layer ${this.params.id}: ${JSON.stringify(path)} [${offset}, ${end}) has ${out.length} verified bytes, not ${end - offset}`, { layer: this.params.id, path, fileOffset: offset });
    }
    bytesServed.inc({ kind: 'diff' }, out.length);
    return out;
  }

  /**
   * What to load along with an on-demand read: the next chunks of the same
   * file (a sequential reader wants them next), and the members after it in
   * the blob (the next files of the directory: fetching them now saves a
   * round trip each). The blob read-ahead advances in steps, topped up when
   * less than half a step is left ahead, so that a reader going file by file
   * costs one request per step, not one per file. Like the kernel's
   * read-ahead, the step starts at `readAheadBytes` and doubles (up to
   * `readAheadMaxBytes`) each time the reader comes back for more in order:
   * an unpacker or scanner walking the layer gets large requests with room to
   * overlap fetch, decode and serving, while a process that opens files here
   * and there (a container starting) only ever costs the first step.
   */
  private readAhead(node: LayerNode, nextChunk: number, path: string, readStart: number, readEnd: number): ChunkWant[] {
    const { readAheadChunks, readAheadBytes, readAheadMaxBytes } = this.loader.tuning;
    const out: ChunkWant[] = [];
    for (let i = nextChunk; i < Math.min(node.chunks.length, nextChunk + readAheadChunks); i++) {
      if (!this.loader.isCached(node.chunks[i]!.digest)) out.push({ chunk: node.chunks[i]!, path });
    }
    if (readAheadBytes <= 0) return out;
    let step = Math.max(this.readAheadStep, readAheadBytes);
    if (readStart > this.readAheadFrontier || this.readAheadFrontier - readEnd > 2 * step) {
      // A read that starts past the window, or far behind it, is a jump: a new window, first step.
      this.readAheadFrontier = readEnd;
      step = readAheadBytes;
    } else if (this.readAheadFrontier - readEnd >= step / 2) {
      return out;
    } else if (this.readAheadFrontier > readEnd) {
      // Back in order for more before the window ran out: it is being consumed, so widen it.
      step = Math.min(2 * step, Math.max(readAheadBytes, readAheadMaxBytes));
    }
    this.readAheadStep = step;
    const start = Math.max(this.readAheadFrontier, readEnd);
    const limit = readEnd + step;
    const all = this.allChunks();
    let lo = 0;
    let hi = all.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (all[mid]!.chunk.blobOffset < start) lo = mid + 1;
      else hi = mid;
    }
    let end = limit;
    for (let i = lo; i < all.length && all[i]!.chunk.blobOffset < limit; i++) {
      const c = all[i]!.chunk;
      // A small member straddling the limit (the next file of a directory) comes too, or its
      // read would wait for a fetch of its own; a large one (a big file's chunk) is left to its read.
      if (c.blobEnd > limit && c.blobEnd - c.blobOffset > readAheadBytes / 4) {
        end = c.blobOffset;
        break;
      }
      end = Math.max(end, c.blobEnd);
      if (!this.loader.isCached(c.digest)) out.push(all[i]!);
    }
    this.readAheadFrontier = end;
    return out;
  }

  /** Reads raw compressed bytes of the blob (the `blob` file). */
  async readBlob(offset: number, length: number): Promise<Buffer> {
    this.lastForeground = Date.now();
    const out = await this.blobReader.read(offset, length);
    bytesServed.inc({ kind: 'blob' }, out.length);
    return out;
  }

  /** Every chunk of every file, in blob order. */
  private allChunks(): ChunkWant[] {
    if (!this.chunkList) {
      const seen = new Set<LayerNode>();
      const list: ChunkWant[] = [];
      for (const [path, node] of this.params.estargz.index.byPath) {
        if (node.type !== 'reg' || seen.has(node)) continue;
        seen.add(node);
        for (const chunk of node.chunks) list.push({ chunk, path });
      }
      this.chunkList = list.sort((a, b) => a.chunk.blobOffset - b.chunk.blobOffset || a.chunk.innerOffset - b.chunk.innerOffset);
    }
    return this.chunkList;
  }

  /** The prefetch range: the landmark's, none, or `prefetch_size` bytes. */
  prefetchEnd(): number {
    if (this.opts.noPrefetch) return 0;
    const hint = this.params.estargz.index.prefetch;
    if (hint.kind === 'landmark') return hint.end;
    if (hint.kind === 'none') return 0;
    return Math.min(this.opts.prefetchSize, this.params.estargz.footer.tocOffset);
  }

  /** Fetches and decodes every chunk in the prefetch range (once; later calls share the run). */
  prefetch(): Promise<void> {
    this.prefetchRun ??= this.runPrefetch();
    return this.prefetchRun;
  }

  private async runPrefetch(): Promise<void> {
    const end = this.prefetchEnd();
    if (end <= 0) return;
    const wants = this.allChunks().filter((w) => w.chunk.blobOffset < end);
    if (!wants.length) return;
    this.setState('prefetching');
    const started = performance.now();
    const all = Promise.allSettled(this.loader.load(wants, 'prefetch'));
    const timedOut = Symbol('timeout');
    let timer: NodeJS.Timeout | undefined;
    const results = await Promise.race([all, new Promise<typeof timedOut>((r) => { timer = setTimeout(() => r(timedOut), this.opts.prefetchTimeoutMs); })]);
    clearTimeout(timer);
    if (results === timedOut) {
      logger.warn({ layer: this.params.id, bytes: end, ms: this.opts.prefetchTimeoutMs }, 'prefetch is taking too long; no longer waiting for it (reads fetch on demand)');
    } else {
      const failed = results.filter((r) => r.status === 'rejected');
      logger.info({ layer: this.params.id, bytes: end, chunks: wants.length, failed: failed.length, ms: Math.round(performance.now() - started) }, 'prefetch done');
    }
    if (this.stateName === 'prefetching') this.setState(this.background.state === 'incomplete' ? 'incomplete' : 'lazy');
  }

  /** Starts fetching the rest of the layer once no reader has been busy for a while. */
  startBackgroundFetch(): void {
    if (this.opts.noBackgroundFetch || this.closed) return;
    this.background.start();
  }

  /** Resolves when background fetch has finished (or immediately when it is off). */
  backgroundDone(): Promise<void> {
    return this.background.done();
  }

  /** The layer's state follows its background fetch once that has something to say. */
  private onBackgroundState(state: BackgroundState, reason?: string): void {
    if (state === 'complete') this.setState('complete');
    else if (state === 'failed') this.setState('failed', reason);
    else if (state === 'incomplete') this.setState('incomplete', reason);
    else if (this.stateName === 'incomplete') this.setState('lazy');
  }

  /** Stops background work and drops the layer's metrics. */
  async close(): Promise<void> {
    this.closed = true;
    await this.background.close();
    if (this.tracked) untrackLayer(this.params.id);
  }
}
