import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { FromDigest, ToDigest } from '../../workers/layer-digest.js';

const WORKER_FILE = fileURLToPath(new URL('../../workers/layer-digest.js', import.meta.url));

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
  private result: Promise<{ blobDigest: string; diffID: string }>;
  private settle!: { resolve: (r: { blobDigest: string; diffID: string }) => void; reject: (e: Error) => void };
  private closed = false;

  constructor() {
    this.worker = new Worker(WORKER_FILE, { execArgv: ['--no-experimental-require-module'] });
    this.result = new Promise((resolve, reject) => { this.settle = { resolve, reject }; });
    this.result.catch(() => {});
    this.worker.on('message', (m: FromDigest) => {
      if ('ack' in m) {
        this.inFlight--;
        this.ackWaiters.shift()?.();
      } else if ('error' in m) {
        this.settle.reject(new Error(`the layer does not gunzip: ${m.error}`));
      } else {
        this.settle.resolve(m);
      }
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`layer digest worker exited (${code})`)));
  }

  /**
   * Adds the next bytes of the blob. The buffer's memory is transferred when
   * the buffer is all of it (then `buf` must not be used afterwards), copied
   * otherwise. Resolves once the worker can take more.
   */
  async push(buf: Buffer): Promise<void> {
    if (this.closed) throw new Error('layer digest closed');
    while (this.inFlight >= MAX_IN_FLIGHT) await new Promise<void>((r) => this.ackWaiters.push(r));
    const whole = buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength && !(buf.buffer instanceof SharedArrayBuffer);
    let ab = buf.buffer as ArrayBuffer;
    if (!whole) {
      // Not from Node's shared pool (allocUnsafeSlow): a copy that can be transferred.
      const copy = Buffer.allocUnsafeSlow(buf.length);
      buf.copy(copy);
      ab = copy.buffer as ArrayBuffer;
    }
    this.inFlight++;
    const msg: ToDigest = { buf: ab };
    this.worker.postMessage(msg, [ab]);
  }

  /** Both digests once every pushed byte is hashed; the worker then stops. */
  async finish(): Promise<{ blobDigest: string; diffID: string }> {
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
