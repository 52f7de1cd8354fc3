import type { LayerNode } from '../estargz/layer-index.js';
import type { Telemetry } from '../metrics/telemetry.js';
import type { FetchOperation, LayerStateName } from '../metrics/store-metrics.js';
import { BackgroundFetch, type BackgroundFetchOptions } from './background-fetch.js';
import { BlobReader, type BlobReaderOptions } from './blob-reader.js';
import type { BlobFetcher, ChunkLoader, ChunkWant } from './chunk-loader.js';
import { FileReader } from './file-reader.js';
import { HeldSpans } from './held-spans.js';
import { chunksInBlobOrder, zstdRebuildPlan, type LayerContent } from './layer-content.js';
import { LayerStatus } from './layer-status.js';
import { Prefetch, type PrefetchOptions } from './prefetch.js';
import type { LayerIdentity, LayerVerdicts } from './cache/verdicts.js';

// The format's content and its constructors live in layer-content.ts; they are
// named here too because callers (the resolver, tests) open layers through this module.
export { estargzContent, zstdChunkedContent, type LayerContent } from './layer-content.js';

export interface LayerFetchOptions extends PrefetchOptions {
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
  content: LayerContent;
}

/** What the engine keeps for a layer beyond its chunks: remembered verdicts, and where held bytes may spill. */
export interface LayerStore {
  telemetry: Telemetry;
  verdicts: LayerVerdicts | null;
  spillDir?: string;
  /** Background ranges worth having in flight on the layer's link (its host scheduler's estimate). */
  backgroundSlots?: () => number;
}

/**
 * A resolved layer as the engine serves it. A facade over parts with one job
 * each, which it wires together and which never see the layer itself:
 * - FileReader: file reads through verified chunks, with read-ahead;
 * - BlobReader: raw blob reads (the `blob` file);
 * - Prefetch: the blob's first bytes, fetched before reads ask;
 * - BackgroundFetch: the rest of the layer, and the whole-layer check (blob
 *   digest and diffID, which the reference store never checks), given the
 *   chunk list and the chunk loader;
 * - HeldSpans: readers' compressed bytes kept for that check;
 * - LayerStatus: the layer's state and fetched bytes, for status and metrics.
 * What they share is kept here: when a reader was last served, and the
 * layer's chunks in blob order (listed once, on first need).
 */
export class EngineLayer {
  private closed = false;
  /** When a foreground read (file or blob) was last asked for (Date.now() units): background fetch waits for quiet. */
  private lastForeground = 0;
  private chunkList: ChunkWant[] | undefined;
  private readonly status: LayerStatus;
  private readonly files: FileReader;
  private readonly blobReader: BlobReader;
  private readonly prefetcher: Prefetch;
  private readonly background: BackgroundFetch;
  /** Readers' compressed bytes, kept until the whole-layer check has gone past them (none when there is no background fetch). */
  private readonly held: HeldSpans | undefined;

  constructor(
    readonly params: LayerParams,
    loader: ChunkLoader,
    private readonly opts: LayerFetchOptions,
    store: LayerStore,
  ) {
    const { id, content } = params;
    const { log, metrics } = store.telemetry;
    const chunks = (): ChunkWant[] => (this.chunkList ??= chunksInBlobOrder(content.index));
    if (!opts.noBackgroundFetch) this.held = new HeldSpans(opts.background.heldMemoryBytes, store.spillDir, id, log);
    this.files = new FileReader(id, loader, chunks, metrics);
    this.blobReader = new BlobReader(params.fetcher, params.blobDigest, opts.blobReader, (o, e, data) => {
      this.noteFetched(o, e, 'blob');
      this.held?.hold(o, data);
    }, log, metrics);
    this.prefetcher = new Prefetch({
      layer: id,
      log,
      hint: content.index.prefetch,
      payloadEnd: content.payloadEnd,
      loader,
      chunks,
      onStart: () => this.status.set('prefetching'),
      // Back to what background fetch last said: a stopped run's 'incomplete' outlives the prefetch.
      onEnd: () => {
        if (this.status.state === 'prefetching') this.status.set(this.background.state === 'incomplete' ? 'incomplete' : 'lazy');
      },
    }, opts);
    const identity: LayerIdentity = {
      blobDigest: params.blobDigest,
      ...(content.tocDigest !== undefined && { tocDigest: content.tocDigest }),
      ...(params.diffID !== undefined && { diffID: params.diffID }),
    };
    const verdicts = store.verdicts;
    this.background = new BackgroundFetch({
      layer: id,
      log,
      metrics,
      blobDigest: params.blobDigest,
      diffID: params.diffID,
      ...(content.format === 'zstd:chunked' && { rebuild: () => zstdRebuildPlan(content, id) }),
      fetcher: params.fetcher,
      loader,
      chunks,
      lastForeground: () => this.lastForeground,
      onFetched: (o, e, op) => this.noteFetched(o, e, op),
      ...(this.held && { held: this.held }),
      ...(store.backgroundSlots && { parallelism: store.backgroundSlots }),
      ...(verdicts && {
        remembered: () => verdicts.has(identity),
        remember: () => verdicts.record(identity),
      }),
    }, opts.background, (state, reason) => this.status.followBackground(state, reason));
    this.status = new LayerStatus(id, params.fetcher.size, metrics);
  }

  get size(): number {
    return this.params.fetcher.size;
  }

  get state(): LayerStateName {
    return this.status.state;
  }

  /** Why the layer failed, or why its background fetch stopped short. */
  get failureReason(): string | undefined {
    return this.status.failureReason;
  }

  get fetchedBytes(): number {
    return this.status.fetchedBytes;
  }

  get prefetchBytes(): number {
    return this.status.prefetchBytes;
  }

  /** Offered every range a reader fetched: held for the whole-layer check (background fetch's own ranges are not). */
  hold(offset: number, data: Buffer, op: FetchOperation): boolean | Promise<void> {
    return op !== 'background' && (this.held?.hold(offset, data) ?? false);
  }

  /** Called for every compressed range this layer fetched. */
  noteFetched(offset: number, end: number, op: FetchOperation): void {
    this.status.noteFetched(offset, end, op);
  }

  /** Reads file bytes [offset, offset + length), every byte from a verified chunk. */
  readFile(node: LayerNode, offset: number, length: number, path: string = node.path): Promise<Buffer> {
    this.lastForeground = Date.now();
    return this.files.read(node, offset, length, path);
  }

  /** The same bytes as readFile, as the verified chunks' pieces in order (not joined: see FileReader.readParts). */
  readFileParts(node: LayerNode, offset: number, length: number, path: string = node.path): Promise<Buffer[]> {
    this.lastForeground = Date.now();
    return this.files.readParts(node, offset, length, path);
  }

  /** Reads raw compressed bytes of the blob (the `blob` file). */
  readBlob(offset: number, length: number): Promise<Buffer> {
    this.lastForeground = Date.now();
    return this.blobReader.read(offset, length);
  }

  /** readBlob's bytes as the pieces of the blocks that hold them, in order (not joined: see BlobReader.readParts). */
  readBlobParts(offset: number, length: number): Promise<Buffer[]> {
    this.lastForeground = Date.now();
    return this.blobReader.readParts(offset, length);
  }

  /** The prefetch range: the landmark's, none, or `prefetch_size` bytes. */
  prefetchEnd(): number {
    return this.prefetcher.end();
  }

  /** Fetches and decodes every chunk in the prefetch range (once; later calls share the run). */
  prefetch(): Promise<void> {
    return this.prefetcher.start();
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

  /** Stops background work and drops the layer's metrics. */
  async close(): Promise<void> {
    this.closed = true;
    await this.background.close();
    await this.held?.close();
    this.status.close();
  }
}
