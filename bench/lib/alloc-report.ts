/**
 * Reads what bench/lib/alloc-probe.ts wrote for a store process and gives
 * each soak phase its share: collections by kind, JS heap bytes allocated,
 * and buffer bytes by where they came from (counters at the last line at or
 * before the phase's start and end; lines are 500 ms apart).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { markdownTable } from './table.js';
import { MiB } from './stats.js';

/** The probe, for `node --import=`. */
export const ALLOC_PROBE_JS = fileURLToPath(new URL('./alloc-probe.js', import.meta.url));

interface Line {
  tUs: number;
  bytes: Record<string, number>;
  count: Record<string, number>;
  gc: Record<string, number>;
  heapAllocated: number;
  arrayBuffers: number;
}

export interface PhaseAllocs {
  phase: string;
  seconds: number;
  gc: Record<string, number>;
  heapAllocated: number;
  /** Buffer bytes by source, largest first. */
  bytes: [string, number, number][];
  bufferTotal: number;
}

const diff = (a: Record<string, number>, b: Record<string, number>): Record<string, number> =>
  Object.fromEntries(Object.keys(b).map((k) => [k, (b[k] ?? 0) - (a[k] ?? 0)]).filter(([, v]) => v !== 0));

export async function phaseAllocs(dir: string, pid: number, clock: Partial<Record<string, { startUs: number; endUs: number }>>): Promise<PhaseAllocs[]> {
  const lines = (await readFile(join(dir, `alloc-${pid}.jsonl`), 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line);
  const zero: Line = { tUs: 0, bytes: {}, count: {}, gc: {}, heapAllocated: 0, arrayBuffers: 0 };
  const at = (us: number): Line => lines.filter((l) => l.tUs <= us).at(-1) ?? zero;
  const out: PhaseAllocs[] = [];
  for (const [phase, w] of Object.entries(clock)) {
    if (!w) continue;
    const a = at(w.startUs);
    const b = at(w.endUs);
    const bytes = diff(a.bytes, b.bytes);
    const count = diff(a.count, b.count);
    out.push({
      phase,
      seconds: (b.tUs - a.tUs) / 1e6,
      gc: diff(a.gc, b.gc),
      heapAllocated: b.heapAllocated - a.heapAllocated,
      bytes: Object.entries(bytes).sort((x, y) => y[1] - x[1]).map(([k, v]) => [k, v, count[k] ?? 0]),
      bufferTotal: Object.values(bytes).reduce((n, v) => n + v, 0),
    });
  }
  return out;
}

export function allocTable(phases: PhaseAllocs[], rows = 12): string {
  const parts: string[] = [];
  parts.push(markdownTable(
    ['phase', 's (probe)', 'full GCs (MarkSweepCompact)', 'incremental marking', 'young GCs', 'JS heap allocated MiB', 'buffers allocated MiB'],
    phases.map((p) => [p.phase, p.seconds.toFixed(1), String(p.gc.MarkSweepCompact ?? 0), String(p.gc.IncrementalMarking ?? 0), String(p.gc.Scavenge ?? 0),
      (p.heapAllocated / MiB).toFixed(0), (p.bufferTotal / MiB).toFixed(0)]),
  ));
  for (const p of phases) {
    parts.push('', `${p.phase}: buffer bytes by source`, '', markdownTable(['source', 'MiB', 'buffers'], p.bytes.slice(0, rows).map(([k, v, n]) => [k, (v / MiB).toFixed(1), String(n)])));
  }
  return parts.join('\n');
}
