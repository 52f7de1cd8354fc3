import type { RangedSource } from '../estargz/source.js';
import type { TocLimits } from '../estargz/layer-index.js';
import { checkAnnotationsMatchFooter, parseAnnotations, type ZstdChunkedAnnotations } from './annotations.js';
import { ZstdChunkedError } from './errors.js';
import { FOOTER_FRAME_SIZE, parseFooter, SKIPPABLE_HEADER_SIZE, type ZstdChunkedFooter } from './footer.js';
import { buildZstdChunkedIndex, type ZstdLayerIndex } from './layer-index.js';
import { decodeManifest, MAX_MANIFEST_BYTES, type ManifestJson } from './manifest.js';
import type { TarSplitPosition } from './tar-split.js';
import { validateTarSplit, type TarSplitSummary } from './tar-split-check.js';

/**
 * Checks the tar-split against the manifest (validateTarSplit). The store
 * runs it in a worker (tens of ms for a large layer); `json` is the decoded
 * manifest, which such a checker parses again on its side rather than have
 * the parsed object cloned on the caller's thread.
 */
export type TarSplitChecker = (tarSplit: Buffer, pos: TarSplitPosition, json: Buffer, manifest: ManifestJson) => Promise<TarSplitSummary>;

/** Bound on the compressed tar-split read at open (it is held in memory for the layer's life). */
export const MAX_TARSPLIT_COMPRESSED_BYTES = 256 << 20;

export interface ZstdOpenOptions {
  maxManifestBytes?: number;
  maxTarSplitBytes?: number;
  limits?: Partial<TocLimits>;
  /** Default: validateTarSplit on this thread. */
  checkTarSplit?: TarSplitChecker;
}

export interface ZstdChunkedBlob {
  size: number;
  footer: ZstdChunkedFooter;
  annotations: ZstdChunkedAnnotations;
  /** sha256 of the compressed manifest: the layer's TOC digest (podman ≥ 5.1's lookup key, info's toc-digest). */
  tocDigest: string;
  manifest: ManifestJson;
  /** Decoded manifest JSON length. */
  manifestSize: number;
  index: ZstdLayerIndex;
  /** The compressed tar-split, checked against the manifest's tarSplitDigest: what the diff_id check rebuilds the tar from. */
  tarSplit: Buffer;
  tarSplitPosition: TarSplitPosition;
  /** Length of the uncompressed layer tar (info's diff-size). */
  tarSize: number;
  /** Where the data frames end (the manifest's frame): prefetch and background fetch stay before it. */
  payloadEnd: number;
}

/**
 * Opens a zstd:chunked layer from its blob and its manifest annotations: one
 * range read of the blob's end (manifest, tar-split and footer are back to
 * back there), then the trust chain: annotations ↔ footer ↔ blob size, the
 * manifest's sha256 = the manifest-checksum annotation, the manifest decoded
 * within its declared size, the index from its entries, the tar-split's
 * sha256 = the manifest's tarSplitDigest, the tar-split's headers = the
 * manifest's entries. Every refusal is a ZstdChunkedError naming the part.
 */
export async function openZstdChunked(source: RangedSource, layerAnnotations: Readonly<Record<string, string>> | undefined, opts: ZstdOpenOptions = {}): Promise<ZstdChunkedBlob> {
  const size = source.size;
  const annotations = parseAnnotations(layerAnnotations);
  const maxManifest = opts.maxManifestBytes ?? MAX_MANIFEST_BYTES;
  const maxTarSplit = opts.maxTarSplitBytes ?? MAX_TARSPLIT_COMPRESSED_BYTES;
  const { manifest: m, tarSplit: t } = annotations;
  // The annotations place the frames; the blob must end exactly after them.
  const expectedSize = t.offset + t.length + FOOTER_FRAME_SIZE;
  if (expectedSize !== size) {
    throw new ZstdChunkedError('BLOB_SIZE_MISMATCH', `the blob is ${size} bytes, its annotations say it ends at ${expectedSize}: it is ${size < expectedSize ? 'truncated' : 'longer than its frames'}`, { part: 'blob' });
  }
  if (m.offset < SKIPPABLE_HEADER_SIZE || m.offset + m.length > t.offset) {
    throw new ZstdChunkedError('INVALID_ANNOTATION', `the annotations place the manifest at ${m.offset}:${m.length}, not before the tar-split at ${t.offset}`, { part: 'annotations' });
  }
  if (m.length > maxManifest) throw new ZstdChunkedError('LIMIT', `the manifest is ${m.length} bytes compressed, over the limit of ${maxManifest}`, { part: 'manifest' });
  if (t.length > maxTarSplit) throw new ZstdChunkedError('LIMIT', `the tar-split is ${t.length} bytes compressed, over the limit of ${maxTarSplit}`, { part: 'tar-split' });

  const tailStart = m.offset - SKIPPABLE_HEADER_SIZE;
  const tail = await source.read(tailStart, size - tailStart);
  const footer = parseFooter(tail, size);
  checkAnnotationsMatchFooter(annotations, footer);

  const { manifest, json } = decodeManifest(tail.subarray(m.offset - tailStart, m.offset - tailStart + m.length), {
    checksum: annotations.manifestChecksum, uncompressedLength: m.uncompressedLength, blobOffset: m.offset, maxBytes: maxManifest,
  });
  const index = await buildZstdChunkedIndex(manifest, { payloadEnd: footer.payloadEnd, ...(opts.limits ? { limits: opts.limits } : {}) });
  // Its own copy: the tail buffer (manifest bytes included) can then be dropped.
  const tarSplit = Buffer.from(tail.subarray(t.offset - tailStart, t.offset - tailStart + t.length));
  const tarSplitPosition = { length: t.length, uncompressedLength: t.uncompressedLength };
  const { tarSize } = opts.checkTarSplit
    ? await opts.checkTarSplit(tarSplit, tarSplitPosition, json, manifest)
    : await validateTarSplit(tarSplit, tarSplitPosition, manifest);
  return {
    size, footer, annotations, tocDigest: annotations.manifestChecksum, manifest, manifestSize: json.length, index,
    tarSplit, tarSplitPosition, tarSize, payloadEnd: footer.payloadEnd,
  };
}
