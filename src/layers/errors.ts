import { isEngineError } from '../engine/errors.js';
import { isEstargzError } from '../estargz/errors.js';
import { isRegistryError } from '../registry/errors.js';
import { isZstdChunkedError } from '../zstdchunked/errors.js';
import type { LayerKey } from './key.js';

/** Where the failure came from. */
export type LayerErrorSource = 'registry' | 'estargz' | 'zstd:chunked' | 'engine' | 'other';

/**
 * The one error the layer manager hands upwards: every registry, format and
 * engine failure is wrapped in it at this boundary, keeping the original's
 * code and the layer (reference, digest) and path it concerns. `resolution`
 * tells a layer that could not be resolved (logged once where it failed)
 * from a read of a served layer that failed.
 */
export class LayerError extends Error {
  override readonly name = 'LayerError';
  /** The original error's code (e.g. the registry's UNAUTHORIZED), or UNKNOWN. */
  readonly code: string;
  readonly source: LayerErrorSource;
  readonly ref: string;
  readonly digest: string;

  constructor(
    readonly stage: 'resolution' | 'read',
    key: LayerKey,
    cause: unknown,
    readonly path?: string,
  ) {
    super((cause as Error)?.message ?? String(cause), { cause });
    this.ref = key.refText;
    this.digest = key.digest;
    const inner = innermost(cause);
    this.source = sourceOf(inner);
    this.code = this.source === 'other' ? 'UNKNOWN' : (inner as { code: string }).code;
  }
}

export function isLayerError(err: unknown): err is LayerError {
  return err instanceof LayerError;
}

function sourceOf(err: unknown): LayerErrorSource {
  if (isRegistryError(err)) return 'registry';
  if (isEstargzError(err)) return 'estargz';
  if (isZstdChunkedError(err)) return 'zstd:chunked';
  if (isEngineError(err)) return 'engine';
  return 'other';
}

/** The first error with a known source along the cause chain (the resolver wraps some refusals in a plain Error). */
function innermost(err: unknown): unknown {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (sourceOf(e) !== 'other') return e;
  }
  return err;
}

/** Wraps a failure at the boundary (a LayerError passes as it is). */
export function wrapLayerError(stage: LayerError['stage'], key: LayerKey, err: unknown, path?: string): LayerError {
  return err instanceof LayerError ? err : new LayerError(stage, key, err, path);
}
