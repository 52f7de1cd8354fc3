/**
 * Writes bench/RESULTS.md from the newest result of every benchmark in
 * bench/results/ (those of bench:full, and the separately run fuse-binding,
 * auth-helper and soak): where and when each ran (and whether all ran at one
 * commit), the figures the issues set targets for beside those targets, each
 * with the result and commit it comes from, then every benchmark's tables. A
 * figure no result holds yet is listed as "not measured", never made up.
 * Measures nothing; `npm run bench:full` ends with it, and it can be rerun
 * at any time.
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
  { name: 'podman-link', title: 'podman pull + run over 50 ms / 50 Mbit/s' },
  { name: 'fuse-binding', title: 'The FUSE binding\'s floor' },
  { name: 'auth-helper', title: 'Auth helper start-up' },
  { name: 'soak', title: 'Load and soak' },
  { name: 'footprint', title: 'Store footprint' },
] as const;
/** Run apart from bench:full (long, or a job of their own); their newest results are read all the same. */
const NOT_IN_FULL: readonly BenchName[] = ['fuse-binding', 'auth-helper', 'soak', 'podman-link'];
type BenchName = (typeof BENCHMARKS)[number]['name'];

/** The issue-17 link of the shaped podman run (bench/podman.ts --link 50/50). */
const PODMAN_LINK = { rttMs: 50, mbps: 50 } as const;

/**
 * Where a benchmark's results are, when not `<name>-<time>.json` and
 * `<name>.md`: podman runs on loopback and over a shaped link (--link) share
 * the `podman-<time>.json` names and are told apart by their `link`; the
 * shaped run's tables are in their own file.
 */
const SOURCES: Partial<Record<BenchName, { prefix: string; tables: string; accept: (json: Record<string, unknown>) => boolean; run: string }>> = {
  podman: { prefix: 'podman', tables: 'podman', accept: (j) => j.link == null, run: 'npm run bench:podman' },
  'podman-link': {
    prefix: 'podman', tables: `podman-${PODMAN_LINK.rttMs}ms-${PODMAN_LINK.mbps}mbit`,
    accept: (j) => { const l = j.link as { rttMs?: number; mbps?: number } | null | undefined; return l?.rttMs === PODMAN_LINK.rttMs && l.mbps === PODMAN_LINK.mbps; },
    run: `npm run bench:podman -- --link ${PODMAN_LINK.rttMs}/${PODMAN_LINK.mbps}`,
  },
};

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
  /** The result file(s) the figure comes from, with their commits (set by main). */
  source?: string;
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
  const src = SOURCES[name];
  // Timestamps in the names sort as text; newest first, the first the benchmark's `accept` takes.
  const candidates = files.filter((f) => f.startsWith(`${src?.prefix ?? name}-`) && f.endsWith('.json')).sort().reverse();
  let file: string | undefined;
  let json: Loaded['json'] | undefined;
  for (const f of candidates) {
    const j = JSON.parse(await readFile(join(resultsDir, f), 'utf8')) as Loaded['json'];
    if (src && !src.accept(j)) continue;
    file = f;
    json = j;
    break;
  }
  if (!file || !json) return null;
  let tables: string | null = null;
  try {
    const md = await readFile(join(resultsDir, `${src?.tables ?? name}.md`), 'utf8');
    if (md.includes(`Raw samples: \`${file}\``)) tables = md;
  } catch {
    // no tables file: the section says so
  }
  return { file, json, tables };
}

const ok = (met: boolean): string => (met ? 'met' : 'missed');
const x = (v: number): string => `${v.toFixed(2)}×`;
/** `v` at the precision `today` was quoted with: "no slower than today" is judged on the figures as printed, not on float noise. */
const atPrecision = (v: number, digits: number): number => Number(v.toFixed(digits));
const MB = 1e6;
/** MiB (the e2e results' peak RSS) to MB (the issues' unit). */
const mibToMB = (mib: number): number => (mib * 2 ** 20) / MB;

/** A row for a figure no result file holds yet: says so instead of inventing one. */
function notMeasured(issue: string, figure: string, target: string, why: string): TargetRow {
  return { issue, figure, target, measured: `not measured (${why})`, verdict: '—' };
}

interface Pick { chunkSize: number; config: { name: string; kind: string; decoder: string; threads: number }; mbps: Summary; ratioVsInlineZlib: number; eldMs?: { p99: Summary } }

function poolResults(pool: Loaded): { results: Pick[]; cores: number; pick: (size: number, kind: string, decoder: string, threads?: number) => Pick | undefined } {
  const results = pool.json.results as Pick[];
  const cores = (pool.json.settings as { cores: number }).cores;
  const pick = (size: number, kind: string, decoder: string, threads?: number): Pick | undefined =>
    results.find((r) => r.chunkSize === size && r.config.kind === kind && r.config.decoder === decoder && (threads === undefined || r.config.threads === threads) &&
      !r.config.name.includes('no utilization') && !r.config.name.includes('unbatched') && !r.config.name.includes('1 chunk/task'));
  return { results, cores, pick };
}

function poolRows(pool: Loaded): TargetRow[] {
  const { results, cores, pick } = poolResults(pool);
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

/** Issue 15: libzstd (native/zstd_decode.c, through the workers' codec switch) beside node:zlib's inflate on the same chunks. */
function poolZstdRows(pool: Loaded): TargetRow[] {
  const { results, cores, pick } = poolResults(pool);
  const sizes = [...new Set(results.filter((r) => r.config.decoder === 'zstd').map((r) => r.chunkSize))].sort((a, b) => a - b);
  if (!sizes.length) return [notMeasured('15', 'zstd decode rate (libzstd) vs node:zlib inflate, same chunks', 'side by side', `${pool.file} has no zstd rows: rerun bench:pool`)];
  const label = (n: number): string => (n >= 1 << 20 ? `${n >> 20} MiB` : `${n >> 10} KiB`);
  const rows: TargetRow[] = [];
  for (const size of sizes) {
    const parts: string[] = [];
    for (const [kind, threads, what] of [['inline', undefined, 'main thread'], ['pool', cores, `pool ${cores}t`]] as const) {
      const z = pick(size, kind, 'zstd', threads);
      const g = pick(size, kind, 'zlib', threads);
      if (z && g) parts.push(`${what}: zstd ${z.mbps.median.toFixed(0)} vs zlib ${g.mbps.median.toFixed(0)} MB/s (${x(z.mbps.median / g.mbps.median)})`);
    }
    if (parts.length) rows.push({ issue: '15', figure: `decode + verify rate, zstd frames (libzstd via the worker codec switch) vs gzip members (node:zlib), ${label(size)} chunks`, target: 'side by side', measured: parts.join('; '), verdict: '—' });
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

/** What report.ts reads of an e2e summary (bench/lib/e2e-cases.ts CaseSummary). */
interface E2eSum {
  key: string; label: string; image: string; format?: string; workload: string; seconds: Summary; mbps: number | null; blobBytesRatio: number | null; verdict: string;
  storeBytes: number | null; peakRssMiB: Summary; fullPull: { seconds: Summary; bytes: number } | null;
  extra: { warmDd?: { mbps: number }; warmStatUs?: Summary };
  goref?: { seconds: Summary; storeBytes: number | null; peakRssMiB: Summary } | null;
}
const e2eSums = (e2e: Loaded): E2eSum[] => e2e.json.summaries as E2eSum[];

function e2eRows(e2e: Loaded): TargetRow[] {
  const rows: TargetRow[] = [];
  // The zstd:chunked image has its own rows (issue 15); issue 5's targets are for the eStargz images.
  for (const s of e2eSums(e2e).filter((s) => (s.format ?? 'estargz') === 'estargz')) {
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

interface PodmanRun { variant: string; totalSeconds: number; podmanLayerGets?: number; pullTraffic?: { store: { bytes: number } }; runTraffic?: { store: { bytes: number } } }
function podmanMedian(podman: Loaded, v: string, f: (r: PodmanRun) => number = (r) => r.totalSeconds): number | null {
  const xs = (podman.json.samples as PodmanRun[]).filter((r) => r.variant === v).map(f).sort((a, b) => a - b);
  return xs.length ? xs[Math.floor(xs.length / 2)]! : null;
}

function podmanRows(podman: Loaded): TargetRow[] {
  const gzip = podmanMedian(podman, 'gzip');
  const rows: TargetRow[] = [];
  for (const v of ['lazy', 'lazy+prio']) {
    const m = podmanMedian(podman, v);
    if (m === null) continue;
    const go = podmanMedian(podman, `go-${v}`);
    rows.push({
      issue: '5', figure: `W7 podman pull + run python (${v}${v === 'lazy+prio' ? ': converted with --prioritized-files' : ''})`, target: '≤ 1.0 s',
      measured: `${m.toFixed(2)} s${gzip !== null ? `; full gzip pull ${gzip.toFixed(2)} s` : ''}${go !== null ? `; Go store ${go.toFixed(2)} s` : ''}`, verdict: ok(m <= 1.0),
    });
  }
  return rows;
}

// ---------------------------------------------------------------------------
// Issue 13: hardening

function soakRows(soak: Loaded): TargetRow[] {
  const r = soak.json.result as SoakResult;
  const warm = r.phases.find((p) => p.phase === 'warm');
  const what = `${r.readers} readers, ${r.layers.length} layers${warm ? `, ${(warm.seconds / 60).toFixed(1)} min warm` : ''}`;
  const targets: Record<string, string> = { '0 errors, 0 wrong bytes': '0 and 0', 'store alive at the end': 'alive', 'RSS and fds flat after warm-up': 'flat' };
  return verdicts(r).map((v) => ({
    issue: '13', figure: `soak (${what}): ${v.name.replace(/: event-loop delay.*/, ': event-loop delay')}`,
    target: targets[v.name] ?? 'p99 ≤ 20 ms, max ≤ 100 ms', measured: v.detail, verdict: ok(v.ok),
  }));
}

function authHelperRows(ah: Loaded): TargetRow[] {
  interface V { name: string; median: number; min: number; max: number; overFloor?: number }
  const vs = Object.values(ah.json.variants as Record<string, V>);
  const helper = vs.find((v) => v.name === 'estargz-store-auth-helper') ?? vs.find((v) => /auth-helper/.test(v.name) && !/full CLI/.test(v.name));
  const floor = vs.find((v) => v.name === 'node -e 0');
  if (!helper) return [notMeasured('13', 'auth helper, time per call', '≤ 150 ms', `${ah.file} has no auth-helper variant`)];
  return [{
    issue: '13', figure: 'auth helper, wall time per call (the installed `estargz-store-auth-helper` entry)', target: '≤ 150 ms',
    measured: `${helper.median.toFixed(0)} ms (${helper.min.toFixed(0)}–${helper.max.toFixed(0)})${floor ? `; bare \`node -e 0\` ${floor.median.toFixed(0)} ms` : ''}`, verdict: ok(helper.median <= 150),
  }];
}

/** The newest `npm run bench:reliability` summary (bench/results/reliability-<time>/summary.md), if any. */
async function loadReliability(files: string[]): Promise<{ dir: string; text: string; commit: string } | undefined> {
  const dir = files.filter((f) => /^reliability-/.test(f)).sort().at(-1);
  if (!dir) return undefined;
  const text = await readFile(join(resultsDir, dir, 'summary.md'), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const m = /Commit `([0-9a-f]{8})[0-9a-f]*` \(work tree: (\w+)\)/.exec(text);
  return { dir, text, commit: m ? `${m[1]}${m[2] === 'clean' ? '' : '+'}` : '?' };
}

/**
 * Issue 13 and 14 figures the reliability run's tests print (faults, fuzz,
 * restarts): read from its summary; a figure it does not hold is "not measured".
 */
function reliabilityRows(text: string, dir: string): TargetRow[] {
  const rows: TargetRow[] = [];
  const faults = /foreground under faults: (\d+) good reads, (\d+) EIO, (\d+) wrong/.exec(text);
  const faultsExit = /## faults\n\n`[^`]*` → exit (\d+)/.exec(text);
  rows.push(faults && faultsExit
    ? { issue: '13', figure: 'faulted background fetch and reads through the fault proxy: wrong bytes, daemon alive', target: '0 wrong bytes, alive', measured: `${faults[3]} wrong of ${Number(faults[1]) + Number(faults[2])} reads (${faults[2]} EIO); test exit ${faultsExit[1]}`, verdict: ok(faults[3] === '0' && faultsExit[1] === '0') }
    : notMeasured('13', 'faulted background fetch and reads through the fault proxy', '0 wrong bytes, alive', `${dir} has no faults line`));
  const fuzz = /fuzz: seed (\d+), (\d+) cases[\s\S]*?findings \(crashes, hangs, short\/padded\/unverified bytes\): (\d+)/.exec(text);
  rows.push(fuzz
    ? { issue: '13', figure: 'fuzz cases of the format and the store (crashes, hangs, unverified bytes)', target: '0 findings', measured: `${fuzz[3]} findings in ${fuzz[2]} cases (seed ${fuzz[1]})`, verdict: ok(fuzz[3] === '0') }
    : notMeasured('13', 'fuzz cases of the format and the store', '0 findings', `${dir} has no fuzz summary`));
  const stall = /(\d+) passes, \d+ during the (\d+) restarts; longest read during restarts (\d+) ms, without (\d+) ms/.exec(text);
  rows.push(stall
    ? { issue: '14', figure: 'restart: longest read stall of a reader re-reading 300 files (caches dropped)', target: '≤ 100 ms', measured: `${stall[3]} ms over ${stall[2]} restarts (${stall[4]} ms without)`, verdict: ok(Number(stall[3]) <= 100) }
    : notMeasured('14', 'restart: longest read stall', '≤ 100 ms', `${dir} has no restart figures`));
  const kill = /kill → successor serving (\d+) ms/.exec(text);
  if (kill) rows.push({ issue: '14', figure: 'SIGKILL of the store process: until a successor serves', target: 'reported', measured: `${kill[1]} ms`, verdict: '—' });
  return rows;
}

// ---------------------------------------------------------------------------
// Issue 14: the FUSE binding ("today" is bench/RESULTS.md at 0c3dc680, 2026-11-28, the run the issue quotes)

const ISSUE14_TODAY = {
  W1: { python: 0.049, 'bookworm-like': 0.120 },
  W2: { python: 0.053, 'bookworm-like': 0.141 },
  W3: { python: 0.663, 'bookworm-like': 2.657 },
  W7: { lazy: 0.76, 'lazy+prio': 0.56 },
} as const;

function issue14E2eRows(e2e: Loaded): TargetRow[] {
  const sums = e2eSums(e2e);
  const find = (img: string, w: string): E2eSum | undefined => sums.find((s) => s.image === img && s.workload === w);
  const go = (s: E2eSum): string => (s.goref ? `; Go store ${s.goref.seconds.median.toFixed(3)} s` : '');
  const rows: TargetRow[] = [];
  const w6 = find('bookworm-like', 'W6');
  rows.push(w6 ? { issue: '14', figure: `W6 find -printf over layer 1 of bookworm-like (${w6.label.match(/\(([^)]*entries)\)/)?.[1] ?? 'its entries'})`, target: '≤ 0.06 s (today 0.84 s)', measured: `${w6.seconds.median.toFixed(3)} s${go(w6)}`, verdict: ok(w6.seconds.median <= 0.06) }
    : notMeasured('14', 'W6 find -printf over the bookworm-like layer 1', '≤ 0.06 s', 'the e2e run had no bookworm-like W6'));
  const w5 = find('bookworm-like', 'W5');
  rows.push(w5 ? { issue: '14', figure: 'W5 warm re-read of every file of bookworm-like layer 1', target: '≤ 0.10 s (today 0.77 s)', measured: `${w5.seconds.median.toFixed(3)} s${go(w5)}`, verdict: ok(w5.seconds.median <= 0.1) }
    : notMeasured('14', 'W5 warm re-read of bookworm-like layer 1', '≤ 0.10 s', 'the e2e run had no bookworm-like W5'));
  for (const s of sums.filter((s) => s.extra.warmDd)) {
    rows.push({ issue: '14', figure: `warm sequential read (dd bs=1M) through FUSE [${s.image}]`, target: '≥ 2 GB/s (today 743–880 MB/s)', measured: `${s.extra.warmDd!.mbps.toFixed(0)} MB/s`, verdict: ok(s.extra.warmDd!.mbps >= 2000) });
  }
  for (const s of sums.filter((s) => s.extra.warmStatUs)) {
    rows.push({ issue: '14', figure: `warm stat per call (fs.promises.stat loop) [${s.image}]`, target: '≤ 10 µs (today 28–35 µs)', measured: `${s.extra.warmStatUs!.median.toFixed(1)} µs`, verdict: ok(s.extra.warmStatUs!.median <= 10) });
  }
  for (const w of ['W1', 'W2', 'W3'] as const) {
    for (const img of ['python', 'bookworm-like'] as const) {
      const s = find(img, w);
      if (!s) continue;
      const today = ISSUE14_TODAY[w][img];
      rows.push({ issue: '14', figure: `${w} no slower than before the binding [${img}]`, target: `≤ ${today.toFixed(3)} s (0c3dc680)`, measured: `${s.seconds.median.toFixed(3)} s (${x(s.seconds.median / today)} then)`, verdict: ok(atPrecision(s.seconds.median, 3) <= today) });
    }
  }
  return rows;
}

function issue14PodmanRows(podman: Loaded): TargetRow[] {
  const rows: TargetRow[] = [];
  for (const v of ['lazy', 'lazy+prio'] as const) {
    const m = podmanMedian(podman, v);
    if (m === null) continue;
    const today = ISSUE14_TODAY.W7[v];
    rows.push({ issue: '14', figure: `W7 podman pull + run (${v}) no slower than before the binding`, target: `≤ ${today.toFixed(2)} s (0c3dc680)`, measured: `${m.toFixed(3)} s`, verdict: ok(atPrecision(m, 2) <= today) });
  }
  return rows;
}

function fuseBindingRows(fb: Loaded): TargetRow[] {
  interface S { impl: string; findSeconds: number; statUs: number; statPyUs?: number; ddSeconds: number }
  const samples = fb.json.samples as S[];
  const bigBytes = (fb.json.tree as { bigBytes?: number } | undefined)?.bigBytes;
  const med = (impl: string, f: (s: S) => number): number | null => {
    const xs = samples.filter((s) => s.impl === impl).map(f).sort((a, b) => a - b);
    return xs.length ? xs[Math.floor(xs.length / 2)]! : null;
  };
  const rows: TargetRow[] = [];
  const find = med('binding', (s) => s.findSeconds);
  const old = med('fuse-native', (s) => s.findSeconds);
  if (find !== null) rows.push({ issue: '14', figure: 'floor: W6-shaped find on a do-nothing FS over the new binding (same tree)', target: '≤ 0.06 s', measured: `${find.toFixed(3)} s${old !== null ? `; fuse-native ${old.toFixed(3)} s` : ''}`, verdict: ok(find <= 0.06) });
  const dd = med('binding', (s) => s.ddSeconds);
  if (dd !== null && bigBytes) rows.push({ issue: '14', figure: 'floor: dd bs=1M through the new binding, page cache dropped', target: '≥ 2 GB/s', measured: `${(bigBytes / MB / dd).toFixed(0)} MB/s`, verdict: ok(bigBytes / MB / dd >= 2000) });
  // A warm stat is answered by the kernel's cache and sends the filesystem nothing (the store keeps
  // attributes a day, as this floor does): what a caller measures is its own syscall path.
  const py = med('binding', (s) => s.statPyUs ?? NaN);
  const pyTmpfs = med('tmpfs', (s) => s.statPyUs ?? NaN);
  const node = med('binding', (s) => s.statUs);
  const nodeTmpfs = med('tmpfs', (s) => s.statUs);
  if (py !== null && Number.isFinite(py)) {
    rows.push({
      issue: '14', figure: 'warm stat per call, python os.stat loop (kernel-cached: the store is not asked, so the binding\'s figure is the store\'s)', target: '≤ 10 µs (today 28–35 µs)',
      measured: `${py.toFixed(1)} µs${pyTmpfs !== null && Number.isFinite(pyTmpfs) ? `; tmpfs ${pyTmpfs.toFixed(1)} µs` : ''}${node !== null ? `; fs.promises.stat ${node.toFixed(1)} µs (tmpfs ${nodeTmpfs?.toFixed(1) ?? '—'} µs: Node's thread-pool round trip)` : ''}`,
      verdict: ok(py <= 10),
    });
  }
  return rows;
}

// ---------------------------------------------------------------------------
// Issue 15: the same image as eStargz and as zstd:chunked

function issue15E2eRows(e2e: Loaded): TargetRow[] {
  const sums = e2eSums(e2e);
  const z = sums.filter((s) => s.format === 'zstd:chunked');
  if (!z.length) return [notMeasured('15', 'W1–W6 on the python image as zstd:chunked beside eStargz and a full pull', 'side by side', `${e2e.file} has no zstd:chunked image: rerun bench:e2e (python-zstd)`)];
  const rows: TargetRow[] = [];
  for (const s of z) {
    const e = sums.find((x) => x.image === 'python' && x.workload === s.workload);
    const parts = [`zstd:chunked ${s.seconds.median.toFixed(3)} s`];
    if (e) parts.push(`eStargz ${e.seconds.median.toFixed(3)} s (${x(s.seconds.median / e.seconds.median)})`);
    if (s.workload !== 'W5') {
      if (s.fullPull) parts.push(`full pull zstd -dc ${s.fullPull.seconds.median.toFixed(3)} s`);
      if (e?.fullPull) parts.push(`gunzip ${e.fullPull.seconds.median.toFixed(3)} s`);
    }
    if (s.storeBytes !== null) parts.push(`${(s.storeBytes / MB).toFixed(2)} MB fetched${e?.storeBytes != null ? ` vs ${(e.storeBytes / MB).toFixed(2)}` : ''}`);
    rows.push({ issue: '15', figure: `${s.workload} ${s.label} [python as zstd:chunked vs eStargz]`, target: W_TARGETS[s.workload] ?? 'side by side', measured: parts.join('; '), verdict: s.workload === 'W3p' ? '—' : s.verdict });
  }
  return rows;
}

function issue15PodmanRows(podman: Loaded): TargetRow[] {
  const zstd = podmanMedian(podman, 'p5-zstd');
  if (zstd === null) return [notMeasured('15', 'W7 podman 5.4 pull + run python as zstd:chunked through the store', 'side by side with eStargz and a full pull', `${podman.file} has no podman 5 variants: rerun bench:podman with the p5- variants`)];
  const esgz = podmanMedian(podman, 'p5-lazy');
  const full = podmanMedian(podman, 'p5-gzip');
  const fullZ = podmanMedian(podman, 'p5-zstd-own');
  return [{
    issue: '15', figure: 'W7 podman 5.4 pull + run python, zstd:chunked through the store', target: 'side by side',
    measured: `${zstd.toFixed(2)} s${esgz !== null ? `; eStargz ${esgz.toFixed(2)} s` : ''}${full !== null ? `; full gzip pull ${full.toFixed(2)} s` : ''}${fullZ !== null ? `; podman 5's own pull of the zstd:chunked image (no store) ${fullZ.toFixed(2)} s` : ''}`,
    verdict: '—',
  }];
}

// ---------------------------------------------------------------------------
// Issue 17: fetch scheduler, footprint ("today" figures as the issue quotes them)

/** bench/wan at 0c3dc680: each profile's W1 and W2 speed-up over the full pull, which issue 17 says must not shrink. */
const ISSUE17_WAN_TODAY: Record<string, { W1: number; W2: number }> = { '20/200': { W1: 2.82, W2: 8.13 }, '50/50': { W1: 4.95, W2: 5.33 } };

function wanRows(wan: Loaded): TargetRow[] {
  interface Profile { rttMs: number; mbps: number; sums: E2eSum[] }
  const rows: TargetRow[] = [];
  const profiles = wan.json.profiles as Profile[];
  for (const [rtt, mbps, target] of [[50, 50, 1.0], [20, 200, 0.9]] as const) {
    const p = profiles.find((q) => q.rttMs === rtt && q.mbps === mbps);
    const w3 = p?.sums.find((s) => s.workload === 'W3' && (s.format ?? 'estargz') === 'estargz');
    if (!w3?.fullPull) {
      rows.push(notMeasured('17', `every file of a layer (W3) vs a full pull, ${rtt} ms / ${mbps} Mbit/s`, `≤ ${target.toFixed(1)}×`, `${wan.file} has no such profile`));
      continue;
    }
    const r = w3.seconds.median / w3.fullPull.seconds.median;
    rows.push({ issue: '17', figure: `every file of a layer (W3) vs a full pull, ${rtt} ms / ${mbps} Mbit/s`, target: `≤ ${target.toFixed(1)}×`, measured: `${x(r)} (${w3.seconds.median.toFixed(2)} vs ${w3.fullPull.seconds.median.toFixed(2)} s)`, verdict: ok(r <= target) });
    for (const w of ['W1', 'W2'] as const) {
      const s = p!.sums.find((q) => q.workload === w && (q.format ?? 'estargz') === 'estargz');
      const today = ISSUE17_WAN_TODAY[`${rtt}/${mbps}`]?.[w];
      if (!s?.fullPull || today === undefined) continue;
      const speedup = s.fullPull.seconds.median / s.seconds.median;
      rows.push({ issue: '17', figure: `${w === 'W1' ? 'first file' : 'one large file'} (${w}) speed-up over a full pull, ${rtt} ms / ${mbps} Mbit/s`, target: `≥ ${today.toFixed(2)}× (0c3dc680)`, measured: `${x(speedup)} (${s.seconds.median.toFixed(3)} vs ${s.fullPull.seconds.median.toFixed(3)} s)`, verdict: ok(atPrecision(speedup, 2) >= today) });
    }
  }
  return rows;
}

/**
 * Registry bytes of the soak's cold start and of a restart with a warm disk
 * cache, against the blobs: read from `result.registryBytes` ({cold,
 * restart}) or a phase's `registryBytes`, when the soak writes them.
 */
function soakBytesRows(soak: Loaded): TargetRow[] {
  // Read loosely: the soak may write these under result.registryBytes or per phase (a `restart` phase), or not yet at all.
  const r = soak.json.result as { layers: { esgzBytes: number }[]; registryBytes?: { cold?: number; restart?: number }; phases: { phase: string; registryBytes?: number }[] };
  const blobs = r.layers.reduce((n, l) => n + l.esgzBytes, 0);
  const cold = r.registryBytes?.cold ?? r.phases.find((p) => p.phase === 'cold')?.registryBytes;
  const restart = r.registryBytes?.restart ?? r.phases.find((p) => p.phase === 'restart')?.registryBytes;
  const figure = (what: string): string => `registry bytes, ${what}, soak's ${r.layers.length} layers (${(blobs / MB).toFixed(0)} MB of blobs)`;
  return [
    cold === undefined ? notMeasured('17', figure('cold start, every file read'), '≤ 1.05× the blobs', `${soak.file} has no registry byte count`)
      : { issue: '17', figure: figure('cold start, every file read'), target: '≤ 1.05× the blobs', measured: `${x(cold / blobs)} (${(cold / MB).toFixed(1)} MB)`, verdict: ok(cold / blobs <= 1.05) },
    restart === undefined ? notMeasured('17', figure('restart with a warm disk cache'), '≤ 0.01× the blobs', `${soak.file} has no restart phase with a byte count`)
      : { issue: '17', figure: figure('restart with a warm disk cache'), target: '≤ 0.01× the blobs', measured: `${x(restart / blobs)} (${(restart / MB).toFixed(2)} MB)`, verdict: ok(restart / blobs <= 0.01) },
  ];
}

function issue17E2eRows(e2e: Loaded): TargetRow[] {
  const sums = e2eSums(e2e);
  const find = (w: string): E2eSum | undefined => sums.find((s) => s.image === 'python' && s.workload === w);
  const rows: TargetRow[] = [];
  const w1 = find('W1');
  if (w1) {
    const mb = w1.storeBytes === null ? null : w1.storeBytes / MB;
    const go = w1.goref ? `; Go store ${w1.goref.seconds.median.toFixed(3)} s / ${w1.goref.storeBytes === null ? '—' : (w1.goref.storeBytes / MB).toFixed(2)} MB` : '';
    rows.push({ issue: '17', figure: 'W1 first small file (python image): time / registry bytes', target: '≤ 0.09 s / ≤ 0.6 MB', measured: `${w1.seconds.median.toFixed(3)} s / ${mb === null ? '—' : mb.toFixed(2)} MB${go}`, verdict: ok(w1.seconds.median <= 0.09 && mb !== null && mb <= 0.6) });
  }
  for (const [w, target] of [['W1', 46], ['W3', 114]] as const) {
    const s = find(w);
    if (!s) continue;
    const ours = mibToMB(s.peakRssMiB.median);
    const go = s.goref ? mibToMB(s.goref.peakRssMiB.median) : null;
    rows.push({ issue: '17', figure: `store peak RSS, ${w} (python image)`, target: `≤ ${target} MB (≤ 2× the Go store)`, measured: `${ours.toFixed(0)} MB${go !== null ? `; Go store ${go.toFixed(0)} MB (${x(ours / go)})` : ''}`, verdict: ok(ours <= target) });
  }
  return rows;
}

/** Idle, W1 and W3 RSS of the store process with the default config, from bench/footprint (medians of its sessions). */
function footprintRows(fp: Loaded): TargetRow[] {
  type Point = { rssMiB: number; peakMiB: number } | null;
  const d = (fp.json.medians as Record<string, Record<string, Point>>)['defaults'];
  if (!d?.idle) return [notMeasured('17', 'store RSS idle (mounted, no layer resolved)', 'reported', `${fp.file} has no defaults variant`)];
  const at = (p: Point): string => (p ? `${p.rssMiB.toFixed(0)} MiB (peak ${p.peakMiB.toFixed(0)})` : '—');
  return [{ issue: '17', figure: 'store RSS idle / after W1 / after W3, default config (bench:footprint, python image)', target: 'reported', measured: `${at(d.idle)} / ${at(d.W1 ?? null)} / ${at(d.W3 ?? null)}`, verdict: '—' }];
}

function issue17PodmanRows(podman: Loaded): TargetRow[] {
  const rows: TargetRow[] = [];
  const lazy = podmanMedian(podman, 'lazy');
  const prio = podmanMedian(podman, 'lazy+prio');
  const storeMB = podmanMedian(podman, 'lazy', (r) => ((r.pullTraffic?.store.bytes ?? NaN) + (r.runTraffic?.store.bytes ?? NaN)) / MB);
  if (lazy !== null) rows.push({ issue: '17', figure: 'W7 podman pull + run, LAN, lazy: time / store registry bytes', target: '≤ 0.76 s / ≤ 13 MB', measured: `${lazy.toFixed(2)} s / ${storeMB === null || Number.isNaN(storeMB) ? '—' : `${storeMB.toFixed(1)} MB`}`, verdict: ok(atPrecision(lazy, 2) <= 0.76 && storeMB !== null && storeMB <= 13) });
  if (prio !== null) rows.push({ issue: '17', figure: 'W7 podman pull + run, LAN, hand-prioritized', target: '≤ 0.56 s', measured: `${prio.toFixed(2)} s`, verdict: ok(atPrecision(prio, 2) <= 0.56) });
  const opt = podmanMedian(podman, 'lazy+opt');
  const figure = 'W7 with `image optimize` (lazy+opt), LAN';
  const target = '≤ the hand-prioritized (lazy+prio) figure';
  if (opt === null) {
    rows.push(notMeasured('17', figure, target, `${podman.file} has no lazy+opt variant: rerun bench:podman with it`));
    return rows;
  }
  rows.push({
    issue: '17', figure, target,
    measured: `${opt.toFixed(2)} s${prio !== null ? ` vs lazy+prio ${prio.toFixed(2)} s` : ' (no lazy+prio in the same run to judge it by)'}${filesNote(podman)}${layerGetsNote(podman, 'lazy+opt')}`,
    verdict: prio === null ? '—' : ok(atPrecision(opt, 2) <= atPrecision(prio, 2)),
  });
  return rows;
}

/** "; N files recorded (layer 1: a, layer 2: b) vs M hand-found": what `image optimize` put first, beside lazy+prio's list. */
function filesNote(podman: Loaded): string {
  const o = podman.json.optimized as { recorded: { layer: number; paths: string[] }[] } | undefined;
  if (!o) return '';
  const n = o.recorded.reduce((k, l) => k + l.paths.length, 0);
  const hand = (podman.json.prioritized as string[] | undefined)?.length;
  return `; ${n} files recorded (${o.recorded.map((l) => `layer ${l.layer}: ${l.paths.length}`).join(', ')})${hand ? ` vs ${hand} hand-found` : ''}`;
}

/** A lazy variant whose layers podman fetched itself did not measure the store: say so beside its figure. */
function layerGetsNote(podman: Loaded, v: string): string {
  const gets = Math.max(0, ...(podman.json.samples as PodmanRun[]).filter((r) => r.variant === v).map((r) => r.podmanLayerGets ?? 0));
  return gets > 0 ? ` (**podman fetched layers itself**: ${gets} layer GETs)` : '';
}

const LINK_FIGURE = `W7 on ${PODMAN_LINK.rttMs} ms / ${PODMAN_LINK.mbps} Mbit/s: lazy vs optimized vs full pull`;
const LINK_TARGET = 'optimized ≤ 0.5× full pull';

/** Issue 17 over the shaped link: a `bench/podman.ts --link 50/50` run's lazy+opt (and lazy) against its gzip full pull. */
function issue17PodmanLinkRows(link: Loaded): TargetRow[] {
  const full = podmanMedian(link, 'gzip');
  const opt = podmanMedian(link, 'lazy+opt');
  if (full === null || opt === null) {
    return [notMeasured('17', LINK_FIGURE, LINK_TARGET, `${link.file} has no ${[full === null && 'gzip', opt === null && 'lazy+opt'].filter(Boolean).join(' or ')} variant: rerun with --variants gzip,lazy,lazy+opt`)];
  }
  const lazy = podmanMedian(link, 'lazy');
  return [{
    issue: '17', figure: LINK_FIGURE, target: LINK_TARGET,
    measured: `optimized ${opt.toFixed(2)} s = ${x(opt / full)} full pull ${full.toFixed(2)} s${lazy !== null ? `; lazy ${lazy.toFixed(2)} s = ${x(lazy / full)}` : ''}${layerGetsNote(link, 'lazy+opt')}`,
    verdict: ok(atPrecision(opt / full, 2) <= 0.5),
  }];
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

async function main(): Promise<void> {
  const files = await readdir(resultsDir);
  const loaded = new Map<BenchName, Loaded>();
  for (const b of BENCHMARKS) {
    const l = await loadNewest(b.name, files);
    if (l) loaded.set(b.name, l);
  }
  if (!loaded.size) throw new Error(`no results in ${resultsDir}: run npm run bench:full first`);

  const targets: TargetRow[] = [];
  const commitOf = (l: Loaded): string => (l.json.machine.gitCommit ? `${l.json.machine.gitCommit.slice(0, 8)}${l.json.machine.gitDirty ? '+' : ''}` : '?');
  /** Rows from one or more results; a row without a result (not measured) names none. */
  const add = (names: BenchName[], rows: (...l: Loaded[]) => TargetRow[], missing?: () => TargetRow[]): void => {
    const ls = names.map((n) => loaded.get(n));
    if (ls.some((l) => !l)) {
      if (missing) targets.push(...missing().map((r) => ({ ...r, source: '—' })));
      return;
    }
    const source = names.map((n, i) => `${n} @ ${commitOf(ls[i]!)}`).join(', ');
    try {
      targets.push(...rows(...(ls as Loaded[])).map((r) => ({ ...r, source: r.measured.startsWith('not measured') ? `${source} (no such figure)` : source })));
    } catch (err) {
      // An older result file may lack a field: say so rather than fail the whole report.
      targets.push({ issue: '?', figure: `${names.join(', ')}: could not read the figures from ${ls.map((l) => l!.file).join(', ')}`, target: '', measured: (err as Error).message, verdict: '—', source });
    }
  };
  const none = (issue: string, figure: string, target: string, bench: BenchName) => (): TargetRow[] => [notMeasured(issue, figure, target, `no ${bench} result`)];
  add(['pool'], poolRows);
  add(['read'], readRows);
  add(['e2e'], e2eRows);
  add(['podman'], podmanRows);
  // Issue 13: hardening.
  add(['soak'], soakRows, none('13', 'soak: errors, wrong bytes, event-loop delay p99/max cold and warm', 'p99 ≤ 20 ms, max ≤ 100 ms', 'soak'));
  const reliability = await loadReliability(files);
  if (reliability) targets.push(...reliabilityRows(reliability.text, reliability.dir).filter((r) => r.issue === '13').map((r) => ({ ...r, source: `reliability @ ${reliability.commit}` })));
  else targets.push({ ...notMeasured('13', 'faults and fuzz (bench:reliability)', '0 wrong bytes, 0 findings', 'no reliability run in bench/results'), source: '—' });
  add(['auth-helper'], authHelperRows, none('13', 'auth helper, time per call', '≤ 150 ms', 'auth-helper'));
  // Issue 14: the FUSE binding.
  add(['e2e'], issue14E2eRows);
  add(['podman'], issue14PodmanRows);
  add(['fuse-binding'], fuseBindingRows, none('14', 'the new binding\'s floor (do-nothing FS)', 'side by side', 'fuse-binding'));
  if (reliability) targets.push(...reliabilityRows(reliability.text, reliability.dir).filter((r) => r.issue === '14').map((r) => ({ ...r, source: `reliability @ ${reliability.commit}` })));
  else targets.push({ ...notMeasured('14', 'restart: longest read stall', '≤ 100 ms', 'no reliability run in bench/results'), source: '—' });
  // Issue 15: zstd:chunked.
  add(['e2e'], issue15E2eRows);
  add(['podman'], issue15PodmanRows);
  add(['pool'], poolZstdRows, none('15', 'zstd decode rate vs node:zlib', 'side by side', 'pool'));
  // Issue 17: fetch scheduler and footprint.
  add(['wan'], wanRows, none('17', 'every file of a layer vs a full pull on shaped links', '≤ 1.0× / ≤ 0.9×', 'wan'));
  add(['soak'], soakBytesRows, none('17', 'registry bytes, cold start / restart', '≤ 1.05× / ≤ 0.01× the blobs', 'soak'));
  add(['footprint'], footprintRows, none('17', 'store RSS idle (mounted, no layer resolved)', 'reported', 'footprint'));
  add(['e2e'], issue17E2eRows);
  add(['podman'], issue17PodmanRows);
  add(['podman-link'], issue17PodmanLinkRows, () => [notMeasured('17', LINK_FIGURE, LINK_TARGET, `no podman result over --link ${PODMAN_LINK.rttMs}/${PODMAN_LINK.mbps}: run \`${SOURCES['podman-link']!.run} --variants gzip,lazy,lazy+opt\``)]);

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
  const unmeasured = targets.filter((t) => t.measured.startsWith('not measured')).length;
  if (unmeasured) out.push(`${unmeasured} figure${unmeasured === 1 ? ' is' : 's are'} not measured yet: no result file holds ${unmeasured === 1 ? 'it' : 'them'} (the row says why).`, '');
  const commits = new Set([...loaded.values()].map((l) => l.json.machine.gitCommit));
  if (commits.size > 1) out.push(`**Mixed commits:** the rows come from results of ${commits.size} commits; the *from* column names each row's result and commit (\`+\` = uncommitted changes).`, '');
  out.push(markdownTable(['issue', 'figure', 'target', 'measured', 'verdict', 'from'], targets.map((t) => [t.issue, t.figure, t.target, t.measured, t.verdict, t.source ?? '—'].map(cell))), '');
  for (const b of BENCHMARKS) {
    const l = loaded.get(b.name);
    out.push(`## ${b.title}`, '');
    if (!l) {
      out.push(`No result: run \`${SOURCES[b.name]?.run ?? `npm run ${b.name === 'soak' ? 'soak' : `bench:${b.name}`}`}\`${NOT_IN_FULL.includes(b.name) ? ' (not part of bench:full)' : ''}.`, '');
      continue;
    }
    out.push(`Raw samples: [\`${l.file}\`](results/${l.file}).`, '');
    if (b.name === 'e2e') out.push('![End-to-end workloads: estargz-store vs a full pull](results/e2e.svg)', '');
    out.push(l.tables ? nested(l.tables) : (typeof l.json.markdown === 'string' ? nested(l.json.markdown) :
      `No tables for this run: \`results/${SOURCES[b.name]?.tables ?? b.name}.md\` belongs to another run. Rerun the benchmark, or render them with its \`--from-json\`.`), '');
  }
  await writeFile(outPath, out.join('\n').replace(/\n{3,}/g, '\n\n'));
  console.log(`wrote ${relative(process.cwd(), outPath) || outPath}: ${met} of ${judged} targets met`);
}

await main();
