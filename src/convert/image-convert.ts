import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { openEstargz } from '../estargz/open.js';
import { TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from '../estargz/toc.js';
import { convertLayer } from '../estargz/writer/convert.js';
import { RemoteBlob, downloadBlob } from '../registry/blob.js';
import type { RegistryClient, RepoRef } from '../registry/client.js';
import { RegistryError } from '../registry/errors.js';
import { fetchConfig, fetchManifest, selectPlatform } from '../registry/manifest.js';
import {
  MediaType,
  formatPlatform,
  hostPlatform,
  isIndexType,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
  type Platform,
} from '../registry/media-types.js';
import { pushBlob, pushManifest } from '../registry/push.js';
import { formatReference, manifestReference, type ImageReference } from '../registry/reference.js';

export interface ImageConvertOptions {
  /** Files placed first (prefetched) in every converted layer. */
  prioritizedFiles?: readonly string[];
  /**
   * Files placed first, per layer (`image optimize`'s recording; `index` in
   * the manifest, `digest` the source layer's, `count` the manifest's
   * layers): replaces `prioritizedFiles` for a layer it answers for, and may
   * throw to refuse the image. With it, a layer that already is eStargz is
   * converted again so that its order changes.
   */
  prioritizedFilesByLayer?: (layer: { index: number; digest: string; count: number }) => readonly string[] | undefined;
  chunkSize?: number;
  level?: number;
  /** One platform of an index (default: this machine's). Ignored for a single-manifest image. */
  platform?: Platform;
  /** Convert every platform of an index and push an index. */
  allPlatforms?: boolean;
  /** Layers converted at once; each holds a bounded amount of memory. */
  concurrency?: number;
  /** Compression workers per layer (default: convertLayer's, one per core up to 4). */
  layerConcurrency?: number;
  tmpDir?: string;
  onProgress?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
}

export interface ProgressEvent {
  platform: string;
  layer: number;
  layers: number;
  /** Source layer digest. */
  digest: string;
  stage: 'download' | 'convert' | 'push' | 'pass-through' | 'done';
  /** Source blob size and bytes of it fetched so far. */
  size: number;
  downloaded: number;
  /** Uncompressed tar bytes converted so far, of `tarBytes` (known once the layer is staged). */
  read?: number;
  tarBytes?: number;
  /** eStargz bytes written so far. */
  written?: number;
  /** Bytes pushed (the whole blob once its push is done; 0 when the registry already had it). */
  pushed?: number;
}

/** Blobs above this go up in PATCH chunks of this size: the upload holds one chunk in memory, not the blob. */
const PUSH_CHUNK_BYTES = 8 << 20;
/** How often a download's progress is sampled (the file's size on disk). */
const DOWNLOAD_POLL_MS = 250;

export interface ConvertedLayer {
  source: string;
  digest: string;
  size: number;
  diffID: string;
  tocDigest: string;
  uncompressedSize: number;
  /** False when the source layer already was eStargz and was copied as it is. */
  converted: boolean;
  /** Prioritized names this layer does not contain (empty for a layer copied as it is). */
  missedPrioritized: string[];
}

export interface ConvertedManifest {
  platform: string;
  digest: string;
  layers: ConvertedLayer[];
}

export interface ImageConvertResult {
  source: string;
  destination: string;
  /** Digest of what DST now points at (the manifest, or the index with --all-platforms). */
  digest: string;
  mediaType: string;
  manifests: ConvertedManifest[];
}

const GZIP_TYPES = new Set<string>([MediaType.ociLayerGzip, MediaType.dockerLayerGzip]);
const CONVERTIBLE_TYPES = new Set<string>([...GZIP_TYPES, MediaType.ociLayer]);

function sha256(b: Buffer): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

/**
 * Runs `fn` over `items` with at most `limit` at once, keeping the order of
 * results. After a failure no new item starts, and the first failure is
 * thrown once the running ones settled: their files are then no longer being
 * written when the caller removes its work directory.
 */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (next < items.length && !failed) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!, i);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const settled = await Promise.allSettled(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  const failure = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
  return out;
}

/**
 * Converts an image in a registry to eStargz and pushes it: every layer is
 * streamed from SRC to a temporary file, converted with the format library's
 * writer, and pushed with the annotations podman and the store need
 * (`containerd.io/snapshot/stargz/toc.digest`,
 * `io.containers.estargz.uncompressed-size`); the config's diff_ids are
 * rewritten; the manifest (or index) is pushed with OCI media types. Layers
 * that are already eStargz are copied as they are.
 */
export async function convertImage(client: RegistryClient, src: ImageReference, dst: ImageReference, opts: ImageConvertOptions = {}): Promise<ImageConvertResult> {
  const srcRepo = { registry: src.registry, repository: src.repository };
  const dstRepo = { registry: dst.registry, repository: dst.repository };
  const top = await fetchManifest(client, srcRepo, manifestReference(src), opts.signal);
  const work = await mkdtemp(join(opts.tmpDir ?? tmpdir(), 'estargz-image-'));
  try {
    if (!isIndexType(top.mediaType)) {
      const converted = await convertManifest(client, srcRepo, dstRepo, top.doc as ImageManifest, undefined, work, opts);
      await pushManifest(client, dstRepo, dst.tag ?? converted.digest, converted.bytes, MediaType.ociManifest, opts.signal);
      return result(converted.digest, MediaType.ociManifest, [converted.summary]);
    }
    const index = top.doc as ImageIndex;
    const entries = opts.allPlatforms
      ? index.manifests.filter((d) => d.platform && d.platform.os !== 'unknown')
      : [selectPlatform(index, opts.platform ?? hostPlatform(), formatReference(src))];
    const converted = [];
    for (const entry of entries) {
      const child = await fetchManifest(client, srcRepo, entry.digest, opts.signal);
      const c = await convertManifest(client, srcRepo, dstRepo, child.doc as ImageManifest, entry.platform, work, opts);
      if (opts.allPlatforms) await pushManifest(client, dstRepo, c.digest, c.bytes, MediaType.ociManifest, opts.signal);
      converted.push({ entry, ...c });
    }
    if (!opts.allPlatforms) {
      const only = converted[0]!;
      await pushManifest(client, dstRepo, dst.tag ?? only.digest, only.bytes, MediaType.ociManifest, opts.signal);
      return result(only.digest, MediaType.ociManifest, [only.summary]);
    }
    const newIndex: ImageIndex = {
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: converted.map((c) => ({
        mediaType: MediaType.ociManifest,
        digest: c.digest,
        size: c.bytes.length,
        ...(c.entry.platform && { platform: c.entry.platform }),
      })),
    };
    const indexBytes = Buffer.from(JSON.stringify(newIndex));
    const indexDigest = sha256(indexBytes);
    await pushManifest(client, dstRepo, dst.tag ?? indexDigest, indexBytes, MediaType.ociIndex, opts.signal);
    return result(indexDigest, MediaType.ociIndex, converted.map((c) => c.summary));
  } finally {
    await rm(work, { recursive: true, force: true });
  }

  function result(digest: string, mediaType: string, manifests: ConvertedManifest[]): ImageConvertResult {
    return { source: formatReference(src), destination: formatReference(dst), digest, mediaType, manifests };
  }
}

async function convertManifest(
  client: RegistryClient,
  srcRepo: RepoRef,
  dstRepo: RepoRef,
  manifest: ImageManifest,
  platform: Platform | undefined,
  work: string,
  opts: ImageConvertOptions,
): Promise<{ digest: string; bytes: Buffer; summary: ConvertedManifest }> {
  const { config } = await fetchConfig(client, srcRepo, manifest, opts.signal);
  const platformName = platform ? formatPlatform(platform) : `${config.os ?? 'linux'}/${config.architecture ?? 'unknown'}`;
  if (config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw new RegistryError('PROTOCOL', `image ${platformName}: ${manifest.layers.length} layers but ${config.rootfs.diff_ids.length} diff_ids in the config`);
  }
  // Every layer's list before any work: a list that does not fit the image refuses it at once.
  const lists = manifest.layers.map((desc, i) => opts.prioritizedFilesByLayer?.({ index: i, digest: desc.digest, count: manifest.layers.length }) ?? opts.prioritizedFiles);
  const layers = await mapLimit(manifest.layers, opts.concurrency ?? 2, (desc, i) =>
    convertOneLayer(client, srcRepo, dstRepo, desc, config.rootfs.diff_ids[i]!, lists[i], join(work, `${platformName.replaceAll('/', '_')}-${i}`), opts, (fields) =>
      opts.onProgress?.({ platform: platformName, layer: i + 1, layers: manifest.layers.length, digest: desc.digest, size: desc.size, downloaded: 0, ...fields })));

  const newConfig = { ...config, rootfs: { ...config.rootfs, diff_ids: layers.map((l) => l.result.diffID) } };
  const configBytes = Buffer.from(JSON.stringify(newConfig));
  const configDigest = sha256(configBytes);
  await pushBlob(client, dstRepo, configDigest, { bytes: configBytes }, { ...(opts.signal && { signal: opts.signal }) });
  const newManifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: configDigest, size: configBytes.length },
    layers: layers.map((l) => l.descriptor),
    ...(manifest.annotations && { annotations: manifest.annotations }),
  };
  const bytes = Buffer.from(JSON.stringify(newManifest));
  const digest = sha256(bytes);
  return { digest, bytes, summary: { platform: platformName, digest, layers: layers.map((l) => l.result) } };
}

async function convertOneLayer(
  client: RegistryClient,
  srcRepo: RepoRef,
  dstRepo: RepoRef,
  desc: Descriptor,
  diffID: string,
  prioritizedFiles: readonly string[] | undefined,
  base: string,
  opts: ImageConvertOptions,
  report: (fields: Pick<ProgressEvent, 'stage'> & Partial<ProgressEvent>) => void,
): Promise<{ descriptor: Descriptor; result: ConvertedLayer }> {
  const sameRegistry = srcRepo.registry === dstRepo.registry;
  const tocAnnotation = desc.annotations?.[TOC_DIGEST_ANNOTATION];
  // A per-layer list is a new order for this layer: an eStargz layer is converted again (its old TOC and landmark are dropped).
  const reorder = opts.prioritizedFilesByLayer !== undefined;
  if (tocAnnotation && GZIP_TYPES.has(desc.mediaType) && !reorder) {
    // Already eStargz (the TOC is checked against the annotation): copy as it is.
    const remote = await RemoteBlob.open(client, srcRepo, desc.digest, { expectedSize: desc.size, ...(opts.signal && { signal: opts.signal }) });
    await openEstargz(remote, { tocDigest: tocAnnotation });
    report({ stage: 'pass-through' });
    const path = `${base}.blob`;
    let downloaded = false;
    const download = async (): Promise<void> => {
      if (!downloaded) await downloadBlob(client, srcRepo, desc.digest, path, opts.signal);
      downloaded = true;
    };
    let uncompressed = Number(desc.annotations?.[UNCOMPRESSED_SIZE_ANNOTATION]);
    if (!Number.isSafeInteger(uncompressed)) {
      await download();
      uncompressed = await gunzippedSize(path);
    }
    // On the same registry a cross-repository mount avoids moving the bytes at all.
    const pushed = await pushBlob(client, dstRepo, desc.digest, { path, size: desc.size, prepare: download }, {
      ...(sameRegistry && { mountFrom: srcRepo.repository }),
      chunkSize: PUSH_CHUNK_BYTES,
      ...(opts.signal && { signal: opts.signal }),
    });
    await rm(path, { force: true });
    report({ stage: 'done', downloaded: downloaded ? desc.size : 0, pushed: pushed.how === 'uploaded' ? desc.size : 0 });
    return {
      descriptor: {
        mediaType: MediaType.ociLayerGzip,
        digest: desc.digest,
        size: desc.size,
        annotations: { ...desc.annotations, [TOC_DIGEST_ANNOTATION]: tocAnnotation, [UNCOMPRESSED_SIZE_ANNOTATION]: String(uncompressed) },
      },
      result: { source: desc.digest, digest: desc.digest, size: desc.size, diffID, tocDigest: tocAnnotation, uncompressedSize: uncompressed, converted: false, missedPrioritized: [] },
    };
  }
  if (!CONVERTIBLE_TYPES.has(desc.mediaType)) {
    throw new RegistryError('UNSUPPORTED', `layer ${desc.digest} has media type ${desc.mediaType}; only tar and tar+gzip layers can be converted`);
  }
  report({ stage: 'download' });
  const srcPath = `${base}.src`;
  const outPath = `${base}.esgz`;
  await withFileSizePolling(srcPath, (n) => report({ stage: 'download', downloaded: n }), () =>
    downloadBlob(client, srcRepo, desc.digest, srcPath, opts.signal));
  report({ stage: 'convert', downloaded: desc.size });
  const out = createWriteStream(outPath);
  const converted = await convertLayer(srcPath, out, {
    ...(opts.chunkSize !== undefined && { chunkSize: opts.chunkSize }),
    ...(opts.level !== undefined && { level: opts.level }),
    ...(prioritizedFiles && { prioritizedFiles }),
    ...(opts.tmpDir && { tmpDir: opts.tmpDir }),
    ...(opts.layerConcurrency !== undefined && { concurrency: opts.layerConcurrency }),
    onProgress: (p) => report({ stage: 'convert', downloaded: desc.size, read: p.read, ...(p.tarBytes !== null && { tarBytes: p.tarBytes }), written: p.written }),
  });
  out.end();
  await finished(out);
  await rm(srcPath, { force: true });
  const counts = { downloaded: desc.size, read: converted.uncompressedSize, tarBytes: converted.uncompressedSize, written: converted.size };
  report({ stage: 'push', ...counts, pushed: 0 });
  const pushed = await pushBlob(client, dstRepo, converted.digest, { path: outPath, size: converted.size }, {
    chunkSize: PUSH_CHUNK_BYTES,
    ...(opts.signal && { signal: opts.signal }),
  });
  await rm(outPath, { force: true });
  report({ stage: 'done', ...counts, pushed: pushed.how === 'uploaded' ? converted.size : 0 });
  return {
    descriptor: {
      mediaType: MediaType.ociLayerGzip,
      digest: converted.digest,
      size: converted.size,
      annotations: {
        [TOC_DIGEST_ANNOTATION]: converted.tocDigest,
        [UNCOMPRESSED_SIZE_ANNOTATION]: String(converted.uncompressedSize),
      },
    },
    result: {
      source: desc.digest,
      digest: converted.digest,
      size: converted.size,
      diffID: converted.diffID,
      tocDigest: converted.tocDigest,
      uncompressedSize: converted.uncompressedSize,
      converted: true,
      missedPrioritized: converted.missedPrioritized,
    },
  };
}

/** Runs `fn` (which writes `path`), reporting the file's size every DOWNLOAD_POLL_MS meanwhile. */
async function withFileSizePolling<T>(path: string, onSize: (bytes: number) => void, fn: () => Promise<T>): Promise<T> {
  let done = false;
  const timer = setInterval(() => {
    // Dropped on purpose: the file may not exist yet; the next tick reports it. A stat
    // still pending when `fn` ends is not reported: the caller has moved to its next stage.
    stat(path).then((st) => { if (!done) onSize(st.size); }, () => {});
  }, DOWNLOAD_POLL_MS);
  try {
    return await fn();
  } finally {
    done = true;
    clearInterval(timer);
  }
}

async function gunzippedSize(path: string): Promise<number> {
  const { createReadStream } = await import('node:fs');
  const { createGunzip } = await import('node:zlib');
  let n = 0;
  for await (const chunk of createReadStream(path).pipe(createGunzip())) n += (chunk as Buffer).length;
  return n;
}
