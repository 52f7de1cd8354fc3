/**
 * The soak harness, shared by bench/soak.ts (10 min, 64 readers, 4 layers)
 * and test/e2e/soak.test.ts (short): a real store process on a local
 * registry, readers in a process of their own checking every byte, two
 * phases (cold: every file read once, fetched from the registry; warm:
 * random files and ranges for a set time, page cache dropped every N s so
 * the reads reach the store), and a sample every second of the store's RSS,
 * open fds and event-loop delay (its /metrics) and of the readers' counters.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { mountAnswers } from '../../src/fs/mount.js';
import { markdownTable } from './table.js';
import { MiB } from './stats.js';
import type { SoakImage } from './soak-image.js';
import { LATENCY_BOUNDS_MS, type FromReaders, type ReaderStats, type ToReaders } from './soak-readers.js';
import { SOCKET_NAME, controlRequest } from '../../src/daemon/control-protocol.js';
import { metric, scrapeMetrics, startBenchStore, type MetricsSnapshot } from './store-workloads.js';

const READERS_JS = fileURLToPath(new URL('./soak-readers.js', import.meta.url));
const LAG = 'estargz_store_event_loop_lag_seconds';
const DELAY = 'estargz_store_event_loop_delay_seconds';

/** The targets of the issue: p99 ≤ 20 ms, max ≤ 100 ms. */
export const TARGET_P99_MS = 20;
export const TARGET_MAX_MS = 100;

export interface SoakOptions {
  readers: number;
  /** Length of the warm phase. */
  warmSeconds: number;
  /** The cold phase ends when every file was read once, or after this long. */
  coldMaxSeconds: number;
  /** `echo 3 > /proc/sys/vm/drop_caches` this often during the warm phase (0: never). */
  dropCachesEverySec: number;
  /**
   * Scrape the store's /metrics this often (default 5 s). A scrape costs the
   * store ~5–15 ms of main-thread time (prom-client's collectors): once a
   * second it alone would be 1 tick in 100, i.e. the p99 being measured.
   */
  metricsEverySec?: number;
  /** After the warm phase: restart the store (disk cache kept) and read every file again, counting the successor's registry bytes. */
  restartPass?: boolean;
  /** Samples after this much of the warm phase count as "after warm-up" (default: a quarter, at least 10 s). */
  warmUpSeconds?: number;
  storeConfig?: string;
  storeNodeArgs?: string[];
  storeLogLevel?: string;
  storeEnv?: NodeJS.ProcessEnv;
  /** Keep the store's log (stdout + stderr) in this file. */
  storeLogFile?: string;
  /** Another build's CLI for the store (before/after runs with one harness). */
  storeCli?: string;
  seed?: number;
  log: (s: string) => void;
}

export type Phase = 'setup' | 'cold' | 'warm';

/** One sample: the readers' counters are cumulative, the delay gauge covers the time since the previous sample. */
export interface SoakSample extends Pick<ReaderStats, 'reads' | 'bytes' | 'ops' | 'errors' | 'wrongBytes' | 'latency'> {
  /** Seconds since the readers started. */
  t: number;
  phase: Phase;
  maxReadMs: number;
  rssBytes: number;
  fds: number;
  /** Whether /metrics was scraped for this sample (every `metricsEverySec`; RSS and fds every second). */
  scraped: boolean;
  /** The store's delay gauge (ms): p50, p99, max since the previous scrape (NaN when not scraped). */
  delay: { p50: number; p99: number; max: number };
  /** The store's cumulative lag histogram: counts per bound (ms), +Inf last. */
  lag: { boundsMs: number[]; counts: number[] };
  /** The store's garbage collections so far (main thread), from its last scrape: count and seconds, full (mark-compact) and young-generation. */
  gc: GcCounts;
  droppedCaches: boolean;
}

export interface GcCounts {
  major: number;
  majorSeconds: number;
  minor: number;
  minorSeconds: number;
}

export interface PhaseSummary {
  phase: Exclude<Phase, 'setup'>;
  seconds: number;
  reads: number;
  readsPerSec: number;
  mbPerSec: number;
  ops: number;
  errors: number;
  wrongBytes: number;
  rss: { start: number; end: number; max: number };
  fds: { start: number; end: number; max: number };
  /** Event-loop delay over the phase: from the lag histogram (p50, p99, share of ticks over 20 ms), max from the delay gauge. */
  delayMs: { p50: number; p99: number; max: number; over20Share: number; worst10sP99: number };
  readLatencyMs: { p99: number; max: number };
  /** The store's garbage collections in the phase: full ones (each a pause of the main thread) and young-generation ones, with their time. */
  gc: { major: number; majorMs: number; minor: number; minorMs: number };
  /** The warm phase: RSS and fds after warm-up, first third vs last third (medians). */
  flat?: { fromSecond: number; rssA: number; rssB: number; fdsA: number; fdsB: number; rssOk: boolean; fdsOk: boolean };
}

export interface SoakResult {
  readers: number;
  layers: { digest: string; files: number; fileBytes: number; esgzBytes: number }[];
  samples: SoakSample[];
  phases: PhaseSummary[];
  coldCompleted: boolean;
  errorSamples: string[];
  storeAliveAtEnd: boolean;
  storeExitCode: number | null;
  storePid: number;
  storeStartSeconds: number;
  droppedCaches: number;
  dropCachesError?: string;
  /**
   * Body bytes the store took from the registry (`estargz_store_registry_bytes_total`):
   * `cold`, from its start to the end of the warm phase (resolution, the cold pass, the
   * background fetch and its whole-layer check); `restart`, the successor's after
   * `estargz-store restart` with the disk cache kept, over a second read of every file
   * (absent when the restart pass was not run).
   */
  registryBytes: { cold: number; restart?: number };
  /** The restart pass: every file read again through the successor, page cache dropped. */
  restartPass?: { seconds: number; completed: boolean; ops: number; errors: number; wrongBytes: number; errorSamples: string[] };
  /** Each phase's start and end on the monotonic clock (µs, process.hrtime.bigint() / 1000n): places a store profile's long tasks in a phase. */
  clock: Partial<Record<Exclude<Phase, 'setup'>, { startUs: number; endUs: number }>>;
}

/** Now on the monotonic clock V8's profiles use, in µs. */
const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

// ---------------------------------------------------------------------------
// Sampling the store

async function rssOf(pid: number): Promise<number> {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

async function fdsOf(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length;
}

const GC = 'estargz_store_nodejs_gc_duration_seconds';

/** prom-client's GC histogram (`kind` major = mark-compact, minor = scavenge). */
function gcOf(m: MetricsSnapshot): GcCounts {
  const v = (suffix: string, kind: string): number => m[`${GC}_${suffix}{kind="${kind}"}`] ?? 0;
  return { major: v('count', 'major'), majorSeconds: v('sum', 'major'), minor: v('count', 'minor'), minorSeconds: v('sum', 'minor') };
}

function lagOf(m: MetricsSnapshot): SoakSample['lag'] {
  const rows: [number, number][] = [];
  for (const [k, v] of Object.entries(m)) {
    const b = new RegExp(`^${LAG}_bucket\\{le="([^"]+)"\\}$`).exec(k);
    if (b) rows.push([b[1] === '+Inf' ? Infinity : Number(b[1]) * 1000, v]);
  }
  rows.sort((a, b) => a[0] - b[0]);
  return { boundsMs: rows.map((r) => r[0]), counts: rows.map((r) => r[1]) };
}

/** The q-quantile of a cumulative histogram delta, interpolated inside its bucket (as histogram_quantile does). */
export function histQuantile(boundsMs: number[], after: number[], before: number[] | undefined, q: number): number {
  const cum = after.map((c, i) => c - (before?.[i] ?? 0));
  const total = cum.at(-1) ?? 0;
  if (total <= 0) return NaN;
  const rank = q * total;
  for (let i = 0; i < cum.length; i++) {
    if (cum[i]! >= rank) {
      const hi = boundsMs[i]!;
      const lo = i === 0 ? 0 : boundsMs[i - 1]!;
      if (!Number.isFinite(hi)) return lo;
      const below = i === 0 ? 0 : cum[i - 1]!;
      const inBucket = cum[i]! - below;
      return inBucket > 0 ? lo + ((rank - below) / inBucket) * (hi - lo) : hi;
    }
  }
  return boundsMs.at(-2) ?? NaN;
}

function shareOver(boundsMs: number[], after: number[], before: number[] | undefined, ms: number): number {
  const i = boundsMs.indexOf(ms);
  const total = (after.at(-1) ?? 0) - (before?.at(-1) ?? 0);
  if (i < 0 || total <= 0) return NaN;
  return 1 - (after[i]! - (before?.[i] ?? 0)) / total;
}

function latencyQuantile(after: number[], before: number[] | undefined, q: number): number {
  return histQuantile([...LATENCY_BOUNDS_MS, Infinity], cumulative(after), before && cumulative(before), q);
}

function cumulative(counts: number[]): number[] {
  let n = 0;
  return counts.map((c) => (n += c));
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2) : NaN;
};

// ---------------------------------------------------------------------------
// The run

/** Messages from the readers' process, awaited by type. */
class ReaderLink {
  private latest: ReaderStats | undefined;
  private readonly waiters: { type: FromReaders['type']; resolve: (m: FromReaders) => void }[] = [];
  private exitError: Error | undefined;

  constructor(readonly child: ChildProcess) {
    child.on('message', (m: FromReaders) => {
      if ('stats' in m) this.latest = m.stats;
      for (const w of this.waiters.filter((x) => x.type === m.type)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(m);
      }
    });
    child.on('exit', (code, signal) => {
      if (code !== 0 || signal) this.exitError = new Error(`the readers' process exited (${signal ?? code})`);
    });
  }

  get stats(): ReaderStats | undefined {
    return this.latest;
  }

  send(m: ToReaders): void {
    this.child.send(m);
  }

  wait<T extends FromReaders['type']>(type: T, timeoutMs: number): Promise<Extract<FromReaders, { type: T }> | null> {
    if (this.exitError) return Promise.reject(this.exitError);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.findIndex((w) => w.resolve === done), 1);
        resolve(null);
      }, timeoutMs);
      const done = (m: FromReaders): void => {
        clearTimeout(timer);
        resolve(m as Extract<FromReaders, { type: T }>);
      };
      this.waiters.push({ type, resolve: done });
      this.child.once('exit', () => {
        clearTimeout(timer);
        if (this.exitError) reject(this.exitError);
      });
    });
  }
}

async function dropCaches(): Promise<void> {
  await writeFile('/proc/sys/vm/drop_caches', '3');
}

/** Runs the soak on an image already pushed and converted (prepareSoakImage). */
export async function runSoak(image: SoakImage, opts: SoakOptions): Promise<SoakResult> {
  const log = opts.log;
  const store = await startBenchStore({
    config: opts.storeConfig ?? '',
    ...(opts.storeNodeArgs && { nodeArgs: opts.storeNodeArgs }),
    logLevel: opts.storeLogLevel ?? 'info',
    ...(opts.storeEnv && { env: opts.storeEnv }),
    ...(opts.storeLogFile && { logFile: opts.storeLogFile }),
    ...(opts.storeCli && { cli: opts.storeCli }),
  });
  let child: ChildProcess | undefined;
  const samples: SoakSample[] = [];
  let sampling = true;
  let samplerDone: Promise<void> = Promise.resolve();
  try {
    const diffDirs = image.layers.map((l) => join(store.layerDir(image.ref, l.digest), 'diff'));
    for (const d of diffDirs) await stat(d); // resolves each layer (manifest, config, footer, TOC): not part of the phases
    child = fork(READERS_JS, [], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      // Every async fs call takes a libuv pool thread: as many as readers, or they would queue behind 4.
      env: { ...process.env, UV_THREADPOOL_SIZE: String(Math.min(1024, opts.readers + 4)) },
    });
    const link = new ReaderLink(child);
    link.send({ type: 'init', readers: opts.readers, seed: opts.seed ?? 42, layers: image.layers.map((l, i) => ({ diffDir: diffDirs[i]!, spec: { index: l.index, files: l.files, contentBytes: l.contentBytes } })) });
    const ready = await link.wait('ready', 120_000);
    if (!ready) throw new Error('the readers did not get ready in 120 s');
    log(`readers ready (source bytes made in ${ready.contentSeconds.toFixed(1)} s); store pid ${store.pid}`);

    let phase: Phase = 'setup';
    let dropped = false;
    let droppedCount = 0;
    let dropError: string | undefined;
    const t0 = performance.now();
    const metricsEvery = (opts.metricsEverySec ?? 5) * 1000;
    let lastScrape = -Infinity;
    let lastLag: SoakSample['lag'] = { boundsMs: [], counts: [] };
    let lastGc: GcCounts = { major: 0, majorSeconds: 0, minor: 0, minorSeconds: 0 };
    const sample = async (forceScrape = true): Promise<void> => {
      const scrape = forceScrape || performance.now() - lastScrape >= metricsEvery - 100;
      if (scrape) lastScrape = performance.now();
      const [rssBytes, fds, metrics] = await Promise.all([rssOf(store.pid), fdsOf(store.pid), scrape ? scrapeMetrics(store.metricsUrl) : null]);
      if (metrics) {
        lastLag = lagOf(metrics);
        lastGc = gcOf(metrics);
      }
      const s = link.stats;
      samples.push({
        t: (performance.now() - t0) / 1000,
        phase,
        reads: s?.reads ?? 0,
        bytes: s?.bytes ?? 0,
        ops: s?.ops ?? 0,
        errors: s?.errors ?? 0,
        wrongBytes: s?.wrongBytes ?? 0,
        latency: s?.latency ?? [],
        maxReadMs: s?.maxLatencyMs ?? 0,
        rssBytes,
        fds,
        scraped: metrics !== null,
        delay: {
          p50: (metrics?.[`${DELAY}{quantile="0.5"}`] ?? NaN) * 1000,
          p99: (metrics?.[`${DELAY}{quantile="0.99"}`] ?? NaN) * 1000,
          max: (metrics?.[`${DELAY}{quantile="1"}`] ?? NaN) * 1000,
        },
        lag: lastLag,
        gc: lastGc,
        droppedCaches: dropped,
      });
      dropped = false;
    };
    await sample();
    samplerDone = (async () => {
      let next = performance.now() + 1000;
      while (sampling) {
        await sleep(Math.max(0, next - performance.now()));
        next += 1000;
        if (sampling) await sample(false).catch((err: Error) => log(`sample failed: ${err.message}`));
      }
    })();

    // Cold: a fresh store and page cache; every file read once, whole.
    await dropCaches().catch((err: Error) => { dropError = err.message; });
    phase = 'cold';
    const clock: SoakResult['clock'] = {};
    const coldStartUs = monotonicUs();
    link.send({ type: 'cold' });
    log(`cold: every file of ${image.layers.length} layers, ${opts.readers} readers …`);
    const coldDone = await link.wait('cold-done', opts.coldMaxSeconds * 1000);
    const coldCompleted = coldDone !== null;
    clock.cold = { startUs: coldStartUs, endUs: monotonicUs() };
    log(`cold phase on the monotonic clock: ${clock.cold.startUs}–${clock.cold.endUs} µs`);
    log(coldCompleted ? `cold pass done in ${((performance.now() - t0) / 1000).toFixed(1)} s` : `cold pass not done after ${opts.coldMaxSeconds} s; going on warm`);
    await sample();

    // Warm: random files and ranges; the page cache dropped every N s so reads reach the store.
    phase = 'warm';
    const warmStartUs = monotonicUs();
    link.send({ type: 'warm' });
    log(`warm: ${opts.warmSeconds} s of random reads${opts.dropCachesEverySec > 0 ? `, page cache dropped every ${opts.dropCachesEverySec} s` : ''} …`);
    const warmEnd = performance.now() + opts.warmSeconds * 1000;
    let nextDrop = performance.now();
    let nextLog = performance.now() + 60_000;
    while (performance.now() < warmEnd) {
      if (opts.dropCachesEverySec > 0 && performance.now() >= nextDrop && !dropError) {
        await dropCaches().then(() => { dropped = true; droppedCount++; }, (err: Error) => { dropError = err.message; log(`cannot drop caches: ${err.message}`); });
        nextDrop += opts.dropCachesEverySec * 1000;
      }
      if (performance.now() >= nextLog) {
        const last = samples.at(-1)!;
        log(`  ${last.t.toFixed(0)} s: ${last.ops} ops, ${last.errors} errors, ${last.wrongBytes} wrong bytes, RSS ${(last.rssBytes / MiB).toFixed(0)} MiB, ${last.fds} fds`);
        nextLog += 60_000;
      }
      await sleep(Math.min(250, Math.max(0, warmEnd - performance.now())));
      if (child.exitCode !== null) throw new Error(`the readers' process exited (${child.exitCode})`);
    }
    link.send({ type: 'stop' });
    const stopped = await link.wait('stopped', 120_000);
    if (!stopped) throw new Error('the readers did not stop within 120 s');
    clock.warm = { startUs: warmStartUs, endUs: monotonicUs() };
    await sample();
    sampling = false;
    await samplerDone;
    // The last sample carries the final counters.
    Object.assign(samples.at(-1)!, { reads: stopped.stats.reads, bytes: stopped.stats.bytes, ops: stopped.stats.ops, errors: stopped.stats.errors, wrongBytes: stopped.stats.wrongBytes, latency: stopped.stats.latency });

    const registryBytes: SoakResult['registryBytes'] = { cold: metric(await scrapeMetrics(store.metricsUrl), 'estargz_store_registry_bytes_total') };
    let restartPass: SoakResult['restartPass'];
    if (opts.restartPass) {
      const pass = await rereadAfterRestart(store, image, diffDirs, opts);
      restartPass = pass.pass;
      registryBytes.restart = pass.registryBytes;
    }

    const storeAliveAtEnd = store.proc.exitCode === null && (await mountAnswers(store.mnt));
    const storeExitCode = await store.stop();
    const warmUp = opts.warmUpSeconds ?? Math.max(10, opts.warmSeconds / 4);
    return {
      readers: opts.readers,
      layers: image.layers.map((l) => ({ digest: l.digest, files: l.files.length, fileBytes: l.fileBytes, esgzBytes: l.esgzBytes })),
      samples,
      phases: (['cold', 'warm'] as const).map((p) => summarizePhase(samples, p, warmUp)).filter((p): p is PhaseSummary => p !== null),
      coldCompleted,
      errorSamples: stopped.stats.samples,
      storeAliveAtEnd,
      storeExitCode,
      storePid: store.pid,
      storeStartSeconds: store.startSeconds,
      droppedCaches: droppedCount,
      ...(dropError && { dropCachesError: dropError }),
      clock,
      registryBytes,
      ...(restartPass && { restartPass }),
    };
  } finally {
    sampling = false;
    await samplerDone.catch(() => {});
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await store.stop();
  }
}

/**
 * The restart pass: `estargz-store restart` (the successor keeps the disk
 * cache and the remembered whole-layer verdicts), page cache dropped, then
 * every file read once more by a new readers' process, byte-checked as
 * before. The successor's registry bytes are its own counter (a new process
 * starts it at 0), scraped once its metrics listener took the address over
 * and a few seconds passed for a background fetch to find nothing to do.
 */
async function rereadAfterRestart(
  store: Awaited<ReturnType<typeof startBenchStore>>, image: SoakImage, diffDirs: string[], opts: SoakOptions,
): Promise<{ pass: NonNullable<SoakResult['restartPass']>; registryBytes: number }> {
  const res = await controlRequest(join(store.root, SOCKET_NAME), { op: 'restart' }, 120_000);
  if (!res.ok) throw new Error(`restart for the restart pass failed: ${(res as { error?: string }).error ?? 'no reason'}`);
  const newPid = (res as { pid?: number }).pid;
  opts.log(`restart pass: successor ${newPid} serving; every file read again …`);
  await dropCaches().catch(() => undefined); // without it the kernel answers from its page cache: still a valid (if easier) pass
  const child = fork(READERS_JS, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, UV_THREADPOOL_SIZE: String(Math.min(1024, opts.readers + 4)) } });
  try {
    const link = new ReaderLink(child);
    link.send({ type: 'init', readers: opts.readers, seed: (opts.seed ?? 42) + 1, layers: image.layers.map((l, i) => ({ diffDir: diffDirs[i]!, spec: { index: l.index, files: l.files, contentBytes: l.contentBytes } })) });
    if (!(await link.wait('ready', 120_000))) throw new Error('the restart pass readers did not get ready in 120 s');
    const started = performance.now();
    link.send({ type: 'cold' });
    const done = await link.wait('cold-done', opts.coldMaxSeconds * 1000);
    const seconds = (performance.now() - started) / 1000;
    link.send({ type: 'stop' });
    const stopped = await link.wait('stopped', 120_000);
    const stats = stopped?.stats ?? done?.stats ?? link.stats;
    await sleep(5000);
    // The successor binds the metrics address once the old process let go: a scrape may briefly fail.
    let bytes = NaN;
    for (let i = 0; i < 50 && !Number.isFinite(bytes); i++) {
      bytes = await scrapeMetrics(store.metricsUrl).then((m) => metric(m, 'estargz_store_registry_bytes_total'), () => NaN);
      if (!Number.isFinite(bytes)) await sleep(100);
    }
    return {
      pass: { seconds, completed: done !== null, ops: stats?.ops ?? 0, errors: stats?.errors ?? 0, wrongBytes: stats?.wrongBytes ?? 0, errorSamples: stopped?.stats.samples ?? [] },
      registryBytes: bytes,
    };
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}

/** A phase's figures from its samples (and the sample before it, for the cumulative counters). */
export function summarizePhase(samples: SoakSample[], phase: Exclude<Phase, 'setup'>, warmUpSeconds: number): PhaseSummary | null {
  const first = samples.findIndex((s) => s.phase === phase);
  if (first < 0) return null;
  // A phase's last sample is taken once it is over (still with its label); the one before its first is its start.
  const own = samples.filter((s) => s.phase === phase);
  const end = own.at(-1)!;
  const start = samples[Math.max(0, first - 1)]!;
  const window = [start, ...own];
  const seconds = end.t - start.t;
  const reads = end.reads - start.reads;
  const lagQ = (q: number): number => histQuantile(end.lag.boundsMs, end.lag.counts, start.lag.counts, q);
  let worst10 = 0;
  const scraped = window.filter((s) => s.scraped);
  for (let i = 0; i < scraped.length; i++) {
    const j = scraped.findIndex((s) => s.t >= scraped[i]!.t - 10.5);
    if (scraped[i]!.t - scraped[j]!.t < 9) continue;
    worst10 = Math.max(worst10, histQuantile(end.lag.boundsMs, scraped[i]!.lag.counts, scraped[j]!.lag.counts, 0.99) || 0);
  }
  const summary: PhaseSummary = {
    phase,
    seconds,
    reads,
    readsPerSec: reads / seconds,
    mbPerSec: (end.bytes - start.bytes) / 1e6 / seconds,
    ops: end.ops - start.ops,
    errors: end.errors - start.errors,
    wrongBytes: end.wrongBytes - start.wrongBytes,
    rss: { start: start.rssBytes, end: end.rssBytes, max: Math.max(...window.map((s) => s.rssBytes)) },
    fds: { start: start.fds, end: end.fds, max: Math.max(...window.map((s) => s.fds)) },
    delayMs: {
      p50: lagQ(0.5),
      p99: lagQ(0.99),
      max: Math.max(...scraped.slice(1).map((s) => s.delay.max).filter(Number.isFinite)),
      over20Share: shareOver(end.lag.boundsMs, end.lag.counts, start.lag.counts, TARGET_P99_MS),
      worst10sP99: worst10,
    },
    readLatencyMs: { p99: latencyQuantile(end.latency, start.latency, 0.99), max: Math.max(...window.slice(1).map((s) => s.maxReadMs)) },
    gc: {
      major: end.gc.major - start.gc.major, majorMs: (end.gc.majorSeconds - start.gc.majorSeconds) * 1000,
      minor: end.gc.minor - start.gc.minor, minorMs: (end.gc.minorSeconds - start.gc.minorSeconds) * 1000,
    },
  };
  if (phase === 'warm') {
    const post = own.filter((s) => s.t - own[0]!.t >= warmUpSeconds);
    if (post.length >= 6) {
      const third = Math.floor(post.length / 3);
      const a = post.slice(0, third);
      const b = post.slice(-third);
      const rssA = median(a.map((s) => s.rssBytes));
      const rssB = median(b.map((s) => s.rssBytes));
      const fdsA = median(a.map((s) => s.fds));
      const fdsB = median(b.map((s) => s.fds));
      summary.flat = {
        fromSecond: post[0]!.t - own[0]!.t, rssA, rssB, fdsA, fdsB,
        // Flat: within 10% (at least 32 MiB) of RSS, and 8 fds (reads in flight open cache files for a moment).
        rssOk: rssB - rssA <= Math.max(32 * MiB, 0.1 * rssA),
        fdsOk: fdsB - fdsA <= 8,
      };
    }
  }
  return summary;
}

// ---------------------------------------------------------------------------
// Report

const mb = (b: number): string => (b / MiB).toFixed(0);
const ms = (x: number): string => (Number.isFinite(x) ? x.toFixed(x < 10 ? 1 : 0) : '—');

export function verdicts(r: SoakResult): { name: string; ok: boolean; detail: string }[] {
  const out: { name: string; ok: boolean; detail: string }[] = [];
  const total = (k: 'errors' | 'wrongBytes'): number => r.phases.reduce((n, p) => n + p[k], 0) + (r.restartPass?.[k] ?? 0);
  out.push({ name: '0 errors, 0 wrong bytes', ok: total('errors') === 0 && total('wrongBytes') === 0, detail: `${total('errors')} errors, ${total('wrongBytes')} wrong bytes` });
  out.push({ name: 'store alive at the end', ok: r.storeAliveAtEnd, detail: r.storeAliveAtEnd ? 'mount answering' : 'store gone or mount not answering' });
  const warm = r.phases.find((p) => p.phase === 'warm');
  if (warm?.flat) {
    const f = warm.flat;
    out.push({
      name: 'RSS and fds flat after warm-up', ok: f.rssOk && f.fdsOk,
      detail: `from ${f.fromSecond.toFixed(0)} s into warm: RSS ${mb(f.rssA)} → ${mb(f.rssB)} MiB, fds ${f.fdsA} → ${f.fdsB} (medians of first and last third)`,
    });
  }
  for (const p of r.phases) {
    out.push({
      name: `${p.phase}: event-loop delay p99 ≤ ${TARGET_P99_MS} ms, max ≤ ${TARGET_MAX_MS} ms`,
      ok: p.delayMs.p99 <= TARGET_P99_MS && p.delayMs.max <= TARGET_MAX_MS,
      detail: `p99 ${ms(p.delayMs.p99)} ms, max ${ms(p.delayMs.max)} ms`,
    });
  }
  return out;
}

export function phasesTable(r: SoakResult): string {
  return markdownTable(
    ['phase', 's', 'reads/s', 'MB/s', 'files+ranges', 'errors', 'wrong bytes', 'RSS start → end (max) MiB', 'fds start → end (max)', 'delay p50 / p99 / max ms', 'ticks > 20 ms', 'worst 10 s p99 ms', 'pread p99 / max ms', 'full GCs (ms)', 'young GCs (ms)'],
    r.phases.map((p) => [
      p.phase, p.seconds.toFixed(p.seconds < 10 ? 1 : 0), p.readsPerSec.toFixed(0), p.mbPerSec.toFixed(1), String(p.ops), String(p.errors), String(p.wrongBytes),
      `${mb(p.rss.start)} → ${mb(p.rss.end)} (${mb(p.rss.max)})`, `${p.fds.start} → ${p.fds.end} (${p.fds.max})`,
      `${ms(p.delayMs.p50)} / ${ms(p.delayMs.p99)} / ${ms(p.delayMs.max)}`, `${(p.delayMs.over20Share * 100).toFixed(2)}%`, ms(p.delayMs.worst10sP99),
      `${ms(p.readLatencyMs.p99)} / ${ms(p.readLatencyMs.max)}`,
      `${p.gc.major} (${p.gc.majorMs.toFixed(0)})`, `${p.gc.minor} (${p.gc.minorMs.toFixed(0)})`,
    ]),
  );
}

/** About `rows` evenly spaced samples (and every one with an error or a delay over the target). */
export function seriesTable(r: SoakResult, rows = 24): string {
  const s = r.samples;
  const step = Math.max(1, Math.floor(s.length / rows));
  const picked = s.filter((x, i) => i % step === 0 || i === s.length - 1 || x.delay.max > TARGET_MAX_MS);
  const delayAt = (x: SoakSample): string => {
    const d = x.scraped ? x : s.slice(s.indexOf(x)).find((y) => y.scraped);
    return d ? `${ms(d.delay.p99)} / ${ms(d.delay.max)}` : '—';
  };
  return markdownTable(
    ['t s', 'phase', 'reads/s', 'MB/s', 'errors', 'RSS MiB', 'fds', 'delay p99 / max ms (its scrape window)'],
    picked.map((x) => {
      const i = s.indexOf(x);
      const prev = s[Math.max(0, i - 1)]!;
      const dt = x.t - prev.t || 1;
      return [x.t.toFixed(0), x.phase, ((x.reads - prev.reads) / dt).toFixed(0), ((x.bytes - prev.bytes) / 1e6 / dt).toFixed(1), String(x.errors), mb(x.rssBytes), String(x.fds), delayAt(x)];
    }),
  );
}
