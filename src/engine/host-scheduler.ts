import type { FetchOperation } from '../metrics/store-metrics.js';
import type { BlobFetcher } from './chunk-loader.js';

/** Who waits for a request: a reader, a prefetch, or nobody yet (background fetch). */
export type Lane = 'foreground' | 'prefetch' | 'background';

export interface HostSchedulerOptions {
  /** Blob requests in flight to the host at most, all layers and lanes together (the transport keeps 16 connections per origin). */
  maxRequests: number;
  /** Slots background work never takes: a reader's request always finds one free and waits behind no background range. */
  reservedForeground: number;
}

export const DEFAULT_HOST_SCHEDULER: HostSchedulerOptions = { maxRequests: 16, reservedForeground: 2 };

interface Waiter {
  lane: Lane;
  admit: () => void;
}

/** A finished request: its size and how long it took. */
interface Sample {
  bytes: number;
  ms: number;
}

/** Samples kept for the link estimate. */
const SAMPLES = 32;
/** Requests at least this large say something of bandwidth; the smallest durations say something of the round trip. */
const BANDWIDTH_SAMPLE_BYTES = 256 << 10;

export function laneOf(op: FetchOperation | undefined): Lane {
  return op === 'background' ? 'background' : op === 'prefetch' ? 'prefetch' : 'foreground';
}

/**
 * One queue per registry host for every layer's blob requests, by priority:
 * readers first, then prefetch, then background fetch. Readers take any
 * free slot; background requests never take the last `reservedForeground`
 * slots and never start while a reader or a prefetch waits, so a read that
 * arrives during a background fetch is sent at once (one round trip, not a
 * background range, behind). Background fetch does not wait for the link
 * to be idle: it runs whenever a slot is free, with as many ranges in
 * flight as cover the link's bandwidth × round trip, both measured from
 * finished requests (the round trip from the quickest, the bandwidth from
 * the fastest large one).
 */
export class HostScheduler {
  private readonly active: Record<Lane, number> = { foreground: 0, prefetch: 0, background: 0 };
  private readonly queue: Waiter[] = [];
  private readonly samples: Sample[] = [];
  private backgroundBytes = 8 << 20;

  constructor(private readonly opts: HostSchedulerOptions) {}

  private get total(): number {
    return this.active.foreground + this.active.prefetch + this.active.background;
  }

  /** Requests in flight, by lane (for tests and logs). */
  inFlight(): Readonly<Record<Lane, number>> {
    return { ...this.active };
  }

  /** Background ranges worth having in flight: bandwidth × round trip in ranges, plus one, within the slots background may take. */
  backgroundSlots(): number {
    const cap = Math.max(1, this.opts.maxRequests - this.opts.reservedForeground);
    if (this.samples.length < 2) return Math.min(2, cap);
    const rttMs = Math.min(...this.samples.map((s) => s.ms));
    const large = this.samples.filter((s) => s.bytes >= BANDWIDTH_SAMPLE_BYTES);
    if (!large.length) return Math.min(2, cap);
    const bytesPerMs = Math.max(...large.map((s) => s.bytes / Math.max(1, s.ms - rttMs)));
    return Math.max(1, Math.min(cap, Math.ceil((bytesPerMs * rttMs) / this.backgroundBytes) + 1));
  }

  /** Runs `fn` (one blob request of `bytes`) when its lane may; the slot is held until it settles. */
  async run<T>(lane: Lane, bytes: number, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.acquire(lane, signal);
    if (lane === 'background') this.backgroundBytes = Math.max(1, Math.round(0.8 * this.backgroundBytes + 0.2 * bytes));
    const started = performance.now();
    try {
      const out = await fn();
      this.samples.push({ bytes, ms: performance.now() - started });
      if (this.samples.length > SAMPLES) this.samples.shift();
      return out;
    } finally {
      this.active[lane]--;
      this.dispatch();
    }
  }

  private acquire(lane: Lane, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (!this.queue.length && this.admits(lane)) {
      this.active[lane]++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        lane,
        admit: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = (): void => {
        const i = this.queue.indexOf(w);
        if (i >= 0) this.queue.splice(i, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(w);
      this.dispatch();
    });
  }

  private admits(lane: Lane): boolean {
    if (lane === 'foreground') return this.total < this.opts.maxRequests;
    // A lane never starts while a higher one waits.
    const higher: readonly Lane[] = lane === 'prefetch' ? ['foreground'] : ['foreground', 'prefetch'];
    const higherWaits = this.queue.some((w) => higher.includes(w.lane));
    if (lane === 'prefetch') return !higherWaits && this.total < this.opts.maxRequests;
    return !higherWaits
      && this.total < this.opts.maxRequests - this.opts.reservedForeground
      && this.active.background < this.backgroundSlots();
  }

  /** Admits waiters, highest lane first, each lane in arrival order. */
  private dispatch(): void {
    for (const lane of ['foreground', 'prefetch', 'background'] as const) {
      for (let i = 0; i < this.queue.length;) {
        const w = this.queue[i]!;
        if (w.lane !== lane) {
          i++;
          continue;
        }
        // Taken off the queue first: admits() looks at who else waits.
        this.queue.splice(i, 1);
        if (this.admits(lane)) {
          this.active[lane]++;
          w.admit();
        } else {
          this.queue.splice(i, 0, w);
          break;
        }
      }
    }
  }
}

/** A blob's requests through its host's scheduler, each in the lane of its operation. */
export function scheduledFetcher(inner: BlobFetcher, scheduler: HostScheduler): BlobFetcher {
  const bytes = (ranges: readonly { length: number }[]): number => ranges.reduce((n, r) => n + r.length, 0);
  return {
    get size() {
      return inner.size;
    },
    readRanges: (ranges, signal, operation) => scheduler.run(laneOf(operation), bytes(ranges), () => inner.readRanges(ranges, signal, operation), signal),
    ...(inner.readOwned && {
      readOwned: (ranges, opts) => scheduler.run(laneOf(opts.operation), bytes(ranges), () => inner.readOwned!(ranges, opts), opts.signal),
    }),
  };
}
