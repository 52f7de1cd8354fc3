import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { TarSplitCheckAnswer, TarSplitCheckTask } from '../../workers/tarsplit-check.js';
import { ZstdChunkedError, type ZstdChunkedErrorCode, type ZstdChunkedErrorContext } from '../zstdchunked/errors.js';
import type { TarSplitChecker } from '../zstdchunked/open.js';

const WORKER_FILE = fileURLToPath(new URL('../../workers/tarsplit-check.js', import.meta.url));

/** Strips the "zstd:chunked <part>: " prefix ZstdChunkedError puts on its message, so that the rebuilt error does not say it twice. */
function bareMessage(message: string, part: string): string {
  const prefix = `zstd:chunked ${part}: `;
  return message.startsWith(prefix) ? message.slice(prefix.length) : message;
}

/**
 * validateTarSplit in a worker of its own (one per layer opened): on the main
 * thread it took 33–255 ms for the python test image's 58 MB stdlib layer as
 * podman 5.4 pushes it (2,336 manifest entries; 2 cores under load), far
 * over the ~20 ms a FUSE reply may wait. Its refusals come back as the same
 * ZstdChunkedError (code, part, message).
 */
export const checkTarSplitInWorker: TarSplitChecker = (tarSplit, pos, json) => new Promise((resolve, reject) => {
  const task: TarSplitCheckTask = { tarSplit, pos, json };
  const worker = new Worker(WORKER_FILE, { workerData: task, execArgv: ['--no-experimental-require-module'] });
  let answered = false;
  worker.once('message', (a: TarSplitCheckAnswer) => {
    answered = true;
    void worker.terminate();
    if (a.ok) resolve({ headers: a.headers, tarSize: a.tarSize });
    else if (a.zstd) {
      const context = a.context as ZstdChunkedErrorContext;
      reject(new ZstdChunkedError(a.code as ZstdChunkedErrorCode, bareMessage(a.message, context.part), context));
    } else reject(new Error(`tar-split check: ${a.message}`));
  });
  worker.once('error', (err) => {
    if (!answered) reject(err);
  });
  worker.once('exit', (code) => {
    if (!answered) reject(new Error(`tar-split check worker exited (${code}) without an answer`));
  });
});
