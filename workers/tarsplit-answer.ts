import { isZstdChunkedError } from '../src/zstdchunked/errors.js';
import { parseManifestJson } from '../src/zstdchunked/manifest.js';
import { validateTarSplit } from '../src/zstdchunked/tar-split-check.js';
import type { TarSplitPosition } from '../src/zstdchunked/tar-split.js';

/**
 * One zstd:chunked layer's tar-split check, as a decode worker runs it (the
 * pool's named task `checkTarSplit`): the tar-split decoded and every header
 * compared with the manifest's entry (tens of milliseconds for a large
 * layer, which on the main thread would hold every FUSE reply).
 */
export interface TarSplitCheckTask {
  tarSplit: Uint8Array;
  pos: TarSplitPosition;
  /** The decoded manifest JSON (verified by its checksum), parsed again on the worker's side rather than cloned. */
  json: Uint8Array;
}

/** The check's outcome as a message: a refusal keeps its ZstdChunkedError code, message and context. */
export type TarSplitCheckAnswer =
  | { ok: true; headers: number; tarSize: number }
  | { ok: false; zstd: boolean; code?: string; message: string; context?: unknown };

export async function answerTarSplitCheck(task: TarSplitCheckTask): Promise<TarSplitCheckAnswer> {
  try {
    const summary = await validateTarSplit(task.tarSplit, task.pos, parseManifestJson(task.json));
    return { ok: true, ...summary };
  } catch (err) {
    if (isZstdChunkedError(err)) return { ok: false, zstd: true, code: err.code, message: err.message, context: err.context };
    return { ok: false, zstd: false, message: (err as Error).message };
  }
}
