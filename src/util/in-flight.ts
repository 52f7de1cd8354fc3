/**
 * Work in progress, keyed, so that a second caller asking for the same thing
 * shares the pending promise instead of starting it again (a chunk wanted by
 * several readers, a block of the raw blob, a byte range of a registry blob).
 *
 * An entry lives from `track`/`defer` until its promise settles, and is then
 * removed (only if it is still the entry for its key). The removal hangs off
 * `then(done, done)`, which handles a rejection: the bookkeeping never makes
 * an unhandled rejection of its own, and a caller that drops the promise is
 * the caller's business.
 *
 * Each entry counts the callers that joined it: whoever started the work can
 * ask, once it settled, whether its result went to anyone else (a buffer no
 * one else holds may be handed to a worker without a copy).
 */
export class InFlight<K, V> {
  private readonly entries = new Map<K, Entry<V>>();

  get size(): number {
    return this.entries.size;
  }

  has(key: K): boolean {
    return this.entries.has(key);
  }

  /** Every pending promise (to wait for all of them to settle; not a join). */
  pending(): Promise<V>[] {
    return [...this.entries.values()].map((e) => e.promise);
  }

  /** The pending promise for `key`, if any; the caller becomes one more holder of its result. */
  join(key: K): Promise<V> | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    e.joiners++;
    return e.promise;
  }

  /** Registers `promise` as the work for `key` until it settles (replacing any entry there). */
  track(key: K, promise: Promise<V>): Ticket<V> {
    const entry: Entry<V> = { promise, joiners: 0 };
    this.entries.set(key, entry);
    const done = (): void => {
      if (this.entries.get(key) === entry) this.entries.delete(key);
    };
    promise.then(done, done);
    return { promise, get shared() { return entry.joiners > 0; } };
  }

  /** The pending promise for `key`, or the one `start` makes, registered. */
  share(key: K, start: () => Promise<V>): Promise<V> {
    return this.join(key) ?? this.track(key, start()).promise;
  }

  /** A promise for `key` that the caller settles later (work done in batches). */
  defer(key: K): Deferred<V> {
    let resolve!: (v: V) => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<V>((res, rej) => { resolve = res; reject = rej; });
    const ticket = this.track(key, promise);
    return { key, promise, resolve, reject, get shared() { return ticket.shared; } };
  }
}

interface Entry<V> {
  promise: Promise<V>;
  joiners: number;
}

/** The work of one key as its starter sees it. */
export interface Ticket<V> {
  promise: Promise<V>;
  /** Whether another caller joined: read once the promise settled (no one can join after that). */
  readonly shared: boolean;
}

export interface Deferred<V> extends Ticket<V> {
  key: unknown;
  resolve(v: V): void;
  reject(e: unknown): void;
}
