import { setTimeout as sleep } from 'node:timers/promises';
import { EstargzError, isEstargzError } from '../estargz/errors.js';
import { openEstargz, type EstargzBlob } from '../estargz/open.js';
import { TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from '../estargz/toc.js';
import { logger } from '../log/logger.js';
import type { RangedSource } from '../estargz/source.js';
import { fetchDuration, registryBytes, registryRequests } from '../metrics/registry.js';
import { RemoteBlob } from '../registry/blob.js';
import type { RegistryClient } from '../registry/client.js';
import { RegistryError } from '../registry/errors.js';
import { ImageResolver } from '../registry/manifest.js';
import { MediaType, type Descriptor } from '../registry/media-types.js';
import { MANIFEST_CHECKSUM_ANNOTATION } from '../zstdchunked/annotations.js';
import { isZstdChunkedError, ZstdChunkedError } from '../zstdchunked/errors.js';
import { openZstdChunked, type ZstdChunkedBlob } from '../zstdchunked/open.js';
import type { Engine } from '../engine/engine.js';
import { checkTarSplitInWorker } from '../engine/tarsplit-check.js';
import { estargzContent, zstdChunkedContent, type EngineLayer, type LayerContent } from '../engine/layer.js';
import type { LayerNode } from '../estargz/layer-index.js';
import { LayerError, wrapLayerError } from './errors.js';
import type { LayerKey } from './key.js';
import type { ImageReference } from './names.js';

/** A layer resolved for a store directory `<ref>/<digest>`. */
export interface ResolvedLayer {
  ref: ImageReference;
  refString: string;
  /** The directory's digest: the compressed layer digest (podman ≤ 5.0) or the TOC digest (podman ≥ 5.1). */
  dirDigest: string;
  keyedBy: 'layer' | 'toc';
  descriptor: Descriptor;
  /** The verified TOC digest (eStargz: the TOC's; zstd:chunked: the manifest-checksum), or undefined for an unverified layer. */
  tocDigest: string | undefined;
  /** The config's diff_id for this layer. */
  diffID: string;
  /** Length of the layer tar: eStargz's `io.containers.estargz.uncompressed-size` annotation if the image has it; zstd:chunked's from its verified tar-split. */
  uncompressedSize: number | undefined;
  format: LayerContent['format'];
  /** The index and what the engine needs of the format. */
  content: LayerContent;
  /** The layer's reads, their failures wrapped in LayerError. */
  layer: LayerReader;
  /** Blob size as the registry reports it. */
  blobSize: number;
}

export interface ResolverOptions {
  /** Give up resolving a layer after this long (default 30 s). */
  timeoutMs: number;
  /** Serve layers whose manifest has no TOC digest annotation (their TOC cannot be verified). */
  allowUnverified: boolean;
  /** A failed resolution is answered from memory for this long, then tried again. */
  failureTtlMs: number;
  /** Resolved manifests are reused this long. */
  manifestTtlMs: number;
  /** Never send multi-range requests (config `force_single_range_mode`). */
  singleRangeOnly: boolean;
}

export const DEFAULT_RESOLVER: ResolverOptions = {
  timeoutMs: 30_000,
  allowUnverified: false,
  failureTtlMs: 5_000,
  manifestTtlMs: 120_000,
  singleRangeOnly: false,
};

/** The blob as openEstargz reads it: the first read is the footer (tail), the next the TOC member. */
function measured(blob: RangedSource): RangedSource {
  let reads = 0;
  return {
    size: blob.size,
    read: async (offset, length) => {
      const operation = reads++ === 0 ? 'footer' : 'toc';
      const started = performance.now();
      const bytes = await blob.read(offset, length);
      fetchDuration.observe({ operation }, (performance.now() - started) / 1000);
      registryRequests.inc({ operation });
      registryBytes.inc({ operation }, length);
      return bytes;
    },
  };
}

/** The media type of a zstd layer (c/image writes zstd:chunked layers with it). */
export const ZSTD_LAYER_TYPE = 'application/vnd.oci.image.layer.v1.tar+zstd';

/** Reads of the footer and TOC made before a layer with a trusted TOC digest is refused. */
const TOC_READ_ATTEMPTS = 3;

/**
 * Opens the blob's footer and TOC. When the manifest vouches for the TOC (its
 * digest annotation), a footer or TOC that does not check out is first taken
 * for a fault of that fetch (a flipped or shifted range) and read again;
 * only a repeat refuses the layer.
 */
async function openTrusted(blob: RangedSource, tocDigest: string | undefined): Promise<EstargzBlob> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await openEstargz(measured(blob), tocDigest ? { tocDigest } : {});
    } catch (err) {
      const refetchable = tocDigest !== undefined && isEstargzError(err) && (err.code === 'TOC_DIGEST_MISMATCH' || err.code === 'INVALID_TOC' || err.code === 'NOT_ESTARGZ');
      if (!refetchable || attempt >= TOC_READ_ATTEMPTS) throw err;
      logger.warn({ attempt, err: (err as Error).message }, 'footer or TOC did not check out; reading it again');
      await sleep(100 * 2 ** (attempt - 1));
    }
  }
}

/**
 * Opens a zstd:chunked blob (one read of its end: manifest, tar-split,
 * footer). Its annotations always vouch for the manifest, so a manifest or
 * tar-split that does not check out is first taken for a fault of that
 * fetch and read again; only a repeat refuses the layer.
 */
async function openZstdTrusted(blob: RangedSource, annotations: Readonly<Record<string, string>> | undefined): Promise<ZstdChunkedBlob> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await openZstdChunked(measured(blob), annotations, { checkTarSplit: checkTarSplitInWorker });
    } catch (err) {
      const refetchable = isZstdChunkedError(err) && ['MANIFEST_DIGEST_MISMATCH', 'TARSPLIT_DIGEST_MISMATCH', 'INVALID_FOOTER'].includes(err.code);
      if (!refetchable || attempt >= TOC_READ_ATTEMPTS) throw err;
      logger.warn({ attempt, err: (err as Error).message }, 'zstd:chunked manifest or tar-split did not check out; reading it again');
      await sleep(100 * 2 ** (attempt - 1));
    }
  }
}

/** What the FUSE tree reads of a served layer: every failure comes out as a LayerError naming the layer and path. */
export interface LayerReader {
  readFile(node: LayerNode, offset: number, length: number, path?: string): Promise<Buffer>;
  readBlob(offset: number, length: number): Promise<Buffer>;
}

function readerOf(key: LayerKey, layer: EngineLayer): LayerReader {
  return {
    readFile: (node, offset, length, path = node.path) => layer.readFile(node, offset, length, path).catch((err: unknown) => { throw wrapLayerError('read', key, err, path); }),
    readBlob: (offset, length) => layer.readBlob(offset, length).catch((err: unknown) => { throw wrapLayerError('read', key, err, 'blob'); }),
  };
}

const GZIP_LAYER_TYPES = new Set<string>([MediaType.ociLayerGzip, MediaType.dockerLayerGzip]);

interface Entry {
  key: LayerKey;
  value: Promise<ResolvedLayer>;
  settled?: { ok: boolean; at: number; layer?: ResolvedLayer; engine?: EngineLayer; error?: string };
  uses: number;
  /** Credentials for its repository arrived since it started: a failure is tried again at the next lookup, not answered from memory. */
  retry?: boolean;
}

/** One layer as `estargz-store status` shows it. */
export interface LayerStatus {
  ref: string;
  digest: string;
  keyedBy?: 'layer' | 'toc';
  state: 'resolving' | 'lazy' | 'prefetching' | 'incomplete' | 'complete' | 'failed';
  /** Why it failed (resolution or whole-layer check). */
  reason?: string;
  size?: number;
  fetchedBytes?: number;
  fetchedPercent?: number;
  uses: number;
}

/**
 * Resolves `<ref>/<digest>` store directories to served layers: manifest
 * (cached), the layer in it (by layer digest or TOC digest), footer + TOC
 * verified against the manifest's TOC digest annotation, then an engine
 * layer with prefetch and background fetch started. Resolution is bounded in
 * time; concurrent lookups share one resolution; a failure is remembered
 * briefly so that a burst of lookups does not hammer the registry.
 */
export class LayerResolver {
  private readonly images: ImageResolver;
  /** The one registry of served layers, by LayerKey's text. */
  private readonly entries = new Map<string, Entry>();
  /** The engine layer behind each resolved layer (status and release need it; the FUSE tree does not). */
  private readonly engineLayers = new WeakMap<ResolvedLayer, EngineLayer>();

  constructor(private readonly client: RegistryClient, private readonly engine: Engine, private readonly opts: ResolverOptions = DEFAULT_RESOLVER) {
    this.images = new ImageResolver(client, opts.manifestTtlMs);
  }

  /** Failed resolutions stay visible in `status` this long, then are forgotten (podman 4.x looks up every layer of every pull). */
  static readonly FAILURE_RETENTION_MS = 10 * 60_000;
  private lastPrune = Date.now();

  private pruneFailures(): void {
    const now = Date.now();
    if (now - this.lastPrune < 30_000) return;
    this.lastPrune = now;
    for (const [key, e] of this.entries) {
      if (e.settled && !e.settled.ok && e.uses === 0 && now - e.settled.at > LayerResolver.FAILURE_RETENTION_MS) this.entries.delete(key);
    }
  }

  /** The served layer for a key: resolved once, shared by concurrent lookups; a recent failure is answered from memory. */
  resolve(key: LayerKey): Promise<ResolvedLayer> {
    this.pruneFailures();
    const hit = this.entries.get(key.toString());
    if (hit && !(hit.settled && !hit.settled.ok && (hit.retry || Date.now() - hit.settled.at > this.opts.failureTtlMs))) return hit.value;
    const entry: Entry = { key, value: this.resolveNow(key), uses: hit?.uses ?? 0 };
    entry.value.then(
      (layer) => { entry.settled = { ok: true, at: Date.now(), layer, engine: this.engineLayers.get(layer) }; },
      (err: Error) => { entry.settled = { ok: false, at: Date.now(), error: err.message }; },
    );
    entry.value.catch(() => {});
    this.entries.set(key.toString(), entry);
    return entry.value;
  }

  /**
   * New credentials for a repository (from the auth helper): its failed
   * resolutions, and those still running (they may have started without the
   * credentials), are not answered from memory; the next lookup resolves
   * afresh. podman runs the helper and looks the layer up again at once.
   * Returns how many entries that concerns.
   */
  forgetFailures(registry: string, repository: string): number {
    let n = 0;
    for (const e of this.entries.values()) {
      if (!e.key.inRepository(registry, repository) || e.settled?.ok) continue;
      e.retry = true;
      n++;
    }
    return n;
  }

  /** containers/storage created `<layer>/use`: one more user. */
  use(key: LayerKey): void {
    const e = this.entries.get(key.toString());
    if (e) e.uses++;
  }

  /**
   * containers/storage removed the layer directory: one user less. At zero
   * the layer is dropped and its memory released (the disk cache stays);
   * returns whether that happened.
   */
  async release(key: LayerKey): Promise<boolean> {
    const e = this.entries.get(key.toString());
    if (!e) return false;
    e.uses = Math.max(0, e.uses - 1);
    if (e.uses > 0) return false;
    this.entries.delete(key.toString());
    await this.closeEntry(e);
    return true;
  }

  /** A snapshot of every layer, without waiting for resolutions in progress. */
  status(): LayerStatus[] {
    return [...this.entries.values()].map((e) => {
      const { refText: ref, digest } = e.key;
      if (!e.settled) return { ref, digest, state: 'resolving', uses: e.uses };
      if (!e.settled.ok) return { ref, digest, state: 'failed', reason: e.settled.error ?? 'resolution failed', uses: e.uses };
      const l = e.settled.layer!;
      const engine = e.settled.engine!;
      const size = engine.size;
      return {
        ref, digest, keyedBy: l.keyedBy, state: engine.state, size, uses: e.uses,
        fetchedBytes: engine.fetchedBytes,
        fetchedPercent: size > 0 ? Math.round((engine.fetchedBytes / size) * 1000) / 10 : 100,
        ...(engine.failureReason && { reason: engine.failureReason }),
      };
    });
  }

  async close(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    await Promise.all(all.map((e) => this.closeEntry(e)));
  }

  private async closeEntry(e: Entry): Promise<void> {
    const resolved = await e.value.catch(() => undefined);
    if (resolved) await this.engineLayers.get(resolved)?.close();
  }

  private async resolveNow(key: LayerKey): Promise<ResolvedLayer> {
    const { digest, refText: refString } = key;
    const started = performance.now();
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error(`resolution took longer than ${this.opts.timeoutMs} ms`)), this.opts.timeoutMs);
    try {
      const result = await Promise.race([
        this.resolveSteps(key, abort.signal),
        new Promise<never>((_, reject) => abort.signal.addEventListener('abort', () => reject(new RegistryError('TIMEOUT', `resolving ${refString} ${digest}: ${(abort.signal.reason as Error).message}`)))),
      ]);
      logger.info({ ref: refString, digest, result: 'ok', keyedBy: result.keyedBy, ms: Math.round(performance.now() - started), size: result.blobSize }, 'layer resolved');
      return result;
    } catch (err) {
      logger.warn({ ref: refString, digest, result: 'failed', ms: Math.round(performance.now() - started), err: (err as Error).message }, 'layer not resolved; containers/storage falls back to a normal pull');
      throw new LayerError('resolution', key, err);
    } finally {
      clearTimeout(timer);
    }
  }

  private async resolveSteps(key: LayerKey, signal: AbortSignal): Promise<ResolvedLayer> {
    const { ref, digest, refText: refString } = key;
    const image = await this.images.manifest(ref, signal);
    // The config (for the diff_id) arrives while the footer and TOC are read.
    const config = this.images.config(ref, signal);
    config.catch(() => {});
    const layers = image.manifest.layers;
    let index = layers.findIndex((l) => l.digest === digest);
    let keyedBy: ResolvedLayer['keyedBy'] = 'layer';
    if (index < 0) {
      // podman ≥ 5.1 names the directory by the TOC digest: eStargz's TOC digest or zstd:chunked's manifest checksum.
      index = layers.findIndex((l) => l.annotations?.[TOC_DIGEST_ANNOTATION] === digest || l.annotations?.[MANIFEST_CHECKSUM_ANNOTATION] === digest);
      keyedBy = 'toc';
    }
    if (index < 0) throw new RegistryError('NOT_FOUND', `${refString} has no layer with digest or TOC digest ${digest}`);
    const descriptor = layers[index]!;
    if (descriptor.annotations?.[MANIFEST_CHECKSUM_ANNOTATION] !== undefined || descriptor.mediaType === ZSTD_LAYER_TYPE) {
      return this.resolveZstdChunked(key, keyedBy, descriptor, index, layers.length, config, signal);
    }
    if (!GZIP_LAYER_TYPES.has(descriptor.mediaType)) {
      throw new EstargzError('NOT_ESTARGZ', `layer ${descriptor.digest} of ${refString} is ${descriptor.mediaType}, not a gzip layer`);
    }
    const tocDigest = descriptor.annotations?.[TOC_DIGEST_ANNOTATION];
    if (!tocDigest && !this.opts.allowUnverified) {
      throw new EstargzError('NOT_ESTARGZ', `layer ${descriptor.digest} of ${refString} has no ${TOC_DIGEST_ANNOTATION} annotation, so its TOC cannot be verified (allow_unverified = true serves it anyway)`);
    }
    const repo = { registry: ref.registry, repository: ref.repository };
    const blob = await RemoteBlob.open(this.client, repo, descriptor.digest, { expectedSize: descriptor.size, signal, singleRangeOnly: this.opts.singleRangeOnly });
    const estargz = await openTrusted(blob, tocDigest);
    const diffIDs = (await config).config.rootfs.diff_ids;
    if (layers.length !== diffIDs.length) {
      throw new RegistryError('PROTOCOL', `${refString}: ${layers.length} layers but ${diffIDs.length} diff_ids in the config`);
    }
    signal.throwIfAborted();
    const size = Number(descriptor.annotations?.[UNCOMPRESSED_SIZE_ANNOTATION]);
    const diffID = diffIDs[index]!;
    const content = estargzContent(estargz);
    const layer = this.startLayer(descriptor, diffID, blob, content);
    return this.served(key, layer, {
      ref, refString, dirDigest: digest, keyedBy, descriptor, tocDigest, diffID,
      uncompressedSize: Number.isSafeInteger(size) && size >= 0 ? size : undefined,
      format: content.format, content, blobSize: blob.size,
    });
  }

  /** The resolved layer as the FUSE tree sees it; the engine layer stays here. */
  private served(key: LayerKey, engine: EngineLayer, fields: Omit<ResolvedLayer, 'layer'>): ResolvedLayer {
    const resolved: ResolvedLayer = { ...fields, layer: readerOf(key, engine) };
    this.engineLayers.set(resolved, engine);
    return resolved;
  }

  /** An engine layer with prefetch and background fetch started (both honour the engine's noprefetch / no_background_fetch settings). */
  private startLayer(descriptor: Descriptor, diffID: string, blob: RemoteBlob, content: LayerContent): EngineLayer {
    const layer = this.engine.openLayer({ id: descriptor.digest.slice(7, 19), blobDigest: descriptor.digest, diffID, fetcher: blob, content });
    void layer.prefetch().catch(() => {});
    layer.startBackgroundFetch();
    return layer;
  }

  /**
   * A zstd:chunked layer: media type tar+zstd with the manifest-checksum
   * annotation (and not eStargz's too: containers/storage refuses a layer
   * claiming both, and so does the store). Opened with one read of the
   * blob's end; every refusal names the layer and the part at fault.
   */
  private async resolveZstdChunked(
    key: LayerKey, keyedBy: ResolvedLayer['keyedBy'], descriptor: Descriptor, index: number, layerCount: number,
    config: ReturnType<ImageResolver['config']>, signal: AbortSignal,
  ): Promise<ResolvedLayer> {
    const { ref, digest, refText: refString } = key;
    const what = `layer ${descriptor.digest} of ${refString}`;
    if (descriptor.mediaType !== ZSTD_LAYER_TYPE) {
      throw new ZstdChunkedError('NOT_ZSTD_CHUNKED', `${what} has the ${MANIFEST_CHECKSUM_ANNOTATION} annotation but is ${descriptor.mediaType}, not ${ZSTD_LAYER_TYPE}`, { part: 'annotations' });
    }
    if (descriptor.annotations?.[MANIFEST_CHECKSUM_ANNOTATION] === undefined) {
      throw new ZstdChunkedError('NOT_ZSTD_CHUNKED', `${what} is a zstd layer without the ${MANIFEST_CHECKSUM_ANNOTATION} annotation: plain zstd, not zstd:chunked (the store serves only chunked layers)`, { part: 'annotations' });
    }
    const repo = { registry: ref.registry, repository: ref.repository };
    const blob = await RemoteBlob.open(this.client, repo, descriptor.digest, { expectedSize: descriptor.size, signal, singleRangeOnly: this.opts.singleRangeOnly });
    let zstd: ZstdChunkedBlob;
    try {
      zstd = await openZstdTrusted(blob, descriptor.annotations);
    } catch (err) {
      if (!isZstdChunkedError(err)) throw err;
      throw new Error(`${what} refused: ${err.message}`, { cause: err });
    }
    const diffIDs = (await config).config.rootfs.diff_ids;
    if (layerCount !== diffIDs.length) {
      throw new RegistryError('PROTOCOL', `${refString}: ${layerCount} layers but ${diffIDs.length} diff_ids in the config`);
    }
    signal.throwIfAborted();
    const diffID = diffIDs[index]!;
    const content = zstdChunkedContent(zstd);
    const layer = this.startLayer(descriptor, diffID, blob, content);
    return this.served(key, layer, {
      ref, refString, dirDigest: digest, keyedBy, descriptor, tocDigest: zstd.tocDigest, diffID,
      uncompressedSize: zstd.tarSize, format: content.format, content, blobSize: blob.size,
    });
  }
}
