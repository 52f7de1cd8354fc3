import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { FromDigest, ToDigest } from '../../workers/layer-digest.js';

/** The two digests of a whole layer: the blob's and its uncompressed tar's (the diff_id). */
export interface LayerDigests {
  blob: string;
  /** The diff_id, or why the blob did not inflate (a damaged member: a fault of this fetch, not a crash). */
  diff: string | Error;
}

const WORKER_FILE = fileURLToPath(new URL('../../workers/layer-digest.js', import.meta.url));

/** A copy for the worker is made this many bytes at a time. */
const COPY_SLICE_BYTES = 1 << 20;
/** Pieces sent but not yet taken by gunzip: past this, push() waits. */
const MAX_IN_FLIGHT = 2;

/**
 * The blob digest and diffID of a layer read in order, computed in a worker
 * thread of its own. On the main thread the same work (sha256 of every
 * compressed byte, gunzip in 16 KiB callbacks, sha256 of every plain byte)
 * took ~7% of the store's main thread during the soak and delayed FUSE
 * replies by up to ~200 ms whenever background fetch ran between reads.
 */
export class LayerDigest {
  private readonly worker: Worker;
  private inFlight = 0;
  private readonly ackWaiters: (() => void)[] = [];
  private result: Promise<LayerDigests>;
  private settle!: { resolve: (r: LayerDigests) => void; reject: (e: Error) => void };
  private closed = false;

  constructor() {
    this.worker = new Worker(WORKER_FILE, { execArgv: ['--no-experimental-require-module'] });
    this.result = new Promise((resolve, reject) => { this.settle = { resolve, reject }; });
    // finish() hands the outcome over; a failure before anyone asks (the worker died) must not be an unhandled rejection meanwhile.
    this.result.catch(() => {});
    this.worker.on('message', (m: FromDigest) => {
      if ('ack' in m) {
        this.inFlight--;
        this.ackWaiters.shift()?.();
      } else if ('error' in m) {
        this.settle.resolve({ blob: m.blobDigest, diff: new Error(`the layer does not gunzip: ${m.error}`) });
      } else {
        this.settle.resolve({ blob: m.blobDigest, diff: m.diffID });
      }
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`layer digest worker exited (${code})`)));
  }

  /**
   * Adds the next bytes of the blob; resolves once the worker can take more.
   * A buffer that is the caller's alone (`exclusive`: its whole ArrayBuffer,
   * no other holder) is transferred as it is, and is unusable afterwards.
   * Any other is copied into a buffer that is transferred (the fetched
   * buffer may be shared with a reader that asked for the same range, so it
   * must not be detached), a slice at a time with a turn of the event loop
   * between slices: one memcpy of an 8 MiB range, page faults included, was
   * a 200 ms main-thread stall in the soak on a loaded machine.
   */
  async push(buf: Buffer, exclusive = false): Promise<void> {
    if (this.closed) throw new Error('layer digest closed');
    while (this.inFlight >= MAX_IN_FLIGHT) await new Promise<void>((r) => this.ackWaiters.push(r));
    if (this.closed) throw new Error('layer digest closed');
    if (buf.buffer instanceof SharedArrayBuffer) {
      // Shared memory, read only on both sides: no copy, nothing transferred.
      this.inFlight++;
      const msg: ToDigest = { buf: buf.buffer, offset: buf.byteOffset, length: buf.length };
      this.worker.postMessage(msg);
      return;
    }
    let ab: ArrayBuffer;
    if (exclusive && buf.byteOffset === 0 && buf.buffer.byteLength === buf.length && buf.buffer instanceof ArrayBuffer) {
      ab = buf.buffer;
    } else {
      // Not from Node's shared pool (allocUnsafeSlow): a buffer of its own, so it can be transferred.
      const copy = Buffer.allocUnsafeSlow(buf.length);
      for (let at = 0; at < buf.length; at += COPY_SLICE_BYTES) {
        if (at > 0) await new Promise<void>((resolve) => setImmediate(resolve));
        buf.copy(copy, at, at, Math.min(buf.length, at + COPY_SLICE_BYTES));
      }
      if (this.closed) throw new Error('layer digest closed');
      ab = copy.buffer as ArrayBuffer;
    }
    this.inFlight++;
    const msg: ToDigest = { buf: ab };
    this.worker.postMessage(msg, [ab]);
  }

  /** Both digests once every pushed byte is hashed; the worker then stops. */
  async finish(): Promise<LayerDigests> {
    const msg: ToDigest = { end: true };
    this.worker.postMessage(msg);
    try {
      return await this.result;
    } finally {
      await this.close();
    }
  }

  /** Stops the worker (a layer closed before its background fetch ended). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.settle.reject(new Error('layer digest closed'));
    for (const w of this.ackWaiters.splice(0)) w();
    await this.worker.terminate();
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.settle.reject(err);
    for (const w of this.ackWaiters.splice(0)) w();
  }
}
