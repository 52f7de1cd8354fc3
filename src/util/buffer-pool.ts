/**
 * Shared memory that is used again instead of allocated anew: registry
 * response bodies (RemoteBlob), which the decode workers read in place.
 *
 * Why: every new ArrayBuffer counts as external memory in V8, and V8 starts
 * a full (mark-compact) collection of the main thread's heap for about every
 * 64 MiB of external memory allocated since the last one. A body lives until
 * its decode tasks are done (hundreds of ms under load, long enough to be
 * promoted to the old generation), so each one counted towards the next full
 * GC: the cold pass of the soak allocated 288 MiB of bodies, with a full GC
 * (a main-thread stall) every second or so. A pooled buffer is allocated
 * once and counted once.
 *
 * Safety: a buffer goes back to the pool only once every holder let it go:
 * the one that acquired it (`release`), and every holder it was handed to
 * with `retain`. A holder that cannot say when it is done is declared with
 * `escape`, and the buffer is then never used again (the garbage collector
 * frees it as before). A release that never comes has the same effect: a
 * buffer is never reused by mistake, at worst not reused at all.
 */

export interface BufferPoolOptions {
  /** Smaller buffers are allocated as they are (default 64 KiB): not worth pooling. */
  minBytes?: number;
  /** Larger buffers are allocated as they are (default 16 MiB: the engine's requests are mostly far smaller). */
  maxBytes?: number;
  /** Bytes of idle buffers kept at most (default 32 MiB); a buffer let go beyond it is left to the garbage collector. */
  maxIdleBytes?: number;
  /** Idle buffers are all dropped once none was asked for in this long (default 30 s): an idle store keeps none. */
  idleMs?: number;
}

const DEFAULTS: Required<BufferPoolOptions> = {
  minBytes: 64 << 10,
  maxBytes: 16 << 20,
  maxIdleBytes: 32 << 20,
  idleMs: 30_000,
};

/** A buffer from a pool, and who holds it. */
export class PooledBuffer {
  /** Holders: the acquirer, plus one per retain not yet released. */
  private holders = 1;
  private escaped = false;

  constructor(
    /** The bytes asked for: the first `size` bytes of the pooled memory. */
    readonly bytes: Buffer,
    /** The whole pooled memory (its size class), or undefined for a buffer allocated as it is. */
    private readonly memory: SharedArrayBuffer | undefined,
    private readonly pool: BufferPool,
  ) {}

  /** The acquirer's release: once every retain was released too, the memory goes back to the pool. Once only. */
  readonly release = once(() => this.letGo());

  /** One more holder; it calls the function returned (once) when it no longer reads the bytes. */
  retain(): () => void {
    if (this.holders <= 0) throw new Error('BUG: retain of a buffer already let go');
    this.holders++;
    return once(() => this.letGo());
  }

  /** A holder that cannot say when it is done: the memory is never reused. */
  escape(): void {
    this.escaped = true;
  }

  /** Whether the memory can still go back to the pool (for tests and assertions). */
  get reusable(): boolean {
    return this.memory !== undefined && !this.escaped;
  }

  private letGo(): void {
    if (--this.holders === 0 && this.memory && !this.escaped) this.pool.put(this.memory);
  }
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}

/**
 * SharedArrayBuffers in size classes (a power of two times 1, 1.25, 1.5 or
 * 1.75: at most a quarter unused). Each instance is one pool (a store
 * process has one, on its registry client).
 */
export class BufferPool {
  private readonly opts: Required<BufferPoolOptions>;
  /** Idle memory by size class, most recently let go last (used first: its pages are still resident). */
  private readonly idle = new Map<number, SharedArrayBuffer[]>();
  private idleTotal = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private lastAcquire = 0;
  /** Pooled memory allocated so far (bytes), and buffers acquired: for tests and benchmarks. */
  allocatedBytes = 0;
  acquired = 0;

  constructor(opts: BufferPoolOptions = {}) {
    this.opts = { ...DEFAULTS, ...opts };
  }

  /** Bytes of idle memory held. */
  get idleBytes(): number {
    return this.idleTotal;
  }

  /**
   * A buffer of `size` bytes of shared memory, not zero-filled when reused
   * (the caller overwrites every byte it reads). Sizes outside the pooled
   * range get memory of their own, never pooled.
   */
  acquire(size: number): PooledBuffer {
    this.acquired++;
    this.lastAcquire = performance.now();
    if (size < this.opts.minBytes || size > this.opts.maxBytes) {
      return new PooledBuffer(Buffer.from(new SharedArrayBuffer(size)), undefined, this);
    }
    const cls = sizeClass(size, this.opts.minBytes);
    const memory = this.idle.get(cls)?.pop();
    if (memory) {
      this.idleTotal -= cls;
      return new PooledBuffer(Buffer.from(memory, 0, size), memory, this);
    }
    this.allocatedBytes += cls;
    const fresh = new SharedArrayBuffer(cls);
    return new PooledBuffer(Buffer.from(fresh, 0, size), fresh, this);
  }

  /** Memory let go by all its holders: kept for reuse, within maxIdleBytes. */
  put(memory: SharedArrayBuffer): void {
    const cls = memory.byteLength;
    if (this.idleTotal + cls > this.opts.maxIdleBytes) return;
    const list = this.idle.get(cls);
    if (list) list.push(memory);
    else this.idle.set(cls, [memory]);
    this.idleTotal += cls;
    this.armIdleTimer();
  }

  /** Drops every idle buffer (the memory is freed once the garbage collector sees it unreferenced). */
  clear(): void {
    this.idle.clear();
    this.idleTotal = 0;
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  private armIdleTimer(): void {
    if (this.idleTimer) return;
    const check = (): void => {
      this.idleTimer = undefined;
      if (this.idleTotal === 0) return;
      const quietFor = performance.now() - this.lastAcquire;
      if (quietFor >= this.opts.idleMs) this.clear();
      else this.idleTimer = setTimeout(check, this.opts.idleMs - quietFor).unref();
    };
    this.idleTimer = setTimeout(check, this.opts.idleMs).unref();
  }
}

/** The smallest class ≥ size (and ≥ min): 2^k × (4, 5, 6 or 7) / 4, in whole KiB. */
export function sizeClass(size: number, min: number): number {
  let pow = 1024;
  while (pow * 2 <= Math.max(size, min)) pow *= 2;
  for (const q of [4, 5, 6, 7, 8]) {
    const cls = (pow / 4) * q;
    if (cls >= size && cls >= min) return cls;
  }
  return pow * 2;
}
