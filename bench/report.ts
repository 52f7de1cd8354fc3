/**
 * Writes bench/RESULTS.md from the newest result of every benchmark in
 * bench/results/: where and when each ran (and whether all ran at one
 * commit), the figures the issues set targets for beside those targets, then
 * every benchmark's tables. Measures nothing; `npm run bench:full` ends with
 * it, and it can be rerun at any time.
 *
 *   node dist/bench/report.js [--out FILE]
 */
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot, type MachineInfo } from './lib/machine.js';
import type { Summary } from './lib/stats.js';
import { markdownTable } from './lib/table.js';
import { verdicts, type SoakResult } from './lib/soak.js';

const USAGE = `usage: node dist/bench/report.js [--out FILE]
  --out FILE   where to write (default bench/RESULTS.md)`;

/** In the order bench:full runs them. */
const BENCHMARKS = [
  { name: 'convert', title: 'Converter vs the reference' },
  { name: 'open', title: 'Open time of a large TOC' },
  { name: 'pool', title: 'Decode pool' },
  { name: 'read', title: 'Engine reads' },
  { name: 'registry', title: 'Registry client' },
  { name: 'e2e', title: 'The store end to end' },
  { name: 'wan', title: 'End to end over a shaped link' },
  { name: 'podman', title: 'podman pull + run' },
  { name: 'soak', title: 'Load and soak' },
] as const;
type BenchName = (typeof BENCHMARKS)[number]['name'];

interface Loaded {
  file: string;
  json: Record<string, unknown> & { machine: MachineInfo; finishedAt?: string; loadavgEnd?: number[] };
  /** The benchmark's tables, when results/<name>.md was written from this same JSON. */
  tables: string | null;
}

/** One figure an issue set a target for. */
interface TargetRow {
  issue: string;
  figure: string;
  target: string;
  measured: string;
  verdict: string;
}

const { values: args } = parseArgs({
  options: { out: { type: 'string' }, help: { type: 'boolean', default: false } },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

const resultsDir = join(repoRoot(), 'bench', 'results');
const outPath = args.out ?? join(repoRoot(), 'bench', 'RESULTS.md');

async function loadNewest(name: BenchName, files: string[]): Promise<Loaded | null> {
  // Timestamps in the names sort as text.
  const file = files.filter((f) => f.startsWith(`${name}-`) && f.endsWith('.json')).sort().at(-1);
  if (!file) return null;
  const json = JSON.parse(await readFile(join(resultsDir, file), 'utf8')) as Loaded['json'];
  let tables: string | null = null;
  try {
    const md = await readFile(join(resultsDir, `${name}.md`), 'utf8');
    if (md.includes(`Raw samples: \`${file}\``)) tables = md;
  } catch {
    // no tables file: the section says so
  }
  return { file, json, tables };
}

const ok = (met: boolean): string => (met ? 'met' : 'missed');
const x = (v: number): string => `${v.toFixed(2)}×`;

function poolRows(pool: Loaded): TargetRow[] {
  interface Result { chunkSize: number; config: { name: string; kind: string; decoder: string; threads: number }; mbps: Summary; ratioVsInlineZlib: number; eldMs?: { p99: Summary } }
  const results = pool.json.results as Result[];
  const cores = (pool.json.settings as { cores: number }).cores;
  const pick = (size: number, kind: string, decoder: string, threads?: number): Result | undefined =>
    results.find((r) => r.chunkSize === size && r.config.kind === kind && r.config.decoder === decoder && (threads === undefined || r.config.threads === threads) &&
      !r.config.name.includes('no utilization') && !r.config.name.includes('unbatched'));
  const rows: TargetRow[] = [];
  for (const [size, label, target] of [[4 << 20, '4 MiB', 1.7], [16 << 10, '16 KiB', 1.5]] as const) {
    const p = pick(size, 'pool', 'zlib', cores);
    const ceiling = pick(size, 'ceiling', 'zlib');
    if (!p) continue;
    rows.push({
      issue: '4', figure: `decode pool (${cores} workers, zlib) vs single-thread node:zlib, ${label} chunks`, target: `≥ ${target}×`,
      measured: `${x(p.ratioVsInlineZlib)}${ceiling ? ` (bare-threads ceiling ${x(ceiling.ratioVsInlineZlib)})` : ''}`, verdict: ok(p.ratioVsInlineZlib >= target),
    });
  }
  const pako = pick(4 << 20, 'pool', 'pako', cores);
  const zlib = pick(4 << 20, 'pool', 'zlib', cores);
  if (pako && zlib) rows.push({ issue: '4', figure: 'pako vs node:zlib in the pool, 4 MiB chunks', target: 'side by side', measured: x(pako.mbps.median / zlib.mbps.median), verdict: '—' });
  const eld = results.filter((r) => r.config.kind === 'pool' && r.config.decoder === 'zlib' && r.config.threads === cores && r.eldMs && !r.config.name.includes('no utilization'));
  if (eld.length) {
    const worst = eld.reduce((a, b) => (b.eldMs!.p99.median > a.eldMs!.p99.median ? b : a));
    const best = Math.min(...eld.map((r) => r.eldMs!.p99.median));
    rows.push({
      issue: '4', figure: 'main-thread event-loop delay p99 while the pool is saturated (median over runs; best–worst chunk size)', target: '< 10 ms',
      measured: `${best.toFixed(1)}–${worst.eldMs!.p99.median.toFixed(1)} ms`, verdict: ok(worst.eldMs!.p99.median < 10),
    });
  }
  return rows;
}

function readRows(read: Loaded): TargetRow[] {
  const s = read.json.summary as { coldOneVsCurl: number; curlRangeMbps: number; coldOneMbps: Summary; warmSeqMbps: Summary };
  return [
    { issue: '4', figure: 'cold read of a 20 MiB file vs `curl | gunzip` of the same bytes', target: '≥ 60 %', measured: `${(s.coldOneVsCurl * 100).toFixed(0)} % (${s.coldOneMbps.median.toFixed(0)} vs ${s.curlRangeMbps.toFixed(0)} MB/s)`, verdict: ok(s.coldOneVsCurl >= 0.6) },
    { issue: '4', figure: 'warm read from the memory cache, in process', target: '≥ 1 GB/s', measured: `${(s.warmSeqMbps.median / 1000).toFixed(1)} GB/s`, verdict: ok(s.warmSeqMbps.median >= 1000) },
  ];
}

const W_TARGETS: Record<string, string> = { W1: '≤ 0.058 s', W2: '≥ 120 MB/s', W3: '≤ 1.0 s', W4: '≤ 0.4 s, blob fetched once', W5: '≤ 0.1 s', W6: '≤ 0.1 s' };

function e2eRows(e2e: Loaded): TargetRow[] {
  interface Sum { key: string; label: string; image: string; workload: string; seconds: Summary; mbps: number | null; blobBytesRatio: number | null; verdict: string; fullPull: { seconds: Summary } | null; extra: { warmDd?: { mbps: number }; warmStatUs?: Summary }; goref?: { seconds: Summary } | null }
  const rows: TargetRow[] = [];
  for (const s of e2e.json.summaries as Sum[]) {
    const target = W_TARGETS[s.workload];
    if (!target) continue;
    const rate = s.workload === 'W2' && s.mbps !== null ? ` (${s.mbps.toFixed(0)} MB/s)` : '';
    const bytes = s.workload === 'W4' && s.blobBytesRatio !== null ? `, fetched ${s.blobBytesRatio.toFixed(2)}× the blob` : '';
    const full = s.fullPull ? `; full pull ${s.fullPull.seconds.median.toFixed(2)} s` : '';
    const go = s.goref ? `; Go store ${s.goref.seconds.median.toFixed(3)} s` : '';
    rows.push({ issue: '5', figure: `${s.workload} ${s.label} [${s.image}]`, target, measured: `${s.seconds.median.toFixed(3)} s${rate}${bytes}${full}${go}`, verdict: s.verdict });
    if (s.extra.warmDd) rows.push({ issue: '5', figure: `warm sequential read through FUSE (dd) [${s.image}]`, target: '≥ 800 MB/s', measured: `${s.extra.warmDd.mbps.toFixed(0)} MB/s`, verdict: ok(s.extra.warmDd.mbps >= 800) });
    if (s.extra.warmStatUs) rows.push({ issue: '5', figure: `warm stat per call [${s.image}]`, target: '≤ 50 µs', measured: `${s.extra.warmStatUs.median.toFixed(0)} µs`, verdict: ok(s.extra.warmStatUs.median <= 50) });
  }
  return rows;
}

function podmanRows(podman: Loaded): TargetRow[] {
  interface Run { variant: string; totalSeconds: number }
  const runs = podman.json.samples as Run[];
  const median = (v: string): number | null => {
    const xs = runs.filter((r) => r.variant === v).map((r) => r.totalSeconds).sort((a, b) => a - b);
    return xs.length ? xs[Math.floor(xs.length / 2)]! : null;
  };
  const gzip = median('gzip');
  const rows: TargetRow[] = [];
  for (const v of ['lazy', 'lazy+prio']) {
    const m = median(v);
    if (m === null) continue;
    const go = median(`go-${v}`);
    rows.push({
      issue: '5', figure: `W7 podman pull + run python (${v}${v === 'lazy+prio' ? ': converted with --prioritized-files' : ''})`, target: '≤ 1.0 s',
      measured: `${m.toFixed(2)} s${gzip !== null ? `; full gzip pull ${gzip.toFixed(2)} s` : ''}${go !== null ? `; Go store ${go.toFixed(2)} s` : ''}`, verdict: ok(m <= 1.0),
    });
  }
  return rows;
}

function provenance(loaded: Map<BenchName, Loaded>): string[] {
  const out: string[] = [];
  const rows = [...loaded.entries()].map(([name, l]) => {
    const m = l.json.machine;
    return [name, `[${l.file}](results/${l.file})`, m.date.replace('T', ' ').slice(0, 19), (l.json.finishedAt ?? '').replace('T', ' ').slice(0, 19),
      m.gitCommit ? `${m.gitCommit.slice(0, 12)}${m.gitDirty ? ' + changes' : ''}` : 'unknown', `${m.loadavg.join(' ')} → ${(l.json.loadavgEnd ?? []).join(' ')}`];
  });
  out.push(markdownTable(['benchmark', 'raw samples', 'started (UTC)', 'finished (UTC)', 'commit', 'load 1/5/15 start → end'], rows), '');
  const commits = new Set([...loaded.values()].map((l) => l.json.machine.gitCommit));
  const dirty = [...loaded.entries()].filter(([, l]) => l.json.machine.gitDirty).map(([n]) => n);
  const missing = BENCHMARKS.filter((b) => !loaded.has(b.name)).map((b) => b.name);
  if (commits.size === 1 && dirty.length === 0 && missing.length === 0) {
    out.push(`Every benchmark ran at commit \`${[...commits][0]}\` with a clean work tree.`, '');
  } else {
    if (commits.size > 1) out.push(`**Not one run:** these results come from ${commits.size} commits.`, '');
    if (dirty.length) out.push(`**Uncommitted changes** were in the work tree during: ${dirty.join(', ')}.`, '');
    if (missing.length) out.push(`**No results** for: ${missing.join(', ')}.`, '');
  }
  const m = [...loaded.values()][0]!.json.machine;
  out.push(`Machine: ${m.cpus} × ${m.cpuModel}, ${(m.memBytes / 2 ** 30).toFixed(1)} GiB, Linux ${m.kernel}, Node ${m.node}.`, '');
  return out;
}

/** A benchmark's tables with their headings moved down to start at ###, under this file's sections. */
function nested(md: string): string {
  const levels = [...md.matchAll(/^(#{1,6}) /gm)].map((m) => m[1]!.length);
  const shift = levels.length ? Math.max(0, 3 - Math.min(...levels)) : 0;
  return md.replace(/^(#{1,6}) /gm, (_, h: string) => `${'#'.repeat(Math.min(6, h.length + shift))} `)
    .replace(/\n*Raw samples: `[^`]+`\.\n*$/, '\n').trimEnd();
}

function soakRows(soak: Loaded): TargetRow[] {
  const r = soak.json.result as SoakResult;
  const warm = r.phases.find((p) => p.phase === 'warm');
  const what = `${r.readers} readers, ${r.layers.length} layers${warm ? `, ${(warm.seconds / 60).toFixed(1)} min warm` : ''}`;
  const targets: Record<string, string> = { '0 errors, 0 wrong bytes': '0 and 0', 'store alive at the end': 'alive', 'RSS and fds flat after warm-up': 'flat' };
  return verdicts(r).map((v) => ({
    issue: 'hardening 7', figure: `soak (${what}): ${v.name.replace(/: event-loop delay.*/, ': event-loop delay')}`,
    target: targets[v.name] ?? 'p99 ≤ 20 ms, max ≤ 100 ms', measured: v.detail, verdict: ok(v.ok),
  }));
}

async function main(): Promise<void> {
  const files = await readdir(resultsDir);
  const loaded = new Map<BenchName, Loaded>();
  for (const b of BENCHMARKS) {
    const l = await loadNewest(b.name, files);
    if (l) loaded.set(b.name, l);
  }
  if (!loaded.size) throw new Error(`no results in ${resultsDir}: run npm run bench:full first`);

  const targets: TargetRow[] = [];
  const add = (name: BenchName, rows: (l: Loaded) => TargetRow[]): void => {
    const l = loaded.get(name);
    if (!l) return;
    try {
      targets.push(...rows(l));
    } catch (err) {
      // An older result file may lack a field: say so rather than fail the whole report.
      targets.push({ issue: '?', figure: `${name}: could not read the figures from ${l.file}`, target: '', measured: (err as Error).message, verdict: '—' });
    }
  };
  add('pool', poolRows);
  add('read', readRows);
  add('e2e', e2eRows);
  add('podman', podmanRows);
  add('soak', soakRows);

  const out: string[] = [];
  out.push('# Benchmark results', '');
  out.push('Written by `node dist/bench/report.js` (the last step of `npm run bench:full`) from the newest result of each benchmark in ' +
    '`results/`. How each benchmark works and how to run one alone: [README.md](README.md). Every figure is a median over runs, ' +
    'with min and max in the tables; the comparisons (ours vs the reference tool, a full pull, curl, the bare-threads ceiling) ' +
    'ran side by side in the same run, interleaved.', '');
  out.push('## The run', '');
  out.push(...provenance(loaded));
  out.push('## Targets the issues set', '');
  const met = targets.filter((t) => t.verdict.startsWith('met')).length;
  const judged = targets.filter((t) => t.verdict !== '—').length;
  out.push(`${met} of ${judged} met. Why the missed ones are missed, and what would close them: [README.md](README.md) and the notes ` +
    'under each table below.', '');
  // A bare | would end the cell.
  const cell = (v: string): string => v.replace(/\|/g, '\\|');
  out.push(markdownTable(['issue', 'figure', 'target', 'this run', 'verdict'], targets.map((t) => [t.issue, t.figure, t.target, t.measured, t.verdict].map(cell))), '');
  for (const b of BENCHMARKS) {
    const l = loaded.get(b.name);
    out.push(`## ${b.title}`, '');
    if (!l) {
      out.push(`No result: run \`npm run ${b.name === 'soak' ? 'soak' : `bench:${b.name}`}\`.`, '');
      continue;
    }
    out.push(`Raw samples: [\`${l.file}\`](results/${l.file}).`, '');
    if (b.name === 'e2e') out.push('![End-to-end workloads: estargz-store vs a full pull](results/e2e.svg)', '');
    out.push(l.tables ? nested(l.tables) : (typeof l.json.markdown === 'string' ? nested(l.json.markdown) :
      `No tables for this run: \`results/${b.name}.md\` belongs to another run. Rerun the benchmark, or render them with its \`--from-json\`.`), '');
  }
  await writeFile(outPath, out.join('\n').replace(/\n{3,}/g, '\n\n'));
  console.log(`wrote ${relative(process.cwd(), outPath) || outPath}: ${met} of ${judged} targets met`);
}

await main();
