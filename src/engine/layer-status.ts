import type { FetchOperation, LayerStateName, StoreMetrics } from '../metrics/store-metrics.js';
import type { BackgroundState } from './background-fetch.js';
import { RangeSet } from './plan.js';

/**
 * A layer's state (lazy, prefetching, incomplete, complete, failed) and how
 * much of its blob was fetched, kept in one place because the control
 * socket's status and the per-layer metrics both report them. The metrics
 * series exist only for a bounded number of layers (trackLayer).
 */
export class LayerStatus {
  private readonly fetched = new RangeSet();
  private prefetched = 0;
  private stateName: LayerStateName = 'lazy';
  private failure: string | undefined;
  private readonly tracked: boolean;

  constructor(private readonly layer: string, size: number, private readonly metrics: StoreMetrics) {
    this.tracked = this.metrics.trackLayer(layer);
    if (this.tracked) this.metrics.layerSize.set({ layer }, size);
    this.set('lazy');
  }

  get state(): LayerStateName {
    return this.stateName;
  }

  /** Why the layer failed, or why its background fetch stopped short. */
  get failureReason(): string | undefined {
    return this.failure;
  }

  /** Distinct compressed bytes fetched, by any operation. */
  get fetchedBytes(): number {
    return this.fetched.bytes;
  }

  /** Compressed bytes fetched by prefetch. */
  get prefetchBytes(): number {
    return this.prefetched;
  }

  /** A reason is kept until the layer completes (a later state without one, such as lazy, leaves it). */
  set(s: LayerStateName, reason?: string): void {
    this.stateName = s;
    if (reason) this.failure = reason;
    else if (s === 'complete') this.failure = undefined;
    this.metrics.setLayerState(this.layer, s);
  }

  /** The layer's state follows its background fetch once that has something to say. */
  followBackground(state: BackgroundState, reason?: string): void {
    if (state === 'complete') this.set('complete');
    else if (state === 'failed') this.set('failed', reason);
    else if (state === 'incomplete') this.set('incomplete', reason);
    else if (this.stateName === 'incomplete') this.set('lazy');
  }

  /** Called for every compressed range the layer fetched. */
  noteFetched(offset: number, end: number, op: FetchOperation): void {
    this.fetched.add(offset, end);
    if (op === 'prefetch') this.prefetched += end - offset;
    if (this.tracked) {
      this.metrics.layerFetched.set({ layer: this.layer }, this.fetched.bytes);
      this.metrics.layerPrefetched.set({ layer: this.layer }, this.prefetched);
    }
  }

  /** Drops the layer's metrics series. */
  close(): void {
    if (this.tracked) this.metrics.untrackLayer(this.layer);
  }
}
