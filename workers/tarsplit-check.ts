import { parentPort, workerData } from 'node:worker_threads';
import { isZstdChunkedError } from '../src/zstdchunked/errors.js';
import { parseManifestJson } from '../src/zstdchunked/manifest.js';
import { validateTarSplit } from '../src/zstdchunked/tar-split-check.js';
import type { TarSplitPosition } from '../src/zstdchunked/tar-split.js';
import { settleThreadNice } from './thread-priority.js';

// Not at the raised main thread's priority (see thread-priority.ts).
settleThreadNice();

/**
 * One zstd:chunked layer's tar-split check, off the main thread: the
 * tar-split decoded and every header compared with the manifest's entry
 * (tens of milliseconds for a large layer, which on the main thread would
 * hold every FUSE reply). Answers once, then the worker ends.
 */
export interface TarSplitCheckTask {
  tarSplit: Uint8Array;
  pos: TarSplitPosition;
  /** The decoded manifest JSON (verified by its checksum), parsed again here. */
  json: Uint8Array;
}

export type TarSplitCheckAnswer =
  | { ok: true; headers: number; tarSize: number }
  | { ok: false; zstd: boolean; code?: string; message: string; context?: unknown };

async function check(task: TarSplitCheckTask): Promise<TarSplitCheckAnswer> {
  try {
    const summary = await validateTarSplit(task.tarSplit, task.pos, parseManifestJson(task.json));
    return { ok: true, ...summary };
  } catch (err) {
    if (isZstdChunkedError(err)) return { ok: false, zstd: true, code: err.code, message: err.message, context: err.context };
    return { ok: false, zstd: false, message: (err as Error).message };
  }
}

if (parentPort) {
  const port = parentPort;
  void check(workerData as TarSplitCheckTask).then((answer) => port.postMessage(answer));
}
