import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { ChunkRef, Decoder } from '../estargz/chunk.js';
import type { Telemetry } from '../metrics/telemetry.js';
import { decodeBatch } from '../../workers/decode-batch.js';
import type { DecodeFailure, DecodeItem, DecodeResult, DecodeTask } from '../../workers/decode-types.js';
import { answerTarSplitCheck, type TarSplitCheckAnswer, type TarSplitCheckTask } from '../../workers/tarsplit-answer.js';
import { ZstdChunkedError, type ZstdChunkedErrorCode, type ZstdChunkedErrorContext } from '../zstdchunked/errors.js';
import type { TarSplitChecker } from '../zstdchunked/open.js';

/** Per ref: verified plain bytes (a view into the task's result buffer), or why not. */
export type DecodeOutput = Buffer | DecodeFailure;

/** Splits a task's result buffer into one view per chunk. */
function outputsOf(result: DecodeResult): DecodeOutput[] {
  return result.results.map((r) => ('code' in r ? r : Buffer.from(result.buffers[r.buffer]!, r.offset, r.length)));
}

export type Priority = 'foreground' | 'background';

export interface DecodePoolOptions {
  /** Worker threads; 0 decodes on the calling thread (benchmarks' baseline). Default: the machine's cores. */
  threads?: number;
  /** Workers kept while the pool is idle (default 1, at most `threads`); the rest start on demand. */
  idleThreads?: number;
  /** An extra worker without a task for this long exits (default 30 s). */
  idleTimeoutMs?: number;
  /**
   * A foreground task of at most this many plain bytes is decoded on the
   * calling thread while no worker runs (default INLINE_MAX_PLAIN_BYTES; 0:
   * never), so a read of a small file after a quiet spell starts no worker.
   */
  inlineMaxBytes?: number;
  decoder?: Decoder;
}

interface Queued {
  task: DecodeTask;
  priority: Priority;
  queuedAt: number;
  resolve: (outputs: DecodeOutput[]) => void;
  reject: (err: unknown) => void;
}

/**
 * Measured (bench/results/footprint-breakdown.md): inflating and hashing a
 * 64 KiB chunk on the main thread takes ~0.3 ms warm, less than a task's
 * round trip to a worker that must start first (~30 ms, and ~10 MiB of
 * resident memory for its isolate as long as it lives); 256 KiB took 1.4 ms.
 */
export const INLINE_MAX_PLAIN_BYTES = 64 << 10;

const WORKER_FILE = fileURLToPath(new URL('../../workers/decode.js', import.meta.url));

/**
 * A tar-split of at most this many manifest entries is checked on the
 * calling thread when no worker is ready: the check's cost follows the
 * entries (33–255 ms for 2,336, so at most ~14 ms for these under load,
 * ~2 ms on a quiet machine), less than waiting for a worker to start (~50 ms).
 */
const TARSPLIT_INLINE_MAX_ENTRIES = 128;

/** Strips the "zstd:chunked <part>: " prefix ZstdChunkedError puts on its message, so that the rebuilt error does not say it twice. */
function bareMessage(message: string, part: string): string {
  const prefix = `zstd:chunked ${part}: `;
  return message.startsWith(prefix) ? message.slice(prefix.length) : message;
}

/** A worker's answer as the check's outcome: its refusals are the same ZstdChunkedError (code, part, message). */
function settleTarSplitAnswer(a: TarSplitCheckAnswer): { headers: number; tarSize: number } {
  if (a.ok) return { headers: a.headers, tarSize: a.tarSize };
  if (a.zstd) {
    const context = a.context as ZstdChunkedErrorContext;
    throw new ZstdChunkedError(a.code as ZstdChunkedErrorCode, bareMessage(a.message, context.part), context);
  }
  throw new Error(`tar-split check: ${a.message}`);
}

/**
 * The client side of the decode workers: tasks wait in two queues, and
 * foreground ones (a reader is waiting) always go before background ones
 * (prefetch, background fetch). Only a few tasks are handed to piscina at a
 * time, so a late foreground task never waits behind a long background queue.
 */
export class DecodePool {
  /** Workers at most. */
  readonly threads: number;
  /** Workers kept while idle (warm-up starts these). */
  readonly idleThreads: number;
  readonly decoder: Decoder;
  private readonly piscina: Piscina | null;
  private readonly queues: Record<Priority, Queued[]> = { foreground: [], background: [] };
  private inFlight = 0;
  private inFlightBackground = 0;
  private readonly maxInFlight: number;
  /** Background tasks handed to piscina at most: all workers but one (one with a single worker). */
  private readonly maxBackground: number;
  private readonly inlineMaxBytes: number;
  /** Workers loaded and taking tasks (piscina's workerCreate minus workerDestroy). */
  private readyWorkers = 0;
  /** Worker busy time since the last utilization update, and when that was. */
  private busyMs = 0;
  private busySince = performance.now();

  private readonly log: Telemetry['log'];
  private readonly metrics: Telemetry['metrics'];

  constructor(telemetry: Telemetry, opts: DecodePoolOptions = {}) {
    this.log = telemetry.log;
    this.metrics = telemetry.metrics;
    this.threads = opts.threads ?? availableParallelism();
    this.decoder = opts.decoder ?? 'zlib';
    this.maxInFlight = Math.max(1, this.threads * 2);
    this.maxBackground = Math.max(1, this.threads - 1);
    this.idleThreads = Math.min(this.threads, opts.idleThreads ?? 1);
    this.inlineMaxBytes = opts.inlineMaxBytes ?? INLINE_MAX_PLAIN_BYTES;
    this.piscina = this.threads > 0
      // recordTiming off: piscina's per-task histograms cost main-thread time; utilization is computed from the workers' own busy time.
      // execArgv: piscina loads the worker with require() first, and Node 20's require() of an ES
      // module aborts the whole process (V8 "Empty MaybeLocal") when the pool is closed while a
      // worker is still loading; without require(esm) it falls back to import(), which is safe.
      // minThreads: each worker is an isolate of ~10 MiB; only `idleThreads` stay while nothing is
      // decoded (by default none: see prestart() and decodesInline()), the others start when
      // tasks queue (or on prestart) and leave after `idleTimeoutMs` without work.
      ? new Piscina({
        filename: WORKER_FILE, minThreads: this.idleThreads, maxThreads: this.threads, idleTimeout: opts.idleTimeoutMs ?? 30_000, recordTiming: false,
        execArgv: ['--no-experimental-require-module'],
      })
      : null;
    // An 'error' event without a listener would end the process; a worker problem must not.
    this.piscina?.on('error', (err: Error) => this.log.error({ err: err.message }, 'decode worker error'));
    // Piscina announces a worker once it has loaded (and is gone): a task sent before waits for that.
    this.piscina?.on('workerCreate', () => { this.readyWorkers++; });
    this.piscina?.on('workerDestroy', () => { this.readyWorkers = Math.max(0, this.readyWorkers - 1); });
  }

  /**
   * Reads are likely soon (a layer is being resolved): starts a worker in the
   * background if none runs, so the first large read does not wait for one
   * to start (~50 ms on an idle machine, 200 ms at load 12 on two cores, most
   * of it loading the worker's modules); small reads meanwhile are decoded
   * here. It leaves again after `idleTimeoutMs` without work.
   */
  prestart(): void {
    if (!this.piscina || this.piscina.threads.length > 0) return;
    const empty: DecodeTask = { decoder: this.decoder, buffer: new ArrayBuffer(0), items: [], priority: 'background' };
    // A failure shows again with the first real task; a pool closed meanwhile rejects it too.
    this.piscina.run(empty).catch((err: unknown) => this.log.debug({ err: (err as Error)?.message ?? String(err) }, 'decode worker prestart failed'));
  }

  /**
   * Decodes and verifies the chunks of `items`, whose members are in `buffer`
   * (an ArrayBuffer is transferred: the caller must not use it afterwards; a
   * SharedArrayBuffer is shared, and must not change until the task is
   * done). `layer` names the layer in the failures that come back.
   */
  run(buffer: ArrayBuffer | SharedArrayBuffer, items: DecodeItem[], priority: Priority, layer?: string): Promise<DecodeOutput[]> {
    const task: DecodeTask = { decoder: this.decoder, buffer, items, priority, ...(layer !== undefined && { layer }) };
    if (!this.piscina || this.decodesInline(task)) {
      try {
        return Promise.resolve(outputsOf(decodeBatch(task)));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return new Promise((resolve, reject) => {
      this.queues[priority].push({ task, priority, queuedAt: performance.now(), resolve, reject });
      this.pump();
    });
  }

  /**
   * A small task a reader waits for while no worker is ready (none kept idle,
   * the last one left, or one still starting): cheaper here than waiting for
   * one. Once one is ready, every task goes to the workers, which keeps a busy
   * main thread (FUSE) free of decoding.
   */
  private decodesInline(task: DecodeTask): boolean {
    if (task.priority !== 'foreground' || this.readyWorkers > 0) return false;
    let plain = 0;
    for (const item of task.items) for (const ref of item.refs) plain += ref.size;
    return plain <= this.inlineMaxBytes;
  }

  /**
   * validateTarSplit (a zstd:chunked layer's open) on a decode worker: on the
   * main thread it took 33–255 ms for the python test image's 58 MB stdlib
   * layer as podman 5.4 pushes it (2,336 manifest entries; 2 cores under
   * load), far over the ~20 ms a FUSE reply may wait; in a worker started
   * for it, each layer's open paid 70–100 ms for the worker's start (W1 on
   * zstd:chunked 0.13 s against 0.06 s on eStargz). A layer of few entries
   * while no worker is ready is checked here (never with `inlineMaxBytes` 0).
   */
  readonly checkTarSplit: TarSplitChecker = async (tarSplit, pos, json, manifest) => {
    const task: TarSplitCheckTask = { tarSplit, pos, json };
    const inline = !this.piscina || (this.readyWorkers === 0 && this.inlineMaxBytes > 0 && manifest.entries.length <= TARSPLIT_INLINE_MAX_ENTRIES);
    if (inline) return settleTarSplitAnswer(await answerTarSplitCheck(task));
    return settleTarSplitAnswer(await this.piscina!.run(task, { name: 'checkTarSplit' }) as TarSplitCheckAnswer);
  };

  /** Worker threads alive now (starting ones included). */
  get workers(): number {
    return this.piscina?.threads.length ?? 0;
  }

  get queued(): number {
    return this.queues.foreground.length + this.queues.background.length;
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight) {
      // Background tasks (a whole background range's chunks: long) never fill every worker: a
      // reader's task that arrives finds one free instead of waiting behind them in piscina's queue.
      const next = this.queues.foreground.shift() ?? (this.inFlightBackground < this.maxBackground ? this.queues.background.shift() : undefined);
      if (!next) break;
      this.inFlight++;
      if (next.priority === 'background') this.inFlightBackground++;
      const buffer = next.task.buffer;
      this.piscina!.run(next.task, { transferList: buffer instanceof ArrayBuffer ? [buffer] : [] }).then(
        (result: DecodeResult) => {
          this.noteBusy(result.busyMs);
          next.resolve(outputsOf(result));
        },
        (err: unknown) => next.reject(err),
      ).finally(() => {
        this.inFlight--;
        if (next.priority === 'background') this.inFlightBackground--;
        this.metrics.poolTaskDuration.observe({ priority: next.priority }, (performance.now() - next.queuedAt) / 1000);
        this.pump();
      });
    }
    this.metrics.poolQueueDepth.set({ priority: 'foreground' }, this.queues.foreground.length);
    this.metrics.poolQueueDepth.set({ priority: 'background' }, this.queues.background.length);
  }

  /** Updates the utilization gauge at most once a second: busy time / (threads × elapsed). */
  private noteBusy(ms: number): void {
    this.busyMs += ms;
    const now = performance.now();
    const elapsed = now - this.busySince;
    if (elapsed < 1000) return;
    this.metrics.poolUtilization.set(Math.min(1, this.busyMs / (this.threads * elapsed)));
    this.busyMs = 0;
    this.busySince = now;
  }

  /**
   * Waits (briefly) for the tasks in flight, then stops the workers. Read-ahead
   * and prefetch tasks nobody waits for may still be running: destroying the
   * pool under them would make piscina report their answers as errors.
   */
  async close(): Promise<void> {
    if (!this.piscina) return;
    for (const q of Object.values(this.queues)) for (const t of q.splice(0)) t.reject(new Error('decode pool closed'));
    const deadline = Date.now() + 5000;
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await this.piscina.destroy();
  }
}

export type { ChunkRef, DecodeItem };
