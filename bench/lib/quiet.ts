/**
 * Waiting for a quiet machine between end-to-end sessions: between two
 * sessions nothing of the benchmark runs (the store is stopped, the registry
 * idle), so any CPU busy time in /proc/stat is someone else's (tests, builds,
 * other benchmarks on the shared 2-core machine).
 */
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

async function cpuTimes(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** Cores busy (all processes) over `ms`. */
export async function busyCores(ms: number): Promise<number> {
  const a = await cpuTimes();
  await sleep(ms);
  const b = await cpuTimes();
  const hz = 100; // USER_HZ on Linux
  return (b.busy - a.busy) / hz / (ms / 1000);
}

/**
 * Waits until a window of `windowMs` had at most `maxCores` busy, for up to
 * `maxWaitMs`. Returns the last window's busy cores and whether it was quiet.
 */
export async function waitQuiet(maxCores: number, maxWaitMs: number, windowMs = 250): Promise<{ busyCores: number; quiet: boolean; waitedMs: number }> {
  const started = performance.now();
  for (;;) {
    const busy = await busyCores(windowMs);
    const waitedMs = performance.now() - started;
    if (busy <= maxCores) return { busyCores: busy, quiet: true, waitedMs };
    if (waitedMs >= maxWaitMs) return { busyCores: busy, quiet: false, waitedMs };
  }
}
