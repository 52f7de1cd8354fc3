import { decodeBatch } from './decode-batch.js';
import { movedResult } from './moved-result.js';
import type { DecodeTask } from './decode-types.js';
import { answerTarSplitCheck, type TarSplitCheckAnswer, type TarSplitCheckTask } from './tarsplit-answer.js';
import { BACKGROUND_NICE, probeNiceSwitching, setThreadNice, settleThreadNice, startingNice } from './thread-priority.js';

/** This thread's priority (the process's, not the raised main thread's: see startingNice); background tasks run BACKGROUND_NICE below it. */
const BASE_NICE = startingNice();
settleThreadNice();
const SWITCH_NICE = probeNiceSwitching(BASE_NICE);

/** Piscina task: inflate and sha256-verify a batch of chunks; the plain bytes go back transferred. */
export default function decode(task: DecodeTask): unknown {
  // Background work (no reader waits for it) yields the CPU to the main thread (FUSE) and to foreground decodes.
  if (SWITCH_NICE) setThreadNice(task.priority === 'background' ? BACKGROUND_NICE : 0, BASE_NICE);
  const result = decodeBatch(task);
  return movedResult(result, result.buffers);
}

/** Piscina task `checkTarSplit`: a zstd:chunked layer's tar-split against its manifest, on a worker already running (see DecodePool.checkTarSplit). */
export function checkTarSplit(task: TarSplitCheckTask): Promise<TarSplitCheckAnswer> {
  if (SWITCH_NICE) setThreadNice(0, BASE_NICE);
  return answerTarSplitCheck(task);
}
