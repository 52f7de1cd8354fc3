/** How long a mirror that failed is skipped: `initialMs` after one failure, doubling per failure in a row, at most `maxMs`. */
export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
}

/**
 * Short enough that a mirror back from a restart is used again within a
 * minute, long enough that a dead one costs one failed request per period
 * rather than one per chunk read.
 */
export const DEFAULT_MIRROR_BACKOFF: BackoffPolicy = { initialMs: 1000, maxMs: 60_000 };

/** What one request says about an endpoint. */
export type Verdict = 'up' | 'down' | 'unknown';

interface DownState {
  /** Failures in a row (each failed probe adds one). */
  failures: number;
  /** Skipped until then. */
  until: number;
  /** A request is probing the endpoint: the others keep skipping it until that one ends. */
  probing: boolean;
}

/**
 * Remembers endpoints (mirrors) that just failed — refused the connection,
 * timed out, answered 429 or 5xx — so that requests skip them for a while
 * instead of each paying for the same failure. When the period is over, one
 * request probes the endpoint; if it fails, the next period is twice as long,
 * and any answer from it (even a 404) ends the back-off.
 */
export class EndpointHealth {
  private readonly down = new Map<string, DownState>();

  constructor(
    private readonly policy: BackoffPolicy = DEFAULT_MIRROR_BACKOFF,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether a request may go to `key` now. True means the caller must `report` how it went. */
  available(key: string): boolean {
    const s = this.down.get(key);
    if (!s) return true;
    if (s.probing || this.now() < s.until) return false;
    s.probing = true;
    return true;
  }

  /**
   * Records how a request to `key` went. Returns the back-off in ms when this
   * report starts or extends one (for a log line), else undefined.
   */
  report(key: string, verdict: Verdict): number | undefined {
    const s = this.down.get(key);
    if (verdict === 'up') {
      this.down.delete(key);
      return undefined;
    }
    if (verdict === 'unknown') {
      // Aborted by its caller: says nothing about the endpoint; let the next request probe.
      if (s) s.probing = false;
      return undefined;
    }
    if (!s) {
      const ms = this.backoffMs(1);
      this.down.set(key, { failures: 1, until: this.now() + ms, probing: false });
      return ms;
    }
    // Requests already in flight when the endpoint was marked down fail too: only a probe counts again.
    if (!s.probing) return undefined;
    s.probing = false;
    s.failures += 1;
    const ms = this.backoffMs(s.failures);
    s.until = this.now() + ms;
    return ms;
  }

  /** Whether `key` is being skipped (for status and tests). */
  isDown(key: string): boolean {
    return this.down.has(key);
  }

  private backoffMs(failures: number): number {
    return Math.min(this.policy.initialMs * 2 ** (failures - 1), this.policy.maxMs);
  }
}
