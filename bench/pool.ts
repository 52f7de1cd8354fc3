/**
 * Decode-pool benchmark: inflate + sha256-verify throughput of eStargz chunks
 * on the main thread (decodeChunk in a loop, node:zlib and pako) against
 * DecodePool with 1, 2, 3 worker threads and either decoder, at chunk sizes
 * from 4 KiB to 4 MiB, with the main thread's event-loop delay while the pool
 * works. A "ceiling" configuration (bare worker threads running decodeChunk
 * on a static half of the tasks each, no per-task messages) shows what the
 * machine's cores give at that moment, so a shortfall can be put on the pool
 * or on the machine. Every sample records the CPU other processes used
 * meanwhile (/proc/stat) and CPU pressure (/proc/pressure/cpu). Prints
 * markdown tables and writes raw samples to bench/results/pool-<timestamp>.json.
 *
 *   node dist/bench/pool.js [--runs N] [--total-mib N] [--chunk-sizes LIST] [--threads LIST] ...
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setImmediate as yieldLoop, setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { collectPack, listFiles } from './lib/files.js';
import tar from 'tar-stream';
import { DEFAULT_TUNING } from '../src/engine/chunk-loader.js';
import { DecodePool, type DecodeItem } from '../src/engine/decode-pool.js';
import { decodeChunk, type Decoder } from '../src/estargz/chunk.js';
import { openEstargz } from '../src/estargz/open.js';
import { BufferSource } from '../src/estargz/source.js';
import { decodeZstdChunk } from '../src/zstdchunked/chunk.js';
import type { CodedChunkRef } from '../workers/decode-types.js';
import { benchCacheDir, convertTarToFile } from './lib/layer-input.js';
import { describeMachine, loadNow, machineInfo, writeResult, writeTables } from './lib/machine.js';
import { MiB, formatSummary, summarize } from './lib/stats.js';
import { markdownTable } from './lib/table.js';
import { testTelemetry } from '../testkit/telemetry.js';

const USAGE = `usage: node dist/bench/pool.js [options]
  --runs N             timed runs of every configuration (default 5)
  --warmup N           untimed passes over every configuration first (default 1)
  --total-mib N        uncompressed MiB decoded per configuration and run (default 64)
  --chunk-sizes LIST   comma-separated chunk sizes in bytes (default 4096,16384,65536,1048576,4194304)
  --threads LIST       pool sizes (default 1,2,3)
  --decoders LIST      zlib,pako,zstd (default all; zstd: the same chunks as zstd:chunked frames, libzstd)
  --task-bytes N       compressed bytes per batched task (default the engine's, ${DEFAULT_TUNING.taskBytes})
  --window N           tasks submitted and not yet finished (default 8)
  --unbatched-max N    also run one-task-per-chunk at chunk sizes up to N (default 16384; 0 = never)
  --max-other CORES    redo a sample (up to 3 times) when other processes used more CPU than this meanwhile (default 0.3; 0 = never)
  --quiet-wait S       before each pass and redo, wait up to S seconds for the machine to be quiet (default 60)
  --no-write           print only: leave bench/results/pool.md alone`;

/** What the bare "ceiling" workers get once, at start. */
interface BareWorkerData {
  kind: 'bare-decoder';
  inputs: { blob: SharedArrayBuffer; tasks: { start: number; end: number; items: DecodeItem[] }[] }[];
}
/** One job for a bare worker: decode tasks part, part + of, part + 2·of, … of input `input`. */
interface BareJob {
  input: number;
  part: number;
  of: number;
  decoder: Decoder;
}

/**
 * Bare worker: decodeChunk over its share of the tasks with the blob already
 * in (shared) memory. No copies, no per-task messages: the most two threads
 * can do with this decoder on this machine.
 */
function bareWorker(data: BareWorkerData): void {
  parentPort!.on('message', (job: BareJob) => {
    const input = data.inputs[job.input]!;
    const blob = new Uint8Array(input.blob);
    let bytes = 0;
    for (let i = job.part; i < input.tasks.length; i += job.of) {
      const t = input.tasks[i]!;
      for (const item of t.items) {
        const member = blob.subarray(t.start + item.offset, t.start + item.offset + item.length);
        for (const ref of item.refs) bytes += decodeChunk(member, ref, job.decoder).length;
      }
    }
    parentPort!.postMessage(bytes);
  });
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      runs: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '1' },
      'total-mib': { type: 'string', default: '64' },
      'chunk-sizes': { type: 'string', default: [4 << 10, 16 << 10, 64 << 10, 1 << 20, 4 << 20].join(',') },
      threads: { type: 'string', default: '1,2,3' },
      decoders: { type: 'string', default: 'zlib,pako,zstd' },
      'task-bytes': { type: 'string', default: String(DEFAULT_TUNING.taskBytes) },
      window: { type: 'string', default: '8' },
      'unbatched-max': { type: 'string', default: String(16 << 10) },
      'max-other': { type: 'string', default: '0.3' },
      'quiet-wait': { type: 'string', default: '60' },
      'no-write': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (args.help) {
    console.log(USAGE);
    return;
  }
  const list = (s: string): number[] => s.split(',').filter((x) => x.length > 0).map(Number);
  const settings = {
    runs: Number(args.runs),
    warmup: Number(args.warmup),
    totalBytes: Number(args['total-mib']) * MiB,
    chunkSizes: list(args['chunk-sizes']),
    threadCounts: list(args.threads),
    decoders: args.decoders.split(',') as BenchDecoder[],
    taskBytes: Number(args['task-bytes']),
    windowSize: Number(args.window),
    unbatchedMax: Number(args['unbatched-max']),
    maxOther: Number(args['max-other']),
    quietWaitS: Number(args['quiet-wait']),
    cores: availableParallelism(),
    eldResolutionMs: ELD_RESOLUTION_MS,
  };
  const s = settings;
  if (
    ![s.runs, s.warmup, s.totalBytes, s.taskBytes, s.windowSize, s.unbatchedMax].every(Number.isSafeInteger) || s.runs < 1 || s.warmup < 0 ||
    s.totalBytes < MiB || s.taskBytes < 1 || s.windowSize < 1 || !s.chunkSizes.every((c) => Number.isSafeInteger(c) && c > 0) ||
    !s.threadCounts.every((t) => Number.isSafeInteger(t) && t > 0) || !s.decoders.every((d) => d === 'zlib' || d === 'pako' || d === 'zstd') ||
    !s.decoders.includes('zlib') || !(s.maxOther >= 0) || !(s.quietWaitS >= 0)
  ) {
    console.error(USAGE);
    process.exitCode = 2;
    return;
  }
  await runBenchmark(settings, !args['no-write']);
}

type Settings = {
  runs: number;
  warmup: number;
  totalBytes: number;
  chunkSizes: number[];
  threadCounts: number[];
  decoders: BenchDecoder[];
  taskBytes: number;
  windowSize: number;
  unbatchedMax: number;
  maxOther: number;
  quietWaitS: number;
  cores: number;
  eldResolutionMs: number;
};

/** monitorEventLoopDelay's timer period; its samples are the period plus the delay, so this is subtracted. */
const ELD_RESOLUTION_MS = 1;
const DATA_NAME = 'usr/share/estargz-bench/usr-binaries.bin';

function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

// ---------------------------------------------------------------- machine load

/** Busy and total jiffies of all CPUs (/proc/stat), and CPU-pressure stall µs (/proc/pressure/cpu "some"). */
function systemCounters(): { busy: number; total: number; psiSomeUs: number | null } {
  let busy = 0;
  let total = 0;
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
    busy = user + nice + system + irq + softirq + steal;
    total = busy + idle + iowait;
  } catch {
    // not Linux: no load figures
  }
  let psiSomeUs: number | null = null;
  try {
    const m = /^some .*total=(\d+)/m.exec(readFileSync('/proc/pressure/cpu', 'utf8'));
    if (m) psiSomeUs = Number(m[1]);
  } catch {
    // no PSI
  }
  return { busy, total, psiSomeUs };
}

/** Sum over this process's threads of time on a CPU and time runnable but waiting for one (/proc/self/task/N/schedstat), ns. */
function ownSchedstat(): { runNs: number; waitNs: number } | null {
  let runNs = 0;
  let waitNs = 0;
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return null;
  }
  for (const tid of tids) {
    try {
      const [run = 0, wait = 0] = readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ').map(Number);
      runNs += run;
      waitNs += wait;
    } catch {
      // the thread ended meanwhile
    }
  }
  return { runNs, waitNs };
}

/** Over an interval: CPU used by other processes (cores), CPU pressure, and how long our threads were runnable without a CPU. */
export interface Contention {
  otherCores: number | null;
  psiSomePct: number | null;
  /** Run-queue wait of all our threads, summed, per second of wall time (ms/s): > 0 means our threads wanted more CPU than they got. */
  ownRunqWaitMsPerS: number | null;
}

/** Starts measuring; the returned function ends the interval. Our own CPU (all threads) is taken out of the machine's busy time. */
function contentionProbe(cores: number): () => Contention {
  const sys0 = systemCounters();
  const sched0 = ownSchedstat();
  const own0 = process.cpuUsage();
  const t0 = performance.now();
  return () => {
    const sys1 = systemCounters();
    const sched1 = ownSchedstat();
    const own = process.cpuUsage(own0);
    const wallS = (performance.now() - t0) / 1000;
    const dt = sys1.total - sys0.total;
    const otherCores = dt > 0 ? Math.max(0, ((sys1.busy - sys0.busy) / dt) * cores - (own.user + own.system) / 1e6 / wallS) : null;
    const psiSomePct = sys0.psiSomeUs !== null && sys1.psiSomeUs !== null ? ((sys1.psiSomeUs - sys0.psiSomeUs) / 1e4) / wallS : null;
    // Threads that ended during the interval take their counts with them: clamp at 0.
    const ownRunqWaitMsPerS = sched0 && sched1 ? Math.max(0, (sched1.waitNs - sched0.waitNs) / 1e6 / wallS) : null;
    return { otherCores, psiSomePct, ownRunqWaitMsPerS };
  };
}

/** Waits (up to `maxS`) until other processes used less than `maxOther` cores over a whole second; returns the seconds waited. */
async function waitQuiet(cores: number, maxOther: number, maxS: number): Promise<number> {
  const started = performance.now();
  for (;;) {
    const stop = contentionProbe(cores);
    await sleep(1000);
    const c = stop();
    const waited = (performance.now() - started) / 1000;
    if (c.otherCores === null || c.otherCores < maxOther || waited >= maxS) return waited;
    log(`  machine busy (other processes: ${c.otherCores.toFixed(2)} cores); waiting`);
  }
}

// ---------------------------------------------------------------- input


/**
 * `total` bytes of this machine's executables and shared libraries: half from
 * /usr/bin, half from /usr/lib/x86_64-linux-gnu (or /usr/lib), files
 * concatenated in name order. Machine code, symbol and string tables compress
 * like real image layers (~45% at level 9), unlike random or text data.
 */
async function usrData(total: number): Promise<{ listingKey: string; files: number; read: () => Promise<Buffer> }> {
  const files: { path: string; size: number; mtimeMs: number }[] = [];
  const libDir = existsSync('/usr/lib/x86_64-linux-gnu') ? '/usr/lib/x86_64-linux-gnu' : '/usr/lib';
  const fromBin = await listFiles('/usr/bin', total / 2);
  const got = fromBin.reduce((n, f) => n + f.size, 0);
  const fromLib = await listFiles(libDir, total - got);
  const got2 = fromLib.reduce((n, f) => n + f.size, 0);
  files.push(...fromBin, ...fromLib);
  if (got + got2 < total) throw new Error(`/usr/bin and ${libDir} hold only ${got + got2} bytes of regular files, ${total} needed`);
  const listingKey = createHash('sha256').update(files.map((f) => `${f.path} ${f.size} ${f.mtimeMs}`).join('\n')).digest('hex').slice(0, 16);
  const read = async (): Promise<Buffer> => {
    const out = Buffer.allocUnsafe(total);
    let pos = 0;
    for (const f of files) {
      if (pos >= total) break;
      const bytes = await readFile(f.path).catch(() => Buffer.alloc(0));
      pos += bytes.copy(out, pos, 0, Math.min(bytes.length, total - pos));
    }
    if (pos < total) out.fill(0, pos); // a file vanished since listing: zeros keep the size
    return out;
  };
  return { listingKey, files: files.length, read };
}

/** A one-file layer tar (tar-stream, like bench/open.ts). */
async function oneFileTar(data: Buffer): Promise<Buffer> {
  const pack = tar.pack();
  const output = collectPack(pack);
  await new Promise<void>((resolve, reject) =>
    pack.entry({ name: DATA_NAME, type: 'file', mode: 0o755, mtime: new Date(1_700_000_000_000), uid: 0, gid: 0 }, data, (err) => (err ? reject(err) : resolve())));
  pack.finalize();
  return output.done();
}

/** The gzip decoders, and zstd: the same chunks as zstd:chunked has them, a zstd frame each, decoded by libzstd. */
type BenchDecoder = Decoder | 'zstd';

/** One chunk size's input: the converted blob in memory and the chunks of its one file. */
interface ChunkInput {
  chunkSize: number;
  blob: Buffer;
  chunks: { blobOffset: number; blobEnd: number; ref: CodedChunkRef }[];
  compressedBytes: number;
  uncompressedBytes: number;
  cached: boolean;
}

/**
 * Converts the data with convertLayer at `chunkSize` (gzip level 9, one gzip
 * member per chunk, the first one starting with the file's tar header, the
 * last one ending with its padding: exactly what the engine decodes), cached
 * in $TMPDIR/estargz-bench/ keyed by the file listing.
 */
async function chunkInput(chunkSize: number, total: number, key: string, data: () => Promise<Buffer>): Promise<ChunkInput> {
  const dir = benchCacheDir();
  await mkdir(dir, { recursive: true });
  const path = join(dir, `pool-${key}-${total}-${chunkSize}.esgz`);
  const cached = existsSync(path);
  if (!cached) {
    // Blobs of an older listing: tens of MB each.
    for (const f of await readdir(dir)) if (f.startsWith('pool-') && f.endsWith(`-${total}-${chunkSize}.esgz`)) await rm(join(dir, f), { force: true });
    const partial = `${path}.partial-${process.pid}`;
    try {
      await convertTarToFile(await oneFileTar(await data()), partial, { chunkSize, tmpDir: dir });
      await rename(partial, path);
    } finally {
      await rm(partial, { force: true });
    }
  }
  // In shared memory, so the bare ceiling workers read the same bytes without a copy.
  const file = await readFile(path);
  const blob = Buffer.from(new SharedArrayBuffer(file.length));
  file.copy(blob);
  const es = await openEstargz(new BufferSource(blob));
  const node = es.index.byPath.get(DATA_NAME);
  if (!node || node.type !== 'reg' || node.size !== total) throw new Error(`${path}: no ${DATA_NAME} of ${total} bytes`);
  const chunks = node.chunks.map((c) => ({
    blobOffset: c.blobOffset,
    blobEnd: c.blobEnd,
    ref: { path: DATA_NAME, fileOffset: c.fileOffset, innerOffset: c.innerOffset, size: c.size, digest: c.digest, blobOffset: c.blobOffset },
  }));
  const compressedBytes = chunks.reduce((n, c) => n + c.blobEnd - c.blobOffset, 0);
  return { chunkSize, blob, chunks, compressedBytes, uncompressedBytes: node.size, cached };
}

/**
 * The same chunks as `gz`, each compressed as a zstd frame of its own (zstd
 * -3, podman's default level), back to back: what zstd:chunked holds for a
 * large file. Made with the zstd command (one file per chunk, one process),
 * cached next to the eStargz blob.
 */
async function zstdChunkInput(gz: ChunkInput, total: number, key: string): Promise<ChunkInput> {
  const dir = benchCacheDir();
  const path = join(dir, `pool-${key}-${total}-${gz.chunkSize}.zstd-frames`);
  const cached = existsSync(path) && existsSync(`${path}.json`);
  if (!cached) {
    const work = await mkdtemp(join(dir, 'zstd-frames-'));
    try {
      const names = gz.chunks.map((_, i) => join(work, String(i).padStart(8, '0')));
      for (const [i, c] of gz.chunks.entries()) await writeFile(names[i]!, decodeChunk(gz.blob.subarray(c.blobOffset, c.blobEnd), c.ref));
      execFileSync('zstd', ['-q', '-3', '--rm', '-r', work]);
      const frames = await Promise.all(names.map((n) => readFile(`${n}.zst`)));
      await writeFile(`${path}.json`, JSON.stringify(frames.map((f) => f.length)));
      await writeFile(path, Buffer.concat(frames));
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }
  const file = await readFile(path);
  const lengths = JSON.parse(await readFile(`${path}.json`, 'utf8')) as number[];
  const blob = Buffer.from(new SharedArrayBuffer(file.length));
  file.copy(blob);
  let at = 0;
  const chunks = gz.chunks.map((c, i) => {
    const blobOffset = at;
    at += lengths[i]!;
    return { blobOffset, blobEnd: at, ref: { ...c.ref, innerOffset: 0, blobOffset, codec: 'zstd' as const } };
  });
  return { chunkSize: gz.chunkSize, blob, chunks, compressedBytes: file.length, uncompressedBytes: gz.uncompressedBytes, cached };
}

// ---------------------------------------------------------------- tasks

/** A decode task as the engine builds one: contiguous members of up to `taskBytes` compressed bytes. */
interface Task {
  start: number;
  end: number;
  items: DecodeItem[];
}

/** Groups members the way ChunkLoader.decodeSpan does: a member joins the task while the task stays within `limit` bytes. */
function makeTasks(input: ChunkInput, limit: number): Task[] {
  const tasks: Task[] = [];
  for (const c of input.chunks) {
    const last = tasks.at(-1);
    if (last && c.blobEnd - last.start <= limit) {
      last.items.push({ offset: c.blobOffset - last.start, length: c.blobEnd - c.blobOffset, refs: [c.ref] });
      last.end = c.blobEnd;
    } else {
      tasks.push({ start: c.blobOffset, end: c.blobEnd, items: [{ offset: 0, length: c.blobEnd - c.blobOffset, refs: [c.ref] }] });
    }
  }
  return tasks;
}

// ---------------------------------------------------------------- configurations

interface Config {
  name: string;
  kind: 'inline' | 'pool' | 'ceiling';
  decoder: BenchDecoder;
  threads: number;
  batched: boolean;
}

interface Sample extends Contention {
  wallMs: number;
  /** Process CPU time (main thread + workers), ms. */
  cpuMs: number;
  /** Event-loop delay on the main thread, ms (timer period subtracted). */
  eldP50: number;
  eldP99: number;
  eldMax: number;
  eldCount: number;
  /** Earlier tries of this sample thrown away because other processes used the CPU meanwhile. */
  redone: number;
}

/** The baseline: decodeChunk in a loop on this thread, no copies, yielding to the event loop between tasks (as between reads). */
async function runInline(input: ChunkInput, tasks: Task[], decoder: BenchDecoder): Promise<number> {
  let bytes = 0;
  for (const t of tasks) {
    for (const item of t.items) {
      const member = input.blob.subarray(t.start + item.offset, t.start + item.offset + item.length);
      for (const ref of item.refs) bytes += (decoder === 'zstd' ? decodeZstdChunk(member, ref) : decodeChunk(member, ref, decoder)).length;
    }
    await yieldLoop();
  }
  return bytes;
}

/**
 * Feeds the pool like the engine does: each task's members copied into an
 * ArrayBuffer of its own (transferred to the worker, as ChunkLoader's
 * ownArrayBuffer), outputs wrapped as Buffers. `window` tasks are submitted
 * at any time, more than the pool hands to piscina (2 per thread), so the
 * workers never wait for the main thread to submit.
 */
async function runPool(pool: DecodePool, input: ChunkInput, tasks: Task[], window: number): Promise<number> {
  let bytes = 0;
  let next = 0;
  let failure: Error | undefined;
  const lane = async (): Promise<void> => {
    while (next < tasks.length && !failure) {
      const t = tasks[next++]!;
      const copy = new ArrayBuffer(t.end - t.start);
      new Uint8Array(copy).set(input.blob.subarray(t.start, t.end));
      const outputs = await pool.run(copy, t.items, 'foreground');
      for (const out of outputs) {
        if (!Buffer.isBuffer(out)) {
          failure = new Error(`decode failed: ${out.code}: ${out.message}`);
          return;
        }
        bytes += out.length;
      }
    }
  };
  await Promise.all(Array.from({ length: window }, lane));
  if (failure) throw failure;
  return bytes;
}

/** The ceiling: every bare worker decodes its static share of the tasks; one message each way per worker. */
async function runCeiling(workers: Worker[], input: number, decoder: Decoder): Promise<number> {
  const counts = await Promise.all(workers.map((w, part) => new Promise<number>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
    w.postMessage({ input, part, of: workers.length, decoder } satisfies BareJob);
  })));
  for (const w of workers) w.removeAllListeners('error');
  return counts.reduce((a, b) => a + b, 0);
}

async function measure(cores: number, run: () => Promise<number>, expected: number): Promise<Omit<Sample, 'redone'>> {
  const eld = monitorEventLoopDelay({ resolution: ELD_RESOLUTION_MS });
  const probe = contentionProbe(cores);
  const cpu0 = process.cpuUsage();
  eld.enable();
  const t0 = performance.now();
  const bytes = await run();
  const wallMs = performance.now() - t0;
  eld.disable();
  const cpu = process.cpuUsage(cpu0);
  const contention = probe();
  if (bytes !== expected) throw new Error(`decoded ${bytes} bytes, expected ${expected}`);
  const ms = (ns: number): number => Math.max(0, ns / 1e6 - ELD_RESOLUTION_MS);
  const count = eld.count;
  return {
    wallMs,
    cpuMs: (cpu.user + cpu.system) / 1000,
    eldP50: count ? ms(eld.percentile(50)) : 0,
    eldP99: count ? ms(eld.percentile(99)) : 0,
    eldMax: count ? ms(eld.max) : 0,
    eldCount: count,
    ...contention,
  };
}

// ---------------------------------------------------------------- main

const fmtSize = (b: number): string => (b >= MiB ? `${b / MiB} MiB` : `${b / 1024} KiB`);

async function runBenchmark(s: Settings, writeMarkdown: boolean): Promise<void> {
  const machine = machineInfo();
  log(`machine: ${describeMachine(machine)}`);
  const source = await usrData(s.totalBytes);
  let data: Promise<Buffer> | undefined;
  const inputs: ChunkInput[] = [];
  for (const cs of s.chunkSizes) {
    const started = performance.now();
    const input = await chunkInput(cs, s.totalBytes, source.listingKey, () => (data ??= source.read()));
    log(`input ${fmtSize(cs)}: ${input.chunks.length} chunks, ${(input.compressedBytes / MiB).toFixed(1)} MiB compressed` +
      `${input.cached ? ' (cached)' : ` (converted in ${((performance.now() - started) / 1000).toFixed(1)} s)`}`);
    inputs.push(input);
  }
  data = undefined;
  const zstdInputs = new Map<ChunkInput, ChunkInput>();
  if (s.decoders.includes('zstd')) {
    for (const input of inputs) {
      const started = performance.now();
      const z = await zstdChunkInput(input, s.totalBytes, source.listingKey);
      log(`input ${fmtSize(input.chunkSize)} zstd: ${(z.compressedBytes / MiB).toFixed(1)} MiB compressed` +
        `${z.cached ? ' (cached)' : ` (made in ${((performance.now() - started) / 1000).toFixed(1)} s)`}`);
      zstdInputs.set(input, z);
    }
  }

  const plans = inputs.map((input) => {
    const batched = makeTasks(input, s.taskBytes);
    const single = makeTasks(input, 0);
    const configs: Config[] = [];
    const add = (c: Config): void => void configs.push(c);
    for (const d of s.decoders) add({ name: `inline ${d}`, kind: 'inline', decoder: d, threads: 0, batched: true });
    for (const t of s.threadCounts) {
      for (const d of s.decoders) add({ name: `pool ${t}t ${d}`, kind: 'pool', decoder: d, threads: t, batched: true });
    }
    if (input.chunkSize <= s.unbatchedMax) {
      for (const t of s.threadCounts.filter((x) => x <= s.cores)) {
        add({ name: `pool ${t}t zlib, 1 chunk/task`, kind: 'pool', decoder: 'zlib', threads: t, batched: false });
      }
    }
    add({ name: `ceiling: ${s.cores} bare threads zlib`, kind: 'ceiling', decoder: 'zlib', threads: s.cores, batched: true });
    const zInput = zstdInputs.get(input);
    const zstd = zInput ? { input: zInput, batched: makeTasks(zInput, s.taskBytes), single: makeTasks(zInput, 0) } : undefined;
    return { input, configs, batched, single, zstd };
  });

  // Bare workers for the ceiling: this file in worker mode, the blobs shared (not copied), the batched tasks cloned once.
  const shared: BareWorkerData = {
    kind: 'bare-decoder',
    inputs: plans.map((p) => ({ blob: p.input.blob.buffer as SharedArrayBuffer, tasks: p.batched })),
  };
  const bare = Array.from({ length: s.cores }, () => new Worker(new URL(import.meta.url), { workerData: shared }));

  const pools = new Map<string, DecodePool>();
  const poolFor = (threads: number, decoder: BenchDecoder): DecodePool => {
    const k = `${threads}/${decoder}`;
    let p = pools.get(k);
    // zstd chunks carry their codec in their refs; the pool's gzip decoder does not matter for them.
    if (!p) pools.set(k, (p = new DecodePool(testTelemetry(), { threads, decoder: decoder === 'zstd' ? 'zlib' : decoder })));
    return p;
  };
  const samples = new Map<string, Sample[]>();
  const key = (cs: number, c: Config): string => `${cs}|${c.name}`;
  let waitedS = 0;

  const runOnce = (plan: (typeof plans)[number], c: Config): Promise<Omit<Sample, 'redone'>> => {
    // zstd configurations decode the zstd frames of the same chunks.
    const which = c.decoder === 'zstd' ? plan.zstd! : plan;
    const tasks = c.batched ? which.batched : which.single;
    const expected = which.input.uncompressedBytes;
    if (c.kind === 'inline') return measure(s.cores, () => runInline(which.input, tasks, c.decoder), expected);
    if (c.kind === 'ceiling') return measure(s.cores, () => runCeiling(bare, plans.indexOf(plan), c.decoder as Decoder), expected);
    return measure(s.cores, () => runPool(poolFor(c.threads, c.decoder), which.input, tasks, s.windowSize), expected);
  };
  /** One sample; redone (after waiting for quiet) when other processes took more than maxOther cores during it. */
  const sample = async (plan: (typeof plans)[number], c: Config): Promise<Sample> => {
    for (let redone = 0; ; redone++) {
      const r = await runOnce(plan, c);
      if (s.maxOther <= 0 || r.otherCores === null || r.otherCores <= s.maxOther || redone >= 3) return { ...r, redone };
      log(`  ${fmtSize(plan.input.chunkSize)} ${c.name}: other processes used ${r.otherCores.toFixed(2)} cores; redoing`);
      waitedS += await waitQuiet(s.cores, s.maxOther, s.quietWaitS);
    }
  };

  const started = performance.now();
  try {
    for (let pass = -s.warmup; pass < s.runs; pass++) {
      if (s.maxOther > 0 && pass >= 0) waitedS += await waitQuiet(s.cores, s.maxOther, s.quietWaitS);
      log(pass < 0 ? `warm-up pass ${pass + s.warmup + 1}/${s.warmup}` : `run ${pass + 1}/${s.runs} (load ${loadNow().join(' ')})`);
      for (const plan of plans) {
        // Alternate the order so drift and GC debt fall on every configuration alike.
        const order = pass % 2 === 0 ? plan.configs : [...plan.configs].reverse();
        for (const c of order) {
          if (pass < 0) {
            await runOnce(plan, c);
            continue;
          }
          const k = key(plan.input.chunkSize, c);
          samples.set(k, [...(samples.get(k) ?? []), await sample(plan, c)]);
        }
      }
    }
  } finally {
    for (const p of pools.values()) await p.close();
    await Promise.all(bare.map((w) => w.terminate()));
  }
  const elapsedS = (performance.now() - started) / 1000;

  // ------------------------------------------------------------ report
  const lines: string[] = [];
  lines.push(`## Decode + verify throughput: DecodePool vs the main thread (${s.runs} runs, interleaved, ${s.warmup} warm-up pass)`, '');
  lines.push(`Machine: ${describeMachine(machine)}`, '');
  lines.push(`Input: ${s.totalBytes / MiB} MiB of this machine's executables and shared libraries (${source.files} files from /usr/bin and /usr/lib, ` +
    'concatenated) as one file of a layer converted with convertLayer (gzip level 9, one member per chunk). Every configuration decodes and ' +
    `sha256-verifies all of it in every run. Batched tasks hold up to ${s.taskBytes} compressed bytes of members (ChunkLoader's taskBytes); ` +
    `${s.windowSize} tasks are submitted at a time. MB/s are of uncompressed bytes (10^6 B/s).` +
    (s.decoders.includes('zstd') ? ' *zstd* rows decode the same chunks as zstd:chunked holds them, each a zstd frame of its own (zstd -3), ' +
      'with libzstd through native/zstd_decode.c (compressed: ' +
      plans.map((p) => `${fmtSize(p.input.chunkSize)} ${((p.zstd!.input.compressedBytes / p.input.uncompressedBytes) * 100).toFixed(1)}%`).join(', ') + ').' : ''), '');
  lines.push(markdownTable(['chunk size', 'chunks', 'compressed MiB', 'ratio', 'batched tasks', 'chunks/task'], plans.map((p) => [
    fmtSize(p.input.chunkSize), String(p.input.chunks.length), (p.input.compressedBytes / MiB).toFixed(1),
    `${((p.input.compressedBytes / p.input.uncompressedBytes) * 100).toFixed(1)}%`, String(p.batched.length), (p.input.chunks.length / p.batched.length).toFixed(1),
  ])), '');

  const results: Record<string, unknown>[] = [];
  const summaryRows: string[][] = [];
  const mbps = (x: Sample, bytes: number): number => bytes / 1e6 / (x.wallMs / 1000);
  for (const plan of plans) {
    const cs = plan.input.chunkSize;
    const n = plan.input.chunks.length;
    const bytes = plan.input.uncompressedBytes;
    const inlineOf = (d: BenchDecoder): Sample[] => samples.get(key(cs, plan.configs.find((c) => c.kind === 'inline' && c.decoder === d)!))!;
    const baseWall = Object.fromEntries(s.decoders.map((d) => [d, summarize(inlineOf(d).map((x) => x.wallMs))]));
    const baseCpu = Object.fromEntries(s.decoders.map((d) => [d, summarize(inlineOf(d).map((x) => x.cpuMs))]));
    const rows: string[][] = [];
    for (const c of plan.configs) {
      const ss = samples.get(key(cs, c))!;
      const tp = summarize(ss.map((x) => mbps(x, bytes)));
      const wall = summarize(ss.map((x) => x.wallMs));
      const cpu = summarize(ss.map((x) => x.cpuMs));
      const p50 = summarize(ss.map((x) => x.eldP50));
      const p99 = summarize(ss.map((x) => x.eldP99));
      const max = summarize(ss.map((x) => x.eldMax));
      const others = ss.map((x) => x.otherCores).filter((x): x is number => x !== null);
      const runq = ss.map((x) => x.ownRunqWaitMsPerS).filter((x): x is number => x !== null);
      const tasks = c.batched ? plan.batched.length : plan.single.length;
      const p = Math.min(c.threads, s.cores);
      // Worker time lost per chunk: p × wall − the inline wall, p = threads that can run at once.
      const wallOverheadUs = c.kind === 'pool' ? ((p * wall.median - baseWall[c.decoder]!.median) * 1000) / n : null;
      // CPU spent per chunk beyond the inline decode (copies, structured clone, piscina, message ports, promises).
      const cpuOverheadUs = c.kind === 'pool' ? ((cpu.median - baseCpu[c.decoder]!.median) * 1000) / n : null;
      const ratio = baseWall['zlib']!.median / wall.median;
      const isPoolLike = c.kind !== 'inline';
      rows.push([
        c.name, String(tasks), formatSummary(tp, 0), `${ratio.toFixed(2)}×`,
        cpuOverheadUs === null ? '' : cpuOverheadUs.toFixed(0),
        (cpu.median / wall.median).toFixed(2),
        isPoolLike ? `${p50.median.toFixed(1)} / ${p99.median.toFixed(1)} (${p99.max.toFixed(1)}) / ${max.max.toFixed(1)}` : '',
        others.length ? `${summarize(others).median.toFixed(2)} (${summarize(others).max.toFixed(2)})` : 'n/a',
        runq.length ? summarize(runq).median.toFixed(0) : 'n/a',
      ]);
      if (c.kind === 'inline' && c.decoder === 'zlib' || c.kind === 'ceiling' || (c.kind === 'pool' && c.threads === s.cores && c.batched)) {
        summaryRows.push([fmtSize(cs), c.name, tp.median.toFixed(0), `${ratio.toFixed(2)}×`, isPoolLike ? p99.max.toFixed(1) : '']);
      }
      results.push({
        chunkSize: cs, config: c, tasks, chunks: n, uncompressedBytes: bytes, compressedBytes: plan.input.compressedBytes,
        mbps: tp, wallMs: wall, cpuMs: cpu, ratioVsInlineZlib: ratio, cpuOverheadUsPerChunk: cpuOverheadUs, wallOverheadUsPerChunk: wallOverheadUs,
        eldMs: { p50, p99, max }, samples: ss,
      });
    }
    lines.push(`### ${fmtSize(cs)} chunks (${n} chunks, ${(bytes / MiB).toFixed(0)} MiB)`, '');
    lines.push(markdownTable(
      ['configuration', 'tasks', 'MB/s median (min–max)', 'vs inline zlib', 'overhead µs/chunk (CPU)', 'cores busy',
        'ELD ms p50 / p99 (worst run) / max', 'other procs, cores (max)', 'our run-queue wait ms/s'],
      rows,
    ), '');
  }
  lines.push(
    '*vs inline zlib* = inline-zlib median wall / this median wall. *overhead µs/chunk* = (process CPU of this configuration − process CPU of the ' +
    'inline run with the same decoder) / chunks, medians: what a chunk costs beyond decoding it (copy into the task buffer, structured clone and ' +
    'transfer, piscina and message-port round trip, promises, the pool\'s metrics). *cores busy* = process CPU (all threads) / wall. ' +
    `*ELD* = main-thread event-loop delay, perf_hooks.monitorEventLoopDelay (resolution ${ELD_RESOLUTION_MS} ms, the period subtracted): ` +
    'median over runs of each run\'s p50 and p99, the worst run\'s p99, and the largest delay seen. *ceiling* = ' +
    `${s.cores} bare worker threads running decodeChunk over a static share of the batched tasks, the blob in shared memory: no copies, no ` +
    'per-task messages, the best these cores gave at that moment. *other procs* = CPU used by other processes during the sample ' +
    `(/proc/stat busy time minus ours), in cores; samples where it exceeded ${s.maxOther} were redone after waiting for a quiet machine (up to 3 ` +
    'times). *our run-queue wait* = time our threads were runnable but had no CPU (/proc/self/task/*/schedstat), summed over threads, per second.',
    '',
  );
  const redone = [...samples.values()].flat().reduce((n, x) => n + x.redone, 0);
  lines.push(`Total ${elapsedS.toFixed(0)} s, of which ${waitedS.toFixed(0)} s waiting for a quiet machine; ${redone} samples redone. ` +
    `Load average at the end (1/5/15 min): ${loadNow().join(' ')}; the benchmark itself adds about 2.`);
  console.log(lines.join('\n'));

  const path = await writeResult('pool', {
    benchmark: 'pool',
    machine,
    settings: s,
    input: {
      files: source.files,
      listingKey: source.listingKey,
      chunkSizes: plans.map((p) => ({
        chunkSize: p.input.chunkSize, chunks: p.input.chunks.length, compressedBytes: p.input.compressedBytes, uncompressedBytes: p.input.uncompressedBytes,
        batchedTasks: p.batched.length, blobBytes: p.input.blob.length,
      })),
    },
    summary: summaryRows.map(([chunk, config, mbs, ratio, eldP99Worst]) => ({ chunk, config, mbps: Number(mbs), ratio, eldP99WorstMs: eldP99Worst })),
    results,
    elapsedS,
    waitedForQuietS: waitedS,
    markdown: lines.join('\n'),
  });
  log(`wrote ${path}`);
  if (writeMarkdown) log(`wrote ${await writeTables('pool', lines.join('\n'), path)}`);
}

// Last, after every module-level constant is initialized: this file is also the bare workers' script.
if (!isMainThread && (workerData as BareWorkerData | undefined)?.kind === 'bare-decoder') {
  bareWorker(workerData as BareWorkerData);
} else {
  await main();
}
