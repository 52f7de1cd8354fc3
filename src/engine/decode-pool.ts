import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { decodeChunk, type ChunkRef, type Decoder } from '../estargz/chunk.js';
import { isEstargzError } from '../estargz/errors.js';
import { poolQueueDepth, poolTaskDuration, poolUtilization } from '../metrics/registry.js';
import type { DecodeItem, DecodeOutput, DecodeResult, DecodeTask } from '../../workers/decode-types.js';

export type Priority = 'foreground' | 'background';

export interface DecodePoolOptions {
  /** Worker threads; 0 decodes on the calling thread (benchmarks' baseline). Default: the machine's cores. */
  threads?: number;
  decoder?: Decoder;
}

interface Queued {
  task: DecodeTask;
  priority: Priority;
  queuedAt: number;
  resolve: (outputs: DecodeOutput[]) => void;
  reject: (err: unknown) => void;
}

const WORKER_FILE = fileURLToPath(new URL('../../workers/decode.js', import.meta.url));

/**
 * The client side of the decode workers: tasks wait in two queues, and
 * foreground ones (a reader is waiting) always go before background ones
 * (prefetch, background fetch). Only a few tasks are handed to piscina at a
 * time, so a late foreground task never waits behind a long background queue.
 */
export class DecodePool {
  readonly threads: number;
  readonly decoder: Decoder;
  private readonly piscina: Piscina | null;
  private readonly queues: Record<Priority, Queued[]> = { foreground: [], background: [] };
  private inFlight = 0;
  private readonly maxInFlight: number;

  constructor(opts: DecodePoolOptions = {}) {
    this.threads = opts.threads ?? availableParallelism();
    this.decoder = opts.decoder ?? 'zlib';
    this.maxInFlight = Math.max(1, this.threads * 2);
    this.piscina = this.threads > 0
      ? new Piscina({ filename: WORKER_FILE, minThreads: this.threads, maxThreads: this.threads, idleTimeout: 60_000 })
      : null;
  }

  /** Decodes and verifies the chunks of `items`, whose members are in `buffer` (transferred: the caller must not use it afterwards). */
  run(buffer: ArrayBuffer, items: DecodeItem[], priority: Priority): Promise<DecodeOutput[]> {
    const task: DecodeTask = { decoder: this.decoder, buffer, items };
    if (!this.piscina) return Promise.resolve(decodeInline(task));
    return new Promise((resolve, reject) => {
      this.queues[priority].push({ task, priority, queuedAt: performance.now(), resolve, reject });
      this.pump();
    });
  }

  get queued(): number {
    return this.queues.foreground.length + this.queues.background.length;
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight) {
      const next = this.queues.foreground.shift() ?? this.queues.background.shift();
      if (!next) break;
      this.inFlight++;
      this.piscina!.run(next.task, { transferList: [next.task.buffer] }).then(
        (result: DecodeResult) => next.resolve(result.outputs),
        (err: unknown) => next.reject(err),
      ).finally(() => {
        this.inFlight--;
        poolTaskDuration.observe({ priority: next.priority }, (performance.now() - next.queuedAt) / 1000);
        poolUtilization.set(this.piscina!.utilization);
        this.pump();
      });
    }
    poolQueueDepth.set({ priority: 'foreground' }, this.queues.foreground.length);
    poolQueueDepth.set({ priority: 'background' }, this.queues.background.length);
  }

  async close(): Promise<void> {
    await this.piscina?.destroy();
  }
}

/** The same work as the worker, on this thread. */
function decodeInline(task: DecodeTask): DecodeOutput[] {
  const outputs: DecodeOutput[] = [];
  for (const item of task.items) {
    const member = new Uint8Array(task.buffer, item.offset, item.length);
    for (const ref of item.refs) {
      try {
        const plain = decodeChunk(member, ref, task.decoder);
        outputs.push(plain.buffer.slice(plain.byteOffset, plain.byteOffset + plain.byteLength) as ArrayBuffer);
      } catch (err) {
        outputs.push({ code: isEstargzError(err) ? err.code : 'CHUNK_CORRUPT', message: (err as Error).message });
      }
    }
  }
  return outputs;
}

export type { ChunkRef, DecodeItem, DecodeOutput };
