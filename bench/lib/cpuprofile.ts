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
