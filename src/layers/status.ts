/** One layer as `estargz-store status` shows it. */
export interface LayerStatus {
  ref: string;
  digest: string;
  keyedBy?: 'layer' | 'toc';
  state: 'resolving' | 'lazy' | 'prefetching' | 'incomplete' | 'complete' | 'failed';
  /** Why it failed (resolution or whole-layer check). */
  reason?: string;
  size?: number;
  fetchedBytes?: number;
  fetchedPercent?: number;
  uses: number;
}
