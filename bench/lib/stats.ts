/** Summary of a set of samples: benchmarks report the median (robust to one noisy run on a shared 2-core machine) with the spread. */
export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
  mean: number;
}

export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) throw new RangeError('no samples');
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  const mean = sorted.reduce((s, x) => s + x, 0) / sorted.length;
  return { n: sorted.length, median, min: sorted[0]!, max: sorted[sorted.length - 1]!, mean };
}

/** "12.3 (11.9–13.0)": median with min–max, at a fixed number of decimals. */
export function formatSummary(s: Summary, decimals: number): string {
  return `${s.median.toFixed(decimals)} (${s.min.toFixed(decimals)}–${s.max.toFixed(decimals)})`;
}

export const MiB = 1024 * 1024;
