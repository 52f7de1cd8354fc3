/**
 * Decode-pool benchmark: inflate + sha256-verify throughput of eStargz chunks
 * on the main thread (decodeChunk in a loop, node:zlib and pako) against
 * DecodePool with 1, 2, 3 worker threads and either decoder, at chunk sizes
 * from 4 KiB to 4 MiB, with the main thread's event-loop delay while the pool
 * works. Prints markdown tables and writes raw samples to
 * bench/results/pool-<timestamp>.json.
 *
 *   node dist/bench/pool.js [--runs N] [--total-mib N] [--chunk-sizes LIST] [--threads LIST] ...
 */
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { lstat, mkdir, readFile, readdir, rename, rm } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { setImmediate as yieldLoop } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import tar from 'tar-stream';
import { DecodePool, type DecodeItem } from '../src/engine/decode-pool.js';
import { DEFAULT_TUNING } from '../src/engine/chunk-loader.js';
import { decodeChunk, type ChunkRef, type Decoder } from '../src/estargz/chunk.js';
import { openEstargz } from '../src/estargz/open.js';
import { BufferSource } from '../src/estargz/source.js';
import { convertLayer } from '../src/estargz/writer/convert.js';
import { benchCacheDir } from './lib/layer-input.js';
import { describeMachine, loadNow, machineInfo, writeResult } from './lib/machine.js';
import { MiB, formatSummary, summarize, type Summary } from './lib/stats.js';
import { markdownTable } from './lib/table.js';

const USAGE = `usage: node dist/bench/pool.js [options]
  --runs N             timed runs of every configuration (default 5)
  --warmup N           untimed passes over every configuration first (default 1)
  --total-mib N        uncompressed MiB decoded per configuration and run (default 64)
  --chunk-sizes LIST   comma-separated chunk sizes in bytes (default 4096,16384,65536,1048576,4194304)
  --threads LIST       pool sizes (default 1,2,3)
  --decoders LIST      zlib,pako (default both)
  --task-bytes N       compressed bytes per batched task (default the engine's, ${DEFAULT_TUNING.taskBytes})
  --window N           tasks submitted and not yet finished (default 8)
  --unbatched-max N    also run one-task-per-chunk at chunk sizes up to N (default 16384; 0 = never)`;

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    'total-mib': { type: 'string', default: '64' },
    'chunk-sizes': { type: 'string', default: [4 << 10, 16 << 10, 64 << 10, 1 << 20, 4 << 20].join(',') },
    threads: { type: 'string', default: '1,2,3' },
    decoders: { type: 'string', default: 'zlib,pako' },
    'task-bytes': { type: 'string', default: String(DEFAULT_TUNING.taskBytes) },
    window: { type: 'string', default: '8' },
    'unbatched-max': { type: 'string', default: String(16 << 10) },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const list = (s: string): number[] => s.split(',').filter((x) => x.length > 0).map(Number);
const runs = Number(args.runs);
const warmup = Number(args.warmup);
const totalBytes = Number(args['total-mib']) * MiB;
const chunkSizes = list(args['chunk-sizes']);
const threadCounts = list(args.threads);
const decoders = args.decoders.split(',') as Decoder[];
const taskBytes = Number(args['task-bytes']);
const windowSize = Number(args.window);
const unbatchedMax = Number(args['unbatched-max']);
if (
  ![runs, warmup, totalBytes, taskBytes, windowSize, unbatchedMax].every(Number.isSafeInteger) || runs < 1 || warmup < 0 || totalBytes < MiB ||
  taskBytes < 1 || windowSize < 1 || !chunkSizes.every((c) => Number.isSafeInteger(c) && c > 0) ||
  !threadCounts.every((t) => Number.isSafeInteger(t) && t > 0) || !decoders.every((d) => d === 'zlib' || d === 'pako') || !decoders.includes('zlib')
) {
  console.error(USAGE);
  process.exit(2);
}
const CORES = availableParallelism();
/** monitorEventLoopDelay's timer period; its samples are the period plus the delay, so this is subtracted. */
const ELD_RESOLUTION_MS = 1;
const DATA_NAME = 'usr/share/estargz-bench/usr-binaries.bin';

const log = (msg: string): void => void process.stderr.write(`${msg}\n`);

// ---------------------------------------------------------------- input

/** Regular files under `dir` (recursive, name order), as [path, size, mtime] until `budget` bytes. */
async function listFiles(dir: string, budget: number, out: { path: string; size: number; mtimeMs: number }[]): Promise<number> {
  let used = 0;
  const walk = async (d: string): Promise<boolean> => {
    let names: string[];
    try {
      names = (await readdir(d)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    } catch {
      return true;
    }
    for (const name of names) {
      const path = join(d, name);
      const st = await lstat(path).catch(() => null);
      if (!st) continue;
      if (st.isDirectory()) {
        if (!(await walk(path))) return false;
      } else if (st.isFile() && st.size > 0) {
        out.push({ path, size: st.size, mtimeMs: st.mtimeMs });
        used += st.size;
        if (used >= budget) return false;
      }
    }
    return true;
  };
  await walk(dir);
  return used;
}

/**
 * `total` bytes of this machine's executables and shared libraries: half from
 * /usr/bin, half from /usr/lib/x86_64-linux-gnu (or /usr/lib), files
 * concatenated in name order. Machine code, symbol tables and string tables
 * compress like real image layers (~40% at level 9), unlike random or text data.
 */
async function usrData(total: number): Promise<{ listingKey: string; files: number; read: () => Promise<Buffer> }> {
  const files: { path: string; size: number; mtimeMs: number }[] = [];
  const libDir = existsSync('/usr/lib/x86_64-linux-gnu') ? '/usr/lib/x86_64-linux-gnu' : '/usr/lib';
  const got = await listFiles('/usr/bin', total / 2, files);
  const got2 = await listFiles(libDir, total - got, files);
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
  const parts: Buffer[] = [];
  pack.on('data', (d: unknown) => parts.push(d as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  await new Promise<void>((resolve, reject) =>
    pack.entry({ name: DATA_NAME, type: 'file', mode: 0o755, mtime: new Date(1_700_000_000_000), uid: 0, gid: 0 }, data, (err) => (err ? reject(err) : resolve())));
  pack.finalize();
  await ended;
  return Buffer.concat(parts);
}

/** One chunk size's input: the converted blob in memory and the chunks of the one file. */
interface ChunkInput {
  chunkSize: number;
  blob: Buffer;
  chunks: { blobOffset: number; blobEnd: number; ref: ChunkRef }[];
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
async function chunkInput(chunkSize: number, key: string, data: () => Promise<Buffer>): Promise<ChunkInput> {
  const dir = benchCacheDir();
  await mkdir(dir, { recursive: true });
  const path = join(dir, `pool-${key}-${totalBytes}-${chunkSize}.esgz`);
  const cached = existsSync(path);
  if (!cached) {
    // Stale blobs of an older listing: tens of MB each.
    for (const f of await readdir(dir)) if (f.startsWith('pool-') && f.endsWith(`-${totalBytes}-${chunkSize}.esgz`)) await rm(join(dir, f), { force: true });
    const partial = `${path}.partial-${process.pid}`;
    try {
      const out = createWriteStream(partial);
      await convertLayer(Readable.from([await oneFileTar(await data())]), out, { chunkSize, tmpDir: dir });
      out.end();
      await finished(out);
      await rename(partial, path);
    } finally {
      await rm(partial, { force: true });
    }
  }
  const blob = await readFile(path);
  const es = await openEstargz(new BufferSource(blob));
  const node = es.index.byPath.get(DATA_NAME);
  if (!node || node.type !== 'reg' || node.size !== totalBytes) throw new Error(`${path}: no ${DATA_NAME} of ${totalBytes} bytes`);
  const chunks = node.chunks.map((c) => ({
    blobOffset: c.blobOffset,
    blobEnd: c.blobEnd,
    ref: { path: DATA_NAME, fileOffset: c.fileOffset, innerOffset: c.innerOffset, size: c.size, digest: c.digest, blobOffset: c.blobOffset },
  }));
  const compressedBytes = chunks.reduce((n, c) => n + c.blobEnd - c.blobOffset, 0);
  return { chunkSize, blob, chunks, compressedBytes, uncompressedBytes: node.size, cached };
}

// ---------------------------------------------------------------- tasks

/** A decode task as the engine builds one: contiguous members of about `taskBytes` compressed bytes. */
interface Task {
  start: number;
  end: number;
  items: DecodeItem[];
  chunks: number;
  bytes: number;
}

/** Groups members the way ChunkLoader.decodeSpan does: a member joins the task while the task stays within `limit` bytes. */
function makeTasks(input: ChunkInput, limit: number): Task[] {
  const tasks: Task[] = [];
  for (const c of input.chunks) {
    const last = tasks.at(-1);
    if (last && c.blobEnd - last.start <= limit) {
      last.items.push({ offset: c.blobOffset - last.start, length: c.blobEnd - c.blobOffset, refs: [c.ref] });
      last.end = c.blobEnd;
      last.chunks++;
      last.bytes += c.ref.size;
    } else {
      tasks.push({ start: c.blobOffset, end: c.blobEnd, items: [{ offset: 0, length: c.blobEnd - c.blobOffset, refs: [c.ref] }], chunks: 1, bytes: c.ref.size });
    }
  }
  return tasks;
}

// ---------------------------------------------------------------- configurations

interface Config {
  name: string;
  kind: 'inline' | 'pool';
  decoder: Decoder;
  threads: number;
  batched: boolean;
}

interface Sample {
  wallMs: number;
  /** Process CPU time (main thread + workers), ms. */
  cpuMs: number;
  /** Event-loop delay on the main thread, ms (timer period subtracted). */
  eldP50: number;
  eldP99: number;
  eldMax: number;
  eldCount: number;
}

function configsFor(chunkSize: number): Config[] {
  const out: Config[] = [];
  for (const d of decoders) out.push({ name: `inline ${d}`, kind: 'inline', decoder: d, threads: 0, batched: true });
  for (const t of threadCounts) for (const d of decoders) out.push({ name: `pool ${t}t ${d}`, kind: 'pool', decoder: d, threads: t, batched: true });
  if (chunkSize <= unbatchedMax) {
    for (const t of threadCounts.filter((x) => x <= CORES)) out.push({ name: `pool ${t}t zlib, 1 chunk/task`, kind: 'pool', decoder: 'zlib', threads: t, batched: false });
  }
  return out;
}

/** The baseline: decodeChunk in a loop on this thread, no copies, yielding to the event loop between tasks (as between reads). */
async function runInline(input: ChunkInput, tasks: Task[], decoder: Decoder): Promise<number> {
  let bytes = 0;
  for (const t of tasks) {
    for (const item of t.items) {
      const member = input.blob.subarray(t.start + item.offset, t.start + item.offset + item.length);
      for (const ref of item.refs) bytes += decodeChunk(member, ref, decoder).length;
    }
    await yieldLoop();
  }
  return bytes;
}

/**
 * Feeds the pool like the engine does: each task's members copied into an
 * ArrayBuffer of its own (transferred to the worker), outputs wrapped as
 * Buffers. `windowSize` tasks are submitted at any time, more than the pool
 * hands to piscina (2 per thread), so the workers never wait for the main thread.
 */
async function runPool(pool: DecodePool, input: ChunkInput, tasks: Task[]): Promise<number> {
  let bytes = 0;
  let next = 0;
  let failure: Error | undefined;
  const one = async (): Promise<void> => {
    while (next < tasks.length && !failure) {
      const t = tasks[next++]!;
      const copy = new ArrayBuffer(t.end - t.start);
      new Uint8Array(copy).set(input.blob.subarray(t.start, t.end));
      const outputs = await pool.run(copy, t.items, 'foreground');
      for (const out of outputs) {
        if (!(out instanceof ArrayBuffer)) {
          failure = new Error(`decode failed: ${out.code}: ${out.message}`);
          return;
        }
        bytes += Buffer.from(out).length;
      }
    }
  };
  await Promise.all(Array.from({ length: windowSize }, one));
  if (failure) throw failure;
  return bytes;
}

async function measure(run: () => Promise<number>, expected: number): Promise<Sample> {
  const eld = monitorEventLoopDelay({ resolution: ELD_RESOLUTION_MS });
  const cpu0 = process.cpuUsage();
  eld.enable();
  const t0 = performance.now();
  const bytes = await run();
  const wallMs = performance.now() - t0;
  eld.disable();
  const cpu = process.cpuUsage(cpu0);
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
  };
}

// ---------------------------------------------------------------- main

const fmtSize = (b: number): string => (b >= MiB ? `${b / MiB} MiB` : `${b / 1024} KiB`);

async function main(): Promise<void> {
  const machine = machineInfo();
  log(`machine: ${describeMachine(machine)}`);
  const source = await usrData(totalBytes);
  let data: Promise<Buffer> | undefined;
  const inputs: ChunkInput[] = [];
  for (const cs of chunkSizes) {
    const started = performance.now();
    const input = await chunkInput(cs, source.listingKey, () => (data ??= source.read()));
    log(`input ${fmtSize(cs)}: ${input.chunks.length} chunks, ${(input.compressedBytes / MiB).toFixed(1)} MiB compressed` +
      `${input.cached ? ' (cached)' : ` (converted in ${((performance.now() - started) / 1000).toFixed(1)} s)`}`);
    inputs.push(input);
  }
  data = undefined;

  const pools = new Map<string, DecodePool>();
  const poolFor = (threads: number, decoder: Decoder): DecodePool => {
    const k = `${threads}/${decoder}`;
    let p = pools.get(k);
    if (!p) pools.set(k, (p = new DecodePool({ threads, decoder })));
    return p;
  };
  const plans = inputs.map((input) => {
    const batched = makeTasks(input, taskBytes);
    const single = makeTasks(input, 0);
    return { input, configs: configsFor(input.chunkSize), batched, single };
  });
  const samples = new Map<string, Sample[]>();
  const key = (cs: number, c: Config): string => `${cs}|${c.name}`;

  const runOne = async (plan: (typeof plans)[number], c: Config): Promise<Sample> => {
    const tasks = c.batched ? plan.batched : plan.single;
    const expected = plan.input.uncompressedBytes;
    if (c.kind === 'inline') return measure(() => runInline(plan.input, tasks, c.decoder), expected);
    const pool = poolFor(c.threads, c.decoder);
    return measure(() => runPool(pool, plan.input, tasks), expected);
  };

  const started = performance.now();
  for (let pass = -warmup; pass < runs; pass++) {
    log(pass < 0 ? `warm-up pass ${pass + warmup + 1}/${warmup}` : `run ${pass + 1}/${runs} (load ${loadNow().join(' ')})`);
    for (const plan of plans) {
      // Alternate the order so drift and GC debt fall on every configuration alike.
      const order = pass % 2 === 0 ? plan.configs : [...plan.configs].reverse();
      for (const c of order) {
        const s = await runOne(plan, c);
        if (pass >= 0) {
          const k = key(plan.input.chunkSize, c);
          samples.set(k, [...(samples.get(k) ?? []), s]);
        }
      }
    }
  }
  const elapsedS = (performance.now() - started) / 1000;
  for (const p of pools.values()) await p.close();

  // ------------------------------------------------------------ report
  const lines: string[] = [];
  lines.push(`## Decode + verify throughput: DecodePool vs the main thread (${runs} runs, interleaved, ${warmup} warm-up pass)`, '');
  lines.push(`Machine: ${describeMachine(machine)}`, '');
  lines.push(`Input: ${totalBytes / MiB} MiB of this machine's executables and shared libraries (${source.files} files from /usr/bin and /usr/lib, concatenated) ` +
    `as one file of a layer converted with convertLayer (gzip level 9, one member per chunk). Every configuration decodes and sha256-verifies ` +
    `all of it in every run. Batched tasks hold up to ${taskBytes} compressed bytes of members (ChunkLoader's taskBytes); ` +
    `${windowSize} tasks are submitted at a time. MB/s are of uncompressed bytes (10^6 B/s).`, '');
  lines.push(markdownTable(['chunk size', 'chunks', 'compressed MiB', 'ratio', 'batched tasks', 'chunks/task'], plans.map((p) => [
    fmtSize(p.input.chunkSize), String(p.input.chunks.length), (p.input.compressedBytes / MiB).toFixed(1),
    `${((p.input.compressedBytes / p.input.uncompressedBytes) * 100).toFixed(1)}%`, String(p.batched.length), (p.input.chunks.length / p.batched.length).toFixed(1),
  ])), '');

  const json: Record<string, unknown>[] = [];
  const mbps = (s: Sample, bytes: number): number => bytes / 1e6 / (s.wallMs / 1000);
  for (const plan of plans) {
    const cs = plan.input.chunkSize;
    const n = plan.input.chunks.length;
    const bytes = plan.input.uncompressedBytes;
    const base: Record<string, Summary> = {};
    for (const d of decoders) base[d] = summarize(samples.get(key(cs, plan.configs.find((c) => c.kind === 'inline' && c.decoder === d)!))!.map((s) => s.wallMs));
    const baseCpu: Record<string, Summary> = {};
    for (const d of decoders) baseCpu[d] = summarize(samples.get(key(cs, plan.configs.find((c) => c.kind === 'inline' && c.decoder === d)!))!.map((s) => s.cpuMs));
    const rows: string[][] = [];
    for (const c of plan.configs) {
      const ss = samples.get(key(cs, c))!;
      const tp = summarize(ss.map((s) => mbps(s, bytes)));
      const wall = summarize(ss.map((s) => s.wallMs));
      const cpu = summarize(ss.map((s) => s.cpuMs));
      const p50 = summarize(ss.map((s) => s.eldP50));
      const p99 = summarize(ss.map((s) => s.eldP99));
      const max = summarize(ss.map((s) => s.eldMax));
      const tasks = c.kind === 'inline' ? plan.batched.length : c.batched ? plan.batched.length : plan.single.length;
      // Worker time lost per chunk: p × wall − the inline wall, p = threads that can run at once.
      const p = Math.min(c.threads, CORES);
      const wallOverheadUs = c.kind === 'pool' ? ((p * wall.median - base[c.decoder]!.median) * 1000) / n : null;
      // CPU spent per chunk beyond the inline decode (copies, structured clone, piscina, message ports, promises).
      const cpuOverheadUs = c.kind === 'pool' ? ((cpu.median - baseCpu[c.decoder]!.median) * 1000) / n : null;
      const ratioZlib = base['zlib']!.median / wall.median;
      rows.push([
        c.name, String(tasks), formatSummary(tp, 0), `${ratioZlib.toFixed(2)}×`,
        cpuOverheadUs === null ? '' : cpuOverheadUs.toFixed(1), wallOverheadUs === null ? '' : wallOverheadUs.toFixed(1),
        `${(cpu.median / wall.median).toFixed(2)}`,
        p50.median.toFixed(2), `${p99.median.toFixed(1)} (${p99.max.toFixed(1)})`, max.max.toFixed(1),
      ]);
      json.push({
        chunkSize: cs, config: c, tasks, chunks: n, uncompressedBytes: bytes, compressedBytes: plan.input.compressedBytes,
        mbps: tp, wallMs: wall, cpuMs: cpu, ratioVsInlineZlib: ratioZlib, cpuOverheadUsPerChunk: cpuOverheadUs, wallOverheadUsPerChunk: wallOverheadUs,
        eldMs: { p50, p99, max }, samples: ss,
      });
    }
    lines.push(`### ${fmtSize(cs)} chunks (${n} chunks, ${(bytes / MiB).toFixed(0)} MiB)`, '');
    lines.push(markdownTable(
      ['configuration', 'tasks', 'MB/s median (min–max)', 'vs inline zlib', 'CPU overhead µs/chunk', 'worker-time overhead µs/chunk', 'CPU cores busy', 'ELD p50 ms', 'ELD p99 ms median (max)', 'ELD max ms'],
      rows,
    ), '');
  }
  lines.push(
    'Columns: *vs inline zlib* = inline-zlib median wall / this median wall. *CPU overhead* = (process CPU of this configuration − CPU of the inline run ' +
    'of the same decoder) / chunks: what a chunk costs beyond decoding it (copy into the task buffer, structured clone and transfer, piscina and ' +
    'message-port round trip, promises). *worker-time overhead* = (min(threads, cores) × wall − inline wall) / chunks: the same plus time the workers ' +
    'sat idle or lost their core to the main thread. *CPU cores busy* = process CPU / wall. ELD = main-thread event-loop delay from ' +
    `perf_hooks.monitorEventLoopDelay (resolution ${ELD_RESOLUTION_MS} ms, the period subtracted), per run; p99 is the median over runs with the worst run in brackets. ` +
    'Inline runs yield to the event loop between tasks, so their ELD is the time one task blocks the loop.',
    '',
    `Total ${elapsedS.toFixed(0)} s. Load average at the end (1/5/15 min): ${loadNow().join(' ')}; the benchmark itself adds about 2.`,
  );
  console.log(lines.join('\n'));

  const path = await writeResult('pool', {
    benchmark: 'pool',
    machine,
    settings: { runs, warmup, totalBytes, chunkSizes, threadCounts, decoders, taskBytes, windowSize, unbatchedMax, eldResolutionMs: ELD_RESOLUTION_MS, cores: CORES },
    input: {
      files: source.files, listingKey: source.listingKey,
      chunkSizes: plans.map((p) => ({ chunkSize: p.input.chunkSize, chunks: p.input.chunks.length, compressedBytes: p.input.compressedBytes, uncompressedBytes: p.input.uncompressedBytes, batchedTasks: p.batched.length, blobBytes: p.input.blob.length })),
    },
    results: json,
    elapsedS,
    markdown: lines.join('\n'),
  });
  log(`wrote ${path}`);
}

await main();
