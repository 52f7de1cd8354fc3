/**
 * The end-to-end workloads as cases, run in interleaved cold sessions (a
 * fresh store process with a fresh cache root each), with the full-pull
 * reference of every layer in the same run; shared by bench/e2e.ts (loopback)
 * and bench/wan.ts (through the shaping proxy).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stat } from 'node:fs/promises';
import type { Registry } from '../../testkit/registry.js';
import { IMAGE_NAMES, fullPullBlob, gzipRef, lazyOf, lazyRef, smallFileOf, type BenchImage, type ImageName, type LayerFacts } from './e2e-images.js';
import { startGorefStore } from './goref.js';
import { waitQuiet } from './quiet.js';
import { formatSummary, summarize, type Summary } from './stats.js';
import {
  logMark, peakRss, q, timeBash, resetPeakRss, scrapeMetrics, startBenchStore, statLoop, summarizeMetrics, trafficSince,
  w1ResolveAndRead, w2LargeFile, w3AllFiles, w3Parallel, w4BlobSha, w6MetadataWalk, warmDd,
  type BenchStore, type MetricsSnapshot, type Traffic, type WorkloadResult,
} from './store-workloads.js';

export type Workload = 'W1' | 'W2' | 'W3' | 'W3p' | 'W4' | 'W5' | 'W6';
export const ALL_WORKLOADS: readonly Workload[] = ['W1', 'W2', 'W3', 'W3p', 'W4', 'W5', 'W6'];

/** The --images and --workloads lists of the end-to-end benchmarks, or null when one names something unknown. */
export function parseSelection(images: string, workloads: string): { images: ImageName[]; workloads: Workload[] } | null {
  const imgs = images.split(',').filter(Boolean);
  const wls = workloads.split(',').filter(Boolean);
  if (imgs.some((i) => !IMAGE_NAMES.includes(i as ImageName)) || wls.some((w) => !ALL_WORKLOADS.includes(w as Workload))) return null;
  return { images: imgs as ImageName[], workloads: wls as Workload[] };
}

/** MB = 10^6 bytes in these tables (as in the published reference numbers). */
export const MB = 1e6;

/** The reference store's published numbers (Go stargz-store on this machine kind, test/python:esgz, Debian bookworm minbase + python3, ~170 MB), and the targets. */
export const PUBLISHED: Record<Exclude<Workload, 'W3p'>, { what: string; goSeconds: number; goNote: string; target: string; layerNote: string }> = {
  W1: { what: 'lookup of layer 1 diff + read etc/os-release', goSeconds: 0.058, goNote: '0.058 s', target: '≤ 0.058 s', layerNote: '' },
  W2: { what: 'cold read of usr/bin/python3.11 (6.8 MB)', goSeconds: 0.112, goNote: '0.112 s (61 MB/s)', target: '≥ 120 MB/s', layerNote: '6.8 MB' },
  W3: { what: 'cold read of every file of layer 2 (1,404 files, 44.6 MB)', goSeconds: 3.03, goNote: '3.03 s', target: '≤ 1.0 s', layerNote: '1,404 files, 44.6 MB' },
  W4: { what: 'sha256sum blob of layer 1 (52 MB)', goSeconds: 1.85, goNote: '1.85 s, fetched 1.33× the blob', target: '≤ 0.4 s, blob fetched once', layerNote: '52 MB blob' },
  W5: { what: 'W3 warm', goSeconds: 0.186, goNote: '0.186 s', target: '≤ 0.1 s', layerNote: '' },
  W6: { what: 'find diff -printf on layer 1 (6,661 entries)', goSeconds: 0.119, goNote: '0.119 s', target: '≤ 0.1 s', layerNote: '6,661 entries' },
};
export const PUBLISHED_FULL_PULL_W3 = 0.66;
export const TARGET_WARM_DD_MBPS = 800;
export const TARGET_WARM_STAT_US = 50;

/** One row: a workload on one layer of one image. */
export interface Case {
  key: string;
  image: BenchImage;
  workload: Workload;
  layer: LayerFacts;
  /** The file (W1, W2). */
  file?: { path: string; size: number };
  label: string;
}

export interface Sample {
  key: string;
  run: number;
  seconds: number;
  bytes: number;
  /** Store traffic for the session up to this case (W5: only its own, from /metrics). */
  traffic?: Traffic;
  peakRssBytes: number;
  /** Seconds from the store's spawn to its mount answering. */
  storeStartSeconds?: number;
  /** Untimed resolution before the timed part (all but W1). */
  resolveSeconds?: number;
  metrics?: Record<string, unknown>;
  extra?: Record<string, unknown>;
  /** Cores busy on the machine just before the session (nothing of ours running), and whether that was under the bound. */
  before?: { busyCores: number; quiet: boolean; waitedMs: number };
}

export interface FullPullSample {
  key: string;
  run: number;
  seconds: number;
  bytes: number;
  requests: number;
  before?: { busyCores: number; quiet: boolean; waitedMs: number };
}

export interface RunContext {
  reg: Registry;
  /** host:port the store and curl use (the registry, or the shaping proxy in front of it). */
  refHost: string;
  storeConfig: string;
  storeEnv?: NodeJS.ProcessEnv;
  /** node flags for the store processes (e.g. --cpu-prof --cpu-prof-dir=DIR). */
  storeNodeArgs?: string[];
  storeLogLevel?: string;
  /** Save every store's log here (file per session). */
  logDir?: string;
  /** Parallel readers of W3p. */
  parallelReaders: number;
  /** Warm stat passes over the layer's files (W3 sessions). */
  statPasses: number;
  /** Before each session, wait up to maxWaitMs for a 250 ms window with at most maxCores busy (null: don't). */
  quiet: { maxCores: number; maxWaitMs: number } | null;
  log: (s: string) => void;
  /**
   * The Go reference store (bench/lib/goref.ts): when set, every store
   * session also runs on it, as its own cold session in the same rotation.
   */
  goref?: { bin: string; config: string; logLevel?: string };
}

/**
 * The cases: every workload on every image, except W3p, which runs on the
 * images in `parallelOn` only (by default the python image: on the big
 * image it costs ~10 s a run and says the same).
 */
export function buildCases(images: readonly BenchImage[], workloads: readonly Workload[], parallelOn: readonly string[] = ['python', 'python-zstd']): Case[] {
  const cases: Case[] = [];
  for (const img of images) {
    const [l1, l2] = [img.layers[0]!, img.layers[1] ?? img.layers[0]!];
    // The bookworm-like image's layer 2 is the python image's: its W2/W3/W5 run on layer 1 instead, so they add a data point.
    const bigL1 = img.name === 'bookworm-like';
    const readLayer = bigL1 ? l1 : l2;
    const large = bigL1
      ? l1.largest
      : l2.filePaths.includes('usr/bin/python3.11') ? { path: 'usr/bin/python3.11', size: sizeOf(img, l2, 'usr/bin/python3.11') } : l2.largest;
    for (const w of workloads) {
      if (w === 'W3p' && !parallelOn.includes(img.name)) continue;
      const key = `${img.name}/${w}`;
      const files = `${readLayer.files.toLocaleString('en-US')} files, ${(readLayer.fileBytes / MB).toFixed(1)} MB`;
      switch (w) {
        case 'W1': {
          const small = smallFileOf(l1);
          cases.push({ key, image: img, workload: w, layer: l1, file: { path: small, size: sizeOf(img, l1, small) }, label: `lookup of layer 1 diff + read ${small}` });
          break;
        }
        case 'W2':
          cases.push({ key, image: img, workload: w, layer: readLayer, file: large, label: `cold read of ${large.path} (${(large.size / MB).toFixed(1)} MB)` });
          break;
        case 'W3':
          cases.push({ key, image: img, workload: w, layer: readLayer, label: `cold read of every file of layer ${readLayer.index} (${files})` });
          break;
        case 'W3p':
          cases.push({ key, image: img, workload: w, layer: readLayer, label: `W3 with parallel readers (layer ${readLayer.index})` });
          break;
        case 'W4':
          cases.push({ key, image: img, workload: w, layer: l1, label: `sha256sum blob of layer 1 (${(l1.lazy.size / MB).toFixed(1)} MB)` });
          break;
        case 'W5':
          cases.push({ key, image: img, workload: w, layer: readLayer, label: `W3 warm (layer ${readLayer.index})` });
          break;
        case 'W6':
          cases.push({ key, image: img, workload: w, layer: l1, label: `find diff -printf on layer 1 (${l1.entries.toLocaleString('en-US')} entries)` });
          break;
      }
    }
  }
  return cases;
}

const fileSizes = new WeakMap<BenchImage, Map<string, number>>();

/** A file's size from its tar (the facts keep only the largest). */
function sizeOf(img: BenchImage, l: LayerFacts, path: string): number {
  let m = fileSizes.get(img);
  if (!m) {
    m = new Map();
    fileSizes.set(img, m);
  }
  const key = `${l.index}:${path}`;
  if (!m.has(key)) m.set(key, tarFileSize(img.tars[l.index - 1]!, path));
  return m.get(key)!;
}

/** Size of `path` in an uncompressed tar, by walking its headers (ustar/GNU/PAX size fields). */
function tarFileSize(tar: Buffer, path: string): number {
  let off = 0;
  let longName: string | undefined;
  let paxSize: number | undefined;
  let paxPath: string | undefined;
  while (off + 512 <= tar.length) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const str = (a: number, n: number): string => h.subarray(a, a + n).toString('utf8').replace(/\0.*$/s, '');
    const sizeField = h.subarray(124, 136);
    const size = sizeField[0]! & 0x80 ? Number(sizeField.readBigUInt64BE(4)) : parseInt(str(124, 12).trim() || '0', 8);
    const type = String.fromCharCode(h[156]!);
    const body = tar.subarray(off + 512, off + 512 + size);
    if (type === 'L') longName = body.toString('utf8').replace(/\0.*$/s, '');
    else if (type === 'x') {
      for (const rec of body.toString('utf8').split('\n')) {
        const m = /^\d+ (\w+)=(.*)$/s.exec(rec);
        if (m?.[1] === 'size') paxSize = Number(m[2]);
        if (m?.[1] === 'path') paxPath = m[2];
      }
    } else {
      const prefix = str(345, 155);
      const name = (paxPath ?? longName ?? (prefix ? `${prefix}/${str(0, 100)}` : str(0, 100))).replace(/^\.?\/+/, '');
      if (name === path) return paxSize ?? size;
      longName = paxPath = undefined;
      paxSize = undefined;
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return 0;
}

/** Metric deltas between two scrapes (counters only make sense as deltas). */
function delta(after: MetricsSnapshot, before: MetricsSnapshot): MetricsSnapshot {
  const out: MetricsSnapshot = {};
  for (const [k, v] of Object.entries(after)) out[k] = v - (before[k] ?? 0);
  return out;
}

/**
 * Runs every case `runs` times, sessions interleaved (the order rotates each
 * run), with the full pull of each touched layer, and with ctx.goref the same
 * store sessions on the Go reference store (samples in `gorefSamples`).
 */
export async function runCases(cases: readonly Case[], runs: number, ctx: RunContext): Promise<{ samples: Sample[]; fullPulls: FullPullSample[]; gorefSamples: Sample[] }> {
  const samples: Sample[] = [];
  const fullPulls: FullPullSample[] = [];
  const gorefSamples: Sample[] = [];
  const work = await mkdtemp(join(tmpdir(), 'estargz-bench-e2e-'));
  // Sessions: W5 and the warm extras ride on the W3 session of the same image; everything else is its own cold session.
  type Session = { kind: 'store' | 'goref'; cases: Case[] } | { kind: 'full'; image: BenchImage; layer: LayerFacts };
  const sessions: Session[] = [];
  for (const c of cases) {
    if (c.workload === 'W5') continue;
    const withW5 = c.workload === 'W3' ? cases.filter((x) => x.image === c.image && x.workload === 'W5') : [];
    sessions.push({ kind: 'store', cases: [c, ...withW5] });
  }
  for (const c of cases) {
    if (c.workload === 'W5' && !cases.some((x) => x.image === c.image && x.workload === 'W3')) sessions.push({ kind: 'store', cases: [c] });
  }
  // The Go store: each of our sessions again, right after ours in the rotation.
  if (ctx.goref) {
    for (let i = sessions.length - 1; i >= 0; i--) {
      const s = sessions[i]!;
      // The Go store has no reader for podman's zstd:chunked (its zstdchunked package is an older layout): our sessions only.
      if (s.kind === 'store' && s.cases[0]!.image.format !== 'zstd:chunked') sessions.splice(i + 1, 0, { kind: 'goref', cases: s.cases });
    }
  }
  const layersSeen = new Set<string>();
  for (const c of cases) {
    const id = `${c.image.name}/L${c.layer.index}`;
    if (layersSeen.has(id)) continue;
    layersSeen.add(id);
    sessions.push({ kind: 'full', image: c.image, layer: c.layer });
  }
  try {
    for (let run = 0; run < runs; run++) {
      const order = sessions.map((_, i) => sessions[(i + run) % sessions.length]!);
      for (const s of order) {
        const before = ctx.quiet ? await waitQuiet(ctx.quiet.maxCores, ctx.quiet.maxWaitMs) : undefined;
        if (before && !before.quiet) ctx.log(`  (machine busy: ${before.busyCores.toFixed(2)} cores used by others before this session)`);
        if (s.kind === 'full') {
          const key = `${s.image.name}/L${s.layer.index}`;
          const mark = await logMark(ctx.reg);
          const r = await fullPullOf(ctx.refHost, s.image, s.layer, work);
          const t = await trafficSince(ctx.reg, mark);
          fullPulls.push({ key, run, seconds: r.seconds, bytes: t.curl.bytes, requests: t.curl.requests, ...(before && { before }) });
          ctx.log(`  run ${run + 1}/${runs} full pull ${key}: ${r.seconds.toFixed(3)} s`);
        } else {
          const out = await runSession(s.cases, run, ctx, s.kind === 'goref' ? 'goref' : 'ours');
          if (before) for (const o of out) o.before = before;
          (s.kind === 'goref' ? gorefSamples : samples).push(...out);
          ctx.log(`  run ${run + 1}/${runs} ${s.kind === 'goref' ? '[Go store] ' : ''}${out.map((x) => `${x.key} ${x.seconds.toFixed(3)} s`).join(', ')}`);
        }
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return { samples, fullPulls, gorefSamples };
}

/**
 * The full-pull reference of a layer: `curl | gunzip | tar -x` of the gzip
 * layer for the eStargz images, `curl | zstd -dc | tar -x` of the
 * zstd:chunked blob for the zstd image (what podman pulls without the store).
 */
async function fullPullOf(host: string, img: BenchImage, l: LayerFacts, workDir: string): Promise<WorkloadResult> {
  const b = fullPullBlob(img, l);
  const dir = await mkdtemp(join(workDir, 'pull-'));
  try {
    const r = await timeBash(`curl -sf ${q(`http://${host}/v2/${img.repo}/blobs/${b.digest}`)} | ${b.decompress} | tar -x -C ${q(dir)}`);
    return { seconds: r.seconds, bytes: 0 };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** What a session needs of a store: ours (BenchStore) or the Go one, which has no /metrics (metricsUrl null). */
type SessionStore = Pick<BenchStore, 'pid' | 'startSeconds' | 'layerDir' | 'stop'> & { metricsUrl: string | null };

async function startSessionStore(which: 'ours' | 'goref', logFile: string | undefined, ctx: RunContext): Promise<SessionStore> {
  if (which === 'goref') {
    const g = ctx.goref!;
    const s = await startGorefStore({ bin: g.bin, config: g.config, ...(g.logLevel && { logLevel: g.logLevel }), ...(logFile && { logFile }) });
    return Object.assign(s, { metricsUrl: null });
  }
  return startBenchStore({
    config: ctx.storeConfig,
    ...(ctx.storeEnv && { env: ctx.storeEnv }),
    ...(ctx.storeNodeArgs && { nodeArgs: ctx.storeNodeArgs }),
    ...(ctx.storeLogLevel && { logLevel: ctx.storeLogLevel }),
    ...(logFile && { logFile }),
  });
}

const noMetrics = async (): Promise<MetricsSnapshot> => ({});

async function runSession(cases: Case[], run: number, ctx: RunContext, which: 'ours' | 'goref' = 'ours'): Promise<Sample[]> {
  const first = cases[0]!;
  const ref = lazyRef(ctx.refHost, first.image);
  const mark = await logMark(ctx.reg);
  const logFile = ctx.logDir ? join(ctx.logDir, `${which === 'goref' ? 'goref-' : ''}${first.key.replace('/', '-')}-run${run + 1}.log`) : undefined;
  const store = await startSessionStore(which, logFile, ctx);
  const scrape = (): Promise<MetricsSnapshot> => (store.metricsUrl === null ? noMetrics() : scrapeMetrics(store.metricsUrl));
  const out: Sample[] = [];
  try {
    // eStargz layers by layer digest; zstd:chunked ones by manifest checksum, as podman ≥ 5.1 asks.
    const dirOf = (c: Case): string => store.layerDir(ref, c.layer.lazy.key);
    let resolveSeconds: number | undefined;
    if (first.workload !== 'W1') {
      const t = performance.now();
      await stat(join(dirOf(first), 'diff'));
      resolveSeconds = (performance.now() - t) / 1000;
    }
    const r = await runWorkload(first, dirOf(first), ctx);
    const rss = await peakRss(store.pid);
    const afterFirst = await scrape();
    const sample: Sample = {
      key: first.key, run, seconds: r.seconds, bytes: r.bytes, peakRssBytes: rss, storeStartSeconds: store.startSeconds,
      ...(store.metricsUrl !== null && { metrics: summarizeMetrics(afterFirst) }), ...(resolveSeconds !== undefined && { resolveSeconds }), ...(r.extra && { extra: r.extra }),
    };
    // Registry traffic of this workload alone (the follow-ups below get their own).
    sample.traffic = await trafficSince(ctx.reg, mark);
    out.push(sample);
    if (first.workload === 'W2') sample.extra = { ...sample.extra, warmDd: await warmDdSteps(first, dirOf(first), scrape) };
    // Follow-ups on the same (now warm) store: W5 after W3, then warm stat.
    let prev = afterFirst;
    for (const c of cases.slice(1)) {
      const markW = await logMark(ctx.reg);
      const reset = await resetPeakRss(store.pid);
      const w = await runWorkload(c, dirOf(c), ctx);
      const rssW = await peakRss(store.pid);
      const now = await scrape();
      const d = store.metricsUrl === null ? undefined : summarizeMetrics(delta(now, prev));
      prev = now;
      const extra: Record<string, unknown> = { ...(w.extra ?? {}), peakRssReset: reset };
      if (c.workload === 'W5' && ctx.statPasses > 0) {
        const st = await statLoop(join(dirOf(c), 'diff'), c.layer.filePaths, ctx.statPasses);
        extra.warmStat = st;
      }
      out.push({ key: c.key, run, seconds: w.seconds, bytes: w.bytes, peakRssBytes: rssW, ...(d && { metrics: d }), extra, traffic: await trafficSince(ctx.reg, markW) });
    }
  } finally {
    await store.stop();
  }
  return out;
}

/**
 * Warm sequential read through FUSE on the layer's largest file: read once
 * (cold, untimed), then three times with its page cache dropped first, so
 * every byte crosses FUSE and comes from the store's caches; bytes_served
 * from /metrics confirms it (ours only: the Go store has no /metrics, and
 * `scrape` then returns nothing).
 */
async function warmDdSteps(c: Case, dir: string, scrape: () => Promise<MetricsSnapshot>): Promise<Record<string, unknown>> {
  const big = c.layer.largest;
  const path = join(dir, 'diff', big.path);
  if (big.path !== c.file!.path) await w2LargeFile(dir, big.path, big.size);
  const before = await scrape();
  const seconds: number[] = [];
  for (let i = 0; i < 3; i++) seconds.push((await warmDd(path, big.size)).seconds);
  const after = await scrape();
  const d = delta(after, before);
  return {
    path: big.path, size: big.size, seconds,
    servedThroughFuse: Object.entries(d).filter(([k]) => k.startsWith('estargz_store_bytes_served_total') && k.includes('kind="diff"')).reduce((a, [, v]) => a + v, 0),
    registryBytes: Object.entries(d).filter(([k]) => k.startsWith('estargz_store_registry_bytes_total')).reduce((a, [, v]) => a + v, 0),
  };
}

async function runWorkload(c: Case, dir: string, ctx: RunContext): Promise<WorkloadResult> {
  switch (c.workload) {
    case 'W1': return w1ResolveAndRead(dir, c.file!.path);
    case 'W2': return w2LargeFile(dir, c.file!.path, c.file!.size);
    case 'W3':
    case 'W5':
      return w3AllFiles(dir, c.layer.fileBytes);
    case 'W3p':
      return w3Parallel(dir, c.layer.filePaths, c.layer.fileBytes, ctx.parallelReaders);
    case 'W4':
      return w4BlobSha(dir, c.layer.lazy.digest, c.layer.lazy.size);
    case 'W6':
      return w6MetadataWalk(dir);
  }
}

// ---------------------------------------------------------------------------
// Summaries and tables

export interface CaseSummary {
  key: string;
  label: string;
  image: string;
  /** How the store served the image (absent in older results: eStargz). */
  format?: 'estargz' | 'zstd:chunked';
  workload: Workload;
  seconds: Summary;
  mbps: number | null;
  storeBytes: number | null;
  storeRequests: number | null;
  blobBytesRatio: number | null;
  peakRssMiB: Summary;
  fullPull: { key: string; seconds: Summary; bytes: number } | null;
  resolveSeconds: Summary | null;
  verdict: string;
  extra: Record<string, unknown>;
  /** The Go reference store on the same case, same run (null when it did not run; absent in results from before it existed). */
  goref?: GorefCaseSummary | null;
}

/** The Go store's figures for a case, as far as they can be had without /metrics. */
export interface GorefCaseSummary {
  seconds: Summary;
  mbps: number | null;
  /** From the registry's access log (its user agent). */
  storeBytes: number | null;
  storeRequests: number | null;
  blobBytesRatio: number | null;
  peakRssMiB: Summary;
  resolveSeconds: Summary | null;
  /** W2 sessions: the warm dd of the layer's largest file (page cache dropped), as for ours. */
  warmDd?: { path: string; size: number; mbps: number; seconds: Summary };
  /** W5: warm stat per call. */
  warmStatUs?: Summary;
}

function summarizeGoref(c: Case, ss: readonly Sample[]): GorefCaseSummary | null {
  if (!ss.length) return null;
  const seconds = summarize(ss.map((s) => s.seconds));
  const bytes = ss[0]!.bytes;
  const withTraffic = ss.filter((s) => s.traffic);
  const storeBytes = withTraffic.length ? med(withTraffic.map((s) => s.traffic!.store.bytes)) : null;
  const rs = ss.map((s) => s.resolveSeconds).filter((x): x is number => x !== undefined);
  const out: GorefCaseSummary = {
    seconds,
    mbps: bytes > 0 && c.workload !== 'W1' ? bytes / MB / seconds.median : null,
    storeBytes,
    storeRequests: withTraffic.length ? med(withTraffic.map((s) => s.traffic!.store.requests)) : null,
    blobBytesRatio: c.workload === 'W4' && storeBytes !== null ? storeBytes / c.layer.lazy.size : null,
    peakRssMiB: summarize(ss.map((s) => s.peakRssBytes / 2 ** 20)),
    resolveSeconds: rs.length ? summarize(rs) : null,
  };
  const dd = ss.map((s) => s.extra?.warmDd as { path: string; size: number; seconds: number[] } | undefined).filter((x) => x !== undefined);
  if (dd.length) {
    const all = dd.flatMap((d) => d.seconds);
    out.warmDd = { path: dd[0]!.path, size: dd[0]!.size, mbps: dd[0]!.size / MB / med(all), seconds: summarize(all) };
  }
  const st = ss.map((s) => (s.extra?.warmStat as { perCallUs: number } | undefined)?.perCallUs).filter((x): x is number => x !== undefined);
  if (st.length) out.warmStatUs = summarize(st);
  return out;
}

const med = (xs: number[]): number => summarize(xs).median;

export function summarizeCases(cases: readonly Case[], samples: readonly Sample[], fullPulls: readonly FullPullSample[], gorefSamples: readonly Sample[] = []): CaseSummary[] {
  return cases.map((c) => {
    const ss = samples.filter((s) => s.key === c.key);
    const secs = summarize(ss.map((s) => s.seconds));
    const bytes = ss[0]?.bytes ?? 0;
    // W1 reads a few bytes: a rate would mean nothing there.
    const mbps = bytes > 0 && c.workload !== 'W1' ? bytes / MB / secs.median : null;
    const withTraffic = ss.filter((s) => s.traffic);
    const storeBytes = withTraffic.length ? med(withTraffic.map((s) => s.traffic!.store.bytes)) : null;
    const storeRequests = withTraffic.length ? med(withTraffic.map((s) => s.traffic!.store.requests)) : null;
    const fpKey = `${c.image.name}/L${c.layer.index}`;
    const fp = fullPulls.filter((f) => f.key === fpKey);
    const extra: Record<string, unknown> = {};
    if (c.workload === 'W2') {
      const dd = ss.map((s) => s.extra?.warmDd as { size: number; seconds: number[]; path: string; servedThroughFuse: number } | undefined).filter((x) => x);
      if (dd.length) {
        const all = dd.flatMap((d) => d!.seconds);
        extra.warmDd = {
          path: dd[0]!.path, size: dd[0]!.size, mbps: dd[0]!.size / MB / med(all), seconds: summarize(all),
          // Bytes served through FUSE per dd, against the file size: 1.0 means the page cache was bypassed.
          fuseShare: med(dd.map((d) => d!.servedThroughFuse / (3 * d!.size))),
        };
      }
    }
    if (c.workload === 'W5') {
      const st = ss.map((s) => (s.extra?.warmStat as { perCallUs: number } | undefined)?.perCallUs).filter((x): x is number => x !== undefined);
      if (st.length) extra.warmStatUs = summarize(st);
    }
    if (c.workload === 'W6') {
      const e = ss.map((s) => s.extra?.entries as number | undefined).find((x) => x !== undefined);
      if (e !== undefined) extra.entriesListed = e;
    }
    const blobBytesRatio = c.workload === 'W4' && storeBytes !== null ? storeBytes / c.layer.lazy.size : null;
    const rs = ss.map((s) => s.resolveSeconds).filter((x): x is number => x !== undefined);
    return {
      key: c.key,
      label: c.label,
      image: c.image.name,
      format: c.image.format ?? 'estargz',
      workload: c.workload,
      seconds: secs,
      mbps,
      storeBytes,
      storeRequests,
      blobBytesRatio,
      peakRssMiB: summarize(ss.map((s) => s.peakRssBytes / 2 ** 20)),
      fullPull: fp.length ? { key: fpKey, seconds: summarize(fp.map((f) => f.seconds)), bytes: med(fp.map((f) => f.bytes)) } : null,
      resolveSeconds: rs.length ? summarize(rs) : null,
      verdict: verdict(c, secs.median, mbps, blobBytesRatio),
      extra,
      goref: summarizeGoref(c, gorefSamples.filter((s) => s.key === c.key)),
    };
  });
}

function verdict(c: Case, seconds: number, mbps: number | null, ratio: number | null): string {
  const ok = (b: boolean): string => (b ? 'met' : 'missed');
  switch (c.workload) {
    case 'W1': return ok(seconds <= 0.058);
    case 'W2': return ok((mbps ?? 0) >= 120);
    case 'W3': return ok(seconds <= 1.0);
    case 'W4': return ok(seconds <= 0.4 && ratio !== null && ratio <= 1.05) + (ratio !== null && ratio > 1.05 ? ' (bytes)' : '');
    case 'W5': return ok(seconds <= 0.1);
    case 'W6': return ok(seconds <= 0.1);
    case 'W3p': return '—';
  }
}

/** "N of M sessions started on a busy machine (median X cores busy before sessions)". */
export function busyNote(samples: readonly Sample[], fullPulls: readonly FullPullSample[]): string {
  const befores = [...samples.filter((s, i, a) => a.findIndex((x) => x.key === s.key && x.run === s.run) === i).map((s) => s.before), ...fullPulls.map((f) => f.before)]
    .filter((b): b is NonNullable<Sample['before']> => b !== undefined);
  if (!befores.length) return 'No quiet-machine check before sessions (--max-other 0).';
  const busy = befores.filter((b) => !b.quiet).length;
  const med = summarize(befores.map((b) => b.busyCores)).median;
  return `Before each session the benchmark waited (up to the --quiet-wait bound) for a quiet 250 ms; ${busy} of ${befores.length} sessions started with other processes still using more than the bound (median ${med.toFixed(2)} cores busy just before a session).`;
}

const fmtMB = (b: number | null): string => (b === null ? '—' : `${(b / MB).toFixed(1)} MB`);

/** "0.123 (0.1–0.2) · 1.5× ours": the Go store's time on a case and how it compares with ours. */
function gorefCell(s: CaseSummary): string {
  const g = s.goref;
  if (!g) return s.format === 'zstd:chunked' ? 'not served: the Go store has no reader for podman\'s zstd:chunked' : '—';
  const ratio = g.seconds.median / s.seconds.median;
  return `${formatSummary(g.seconds, 3)} · ${ratio >= 1 ? `${ratio.toFixed(2)}× ours` : `${(1 / ratio).toFixed(2)}× faster than ours`}`;
}

/** The main comparison table; with goColumn, the Go store measured in the same run (see gorefTable for its bytes and memory). */
export function casesTable(sums: readonly CaseSummary[], opts: { goColumn: boolean }): { header: string[]; rows: string[][] } {
  const header = ['workload', 'image', 'what', 'ours s median (min–max)', 'ours MB/s', 'full-pull reference s (same layer)', ...(opts.goColumn ? ['Go store, measured: s median (min–max)'] : []), 'target', 'verdict', 'registry bytes (store)', 'store peak RSS MiB'];
  const rows = sums.map((s) => {
    const pub = s.workload === 'W3p' ? undefined : PUBLISHED[s.workload];
    let reg = s.storeBytes === null ? '—' : fmtMB(s.storeBytes);
    if (s.workload === 'W4' && s.blobBytesRatio !== null) reg += ` (${s.blobBytesRatio.toFixed(2)}× blob)`;
    return [
      s.workload,
      s.image,
      s.label,
      formatSummary(s.seconds, 3),
      s.mbps === null ? '—' : s.mbps.toFixed(0),
      s.fullPull && s.workload !== 'W5' ? `${formatSummary(s.fullPull.seconds, 3)} (L${s.fullPull.key.split('/L')[1]}, ${fmtMB(s.fullPull.bytes)})` : '—',
      ...(opts.goColumn ? [gorefCell(s)] : []),
      pub ? pub.target : '—',
      s.verdict,
      reg,
      `${s.peakRssMiB.median.toFixed(0)} (${s.peakRssMiB.min.toFixed(0)}–${s.peakRssMiB.max.toFixed(0)})`,
    ];
  });
  return { header, rows };
}

/** The Go store's side of each case: what the main table has no room for (its bytes, requests, memory, warm paths). */
export function gorefTable(sums: readonly CaseSummary[]): { header: string[]; rows: string[][] } {
  const header = ['workload', 'image', 'Go s', 'ours s', 'Go MB/s', 'Go untimed resolve', 'Go registry bytes', 'Go requests', 'Go peak RSS MiB', 'ours peak RSS MiB', 'Go warm path'];
  const rows: string[][] = [];
  for (const s of sums) {
    const g = s.goref;
    if (!g) continue;
    let reg = fmtMB(g.storeBytes);
    if (g.blobBytesRatio !== null) reg += ` (${g.blobBytesRatio.toFixed(2)}× blob)`;
    const warm = g.warmDd ? `warm dd ${g.warmDd.mbps.toFixed(0)} MB/s` : g.warmStatUs ? `warm stat ${g.warmStatUs.median.toFixed(1)} µs` : '—';
    rows.push([
      s.workload, s.image, g.seconds.median.toFixed(3), s.seconds.median.toFixed(3), g.mbps === null ? '—' : g.mbps.toFixed(0),
      g.resolveSeconds ? `${(g.resolveSeconds.median * 1000).toFixed(0)} ms` : s.workload === 'W1' ? '(in W1)' : '—', reg, g.storeRequests === null ? '—' : String(g.storeRequests),
      `${g.peakRssMiB.median.toFixed(0)} (${g.peakRssMiB.min.toFixed(0)}–${g.peakRssMiB.max.toFixed(0)})`, s.peakRssMiB.median.toFixed(0), warm,
    ]);
  }
  return { header, rows };
}

export function layersTable(images: readonly BenchImage[]): { header: string[]; rows: string[][] } {
  const header = ['image', 'layer', 'entries', 'files', 'file MB', 'tar MB', 'gzip blob MB', 'served lazily: format, blob MB', 'largest file'];
  const rows: string[][] = [];
  for (const img of images) {
    for (const l of img.layers) {
      const lazy = lazyOf(l);
      rows.push([img.name, String(l.index), String(l.entries), String(l.files), (l.fileBytes / MB).toFixed(1), (l.tarBytes / MB).toFixed(1), (l.gz.size / MB).toFixed(1), `${lazy.format} ${(lazy.size / MB).toFixed(1)}`, `${l.largest.path} (${(l.largest.size / MB).toFixed(1)} MB)`]);
    }
  }
  return { header, rows };
}

export { gzipRef };

/**
 * Issue 15's side-by-side: each workload on the python image served as
 * eStargz and as zstd:chunked (the same layer tars), with the full pull of
 * each (`curl | gunzip | tar -x` of the gzip layer; `curl | zstd -dc | tar
 * -x` of the zstd:chunked blob). Empty when the run did not have both images.
 */
export function formatsTable(sums: readonly CaseSummary[], esgzImage = 'python', zstdImage = 'python-zstd'): { header: string[]; rows: string[][] } {
  const header = ['workload', 'what', 'eStargz s', 'zstd:chunked s', 'zstd / eStargz', 'full pull s: gzip / zstd', 'registry MB: eStargz / zstd', 'peak RSS MiB: eStargz / zstd'];
  const rows: string[][] = [];
  for (const e of sums.filter((s) => s.image === esgzImage)) {
    const z = sums.find((s) => s.image === zstdImage && s.workload === e.workload);
    if (!z) continue;
    const fp = (s: CaseSummary): string => (s.fullPull && s.workload !== 'W5' ? s.fullPull.seconds.median.toFixed(3) : '—');
    const reg = (s: CaseSummary): string => (s.storeBytes === null ? '—' : (s.storeBytes / MB).toFixed(2));
    rows.push([
      e.workload, e.label.replace(/ \([^)]*MB\)$/, ''), formatSummary(e.seconds, 3), formatSummary(z.seconds, 3), `${(z.seconds.median / e.seconds.median).toFixed(2)}×`,
      `${fp(e)} / ${fp(z)}`, `${reg(e)} / ${reg(z)}`, `${e.peakRssMiB.median.toFixed(0)} / ${z.peakRssMiB.median.toFixed(0)}`,
    ]);
  }
  return { header, rows };
}
