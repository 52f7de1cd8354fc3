import { createHash, webcrypto } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../../log/logger.js';

export interface HashRequest {
  id: number;
  /** Transferred (and handed back) when an ArrayBuffer; shared, read in place, when a SharedArrayBuffer. */
  bytes: ArrayBuffer | SharedArrayBuffer;
  /** The bytes to hash in `bytes` (default: all of it). */
  offset?: number;
  length?: number;
}

export interface HashReply {
  id: number;
  hex: string;
  /** A transferred input, handed back; absent for shared memory. */
  bytes?: ArrayBuffer;
}

export interface Hashed {
  hex: string;
  /**
   * The bytes that were hashed: the Buffer passed in when it is in shared
   * memory or small; otherwise a new Buffer over the same memory (it was
   * transferred to the thread and back; the one passed in is then empty).
   */
  bytes: Buffer;
}

const WORKER_FILE = fileURLToPath(new URL('./sha256-worker.js', import.meta.url));

/**
 * Up to this size a chunk is hashed on the calling (main) thread: 64 KiB
 * takes ~0.05 ms there, about what handing it to the thread costs
 * (~0.02 ms to post, ~0.1-0.17 ms until the answer is back).
 */
const INLINE_MAX = 64 << 10;
/** The thread is stopped after this long without work (and started again, ~30 ms, when needed). */
const IDLE_MS = 30_000;

interface Job {
  worker: Worker;
  /** The input, when the thread reads it in shared memory (nothing comes back but the hash). */
  shared?: Buffer;
  resolve(h: Hashed): void;
  reject(err: Error): void;
}

/**
 * sha256 of cache files read back from disk, kept off the main thread (FUSE
 * operations run there). Measured on the 2-core benchmark VM (node 20,
 * SHA-NI), main-thread time per chunk, median / p90:
 *
 *   size      createHash (sync)   subtle.digest        worker (transfer)
 *   16 KiB    0.014 / 0.016 ms    0.016-0.022 / 0.04   0.017 / 0.024
 *   64 KiB    0.05  / 0.055       0.023-0.030 / 0.09   0.020 / 0.027
 *   256 KiB   0.19  / 0.21        0.021-0.041 / 0.06   0.023 / 0.030
 *   1 MiB     0.75  / 0.84        0.08  / 0.54-0.89    0.025 / 0.029
 *   4 MiB     3.1   / 3.1-6.4     0.24-0.36 / 2.5-3.6  0.035 / 0.050
 *
 * `crypto.subtle.digest` does hash on libuv's pool, but first copies its
 * input on the calling thread into fresh memory, and at 1-4 MiB the page
 * faults of that copy make one call in ten block for as long as hashing
 * would. A worker thread that is handed the buffer (transferred, not
 * copied) and hands it back costs the same few hundredths of a millisecond
 * at any size. So: small chunks inline, larger ones on one worker thread;
 * if that thread cannot run, subtle.digest.
 *
 * Bytes in shared memory (see `allocate`) are read by the thread where they
 * are: nothing is transferred, so nothing comes back either. A transferred
 * ArrayBuffer comes back as a new ArrayBuffer object of the main thread,
 * which V8 counts as newly allocated external memory (towards its next full
 * GC), though no byte was copied.
 */
export class Sha256Hasher {
  constructor(private readonly log: Logger) {}

  private worker: Worker | undefined;
  private broken = false;
  private readonly jobs = new Map<number, Job>();
  private nextId = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  /**
   * Memory to read `size` bytes into that `hash` takes without a copy or a
   * transfer: shared memory for what goes to the thread, a plain Buffer
   * (Node's pool for the smallest) for what is hashed inline. Not zero-filled
   * when plain: the caller fills every byte it hashes.
   */
  allocate(size: number): Buffer {
    return size <= INLINE_MAX ? Buffer.allocUnsafe(size) : Buffer.from(new SharedArrayBuffer(size));
  }

  async hash(bytes: Buffer): Promise<Hashed> {
    if (bytes.length <= INLINE_MAX) return { hex: createHash('sha256').update(bytes).digest('hex'), bytes };
    if (this.broken) return { hex: Buffer.from(await webcrypto.subtle.digest('SHA-256', bytes)).toString('hex'), bytes };
    // Shared memory is read in place. Otherwise hand over memory only the buffer owns (a large file read gets its own); a view is copied.
    const shared = bytes.buffer instanceof SharedArrayBuffer ? bytes : undefined;
    const owned = bytes.byteOffset === 0 && bytes.buffer instanceof ArrayBuffer && bytes.buffer.byteLength === bytes.length;
    const ab = shared ? undefined : owned ? (bytes.buffer as ArrayBuffer) : new Uint8Array(bytes).buffer;
    const worker = this.thread();
    const id = this.nextId++;
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    worker.ref(); // while it has work, as any pending I/O would
    return new Promise<Hashed>((resolve, reject) => {
      this.jobs.set(id, { worker, resolve, reject, ...(shared && { shared }) });
      if (shared) {
        const req: HashRequest = { id, bytes: shared.buffer as SharedArrayBuffer, offset: shared.byteOffset, length: shared.length };
        worker.postMessage(req);
      } else {
        const req: HashRequest = { id, bytes: ab! };
        worker.postMessage(req, [ab!]);
      }
    });
  }

  private thread(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(WORKER_FILE);
    worker.on('message', (reply: HashReply) => {
      const job = this.jobs.get(reply.id);
      this.jobs.delete(reply.id);
      if (job) job.resolve({ hex: reply.hex, bytes: job.shared ?? Buffer.from(reply.bytes!) });
      if (this.jobs.size === 0) this.idle(worker);
    });
    worker.on('error', (err) => {
      this.broken = true;
      this.log.warn({ err: err.message }, 'disk cache hashing thread failed; hashing with crypto.subtle from now on');
    });
    worker.on('exit', () => {
      if (this.worker === worker) this.worker = undefined;
      // Bytes handed to a thread that is gone are lost with it: those reads become misses.
      for (const [id, job] of this.jobs) {
        if (job.worker !== worker) continue;
        this.jobs.delete(id);
        job.reject(new Error('disk cache hashing thread exited'));
      }
    });
    this.worker = worker;
    return worker;
  }

  /** An idle thread never keeps the process alive (unref after the listeners are on: adding a 'message' listener refs the port), and stops after IDLE_MS. */
  private idle(worker: Worker): void {
    worker.unref();
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.stop(worker), IDLE_MS).unref();
  }

  private stop(worker: Worker): void {
    if (this.worker !== worker || this.jobs.size) return;
    this.worker = undefined;
    void worker.terminate();
  }
}
