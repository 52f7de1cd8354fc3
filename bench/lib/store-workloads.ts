/**
 * What the end-to-end benchmarks (e2e, wan, podman) share: a store daemon
 * launcher with a metrics endpoint and a fresh root per start, registry
 * traffic from Distribution's access log, /metrics scraping, the store's
 * peak RSS, timed shell commands, and the workloads themselves.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, type Registry } from '../../testkit/registry.js';
import { CLI } from './e2e-images.js';
import { SOCKET_NAME, controlRequest } from '../../src/daemon/control-protocol.js';

// ---------------------------------------------------------------------------
// The store daemon

export interface BenchStore {
  mnt: string;
  root: string;
  proc: ChildProcess;
  /** The store process serving the mount (the keeper's child). */
  pid: number;
  /** The `mount` process itself: the keeper, which holds the FUSE connection. */
  keeperPid: number;
  metricsUrl: string;
  /** Seconds from spawn to the mount answering. */
  startSeconds: number;
  logs(): string;
  layerDir(ref: string, digest: string): string;
  stop(): Promise<number | null>;
}

export interface StoreStartOptions {
  /** Config TOML (metrics_address is added). */
  config?: string;
  /** Extra environment for the store. */
  env?: NodeJS.ProcessEnv;
  /** node flags before the CLI (e.g. --cpu-prof, which Node 20 refuses in NODE_OPTIONS). */
  nodeArgs?: string[];
  /** ESTARGZ_LOG_LEVEL (default info: what a deployment runs with). */
  logLevel?: string;
  /** Keep the store's log in this file when it stops. */
  logFile?: string;
  /** Another build's CLI (e.g. the main checkout's dist/src/cli/main.js), for side-by-side runs. */
  cli?: string;
}

async function isMounted(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === path);
}

/**
 * Starts `estargz-store mount` on a new mountpoint with a new root (so a new
 * disk cache), waits until the mount is up, and returns its handle. Like the
 * test helper startStore, but with a metrics endpoint, the log level of a
 * deployment, and room for profiling flags.
 */
export async function startBenchStore(opts: StoreStartOptions = {}): Promise<BenchStore> {
  const base = await mkdtemp(join(tmpdir(), 'estargz-bench-store-'));
  const mnt = join(base, 'mnt');
  const root = join(base, 'root');
  await mkdir(mnt);
  const port = await freePort();
  const configPath = join(base, 'config.toml');
  await writeFile(configPath, `metrics_address = "127.0.0.1:${port}"\n${opts.config ?? ''}`);
  let out = '';
  const started = performance.now();
  const proc = spawn(process.execPath, [...(opts.nodeArgs ?? []), opts.cli ?? CLI, 'mount', '--config', configPath, '--root', root, mnt], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ESTARGZ_LOG_LEVEL: opts.logLevel ?? 'info', ...opts.env },
  });
  const keep = (d: Buffer): void => {
    out += d.toString();
    if (out.length > 8 << 20) out = out.slice(-(4 << 20));
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 20_000;
  while (!(await isMounted(mnt))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      await rm(base, { recursive: true, force: true }).catch(() => {});
      throw new Error(`store did not mount at ${mnt} (exit ${proc.exitCode}):\n${out.slice(-3000)}`);
    }
    await sleep(10);
  }
  const pid = await servingPid(root, proc.pid!, deadline + 15_000);
  // Until the store serves, not just until the keeper has mounted.
  const startSeconds = (performance.now() - started) / 1000;
  let stopping: Promise<number | null> | undefined;
  return {
    mnt,
    root,
    proc,
    pid,
    keeperPid: proc.pid!,
    metricsUrl: `http://127.0.0.1:${port}/metrics`,
    startSeconds,
    logs: () => out,
    layerDir: (ref, digest) => join(mnt, Buffer.from(ref).toString('base64'), digest),
    stop: () => (stopping ??= (async () => {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      const code = await Promise.race([exited, sleep(20_000).then(() => { proc.kill('SIGKILL'); return -1; })]);
      if (opts.logFile) await writeFile(opts.logFile, out).catch(() => {});
      await rm(base, { recursive: true, force: true }).catch(() => {});
      return code;
    })()),
  };
}

/**
 * Waits until the store serves (the keeper mounts first and answers the
 * control socket once its first store process is up, as systemd's READY
 * does) and returns that process's pid: `mount` runs the store in its one
 * child, whose memory, fds and event loop the benchmarks measure (the
 * keeper's are apart). Timing starts after this, as a deployment's does.
 */
async function servingPid(root: string, keeperPid: number, deadline: number): Promise<number> {
  for (;;) {
    const res = await controlRequest(join(root, SOCKET_NAME), { op: 'status' }, 2000).catch(() => undefined);
    const pid = res?.ok ? Number((res as { pid?: unknown }).pid) : NaN;
    if (pid > 0) return pid;
    if (Date.now() > deadline) throw new Error(`the store (keeper pid ${keeperPid}) mounted but did not serve`);
    await sleep(10);
  }
}

/** The store's peak resident set (VmHWM), bytes. */
export async function peakRss(pid: number): Promise<number> {
  const m = /VmHWM:\s+(\d+)\s+kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Resets VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`, Linux ≥ 4.0, needs the process's owner). */
export async function resetPeakRss(pid: number): Promise<boolean> {
  try {
    await writeFile(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// Metrics

/** Prometheus text → `name{labels}` → value (labels as written, sorted by the exporter). */
export type MetricsSnapshot = Record<string, number>;

export async function scrapeMetrics(url: string): Promise<MetricsSnapshot> {
  const res = await fetch(url);
  const text = await res.text();
  const out: MetricsSnapshot = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && m[1]!.startsWith('estargz_store_')) out[m[1]! + (m[2] ?? '')] = Number(m[3]);
  }
  return out;
}

/** Sum of a metric over its series whose labels contain every `filter` pair. */
export function metric(s: MetricsSnapshot, name: string, filter: Record<string, string> = {}): number {
  let total = 0;
  for (const [k, v] of Object.entries(s)) {
    const brace = k.indexOf('{');
    const n = brace < 0 ? k : k.slice(0, brace);
    if (n !== name) continue;
    const labels = brace < 0 ? '' : k.slice(brace);
    if (Object.entries(filter).every(([lk, lv]) => labels.includes(`${lk}="${lv}"`))) total += v;
  }
  return total;
}

/** The metrics the reports use, per operation / op. */
export function summarizeMetrics(s: MetricsSnapshot): Record<string, unknown> {
  const byLabel = (name: string, label: string): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(s)) {
      if (!k.startsWith(name + '{')) continue;
      const m = new RegExp(`${label}="([^"]*)"`).exec(k);
      if (m) out[m[1]!] = (out[m[1]!] ?? 0) + v;
    }
    return out;
  };
  return {
    registryBytes: byLabel('estargz_store_registry_bytes_total', 'operation'),
    registryRequests: byLabel('estargz_store_registry_requests_total', 'operation'),
    fetchSeconds: byLabel('estargz_store_fetch_duration_seconds_sum', 'operation'),
    fuseOps: byLabel('estargz_store_fuse_op_duration_seconds_count', 'op'),
    fuseSeconds: byLabel('estargz_store_fuse_op_duration_seconds_sum', 'op'),
    poolTasks: byLabel('estargz_store_pool_task_duration_seconds_count', 'priority'),
    poolSeconds: byLabel('estargz_store_pool_task_duration_seconds_sum', 'priority'),
    cache: byLabel('estargz_store_cache_requests_total', 'result'),
    bytesServed: byLabel('estargz_store_bytes_served_total', 'kind'),
    eventLoopDelay: byLabel('estargz_store_event_loop_delay_seconds', 'quantile'),
  };
}

// ---------------------------------------------------------------------------
// Registry traffic

export interface AgentTraffic {
  requests: number;
  /** Response bytes Distribution wrote (http.response.written). */
  bytes: number;
  blobGets: number;
  blobBytes: number;
}

export interface Traffic {
  /** By user agent class: the store (ours, or the Go reference store), podman (containers/…), curl, other. */
  store: AgentTraffic;
  podman: AgentTraffic;
  curl: AgentTraffic;
  other: AgentTraffic;
}

const empty = (): AgentTraffic => ({ requests: 0, bytes: 0, blobGets: 0, blobBytes: 0 });

/** Line count of the registry log now: pass it to trafficSince. */
export async function logMark(reg: Registry): Promise<number> {
  return (await reg.logLines()).length;
}

/**
 * Completed requests in the access log after `mark`, by agent. Distribution
 * logs a request when its response completes, so this waits until the log
 * has been quiet for 150 ms (at most 3 s).
 */
export async function trafficSince(reg: Registry, mark: number): Promise<Traffic> {
  let lines = await reg.logLines();
  const deadline = Date.now() + 3000;
  for (let quiet = 0; quiet < 3 && Date.now() < deadline;) {
    await sleep(50);
    const again = await reg.logLines();
    quiet = again.length === lines.length ? quiet + 1 : 0;
    lines = again;
  }
  const t: Traffic = { store: empty(), podman: empty(), curl: empty(), other: empty() };
  for (const line of lines.slice(mark)) {
    if (!line.includes('response completed')) continue;
    const agent = /http\.request\.useragent="([^"]*)"/.exec(line)?.[1] ?? /http\.request\.useragent=(\S+)/.exec(line)?.[1] ?? '';
    const bytes = Number(/http\.response\.written=(\d+)/.exec(line)?.[1] ?? 0);
    const uri = /http\.request\.uri="([^"]+)"/.exec(line)?.[1] ?? '';
    const isBlobGet = /http\.request\.method=GET/.test(line) && /\/blobs\/sha256:/.test(uri);
    // The Go reference store (bench/lib/goref.ts) counts as "the store": one store runs per session.
    const isStore = agent.startsWith('estargz-store') || agent.startsWith('gorefstore');
    const who = isStore ? t.store : agent.startsWith('containers/') ? t.podman : agent.startsWith('curl/') ? t.curl : t.other;
    who.requests++;
    who.bytes += bytes;
    if (isBlobGet) {
      who.blobGets++;
      who.blobBytes += bytes;
    }
  }
  return t;
}

// ---------------------------------------------------------------------------
// Timing

/** Runs a bash script (pipefail) and returns its wall time in seconds; throws with stderr on failure. */
export function timeBash(script: string, env?: NodeJS.ProcessEnv): Promise<{ seconds: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn('bash', ['-c', `set -o pipefail\n${script}`], { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = (performance.now() - started) / 1000;
      if (code === 0) resolve({ seconds, stdout: out });
      else reject(new Error(`bash -c ${JSON.stringify(script)} exited ${code}: ${err.trim().slice(-1500)}`));
    });
  });
}

export const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

// ---------------------------------------------------------------------------
// Workloads (each returns seconds and the bytes it read)

export interface WorkloadResult {
  seconds: number;
  /** File or blob bytes the workload read (for MB/s). */
  bytes: number;
  extra?: Record<string, unknown>;
}

/** W1: lookup of the layer's diff (resolves the layer: manifest, config, footer, TOC) and one small file. In-process, so no process start is timed. */
export async function w1ResolveAndRead(layerDir: string, small: string): Promise<WorkloadResult> {
  const started = performance.now();
  await stat(join(layerDir, 'diff'));
  const data = await readFile(join(layerDir, 'diff', small));
  return { seconds: (performance.now() - started) / 1000, bytes: data.length };
}

/** W2: one large file, cold (`dd bs=1M`): dd's own time (process start excluded); the wall time with it is in `extra`. */
export async function w2LargeFile(layerDir: string, path: string, size: number): Promise<WorkloadResult> {
  const started = performance.now();
  const seconds = await ddSeconds(join(layerDir, 'diff', path));
  return { seconds, bytes: size, extra: { wallSeconds: (performance.now() - started) / 1000 } };
}

/** W3 / W5: every regular file of the layer, one after the other, as `find -type f -exec cat {} +` (tar-like). */
export async function w3AllFiles(layerDir: string, fileBytes: number): Promise<WorkloadResult> {
  const r = await timeBash(`cd ${q(join(layerDir, 'diff'))} && find . -type f -exec cat {} + > /dev/null`);
  return { seconds: r.seconds, bytes: fileBytes };
}

/** W3p: every regular file with `concurrency` readers in parallel (node, 1 MiB reads), like a parallel unpacker or scanner. */
export async function w3Parallel(layerDir: string, files: readonly string[], fileBytes: number, concurrency: number): Promise<WorkloadResult> {
  const diff = join(layerDir, 'diff');
  const started = performance.now();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < files.length) {
      const f = files[next++]!;
      await readFile(join(diff, f));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { seconds: (performance.now() - started) / 1000, bytes: fileBytes };
}

/** W4: `sha256sum blob` (the export path), checked against the layer digest. */
export async function w4BlobSha(layerDir: string, digest: string, size: number): Promise<WorkloadResult> {
  const r = await timeBash(`sha256sum ${q(join(layerDir, 'blob'))}`);
  const got = 'sha256:' + r.stdout.split(' ')[0];
  if (got !== digest) throw new Error(`sha256sum of the blob file is ${got}, the layer digest is ${digest}`);
  return { seconds: r.seconds, bytes: size };
}

/** W6: metadata walk `find diff -printf '%p %s %m\n'`; returns the entry count too. */
export async function w6MetadataWalk(layerDir: string): Promise<WorkloadResult> {
  const r = await timeBash(`find ${q(join(layerDir, 'diff'))} -printf '%p %s %m\\n' | wc -l`);
  return { seconds: r.seconds, bytes: 0, extra: { entries: Number(r.stdout.trim()) - 1 } };
}

/**
 * Warm sequential read through FUSE: drop the file's page cache (fadvise
 * DONTNEED), then `dd bs=1M`; the time is dd's own (its "copied, X s"), so
 * process start does not count against the throughput.
 */
export async function warmDd(path: string, size: number): Promise<WorkloadResult> {
  await timeBash(`dd if=${q(path)} iflag=nocache count=0 status=none`);
  return { seconds: await ddSeconds(path), bytes: size };
}

/** `dd if=PATH of=/dev/null bs=1M`, returning the seconds dd itself reports. */
export async function ddSeconds(path: string): Promise<number> {
  const r = await timeBash(`dd if=${q(path)} of=/dev/null bs=1M 2>&1`);
  const m = /copied, ([\d.e+-]+) s/.exec(r.stdout);
  if (!m) throw new Error(`cannot read dd's report: ${r.stdout.trim()}`);
  return Number(m[1]);
}

/** Warm stat: `passes` sequential fs.promises.stat calls over `files` under `dir`; seconds per call. */
export async function statLoop(dir: string, files: readonly string[], passes: number): Promise<{ perCallUs: number; calls: number }> {
  const paths = files.map((f) => join(dir, f));
  for (const p of paths.slice(0, 50)) await stat(p); // warm up the JIT and the dentries of the first ones
  const started = performance.now();
  let calls = 0;
  for (let i = 0; i < passes; i++) {
    for (const p of paths) {
      await stat(p);
      calls++;
    }
  }
  return { perCallUs: ((performance.now() - started) * 1000) / calls, calls };
}

/** Full-pull reference: `curl -s blob | gunzip | tar -x` into a new directory, removed afterwards (untimed). */
export async function fullPull(blobUrl: string, workDir: string): Promise<WorkloadResult> {
  const dir = await mkdtemp(join(workDir, 'pull-'));
  try {
    const r = await timeBash(`curl -sf ${q(blobUrl)} | gunzip | tar -x -C ${q(dir)}`);
    return { seconds: r.seconds, bytes: 0 };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Files (recursively) under dir, for sanity checks. */
export async function countFiles(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) n++;
  return n;
}
