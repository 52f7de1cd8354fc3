import { TOC_DIGEST_ANNOTATION } from '../estargz/toc.js';
import { ZstdChunkedError } from './errors.js';
import type { FramePosition, ZstdChunkedFooter } from './footer.js';

/** Layer annotations c/image writes for a zstd:chunked layer (c/storage pkg/chunked/internal/minimal). */
export const MANIFEST_CHECKSUM_ANNOTATION = 'io.github.containers.zstd-chunked.manifest-checksum';
export const MANIFEST_POSITION_ANNOTATION = 'io.github.containers.zstd-chunked.manifest-position';
export const TARSPLIT_POSITION_ANNOTATION = 'io.github.containers.zstd-chunked.tarsplit-position';

export interface ZstdChunkedAnnotations {
  /** sha256 of the compressed manifest: the layer's TOC digest (podman ≥ 5.1 looks the layer up by it). */
  manifestChecksum: string;
  manifest: FramePosition & { type: number };
  tarSplit: FramePosition;
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;
/** Decimal, no sign, no leading zeros (but "0"), at most 16 digits (safe integers). */
const NUMBER = /^(0|[1-9][0-9]{0,15})$/;

function bad(message: string): ZstdChunkedError {
  return new ZstdChunkedError('INVALID_ANNOTATION', message, { part: 'annotations' });
}

function numbers(value: string, key: string, count: number): number[] {
  const parts = value.split(':');
  if (parts.length !== count || !parts.every((p) => NUMBER.test(p))) {
    throw bad(`${key} is ${JSON.stringify(value.slice(0, 200))}, expected ${count} decimal integers separated by ":"`);
  }
  const out = parts.map(Number);
  if (!out.every(Number.isSafeInteger)) throw bad(`${key} is ${JSON.stringify(value)}, a number is too large`);
  return out;
}

/** Whether a layer's annotations say zstd:chunked (the manifest checksum is what podman keys on). */
export function hasZstdChunkedAnnotations(annotations: Readonly<Record<string, string>> | undefined): boolean {
  return annotations?.[MANIFEST_CHECKSUM_ANNOTATION] !== undefined;
}

/**
 * Parses the three annotations strictly. A layer without the checksum is not
 * zstd:chunked for this store (NOT_ZSTD_CHUNKED); one with the checksum but a
 * missing or malformed position is refused (INVALID_ANNOTATION).
 */
export function parseAnnotations(annotations: Readonly<Record<string, string>> | undefined): ZstdChunkedAnnotations {
  const checksum = annotations?.[MANIFEST_CHECKSUM_ANNOTATION];
  if (checksum === undefined) {
    throw new ZstdChunkedError('NOT_ZSTD_CHUNKED', `the layer has no ${MANIFEST_CHECKSUM_ANNOTATION} annotation`, { part: 'annotations' });
  }
  // c/storage (pkg/chunked/toc GetTOCDigest) refuses a layer that claims both formats: so does this store.
  if (annotations![TOC_DIGEST_ANNOTATION] !== undefined) throw bad(`the layer has both ${MANIFEST_CHECKSUM_ANNOTATION} and the eStargz ${TOC_DIGEST_ANNOTATION}`);
  if (!DIGEST.test(checksum)) throw bad(`${MANIFEST_CHECKSUM_ANNOTATION} is ${JSON.stringify(checksum.slice(0, 200))}, not a sha256 digest`);
  const manifestPos = annotations![MANIFEST_POSITION_ANNOTATION];
  if (manifestPos === undefined) throw bad(`${MANIFEST_POSITION_ANNOTATION} is missing`);
  const tarSplitPos = annotations![TARSPLIT_POSITION_ANNOTATION];
  if (tarSplitPos === undefined) {
    throw new ZstdChunkedError('UNSUPPORTED', `${TARSPLIT_POSITION_ANNOTATION} is missing: without a tar-split the layer's tar cannot be rebuilt to check its diff_id`, { part: 'annotations' });
  }
  const [mo, ml, mu, mt] = numbers(manifestPos, MANIFEST_POSITION_ANNOTATION, 4) as [number, number, number, number];
  const [to, tl, tu] = numbers(tarSplitPos, TARSPLIT_POSITION_ANNOTATION, 3) as [number, number, number];
  return {
    manifestChecksum: checksum,
    manifest: { offset: mo, length: ml, uncompressedLength: mu, type: mt },
    tarSplit: { offset: to, length: tl, uncompressedLength: tu },
  };
}

/** The annotations and the footer must describe the same frames: either may be what a reader trusts. */
export function checkAnnotationsMatchFooter(a: ZstdChunkedAnnotations, f: ZstdChunkedFooter): void {
  const pos = (p: FramePosition): string => `${p.offset}:${p.length}:${p.uncompressedLength}`;
  if (pos(a.manifest) !== pos(f.manifest) || a.manifest.type !== f.manifestType) {
    throw bad(`${MANIFEST_POSITION_ANNOTATION} ${pos(a.manifest)}:${a.manifest.type} disagrees with the footer's ${pos(f.manifest)}:${f.manifestType}`);
  }
  if (pos(a.tarSplit) !== pos(f.tarSplit)) {
    throw bad(`${TARSPLIT_POSITION_ANNOTATION} ${pos(a.tarSplit)} disagrees with the footer's ${pos(f.tarSplit)}`);
  }
}
