import type { ResolvedLayer } from '../layers/resolver.js';
import type { Logger } from '../log/logger.js';

/** containers/storage's compression enum (pkg/archive): 2 is gzip, 4 zstd. */
const COMPRESSION = { estargz: 2, 'zstd:chunked': 4 } as const;

/**
 * The `info` file: the containers/storage Layer fields the store knows, one
 * line of JSON. Which fields depends on what the directory is named by:
 * - the compressed layer digest (podman ≤ 5.0, e.g. Debian's 4.3.1):
 *   compressed-diff-digest, compressed-size, diff-digest (the config's
 *   diff_id, mandatory: podman derives the layer ID from it), diff-size (the
 *   uncompressed-size annotation, needed to export through `blob`), compression;
 * - the TOC digest (podman ≥ 5.1): toc-digest (checked by podman),
 *   diff-size, compression, and flags.expected-layer-diffid (needed for save/push).
 * A zstd:chunked layer has the same fields with compression 4 (zstd), its
 * manifest checksum as toc-digest and the tar's length from its verified
 * tar-split as diff-size (no annotation needed). `compression` is what
 * c/storage decompresses the `blob` file with when it exports the layer.
 */
export function layerInfo(l: ResolvedLayer, log: Logger): Buffer {
  const compression = COMPRESSION[l.format];
  if (l.uncompressedSize === undefined) {
    log.warn({ ref: l.refString, digest: l.descriptor.digest }, 'layer has no io.containers.estargz.uncompressed-size annotation; info has no diff-size, so exporting it may fail');
  }
  const info = l.keyedBy === 'layer'
    ? {
      'compressed-diff-digest': l.descriptor.digest,
      'compressed-size': l.descriptor.size,
      'diff-digest': l.diffID,
      ...(l.uncompressedSize !== undefined && { 'diff-size': l.uncompressedSize }),
      compression,
    }
    : {
      'toc-digest': l.dirDigest,
      'diff-size': l.uncompressedSize ?? -1,
      compression,
      flags: { 'expected-layer-diffid': l.diffID },
    };
  return Buffer.from(JSON.stringify(info) + '\n');
}
