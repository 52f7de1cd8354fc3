/**
 * Engine read benchmark: a ~20 MiB file of real binaries in an eStargz layer
 * (convertLayer, 4 MiB chunks) served by a local Distribution registry.
 * Cold reads (fresh Engine, no disk cache: fetch + decode + verify) in one
 * call and in 128 KiB sequential reads as FUSE would issue them, against
 * `curl | gunzip` of the same bytes and Node's fetch + gunzip; warm reads from
 * the memory cache; and the compressed bytes each cold read fetched. Prints
 * markdown tables and writes raw samples to bench/results/read-<timestamp>.json.
 *
 *   node dist/bench/read.js [--runs N] [--file-mib N] [--read-kib N] ...
 */
import { collectPack, listFiles } from './lib/files.js';
import { convertTarToFile } from './lib/layer-input.js';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { createGunzip, gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { DEFAULT_TUNING, type BlobFetcher } from '../src/engine/chunk-loader.js';
import { DEFAULT_CONFIG, engineOptions } from '../src/daemon/config.js';
import { Engine } from '../src/engine/engine.js';
import { estargzContent } from '../src/engine/layer.js';
import type { LayerNode } from '../src/estargz/layer-index.js';
import { openEstargz, type EstargzBlob } from '../src/estargz/open.js';
import { RemoteBlob } from '../src/registry/blob.js';
import { RegistryClient } from '../src/registry/client.js';
import { pushBlob, startRegistry, type Registry } from '../testkit/registry.js';
import { describeMachine, loadNow, machineInfo, writeResult, writeTables } from './lib/machine.js';
import { runMeasured, runQuiet } from './lib/proc.js';
import { MiB, formatSummary, summarize } from './lib/stats.js';
import { markdownTable } from './lib/table.js';
import { testLog, testTelemetry } from '../testkit/telemetry.js';

const USAGE = `usage: node dist/bench/read.js [options]
  --runs N          timed runs of every measurement (default 7)
  --warmup N        untimed rounds first (default 1)
  --file-mib N      size of the big file, MiB (default 20)
  --read-kib N      read size of the sequential and warm reads, KiB (default 128)
  --threads N       decode workers of the engine (default: cores, the engine's default)
  --max-other CORES redo a sample (up to 3 times) when unrelated processes used more CPU than this meanwhile (default 0.3; 0 = never)
  --quiet-wait S    before each round and redo, wait up to S seconds for the machine to be quiet (default 60)
  --no-write        print only: leave bench/results/read.md alone`;

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '7' },
    warmup: { type: 'string', default: '1' },
    'file-mib': { type: 'string', default: '20' },
    'read-kib': { type: 'string', default: '128' },
    threads: { type: 'string' },
    'max-other': { type: 'string', default: '0.3' },
    'quiet-wait': { type: 'string', default: '60' },
    'no-write': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const CORES = availableParallelism();
const settings = {
  runs: Number(args.runs),
  warmup: Number(args.warmup),
  fileBytes: Number(args['file-mib']) * MiB,
  readBytes: Number(args['read-kib']) * 1024,
  threads: args.threads === undefined ? CORES : Number(args.threads),
  maxOther: Number(args['max-other']),
  quietWaitS: Number(args['quiet-wait']),
  cores: CORES,
};
if (
  ![settings.runs, settings.warmup, settings.fileBytes, settings.readBytes, settings.threads].every(Number.isSafeInteger) || settings.runs < 1 ||
  settings.warmup < 0 || settings.fileBytes < MiB || settings.readBytes < 512 || settings.threads < 0 || !(settings.maxOther >= 0) || !(settings.quietWaitS >= 0)
) {
  console.error(USAGE);
  process.exit(2);
}

const REPO = 'bench/read';
const BIG = 'usr/lib/estargz-bench/big.bin';
const log = (msg: string): void => void process.stderr.write(`${msg}\n`);
const sha256 = (parts: readonly Uint8Array[]): string => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return 'sha256:' + h.digest('hex');
};

// ---------------------------------------------------------------- machine load

/** Clock ticks per second of /proc/<pid>/stat times: Linux's USER_HZ, 100 on x86 and arm64 (`getconf CLK_TCK`). */
const CLK_TCK = 100;

/** Busy and total jiffies of all CPUs (/proc/stat). */
function machineJiffies(): { busy: number; total: number } | null {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
    const busy = user + nice + system + irq + softirq + steal;
    return { busy, total: busy + idle + iowait };
  } catch {
    return null;
  }
}

/** CPU seconds of a process (utime + stime), or 0 when it is gone. */
function processCpuS(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** Run-queue wait of all our threads (/proc/self/task/N/schedstat, 2nd field), ns. */
function ownRunqWaitNs(): number | null {
  try {
    let wait = 0;
    for (const tid of readdirSync('/proc/self/task')) {
      try {
        wait += Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[1] ?? 0);
      } catch {
        // thread ended
      }
    }
    return wait;
  } catch {
    return null;
  }
}

interface Load {
  /** CPU of processes that are not part of the measurement (not us, the registry, or the measured children), in cores. */
  otherCores: number | null;
  /** Our threads' run-queue wait per second of wall time, ms/s. */
  ownRunqWaitMsPerS: number | null;
  /** The registry's CPU during the sample, cores. */
  registryCores: number;
}

/**
 * Measures the machine around a sample. `childCpuS` (from GNU time) is the CPU
 * of the measured child processes, which /proc/stat counts as busy too.
 */
function loadProbe(registryPid: number | undefined): (childCpuS?: number) => Load {
  const j0 = machineJiffies();
  const own0 = process.cpuUsage();
  const reg0 = processCpuS(registryPid);
  const rq0 = ownRunqWaitNs();
  const t0 = performance.now();
  return (childCpuS = 0) => {
    const j1 = machineJiffies();
    const own = process.cpuUsage(own0);
    const regS = processCpuS(registryPid) - reg0;
    const rq1 = ownRunqWaitNs();
    const wallS = (performance.now() - t0) / 1000;
    const ownS = (own.user + own.system) / 1e6;
    const otherCores = j0 && j1 && j1.total > j0.total
      ? Math.max(0, ((j1.busy - j0.busy) / (j1.total - j0.total)) * CORES - (ownS + regS + childCpuS) / wallS)
      : null;
    return {
      otherCores,
      ownRunqWaitMsPerS: rq0 !== null && rq1 !== null ? Math.max(0, (rq1 - rq0) / 1e6 / wallS) : null,
      registryCores: regS / wallS,
    };
  };
}

async function waitQuiet(maxOther: number, maxS: number): Promise<number> {
  const started = performance.now();
  for (;;) {
    const probe = loadProbe(undefined);
    await sleep(1000);
    const { otherCores } = probe();
    const waited = (performance.now() - started) / 1000;
    if (otherCores === null || otherCores < maxOther || waited >= maxS) return waited;
    log(`  machine busy (other processes: ${otherCores.toFixed(2)} cores); waiting`);
  }
}

// ---------------------------------------------------------------- the layer

/**
 * The layer tar: one big file (shared libraries then executables of this
 * machine, concatenated and cut to `fileBytes`: compresses like real layer
 * content, ~45% at level 9) and ~200 small files (docs and headers up to
 * 16 KiB) around it, as in an application layer.
 */
async function buildTar(fileBytes: number): Promise<{ tar: Buffer; bigDigest: string; smallFiles: number; smallBytes: number }> {
  const libDir = existsSync('/usr/lib/x86_64-linux-gnu') ? '/usr/lib/x86_64-linux-gnu' : '/usr/lib';
  const bigSources = [...(await listFiles(libDir, fileBytes * 0.6)), ...(await listFiles('/usr/bin', fileBytes))].map((f) => f.path);
  const big = Buffer.alloc(fileBytes);
  let pos = 0;
  for (const f of bigSources) {
    if (pos >= fileBytes) break;
    const bytes = await readFile(f).catch(() => Buffer.alloc(0));
    pos += bytes.copy(big, pos, 0, Math.min(bytes.length, fileBytes - pos));
  }
  if (pos < fileBytes) throw new Error(`only ${pos} bytes of files in ${libDir} and /usr/bin`);
  const small = [...(await listFiles('/usr/share/doc', 1.5 * MiB, 16 << 10)), ...(await listFiles('/usr/include', 1.5 * MiB, 16 << 10))].slice(0, 200).map((f) => f.path);

  const pack = tar.pack();
  const output = collectPack(pack);
  const add = (name: string, body: Buffer): Promise<void> => new Promise((resolve, reject) =>
    pack.entry({ name, type: 'file', mode: 0o644, mtime: new Date(1_700_000_000_000), uid: 0, gid: 0 }, body, (err) => (err ? reject(err) : resolve())));
  let smallBytes = 0;
  const addSmall = async (list: string[]): Promise<void> => {
    for (const f of list) {
      const body = await readFile(f).catch(() => Buffer.alloc(0));
      smallBytes += body.length;
      await add(`usr/share/estargz-bench${f}`, body);
    }
  };
  await addSmall(small.slice(0, small.length >> 1));
  await add(BIG, big);
  await addSmall(small.slice(small.length >> 1));
  pack.finalize();
  return { tar: await output.done(), bigDigest: sha256([big]), smallFiles: small.length, smallBytes };
}

// ---------------------------------------------------------------- engine side

/** The RemoteBlob as the engine sees it, counting requests, bytes and time spent in readRanges. */
class CountingFetcher implements BlobFetcher {
  requests = 0;
  ranges = 0;
  bytes = 0;
  /** Wall time during which at least one readRanges call was pending, ms. */
  busyMs = 0;
  private pending = 0;
  private since = 0;

  constructor(private readonly inner: BlobFetcher) {}

  get size(): number {
    return this.inner.size;
  }

  async readRanges(ranges: readonly { offset: number; length: number }[], signal?: AbortSignal): Promise<Buffer[]> {
    this.requests++;
    this.ranges += ranges.length;
    this.bytes += ranges.reduce((n, r) => n + r.length, 0);
    if (this.pending++ === 0) this.since = performance.now();
    try {
      return await this.inner.readRanges(ranges, signal);
    } finally {
      if (--this.pending === 0) this.busyMs += performance.now() - this.since;
    }
  }
}

/** A tiny valid task, to have every worker started and its module loaded before timing (the daemon's pool is long-lived). */
async function warmPool(engine: Engine, threads: number): Promise<void> {
  if (threads === 0) return;
  const plain = Buffer.from('warm');
  const member = gzipSync(plain);
  const ref = { path: 'warm', fileOffset: 0, innerOffset: 0, size: plain.length, digest: sha256([plain]), blobOffset: 0 };
  await Promise.all(Array.from({ length: threads * 4 }, () => {
    const buf = new ArrayBuffer(member.length);
    new Uint8Array(buf).set(member);
    return engine.pool.run(buf, [{ offset: 0, length: member.length, refs: [ref] }], 'foreground');
  }));
}

interface EngineSample {
  wallMs: number;
  /** Time a registry request was in flight during the read. */
  fetchMs: number;
  requests: number;
  ranges: number;
  fetchedBytes: number;
  /** Process CPU (main thread + workers) during the read, ms. */
  cpuMs: number;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const machine = machineInfo();
  log(`machine: ${describeMachine(machine)}`);
  const dir = await mkdtemp(join(tmpdir(), 'estargz-bench-read-'));
  let reg: Registry | undefined;
  let client: RegistryClient | undefined;
  try {
    // Layer: build, convert, push.
    const layer = await buildTar(settings.fileBytes);
    const blobPath = join(dir, 'layer.esgz');
    const converted = await convertTarToFile(layer.tar, blobPath, { tmpDir: dir });
    const blob = await readFile(blobPath);
    reg = await startRegistry();
    const registryPid = (() => {
      try {
        return Number.parseInt(readFileSync(join(dirname(reg.dataDir), 'registry.pid'), 'utf8'), 10) || undefined;
      } catch {
        return undefined;
      }
    })();
    const digest = await pushBlob(reg.url, REPO, blob);
    if (digest !== converted.digest) throw new Error(`pushed ${digest}, converted ${converted.digest}`);
    const blobUrl = `${reg.url}/v2/${REPO}/blobs/${digest}`;
    client = new RegistryClient({ log: testLog(), credentials: { name: 'none', lookup: async () => undefined } });
    const remote = await RemoteBlob.open(client, { registry: reg.host, repository: REPO }, digest);
    const es: EstargzBlob = await openEstargz(remote);
    const node = es.index.byPath.get(BIG) as LayerNode | undefined;
    if (!node || node.type !== 'reg' || node.size !== settings.fileBytes) throw new Error(`the layer has no ${BIG} of ${settings.fileBytes} bytes`);
    const first = node.chunks[0]!;
    const last = node.chunks.at(-1)!;
    const memberStart = Math.min(...node.chunks.map((c) => c.blobOffset));
    const memberEnd = Math.max(...node.chunks.map((c) => c.blobEnd));
    const fileCompressed = memberEnd - memberStart;
    if (first.blobOffset !== memberStart || last.blobEnd !== memberEnd) throw new Error('the big file\'s chunks are not in blob order');
    const rangeHeader = `${memberStart}-${memberEnd - 1}`;
    log(`layer: ${BIG} ${node.size} B in ${node.chunks.length} chunks, ${fileCompressed} B compressed at [${memberStart}, ${memberEnd}); ` +
      `blob ${blob.length} B, ${layer.smallFiles} small files; registry ${reg.url}`);

    // What the references decompress, checked once (untimed).
    const gunzipBytes = async (cmd: string): Promise<{ bytes: number }> => {
      const o = await runQuiet('sh', ['-c', `${cmd} | wc -c`]);
      return { bytes: Number(o.trim()) };
    };
    const wholeOut = await gunzipBytes(`curl -sf '${blobUrl}' | gunzip`);
    const rangeOut = await gunzipBytes(`curl -sf -r ${rangeHeader} '${blobUrl}' | gunzip`);
    if (wholeOut.bytes !== converted.uncompressedSize) throw new Error(`curl | gunzip of the blob gave ${wholeOut.bytes} bytes, expected ${converted.uncompressedSize}`);
    if (rangeOut.bytes < node.size) throw new Error(`curl -r | gunzip of the file's members gave ${rangeOut.bytes} bytes, fewer than the file's ${node.size}`);

    // ------------------------------------------------------------ measurements
    type Kind = 'engine-cold-one' | 'engine-cold-seq' | 'engine-cold-seq-no-readahead' | 'curl-gunzip-range' | 'curl-gunzip-blob' | 'node-fetch-gunzip-range' | 'curl-floor';
    interface Sample {
      wallMs: number;
      /** Bytes this measurement delivered, for MB/s. */
      bytes: number;
      cpuMs: number | null;
      load: Load;
      redone: number;
      engine?: EngineSample;
      warm?: { oneCallMs: number; seqMs: number[] };
    }
    const samples = new Map<Kind, Sample[]>();
    const curlShell = async (cmd: string, bytes: number, probe: (child?: number) => Load): Promise<Omit<Sample, 'redone'>> => {
      const r = await runMeasured('sh', ['-c', cmd]);
      const cpuS = r.userS !== null && r.sysS !== null ? r.userS + r.sysS : 0;
      return { wallMs: r.wallMs, bytes, cpuMs: r.userS !== null ? cpuS * 1000 : null, load: probe(cpuS) };
    };
    /** Engine: fresh Engine (memory cache only), warm pool, one layer; cold read, then warm reads from the memory cache. */
    const engineRun = async (mode: 'one' | 'seq', probeStart: () => (child?: number) => Load, readAhead = true): Promise<Omit<Sample, 'redone'>> => {
      const engine = await Engine.create(engineOptions(DEFAULT_CONFIG, { poolThreads: settings.threads, ...(!readAhead && { tuning: { readAheadChunks: 0, readAheadBytes: 0 } }) }), testTelemetry());
      try {
        await warmPool(engine, settings.threads);
        const fetcher = new CountingFetcher(remote);
        const el = engine.openLayer({ id: `bench-${Math.random().toString(36).slice(2, 8)}`, blobDigest: digest, fetcher, content: estargzContent(es) });
        try {
          const parts: Buffer[] = [];
          const probe = probeStart();
          const cpu0 = process.cpuUsage();
          const t0 = performance.now();
          if (mode === 'one') {
            parts.push(await el.readFile(node, 0, node.size));
          } else {
            for (let off = 0; off < node.size; off += settings.readBytes) parts.push(await el.readFile(node, off, settings.readBytes));
          }
          const wallMs = performance.now() - t0;
          const cpu = process.cpuUsage(cpu0);
          const load = probe();
          if (sha256(parts) !== layer.bigDigest) throw new Error(`cold read (${mode}) returned wrong bytes`);
          // Warm: the chunks are in the memory cache now.
          let w0 = performance.now();
          const whole = await el.readFile(node, 0, node.size);
          const oneCallMs = performance.now() - w0;
          if (whole.length !== node.size) throw new Error('warm one-call read is short');
          const seqMs: number[] = [];
          for (let pass = 0; pass < 3; pass++) {
            let n = 0;
            w0 = performance.now();
            for (let off = 0; off < node.size; off += settings.readBytes) n += (await el.readFile(node, off, settings.readBytes)).length;
            seqMs.push(performance.now() - w0);
            if (n !== node.size) throw new Error('warm sequential reads are short');
          }
          return {
            wallMs,
            bytes: node.size,
            cpuMs: (cpu.user + cpu.system) / 1000,
            load,
            engine: { wallMs, fetchMs: fetcher.busyMs, requests: fetcher.requests, ranges: fetcher.ranges, fetchedBytes: el.fetchedBytes, cpuMs: (cpu.user + cpu.system) / 1000 },
            warm: { oneCallMs, seqMs },
          };
        } finally {
          await el.close();
        }
      } finally {
        await engine.close();
      }
    };
    /** Node: fetch the file's members with a Range and stream them through createGunzip (libuv thread pool). */
    const nodeFetch = async (): Promise<number> => {
      const res = await fetch(blobUrl, { headers: { range: `bytes=${rangeHeader}` } });
      if (res.status !== 206 || !res.body) throw new Error(`GET with Range: ${res.status}`);
      let n = 0;
      const gunzip = createGunzip();
      gunzip.on('data', (d: Buffer) => (n += d.length));
      await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>), gunzip);
      return n;
    };

    const kinds: Kind[] = ['engine-cold-one', 'curl-gunzip-range', 'engine-cold-seq', 'node-fetch-gunzip-range', 'engine-cold-seq-no-readahead', 'curl-gunzip-blob', 'curl-floor'];
    const runKind = async (kind: Kind): Promise<Omit<Sample, 'redone'>> => {
      const start = (): ((child?: number) => Load) => loadProbe(registryPid);
      switch (kind) {
        case 'engine-cold-one': return engineRun('one', start);
        case 'engine-cold-seq': return engineRun('seq', start);
        case 'engine-cold-seq-no-readahead': return engineRun('seq', start, false);
        case 'curl-gunzip-range': return curlShell(`curl -sf -r ${rangeHeader} '${blobUrl}' | gunzip > /dev/null`, node.size, start());
        case 'curl-gunzip-blob': return curlShell(`curl -sf '${blobUrl}' | gunzip > /dev/null`, converted.uncompressedSize, start());
        // Process start-up and connection: sh, curl and gunzip for a 10-byte range (gunzip -t of nothing fails quietly).
        case 'curl-floor': return curlShell(`curl -sf -r 0-9 '${blobUrl}' | gunzip -q > /dev/null 2>&1; true`, 0, start());
        case 'node-fetch-gunzip-range': {
          const probe = start();
          const cpu0 = process.cpuUsage();
          const t0 = performance.now();
          const n = await nodeFetch();
          const wallMs = performance.now() - t0;
          const cpu = process.cpuUsage(cpu0);
          if (n < node.size) throw new Error(`fetch + gunzip gave ${n} bytes`);
          return { wallMs, bytes: node.size, cpuMs: (cpu.user + cpu.system) / 1000, load: probe() };
        }
      }
    };
    let waitedS = 0;
    const sample = async (kind: Kind): Promise<Sample> => {
      for (let redone = 0; ; redone++) {
        const r = await runKind(kind);
        const other = r.load.otherCores;
        if (settings.maxOther <= 0 || other === null || other <= settings.maxOther || redone >= 3) return { ...r, redone };
        log(`  ${kind}: other processes used ${other.toFixed(2)} cores; redoing`);
        waitedS += await waitQuiet(settings.maxOther, settings.quietWaitS);
      }
    };

    const started = performance.now();
    for (let round = -settings.warmup; round < settings.runs; round++) {
      if (settings.maxOther > 0 && round >= 0) waitedS += await waitQuiet(settings.maxOther, settings.quietWaitS);
      log(round < 0 ? `warm-up round ${round + settings.warmup + 1}/${settings.warmup}` : `run ${round + 1}/${settings.runs} (load ${loadNow().join(' ')})`);
      const order = round % 2 === 0 ? kinds : [...kinds].reverse();
      for (const kind of order) {
        if (round < 0) {
          await runKind(kind);
          continue;
        }
        samples.set(kind, [...(samples.get(kind) ?? []), await sample(kind)]);
      }
    }
    const elapsedS = (performance.now() - started) / 1000;

    // ------------------------------------------------------------ report
    const mbps = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000);
    const get = (k: Kind): Sample[] => samples.get(k)!;
    const floorMs = summarize(get('curl-floor').map((x) => x.wallMs)).median;
    const curlRangeMbps = summarize(get('curl-gunzip-range').map((x) => mbps(x.bytes, x.wallMs))).median;
    const labels: Record<Kind, string> = {
      'engine-cold-one': 'engine cold, one readFile of the whole file',
      'engine-cold-seq': `engine cold, ${settings.readBytes / 1024} KiB sequential readFile calls`,
      'engine-cold-seq-no-readahead': `engine cold, ${settings.readBytes / 1024} KiB sequential readFile calls, read-ahead off`,
      'curl-gunzip-range': "curl -r (the file's members) \\| gunzip",
      'node-fetch-gunzip-range': "Node fetch with Range (the file's members) → createGunzip",
      'curl-gunzip-blob': 'curl (whole blob) \\| gunzip',
      'curl-floor': 'curl -r 0-9 \\| gunzip (start-up floor)',
    };
    const rows = kinds.map((k) => {
      const ss = get(k);
      const wall = summarize(ss.map((x) => x.wallMs));
      const isFloor = k === 'curl-floor';
      const tp = isFloor ? null : summarize(ss.map((x) => mbps(x.bytes, x.wallMs)));
      const cpu = ss.every((x) => x.cpuMs !== null) ? summarize(ss.map((x) => x.cpuMs!)) : null;
      const other = ss.map((x) => x.load.otherCores).filter((x): x is number => x !== null);
      const isCurl = k.startsWith('curl');
      return [
        labels[k], isFloor ? '' : (ss[0]!.bytes / MiB).toFixed(1), formatSummary(wall, 1), tp ? formatSummary(tp, 0) : '',
        tp ? `${(tp.median / curlRangeMbps).toFixed(2)}×` : '',
        isCurl && !isFloor ? mbps(ss[0]!.bytes, wall.median - floorMs).toFixed(0) : '',
        cpu ? cpu.median.toFixed(0) : 'n/a',
        other.length ? `${summarize(other).median.toFixed(2)} (${summarize(other).max.toFixed(2)})` : 'n/a',
      ];
    });
    const coldRows = (['engine-cold-one', 'engine-cold-seq', 'engine-cold-seq-no-readahead'] as const).map((k) => {
      const ss = get(k);
      const e = ss.map((x) => x.engine!);
      const fetch = summarize(e.map((x) => x.fetchMs));
      const wall = summarize(e.map((x) => x.wallMs));
      return [
        labels[k], String(e[0]!.requests), String(e[0]!.ranges), String(e[0]!.fetchedBytes), `${((e[0]!.fetchedBytes / fileCompressed) * 100).toFixed(1)}%`,
        formatSummary(fetch, 1), (wall.median - fetch.median).toFixed(1),
        summarize(ss.map((x) => x.load.ownRunqWaitMsPerS ?? 0)).median.toFixed(0),
        summarize(ss.map((x) => x.load.registryCores)).median.toFixed(2),
      ];
    });
    const warmAll = [...get('engine-cold-one'), ...get('engine-cold-seq'), ...get('engine-cold-seq-no-readahead')].map((x) => x.warm!);
    const warmSeq = summarize(warmAll.flatMap((w) => w.seqMs.map((ms) => mbps(node.size, ms))));
    const warmOne = summarize(warmAll.map((w) => mbps(node.size, w.oneCallMs)));
    const coldOne = summarize(get('engine-cold-one').map((x) => mbps(x.bytes, x.wallMs)));
    const coldSeq = summarize(get('engine-cold-seq').map((x) => mbps(x.bytes, x.wallMs)));
    const redone = [...samples.values()].flat().reduce((n, x) => n + x.redone, 0);

    const lines: string[] = [];
    lines.push(`## Engine reads: ${(node.size / MiB).toFixed(0)} MiB file from a local registry (${settings.runs} runs, interleaved, ${settings.warmup} warm-up round)`, '');
    lines.push(`Machine: ${describeMachine(machine)}`, '');
    lines.push(`Layer: \`${BIG}\`, ${node.size} B of this machine's shared libraries and executables concatenated, in ${node.chunks.length} chunks ` +
      `(convertLayer defaults: 4 MiB chunks, gzip level 9), ${fileCompressed} B compressed (${((fileCompressed / node.size) * 100).toFixed(1)}%), ` +
      `plus ${layer.smallFiles} small files (${(layer.smallBytes / MiB).toFixed(1)} MiB); blob ${blob.length} B, ${converted.uncompressedSize} B uncompressed. ` +
      `Served by Distribution (docker-registry, filesystem storage) on 127.0.0.1; the engine reads through RemoteBlob (undici, one ` +
      `RegistryClient for the whole run, so its connection is reused) with ${settings.threads} decode workers, no disk cache and the engine's default ` +
      `tuning (task ${DEFAULT_TUNING.taskBytes} B; on-demand reads also load the next ${DEFAULT_TUNING.readAheadChunks} chunks of the file and the ` +
      `members within ${DEFAULT_CONFIG.blob.read_ahead_bytes} B after, not waited for). MB/s = 10^6 B/s.`, '');
    lines.push(markdownTable(
      ['measurement', 'MiB', 'wall ms median (min–max)', 'MB/s median (min–max)', 'vs curl -r \\| gunzip', 'MB/s without start-up floor', 'CPU ms', 'other procs, cores (max)'],
      rows,
    ), '');
    lines.push(`Cold reads: what they fetched (the file's members are ${fileCompressed} B) and where the time went:`, '');
    lines.push(markdownTable(
      ['cold read', 'requests', 'ranges', 'bytes fetched', 'of the file\'s compressed size', 'request in flight ms median (min–max)', 'rest ms (decode, verify, copies)', 'our run-queue wait ms/s', 'registry cores'],
      coldRows,
    ), '');
    lines.push(`Warm reads (same engine, right after the cold read; chunks in the memory cache):`, '');
    lines.push(markdownTable(['warm read', 'MB/s median (min–max)', 'samples'], [
      [`${settings.readBytes / 1024} KiB sequential readFile calls over the whole file`, formatSummary(warmSeq, 0), String(warmSeq.n)],
      ['one readFile of the whole file (concatenates the chunks: one copy)', formatSummary(warmOne, 0), String(warmOne.n)],
    ]), '');
    lines.push(
      `Targets: cold read ≥ 60% of \`curl | gunzip\` on the same bytes: one call ${((coldOne.median / curlRangeMbps) * 100).toFixed(0)}%, ` +
      `${settings.readBytes / 1024} KiB reads ${((coldSeq.median / curlRangeMbps) * 100).toFixed(0)}%; warm ≥ 1 GB/s: ${(warmSeq.median / 1000).toFixed(2)} GB/s.`,
      '',
      '*curl* rows run `sh -c "curl … | gunzip > /dev/null"` under GNU time (wall from our clock, CPU of sh + curl + gunzip); curl opens a ' +
      `new connection each time. *start-up floor* = the same pipeline for a 10-byte range (${floorMs.toFixed(1)} ms median): process start-up ` +
      'and connection set-up, which the engine (long-lived, connection reused) does not pay; *MB/s without start-up floor* subtracts it. ' +
      '*other procs* = CPU of processes other than this one, the registry and the measured children during the sample (/proc/stat), in cores; ' +
      `samples over ${settings.maxOther} were redone after waiting for a quiet machine (up to 3 times). *request in flight* = wall time during ` +
      'which a readRanges call of the engine was pending (RemoteBlob buffers a whole response before returning it). *bytes fetched* = the ' +
      'layer\'s fetchedBytes (distinct compressed bytes); read-ahead may add the members after the file. *our run-queue wait* = ' +
      'time our threads were runnable without a CPU, summed over threads, per second.',
      '',
      `Total ${elapsedS.toFixed(0)} s, of which ${waitedS.toFixed(0)} s waiting for a quiet machine; ${redone} samples redone. ` +
      `Load average at the end (1/5/15 min): ${loadNow().join(' ')}.`,
    );
    console.log(lines.join('\n'));

    const path = await writeResult('read', {
      benchmark: 'read',
      machine,
      settings,
      layer: {
        file: BIG, fileBytes: node.size, chunks: node.chunks.map((c) => ({ fileOffset: c.fileOffset, size: c.size, blobOffset: c.blobOffset, blobEnd: c.blobEnd })),
        fileCompressedBytes: fileCompressed, memberRange: [memberStart, memberEnd], smallFiles: layer.smallFiles, smallBytes: layer.smallBytes,
        blobBytes: blob.length, converted, rangeGunzipBytes: rangeOut.bytes,
      },
      summary: {
        curlRangeMbps, coldOneMbps: coldOne, coldSeqMbps: coldSeq, warmSeqMbps: warmSeq, warmOneCallMbps: warmOne,
        coldOneVsCurl: coldOne.median / curlRangeMbps, coldSeqVsCurl: coldSeq.median / curlRangeMbps, curlFloorMs: floorMs,
      },
      samples: Object.fromEntries(kinds.map((k) => [k, get(k)])),
      elapsedS,
      waitedForQuietS: waitedS,
      markdown: lines.join('\n'),
    });
    log(`wrote ${path}`);
    if (!args['no-write']) log(`wrote ${await writeTables('read', lines.join('\n'), path)}`);
  } finally {
    await client?.close();
    await reg?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
