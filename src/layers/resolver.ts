import type { Logger } from '../log/logger.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { EstargzError, isEstargzError } from '../estargz/errors.js';
import { DEFAULT_TAIL_BYTES, openEstargz, type EstargzBlob } from '../estargz/open.js';
import { DIGEST_PATTERN, TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from '../estargz/toc.js';
import type { RangedSource } from '../estargz/source.js';
import { readBlobTail, RemoteBlob } from '../registry/blob.js';
import type { RegistryClient } from '../registry/client.js';
import { RegistryError } from '../registry/errors.js';
import { ImageResolver } from '../registry/manifest.js';
import { MediaType, type Descriptor } from '../registry/media-types.js';
import { MANIFEST_CHECKSUM_ANNOTATION } from '../zstdchunked/annotations.js';
import { isZstdChunkedError, ZstdChunkedError } from '../zstdchunked/errors.js';
import { openZstdChunked, type TarSplitChecker, type ZstdChunkedBlob } from '../zstdchunked/open.js';
import type { Engine } from '../engine/engine.js';
import { estargzContent, zstdChunkedContent, type EngineLayer, type LayerContent } from '../engine/layer.js';
import type { LayerOpener, OpenedLayer } from './manager.js';
import { readerOf, type LayerReader } from './reader.js';
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
  /** Resolved manifests are reused this long. */
  manifestTtlMs: number;
  /** Never send multi-range requests (config `force_single_range_mode`). */
  singleRangeOnly: boolean;
}

export const DEFAULT_RESOLVER: ResolverOptions = {
  timeoutMs: 30_000,
  allowUnverified: false,
  manifestTtlMs: 120_000,
  singleRangeOnly: false,
};

/**
 * The blob as the format's opener reads it: the first read is the footer
 * (tail), the next the TOC member. Each read is labelled so that the registry
 * client's traffic hook counts its requests, like every other registry
 * request (src/metrics/traffic.ts): nothing is counted here.
 */
function measured(blob: RemoteBlob, tailRead = false): RangedSource {
  let reads = tailRead ? 1 : 0;
  return { size: blob.size, read: (offset, length) => blob.read(offset, length, undefined, reads++ === 0 ? 'footer' : 'toc') };
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
async function openTrusted(blob: RemoteBlob, tocDigest: string | undefined, log: Logger, tail?: Buffer): Promise<EstargzBlob> {
  for (let attempt = 1; ; attempt++) {
    // The tail read early is used on the first try only: a retry reads everything again.
    const early = attempt === 1 && tail?.length === Math.min(blob.size, DEFAULT_TAIL_BYTES) ? tail : undefined;
    try {
      return await openEstargz(measured(blob, early !== undefined), { ...(tocDigest && { tocDigest }), ...(early && { tail: early }) });
    } catch (err) {
      const refetchable = tocDigest !== undefined && isEstargzError(err) && (err.code === 'TOC_DIGEST_MISMATCH' || err.code === 'INVALID_TOC' || err.code === 'NOT_ESTARGZ');
      if (!refetchable || attempt >= TOC_READ_ATTEMPTS) throw err;
      log.warn({ attempt, err: (err as Error).message }, 'footer or TOC did not check out; reading it again');
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
async function openZstdTrusted(blob: RemoteBlob, annotations: Readonly<Record<string, string>> | undefined, checkTarSplit: TarSplitChecker, log: Logger): Promise<ZstdChunkedBlob> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await openZstdChunked(measured(blob), annotations, { checkTarSplit });
    } catch (err) {
      const refetchable = isZstdChunkedError(err) && ['MANIFEST_DIGEST_MISMATCH', 'TARSPLIT_DIGEST_MISMATCH', 'INVALID_FOOTER'].includes(err.code);
      if (!refetchable || attempt >= TOC_READ_ATTEMPTS) throw err;
      log.warn({ attempt, err: (err as Error).message }, 'zstd:chunked manifest or tar-split did not check out; reading it again');
      await sleep(100 * 2 ** (attempt - 1));
    }
  }
}

const GZIP_LAYER_TYPES = new Set<string>([MediaType.ociLayerGzip, MediaType.dockerLayerGzip]);

/**
 * Resolves `<ref>/<digest>` store directories to served layers: manifest
 * (cached), the layer in it (by layer digest or TOC digest), footer + TOC
 * verified against the manifest's TOC digest annotation, then an engine
 * layer with prefetch and background fetch started. Resolution is bounded in
 * time. The layer manager (manager.ts) calls it once per key and keeps the
 * result; this class keeps only the manifest cache.
 */
export class LayerResolver implements LayerOpener {
  private readonly images: ImageResolver;

  constructor(private readonly client: RegistryClient, private readonly engine: Engine, private readonly log: Logger, private readonly opts: ResolverOptions = DEFAULT_RESOLVER) {
    this.images = new ImageResolver(client, opts.manifestTtlMs);
  }

  /** Resolves and opens the layer: logged once here, whatever the outcome (the layer manager wraps a failure in LayerError). */
  async open(key: LayerKey): Promise<OpenedLayer> {
    const { digest, refText: refString } = key;
    const started = performance.now();
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error(`resolution took longer than ${this.opts.timeoutMs} ms`)), this.opts.timeoutMs);
    try {
      const result = await Promise.race([
        this.resolveSteps(key, abort.signal),
        new Promise<never>((_, reject) => abort.signal.addEventListener('abort', () => reject(new RegistryError('TIMEOUT', `resolving ${refString} ${digest}: ${(abort.signal.reason as Error).message}`)))),
      ]);
      this.log.info({ ref: refString, digest, result: 'ok', keyedBy: result.layer.keyedBy, ms: Math.round(performance.now() - started), size: result.layer.blobSize }, 'layer resolved');
      return result;
    } catch (err) {
      this.log.warn({ ref: refString, digest, result: 'failed', ms: Math.round(performance.now() - started), err: (err as Error).message }, 'layer not resolved; containers/storage falls back to a normal pull');
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  private async resolveSteps(key: LayerKey, signal: AbortSignal): Promise<OpenedLayer> {
    const { ref, digest, refText: refString } = key;
    // A manifest not at hand is a round trip away: meanwhile the blob's end is read as if the directory
    // were named by its layer digest (podman ≤ 5.0 names it so), which saves a round trip before the
    // TOC. Used only when the manifest lists a gzip layer of that digest and size; otherwise one wasted
    // ranged GET (a 404 when the name is a TOC digest).
    const earlyTail = this.images.hasManifest(ref) || !DIGEST_PATTERN.test(digest) ? undefined : readBlobTail(this.client, { registry: ref.registry, repository: ref.repository }, digest, DEFAULT_TAIL_BYTES, signal, 'footer').catch(() => undefined);
    const image = await this.images.manifest(ref, signal);
    // The config (for the diff_id) arrives while the footer and TOC are read.
    const config = this.images.config(ref, signal);
    // Awaited below once the footer and TOC are read; a failure meanwhile must not be an unhandled rejection.
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
    const early = keyedBy === 'layer' ? await earlyTail : undefined;
    const estargz = await openTrusted(blob, tocDigest, this.log, early?.size === blob.size ? early.tail : undefined);
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
  private served(key: LayerKey, engine: EngineLayer, fields: Omit<ResolvedLayer, 'layer'>): OpenedLayer {
    return { layer: { ...fields, layer: readerOf(key, engine) }, handle: engine };
  }

  /** An engine layer with prefetch and background fetch started (both honour the engine's noprefetch / no_background_fetch settings). */
  private startLayer(descriptor: Descriptor, diffID: string, blob: RemoteBlob, content: LayerContent): EngineLayer {
    const layer = this.engine.openLayer({ id: descriptor.digest.slice(7, 19), blobDigest: descriptor.digest, diffID, fetcher: blob, content });
    // Prefetch settles each chunk's load itself and logs the outcome, so this only meets the unexpected; either
    // way reads go on: a chunk prefetch did not get is fetched (and its failure reported) by the read that needs it.
    void layer.prefetch().catch((err: unknown) => this.log.warn({ layer: descriptor.digest, err: (err as Error).message }, 'prefetch failed; reads fetch on demand'));
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
  ): Promise<OpenedLayer> {
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
      zstd = await openZstdTrusted(blob, descriptor.annotations, this.engine.pool.checkTarSplit, this.log);
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
