/**
 * Summarizes V8 .cpuprofile files (`node --cpu-prof`): self time per
 * function and per source file, so a benchmark can say where a store
 * process spent its time without opening DevTools.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileSummary {
  file: string;
  totalMs: number;
  /** Self time by function ("name file:line"), descending. */
  functions: { name: string; ms: number; share: number }[];
  /** Self time by source file (node internals and dependencies grouped). */
  files: { file: string; ms: number; share: number }[];
  /** Inclusive (self + callees) time of the project's own functions (src/, workers/), descending. */
  ownInclusive: { name: string; ms: number; share: number }[];
}

function shortUrl(url: string): string {
  if (url === '') return '(native/vm)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) return url.slice(nm + 'node_modules/'.length).split('/').slice(0, 2).join('/');
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return url.slice(dist + 6);
  return url.replace(/^file:\/\//, '');
}

export function summarizeProfile(p: Profile, file: string, top = 25): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const selfMs = new Map<number, number>();
  if (p.samples && p.timeDeltas) {
    for (let i = 0; i < p.samples.length; i++) {
      const dt = (p.timeDeltas[i + 1] ?? 0) / 1000;
      selfMs.set(p.samples[i]!, (selfMs.get(p.samples[i]!) ?? 0) + dt);
    }
  }
  const totalMs = (p.endTime - p.startTime) / 1000;
  const fn = new Map<string, number>();
  const files = new Map<string, number>();
  for (const [id, ms] of selfMs) {
    const n = byId.get(id)!;
    const cf = n.callFrame;
    const name = `${cf.functionName || '(anonymous)'} ${shortUrl(cf.url)}${cf.url ? `:${cf.lineNumber + 1}` : ''}`;
    fn.set(name, (fn.get(name) ?? 0) + ms);
    const f = cf.functionName.startsWith('(') && cf.url === '' ? cf.functionName : shortUrl(cf.url);
    files.set(f, (files.get(f) ?? 0) + ms);
  }
  // Inclusive time of our own functions: every distinct function on a sample's stack gets the sample's time.
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, number>();
  for (const [id, ms] of selfMs) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur)!.callFrame;
      if (!/\/dist\/(src|workers)\//.test(cf.url)) continue;
      const name = `${cf.functionName || '(anonymous)'} ${shortUrl(cf.url)}:${cf.lineNumber + 1}`;
      if (seen.has(name)) continue;
      seen.add(name);
      incl.set(name, (incl.get(name) ?? 0) + ms);
    }
  }
  const sorted = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  return {
    file,
    totalMs,
    functions: sorted(fn).map(([name, ms]) => ({ name, ms, share: ms / totalMs })),
    files: sorted(files).map(([f, ms]) => ({ file: f, ms, share: ms / totalMs })),
    ownInclusive: sorted(incl).map(([name, ms]) => ({ name, ms, share: ms / totalMs })),
  };
}

/** Every .cpuprofile in `dir`, summarized (main thread and worker threads each). */
export async function summarizeProfiles(dir: string, top = 25): Promise<ProfileSummary[]> {
  const out: ProfileSummary[] = [];
  for (const f of (await readdir(dir)).filter((x) => x.endsWith('.cpuprofile')).sort()) {
    const p = JSON.parse(await readFile(join(dir, f), 'utf8')) as Profile;
    out.push(summarizeProfile(p, f, top));
  }
  return out;
}

export function formatProfile(s: ProfileSummary, top = 15): string {
  const lines = [`${s.file}: ${(s.totalMs / 1000).toFixed(2)} s profiled`];
  lines.push('  by file: ' + s.files.slice(0, 8).map((f) => `${f.file} ${(f.share * 100).toFixed(1)}%`).join(', '));
  lines.push('  self time:');
  for (const f of s.functions.slice(0, top)) lines.push(`  ${(f.share * 100).toFixed(1).padStart(5)}%  ${f.ms.toFixed(0).padStart(6)} ms  ${f.name}`);
  if (s.ownInclusive.length) {
    lines.push('  inclusive time of our own functions:');
    for (const f of s.ownInclusive.slice(0, top)) lines.push(`  ${(f.share * 100).toFixed(1).padStart(5)}%  ${f.ms.toFixed(0).padStart(6)} ms  ${f.name}`);
  }
  return lines.join('\n');
}

export interface LongTask {
  /** ms since the profile started. */
  atMs: number;
  /** When it started on the monotonic clock (µs, as process.hrtime.bigint() / 1000n): to place it in a phase another process timed. */
  atUs: number;
  ms: number;
  /** Share of the task in the garbage collector. */
  gcShare: number;
  /** Frames with the most inclusive time in the task ("name file:line ms"), heaviest first. */
  top: { name: string; ms: number }[];
}

/**
 * Stretches where the thread never went idle for `minMs` or more: what an
 * event-loop delay of that size is made of. A stretch is a run of samples
 * none of which is `(idle)`; inclusive time per frame is counted within it.
 */
export function longTasks(p: Profile, minMs = 50, topFrames = 6): LongTask[] {
  if (!p.samples || !p.timeDeltas) return [];
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const out: LongTask[] = [];
  let t = 0;
  let run: { start: number; samples: { id: number; dt: number }[] } | null = null;
  const close = (end: number): void => {
    if (!run) return;
    const ms = (end - run.start) / 1000;
    if (ms >= minMs) {
      const incl = new Map<string, number>();
      let gc = 0;
      for (const s of run.samples) {
        const seen = new Set<string>();
        for (let cur: number | undefined = s.id; cur !== undefined; cur = parent.get(cur)) {
          const cf = byId.get(cur)!.callFrame;
          if (cf.functionName === '(garbage collector)') gc += s.dt;
          if (cf.functionName === '(root)') continue;
          const name = `${cf.functionName || '(anonymous)'} ${shortUrl(cf.url)}${cf.url ? `:${cf.lineNumber + 1}` : ''}`;
          if (seen.has(name)) continue;
          seen.add(name);
          incl.set(name, (incl.get(name) ?? 0) + s.dt);
        }
      }
      const top = [...incl.entries()].sort((a, b) => b[1] - a[1]).slice(0, topFrames).map(([name, us]) => ({ name, ms: us / 1000 }));
      out.push({ atMs: run.start / 1000, atUs: p.startTime + run.start, ms, gcShare: gc / (end - run.start), top });
    }
    run = null;
  };
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i]!;
    const dt = p.timeDeltas[i + 1] ?? 0;
    const idle = byId.get(p.samples[i]!)!.callFrame.functionName === '(idle)';
    if (idle) close(t);
    else {
      run ??= { start: t, samples: [] };
      run.samples.push({ id: p.samples[i]!, dt });
    }
  }
  close(t);
  return out.sort((a, b) => b.ms - a.ms);
}

/** The long tasks of the .cpuprofile files in `dir` (main thread first: the biggest file is usually it). */
export async function longTasksOf(dir: string, minMs = 50): Promise<{ file: string; tasks: LongTask[] }[]> {
  const out: { file: string; tasks: LongTask[] }[] = [];
  for (const f of (await readdir(dir)).filter((x) => x.endsWith('.cpuprofile')).sort()) {
    const p = JSON.parse(await readFile(join(dir, f), 'utf8')) as Profile;
    out.push({ file: f, tasks: longTasks(p, minMs) });
  }
  return out;
}

export function formatLongTasks(file: string, tasks: LongTask[], show = 10): string {
  const lines = [`${file}: ${tasks.length} stretches without idle ≥ threshold, ${tasks.reduce((n, t) => n + t.ms, 0).toFixed(0)} ms in all`];
  for (const t of tasks.slice(0, show)) {
    lines.push(`  ${t.ms.toFixed(0)} ms at ${(t.atMs / 1000).toFixed(1)} s (GC ${(t.gcShare * 100).toFixed(0)}%)`);
    for (const f of t.top) lines.push(`      ${f.ms.toFixed(0).padStart(5)} ms  ${f.name}`);
  }
  return lines.join('\n');
}
