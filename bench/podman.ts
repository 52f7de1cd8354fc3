/**
 * HelloBench-style podman benchmark: `podman pull` + `podman run IMG python3
 * -c 'import json,email,http.client,sqlite3'` on the python test image,
 *
 *  - gzip: the plain gzip image, a normal full pull (no store);
 *  - lazy: the eStargz image through the store as an additional layer store;
 *  - lazy+prio: the same image converted with --prioritized-files = the files
 *    the command touches (found by running it on this machine), so the store
 *    prefetches them when it resolves the layers;
 *  - lazy+opt: the image converted by our own `image optimize` (run once in
 *    set-up, timed: it runs the command in a container on a recording store
 *    and puts the files it read first in each layer), through the store;
 *  - go-lazy, go-lazy+prio: the same two images through the Go reference
 *    store (bench/lib/goref.ts: containerd/stargz-snapshotter's store package,
 *    Debian's v0.12.0, behind our own small main) instead of ours;
 *  - p5-gzip, p5-lazy, p5-zstd, p5-zstd-own: podman 5.4 (Debian 13's, in the
 *    chroot of testkit/podman5.ts): the gzip image pulled in full; the
 *    eStargz image through our store; the same layers as zstd:chunked
 *    (testkit/zstd-chunked-writer.ts, podman 5's layout) through our store,
 *    looked up by manifest checksum; and that zstd:chunked image pulled by
 *    podman 5 itself with no store (its own chunked pull). podman 4.3.1 asks
 *    no layer store for zstd:chunked, hence podman 5 for these.
 *
 * With --link RTT/MBPS every variant reaches the registry through
 * bench/lib/shaper.ts (as bench/wan.ts does): the image references name the
 * shaper's 127.0.0.1:port, which podman's registries.conf lists as insecure
 * (the store and the Go store's mirror entry talk plain HTTP to 127.0.0.0/8
 * anyway); images are pushed, converted and optimized directly.
 *
 * Every run uses fresh podman storage (startPodman + cleanup) and, for the
 * lazy variants, a fresh store process with a fresh cache root. Variants are
 * interleaved. Registry bytes come from Distribution's access log by user
 * agent (`containers/` = podman, `estargz-store` = the store). Writes
 * bench/results/podman.md (podman-<RTT>ms-<MBPS>mbit.md with --link) and
 * bench/results/podman-<timestamp>.json (with `link` set with --link).
 *
 *   node dist/bench/podman.js [--runs 5] [--link 50/50] [--variants gzip,lazy,lazy+prio,lazy+opt,go-lazy,go-lazy+prio,p5-gzip,p5-lazy,p5-zstd,p5-zstd-own]
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { startPodman } from '../testkit/podman.js';
import { ensurePodman5Chroot, startPodman5 } from '../testkit/podman5.js';
import { startRegistry, type Registry } from '../testkit/registry.js';
import { CLI, convertImage, esgzRef, gzipRef, lazyRef, prepareImages, type BenchImage } from './lib/e2e-images.js';
import { buildGoref, gorefConfig, startGorefStore, type GorefStore } from './lib/goref.js';
import { describeMachine, loadNow, machineInfo, writeResult, writeTables } from './lib/machine.js';
import { formatSummary, summarize } from './lib/stats.js';
import { logMark, peakRss, scrapeMetrics, startBenchStore, summarizeMetrics, trafficSince, type BenchStore, type Traffic } from './lib/store-workloads.js';
import { waitQuiet } from './lib/quiet.js';
import { startShaper, type Shaper } from './lib/shaper.js';
import { markdownTable } from './lib/table.js';

const run = promisify(execFile);

const USAGE = `usage: node dist/bench/podman.js [options]
  --runs N           runs of every variant (default 5)
  --variants LIST    gzip, lazy, lazy+prio, lazy+opt, go-lazy, go-lazy+prio, p5-gzip, p5-lazy, p5-zstd, p5-zstd-own
                     (default all; the go- ones are left out with a warning when the Go store cannot
                     be built, the p5- ones when podman 5's chroot (testkit/podman5.ts) cannot)
  --link RTT/MBPS    reach the registry through the shaping proxy (bench/lib/shaper.ts) at RTT ms and
                     MBPS Mbit/s each way, e.g. 50/50 (default: direct, loopback)
  --store-config TOML extra config lines for the store
  --goref-bin BIN    a gorefstore binary to use instead of building one
  --goref-config TOML extra config lines for the Go store
  --no-write         print only: leave bench/results/podman.md alone
  --max-other CORES  before each run wait for a quiet 250 ms (≤ CORES busy; default 0.3; 0 = don't wait)
  --quiet-wait S     wait at most S seconds for it (default 5)`;

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    variants: { type: 'string' },
    link: { type: 'string' },
    'store-config': { type: 'string', default: '' },
    'goref-bin': { type: 'string' },
    'goref-config': { type: 'string', default: '' },
    'max-other': { type: 'string', default: '0.3' },
    'no-write': { type: 'boolean', default: false },
    'quiet-wait': { type: 'string', default: '5' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const ALL_VARIANTS = ['gzip', 'lazy', 'lazy+prio', 'lazy+opt', 'go-lazy', 'go-lazy+prio', 'p5-gzip', 'p5-lazy', 'p5-zstd', 'p5-zstd-own'] as const;
type Variant = (typeof ALL_VARIANTS)[number];
const isGo = (v: Variant): boolean => v.startsWith('go-');
/** Run with podman 5.4 in its chroot rather than the machine's podman 4.3.1. */
const isP5 = (v: Variant): boolean => v.startsWith('p5-');
/** The variant pulls the zstd:chunked image. */
const isZstd = (v: Variant): boolean => v.startsWith('p5-zstd');
/** No store: podman pulls every layer itself. */
const isFull = (v: Variant): boolean => v === 'gzip' || v === 'p5-gzip' || v === 'p5-zstd-own';
/** Ours, through the store (the issue's W7 target applies). */
const isOurs = (v: Variant): boolean => !isGo(v) && !isFull(v);
/** The variant's image: the eStargz image, or the one converted with the prioritized files. */
const isPrio = (v: Variant): boolean => v.endsWith('+prio');
/** The variant's image is the one `image optimize` converted. */
const isOpt = (v: Variant): boolean => v.endsWith('+opt');
const runs = Number(args.runs);
let variants = (args.variants ?? ALL_VARIANTS.join(',')).split(',').filter(Boolean) as Variant[];
const link = args.link === undefined ? null : parseLink(args.link);
if (!Number.isInteger(runs) || runs < 1 || variants.some((v) => !ALL_VARIANTS.includes(v)) || link === undefined) {
  console.error(USAGE);
  process.exit(2);
}
const STORE_CONFIG = args['store-config'].replace(/\\n/g, '\n');
const GOREF_EXTRA = args['goref-config'].replace(/\\n/g, '\n');
const log = (s: string): void => void process.stderr.write(s + '\n');
const MB = 1e6;
const COMMAND = ['python3', '-c', 'import json,email,http.client,sqlite3'];
/** The issue's target for pull + run through our store (set from the reference store's published 1.36 s for a similar image). */
const TARGET_SECONDS = 1.0;

/** The emulated link of --link: RTT in ms and bandwidth in Mbit/s each way. */
interface Link {
  rttMs: number;
  mbps: number;
}

/** "50/50" → 50 ms RTT, 50 Mbit/s; undefined when it is not two non-negative numbers. */
function parseLink(s: string): Link | undefined {
  const m = /^(\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)$/.exec(s.trim());
  return m ? { rttMs: Number(m[1]), mbps: Number(m[2]) } : undefined;
}

/** "50 ms / 50 Mbit/s". */
const describeLink = (l: Link): string => `${l.rttMs} ms RTT / ${l.mbps} Mbit/s`;

/**
 * The image paths `python3 -c 'import json,email,http.client,sqlite3'`
 * touches, found by running it on this machine (the image is built from its
 * files): the interpreter, every module's source and cached bytecode, and
 * every shared object mapped.
 */
async function filesTouched(img: BenchImage): Promise<string[]> {
  const script = [
    'import json,email,http.client,sqlite3,sys,os,importlib.util',
    'files=set([os.path.realpath(sys.executable)])',
    'for m in list(sys.modules.values()):',
    '    f=getattr(m,"__file__",None)',
    '    if not f: continue',
    '    files.add(os.path.realpath(f))',
    '    if f.endswith(".py"):',
    '        try: files.add(os.path.realpath(importlib.util.cache_from_source(f)))',
    '        except Exception: pass',
    'for line in open("/proc/self/maps"):',
    '    parts=line.split()',
    '    if len(parts)>=6 and parts[5].startswith("/"): files.add(os.path.realpath(parts[5]))',
    'print("\\n".join(sorted(files)))',
  ].join('\n');
  const { stdout } = await run('/usr/bin/python3.11', ['-c', script]);
  const inImage = new Set(img.layers.flatMap((l) => l.filePaths));
  return stdout.split('\n').map((p) => p.replace(/^\/+/, '')).filter((p) => inImage.has(p));
}

/** What `image optimize` did in set-up (from its --json), and how long it took. */
interface Optimized {
  seconds: number;
  recorded: { layer: number; digest: string; paths: string[] }[];
  timedOut: boolean;
  exitCode: number | null;
}

/**
 * Converts the gzip image with our CLI's `image optimize` (as a user would:
 * a child process, as root) into the `esgz-opt` tag, with the benchmark's
 * command as the workload.
 */
async function optimizeImage(host: string, img: BenchImage): Promise<Optimized> {
  const started = performance.now();
  const args = [CLI, 'image', 'optimize', gzipRef(host, img), esgzRef(host, img, 'esgz-opt'), '--json', '--progress', 'none', '--', ...COMMAND];
  const { stdout } = await run(process.execPath, args, { maxBuffer: 64 << 20, timeout: 600_000, env: { ...process.env, ESTARGZ_LOG_LEVEL: 'warn' } })
    .catch((err: Error & { stderr?: string }) => {
      throw new Error(`image optimize failed: ${err.message}${err.stderr ? `\n${err.stderr.slice(-3000)}` : ''}`);
    });
  const seconds = (performance.now() - started) / 1000;
  const r = JSON.parse(stdout) as Omit<Optimized, 'seconds'>;
  return { seconds, recorded: r.recorded, timedOut: r.timedOut, exitCode: r.exitCode };
}

/** Files per layer of `paths` (the layer that has each; a path in both counts for both). */
function perLayer(img: BenchImage, paths: readonly string[]): number[] {
  return img.layers.map((l) => {
    const has = new Set(l.filePaths);
    return paths.filter((p) => has.has(p)).length;
  });
}

interface RunSample {
  variant: Variant;
  run: number;
  pullSeconds: number;
  runSeconds: number;
  totalSeconds: number;
  pullTraffic: Traffic;
  runTraffic: Traffic;
  podmanLayerGets: number;
  storePeakRssBytes?: number;
  storeMetrics?: Record<string, unknown>;
  before?: { busyCores: number; quiet: boolean; waitedMs: number };
}

/** What a run needs of either podman: podman 4.3.1 (testkit/podman.ts) or podman 5.4 in its chroot (testkit/podman5.ts). */
interface AnyPodman {
  run(args: string[], opts?: { timeoutMs?: number }): Promise<{ stdout: string; stderr: string }>;
  close(): Promise<void>;
}

/** `host`: the registry's host:port as the image references name it (the shaper's with --link), talked to over plain HTTP. */
async function startAnyPodman(host: string, variant: Variant, storeMnt: string | undefined): Promise<AnyPodman> {
  if (!isP5(variant)) {
    const p = await startPodman({
      additionalLayerStores: storeMnt ? [`${storeMnt}:ref`] : [],
      registriesExtra: `[[registry]]\nlocation = "${host}"\ninsecure = true\n`,
    });
    return { run: (a, o) => p.run(a, o), close: () => p.cleanup() };
  }
  // podman 5's session always names a layer store (and checks that something
  // is mounted there); with no store it gets an empty tmpfs, where every
  // lookup misses at once.
  const empty = storeMnt ? undefined : await emptyMount();
  try {
    const p = await startPodman5({ storeMnt: storeMnt ?? empty!.dir, insecureRegistries: [host] });
    return {
      run: (a, o) => p.run(a, o),
      close: async () => {
        await p.stop();
        await empty?.remove();
      },
    };
  } catch (err) {
    await empty?.remove();
    throw err;
  }
}

/** An empty tmpfs on a new directory: a mount point with nothing in it. */
async function emptyMount(): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'estargz-bench-nostore-'));
  await run('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'estargz-bench-nostore', dir]);
  return {
    dir,
    remove: async () => {
      await run('umount', [dir]).catch(() => undefined); // already gone: nothing to undo
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function refOf(host: string, img: BenchImage, zimg: BenchImage | undefined, variant: Variant): string {
  if (isZstd(variant)) return lazyRef(host, zimg!);
  if (variant === 'gzip' || variant === 'p5-gzip') return gzipRef(host, img);
  return esgzRef(host, img, isPrio(variant) ? 'esgz-prio' : isOpt(variant) ? 'esgz-opt' : 'esgz');
}

/**
 * One pull + run. `host` is what the image references name: the registry's
 * host:port, or the shaper's in front of it (--link); `reg` is the registry
 * itself, for its access log.
 */
async function oneRun(reg: Registry, host: string, img: BenchImage, zimg: BenchImage | undefined, variant: Variant, runIndex: number, goBin: string | null): Promise<RunSample> {
  const ref = refOf(host, img, zimg, variant);
  let store: BenchStore | GorefStore | undefined;
  let podman: AnyPodman | undefined;
  try {
    // The Go store names the host in a plain-HTTP mirror entry; ours talks plain HTTP to 127.0.0.0/8 (src/registry/hosts.ts isLocalHost).
    if (isGo(variant)) store = await startGorefStore({ bin: goBin!, config: gorefConfig([host], GOREF_EXTRA) });
    else if (!isFull(variant)) store = await startBenchStore({ config: STORE_CONFIG });
    podman = await startAnyPodman(host, variant, store?.mnt);
    const m0 = await logMark(reg);
    const t0 = performance.now();
    await podman.run(['pull', '-q', ref], { timeoutMs: 300_000 });
    const t1 = performance.now();
    const pullTraffic = await trafficSince(reg, m0);
    const m1 = await logMark(reg);
    const t2 = performance.now();
    await podman.run(['run', '--rm', '--network', 'none', ref, ...COMMAND], { timeoutMs: 300_000 });
    const t3 = performance.now();
    const runTraffic = await trafficSince(reg, m1);
    const sample: RunSample = {
      variant, run: runIndex,
      pullSeconds: (t1 - t0) / 1000,
      runSeconds: (t3 - t2) / 1000,
      totalSeconds: (t1 - t0 + t3 - t2) / 1000,
      pullTraffic, runTraffic,
      podmanLayerGets: 0,
    };
    // Did podman fetch any layer itself? (With the store it should fetch only the manifest and config.)
    const layerDigests = new Set((isZstd(variant) ? zimg! : img).layers.flatMap((l) => [l.gz.digest, l.lazy.digest]));
    const lines = (await reg.logLines()).slice(m0);
    sample.podmanLayerGets = lines.filter((l) => /useragent="?containers\//.test(l) && /http\.request\.method=GET/.test(l) && [...layerDigests].some((d) => l.includes(d)) && l.includes('response completed')).length;
    if (store) {
      sample.storePeakRssBytes = await peakRss(store.pid);
      // The Go store has no /metrics.
      if ('metricsUrl' in store) sample.storeMetrics = summarizeMetrics(await scrapeMetrics(store.metricsUrl));
    }
    return sample;
  } finally {
    await podman?.close();
    await store?.stop();
  }
}

async function main(): Promise<void> {
  const machine = machineInfo();
  log(`machine: ${describeMachine(machine)}`);
  await run('podman', ['--version']).catch(() => {
    throw new Error('podman is missing: install the Debian packages podman and runc (scripts/install-system-deps.sh)');
  });
  let goBin: string | null = null;
  if (variants.some(isGo) && args['goref-bin']) goBin = args['goref-bin'];
  else if (variants.some(isGo)) {
    const b = await buildGoref();
    if ('error' in b) {
      if (args.variants) throw new Error(`the Go store variants were asked for but cannot be built: ${b.error}`);
      log(`WARNING: measuring without the Go store: ${b.error}`);
      variants = variants.filter((v) => !isGo(v));
    } else {
      goBin = b.path;
      log(`Go reference store: ${b.path} (${b.cached ? 'cached build' : 'built'})`);
    }
  }
  if (variants.some(isP5)) {
    try {
      const c = await ensurePodman5Chroot();
      log(`podman 5: ${c.description}`);
    } catch (err) {
      if (args.variants) throw new Error(`podman 5 variants were asked for but its chroot cannot be had: ${(err as Error).message}`);
      log(`WARNING: measuring without podman 5: ${(err as Error).message.split('\n')[0]}`);
      variants = variants.filter((v) => !isP5(v));
    }
  }
  const reg = await startRegistry();
  let shaper: Shaper | undefined;
  try {
    const [img, zimg] = await prepareImages(reg.host, variants.some(isZstd) ? ['python', 'python-zstd'] : ['python'], log);
    // The hand-found list: lazy+prio's files, and what lazy+opt's recorded list is set beside.
    const prioritized = variants.some(isPrio) || variants.some(isOpt) ? await filesTouched(img!) : [];
    if (variants.some(isPrio)) {
      log(`converting with ${prioritized.length} prioritized files …`);
      await convertImage(gzipRef(reg.host, img!), esgzRef(reg.host, img!, 'esgz-prio'), prioritized);
    }
    let optimized: Optimized | undefined;
    if (variants.some(isOpt)) {
      log('image optimize: recording what the command reads and converting with it …');
      optimized = await optimizeImage(reg.host, img!);
      log(`image optimize took ${optimized.seconds.toFixed(1)} s; recorded ${optimized.recorded.map((l) => `layer ${l.layer}: ${l.paths.length}`).join(', ')} ` +
        `file(s) (hand-found: ${perLayer(img!, prioritized).map((n, i) => `layer ${i + 1}: ${n}`).join(', ')} of ${prioritized.length})` +
        `${optimized.timedOut ? '; the workload timed out' : optimized.exitCode !== 0 ? `; the workload exited with ${optimized.exitCode}` : ''}`);
    }
    // With --link: one shaper for the whole run, in front of the registry; every variant's references name it.
    if (link) {
      shaper = await startShaper({ targetHost: '127.0.0.1', targetPort: Number(reg.host.split(':')[1]), rttMs: link.rttMs, mbps: link.mbps });
      log(`link: ${describeLink(link)} through ${shaper.host}`);
    }
    const host = shaper?.host ?? reg.host;
    const samples: RunSample[] = [];
    for (let r = 0; r < runs; r++) {
      const order = variants.map((_, i) => variants[(i + r) % variants.length]!);
      for (const v of order) {
        const maxOther = Number(args['max-other']);
        const before = maxOther > 0 ? await waitQuiet(maxOther, Number(args['quiet-wait']) * 1000) : undefined;
        const s = await oneRun(reg, host, img!, zimg, v, r, goBin);
        if (before) s.before = before;
        samples.push(s);
        log(`  run ${r + 1}/${runs} ${v}: pull ${s.pullSeconds.toFixed(2)} s + run ${s.runSeconds.toFixed(2)} s = ${s.totalSeconds.toFixed(2)} s; ` +
          `podman ${((s.pullTraffic.podman.bytes + s.runTraffic.podman.bytes) / MB).toFixed(2)} MB, store ${((s.pullTraffic.store.bytes + s.runTraffic.store.bytes) / MB).toFixed(2)} MB` +
          `; layer GETs by podman ${s.podmanLayerGets}`);
      }
    }
    const shaped = shaper && link ? { ...link, options: shaper.options, stats: shaper.stats() } : null;
    const md = report(machine, img!, zimg, samples, { prioritized, optimized, link: shaped });
    console.log(md);
    const path = await writeResult('podman', {
      machine, args, storeConfig: STORE_CONFIG, runs, command: COMMAND, prioritized, samples,
      // null: loopback, no shaper (bench/report.ts reads LAN figures only from such a run).
      link: shaped,
      ...(optimized && { optimized }),
      ...(goBin && { goref: { bin: goBin, config: gorefConfig([host], GOREF_EXTRA) } }),
    });
    log(`raw samples: ${path}`);
    if (!args['no-write']) {
      log(`wrote ${await writeTables(link ? tablesName(link) : 'podman', md, path)}`);
    }
  } finally {
    await shaper?.close();
    await reg.stop();
  }
}

/** Where a --link run's tables go (beside the LAN run's podman.md, which it leaves alone); bench/report.ts reads it by this name. */
function tablesName(l: Link): string {
  return `podman-${l.rttMs}ms-${l.mbps}mbit`;
}

interface ReportMeta {
  /** The files the command touches, found by running it on this machine (lazy+prio's list). */
  prioritized: string[];
  optimized: Optimized | undefined;
  link: (Link & { stats: ReturnType<Shaper['stats']> }) | null;
}

function report(machine: ReturnType<typeof machineInfo>, img: BenchImage, zimg: BenchImage | undefined, samples: RunSample[], meta: ReportMeta): string {
  const { prioritized, optimized, link: shaped } = meta;
  const out: string[] = [];
  out.push(`# podman benchmark (HelloBench-style): pull + run python${shaped ? `, over ${describeLink(shaped)}` : ''}`, '');
  out.push(`Machine: ${describeMachine(machine)}`, '');
  if (shaped) {
    out.push(`**Link:** every variant reached the registry through bench/lib/shaper.ts at ${describeLink(shaped)} each way (one-way delay RTT/2, a token-bucket ` +
      'limit per direction shared by all connections, the TCP handshake charged; no loss, no slow start, so a real path is slower): the image references name the ' +
      'proxy\'s 127.0.0.1:port, listed as insecure in podman\'s registries.conf; the stores talk plain HTTP to it. Images were pushed, converted and optimized directly. ' +
      `Proxy: ${shaped.stats.connections} connections, ${(shaped.stats.bytesDown / MB).toFixed(1)} MB down, ${(shaped.stats.bytesUp / MB).toFixed(2)} MB up. ` +
      `The ≤ ${TARGET_SECONDS} s target is for loopback and is not applied here.`, '');
  }
  out.push(`\`podman pull IMG\` then \`podman run --rm --network none IMG ${COMMAND.slice(0, 2).join(' ')} '${COMMAND[2]}'\`, ${runs} runs per variant, interleaved; ` +
    'fresh podman storage (graphroot, runroot) every run, and for the lazy variants a fresh store process and cache root. ' +
    `podman with private configs (testkit/podman.ts), runc. Store config: ${STORE_CONFIG.trim() ? `\`${STORE_CONFIG.trim()}\`` : 'defaults'}. Load average at the end ${loadNow().join(' ')}.`, '');
  const l = img.layers;
  out.push(`Image: the python test image (${l.map((x) => `layer ${x.index}: ${x.files} files, ${(x.fileBytes / MB).toFixed(1)} MB, gzip ${(x.gz.size / MB).toFixed(1)} MB, eStargz ${(x.lazy.size / MB).toFixed(1)} MB`).join('; ')}). ` +
    (!samples.some((s) => isGo(s.variant)) ? 'The Go reference store was not measured in this run (no go- variants).' :
    'The go- variants run the same images through the Go reference store (containerd/stargz-snapshotter `store` package v0.12.0 from Debian\'s ' +
    'golang-github-containerd-stargz-snapshotter-dev, behind our own main in bench/goref; in-memory metadata; config: defaults plus a plain-HTTP mirror entry for the registry' +
    `${GOREF_EXTRA.trim() ? ` and \`${GOREF_EXTRA.trim()}\`` : ''}), a fresh process and cache root every run like ours, interleaved with the others; ` +
    'its registry traffic is counted by its user agent (`gorefstore`); it has no /metrics.'), '');
  const median = (v: Variant): number | null => {
    const xs = samples.filter((s) => s.variant === v).map((s) => s.totalSeconds);
    return xs.length ? summarize(xs).median : null;
  };
  const rows: string[][] = [];
  for (const v of variants) {
    const ss = samples.filter((s) => s.variant === v);
    if (!ss.length) continue;
    const sum = (f: (s: RunSample) => number): string => formatSummary(summarize(ss.map(f)), 2);
    const medBytes = (f: (s: RunSample) => number): string => (summarize(ss.map(f)).median / MB).toFixed(2);
    const total = summarize(ss.map((s) => s.totalSeconds)).median;
    // Ours beside the Go store on the same image: lazy ↔ go-lazy, lazy+prio ↔ go-lazy+prio.
    const goTotal = v === 'lazy' || v === 'lazy+prio' ? median(`go-${v}`) : null;
    const vsGo = goTotal === null ? '—' : `${goTotal.toFixed(2)} s; ours ${goTotal >= total ? `${(goTotal / total).toFixed(2)}× faster` : `${(total / goTotal).toFixed(2)}× slower`}`;
    // The loopback target is not judged over a shaped link.
    const ours = isOurs(v) && !shaped;
    const verdict = ours ? (total <= TARGET_SECONDS ? 'met' : 'missed') : '—';
    // Against the full pull by the same podman: gzip (podman 4.3.1) or p5-gzip.
    const full = isFull(v) ? null : median(isP5(v) ? 'p5-gzip' : 'gzip');
    rows.push([
      v,
      sum((s) => s.pullSeconds),
      sum((s) => s.runSeconds),
      sum((s) => s.totalSeconds),
      full === null ? '—' : `${(total / full).toFixed(2)}×`,
      vsGo,
      ours ? `≤ ${TARGET_SECONDS} s` : '—',
      verdict,
      medBytes((s) => s.pullTraffic.podman.bytes + s.runTraffic.podman.bytes),
      medBytes((s) => s.pullTraffic.store.bytes + s.runTraffic.store.bytes),
      `${medBytes((s) => s.pullTraffic.store.bytes)} / ${medBytes((s) => s.runTraffic.store.bytes)}`,
      isFull(v) ? '—' : String(summarize(ss.map((s) => s.pullTraffic.store.requests + s.runTraffic.store.requests)).median),
      String(Math.max(...ss.map((s) => s.podmanLayerGets))),
      ss[0]!.storePeakRssBytes ? (summarize(ss.map((s) => s.storePeakRssBytes ?? 0)).median / 2 ** 20).toFixed(0) : '—',
    ]);
  }
  out.push(markdownTable(['variant', 'pull s median (min–max)', 'run s', 'pull + run s', '÷ full pull (gzip, same podman)', 'Go store, same image, measured: pull + run s', 'target', 'verdict', 'podman MB from registry', 'store MB from registry', 'store MB pull / run', 'store requests', 'layer GETs by podman (max)', 'store peak RSS MiB'], rows), '');
  const layerBytes = l.reduce((n, x) => n + x.gz.size, 0);
  out.push(`Layer bytes of the gzip image: ${(layerBytes / MB).toFixed(2)} MB; of the eStargz image: ${(l.reduce((n, x) => n + x.lazy.size, 0) / MB).toFixed(2)} MB. ` +
    'Columns: pull and run are the wall times of the two podman commands; registry bytes are what Distribution\'s access log says it sent, by user agent ' +
    '(`containers/…` = podman, `estargz-store` or `gorefstore` = the store; "pull / run" splits the store\'s bytes by phase, prefetch lands in the pull phase); ' +
    '"layer GETs by podman" must be 0 for the lazy variants (podman took every layer from the store).', '');
  if (samples.some((s) => isP5(s.variant))) {
    out.push('The p5- variants run podman 5.4 (Debian 13\'s, c/image 5.34, c/storage 1.57) in the chroot of testkit/podman5.ts, with its own private config and storage every run ' +
      '(the session start is not timed): p5-gzip pulls the gzip image in full (its layer store an empty directory), p5-lazy the eStargz image through our store, ' +
      `p5-zstd the same layer tars as zstd:chunked${zimg ? ` (${zimg.layers.map((x) => `${(x.lazy.size / MB).toFixed(1)} MB`).join(' + ')}; testkit/zstd-chunked-writer.ts, podman 5's layout)` : ''} ` +
      'through our store, which podman asks by manifest checksum; p5-zstd-own is that zstd:chunked image pulled by podman 5 itself with no store ' +
      '(c/storage\'s own chunked pull, or a full pull where it declines one).', '');
  }
  const befores = samples.map((s) => s.before).filter((b): b is NonNullable<RunSample['before']> => b !== undefined);
  if (befores.length) out.push(`Before each run the benchmark waited (up to --quiet-wait) for a quiet 250 ms; ${befores.filter((b) => !b.quiet).length} of ${befores.length} runs started with other processes using more than ${args['max-other']} cores.`, '');
  if (optimized) {
    const hand = new Set(prioritized);
    const rec = optimized.recorded.flatMap((x) => x.paths.map((p) => p.replace(/^\/+/, '')));
    out.push(`lazy+opt: converted in set-up by our \`image optimize <gzip image> <esgz-opt> -- ${COMMAND.slice(0, 2).join(' ')} '${COMMAND[2]}'\` ` +
      `(${optimized.seconds.toFixed(1)} s, once: convert, run on a recording store, convert again${optimized.timedOut ? '; the workload timed out' : optimized.exitCode !== 0 ? `; the workload exited with ${optimized.exitCode}` : ''}), ` +
      `which recorded ${rec.length} files (${optimized.recorded.map((x) => `layer ${x.layer}: ${x.paths.length}`).join(', ')}) ` +
      `against the ${prioritized.length} hand-found ones of lazy+prio (${perLayer(img, prioritized).map((n, i) => `layer ${i + 1}: ${n}`).join(', ')}); ` +
      `${rec.filter((p) => hand.has(p)).length} are in both lists.`, '');
  }
  if (prioritized.length && samples.some((s) => isPrio(s.variant))) out.push(`lazy+prio: converted with \`--prioritized-files\` listing the ${prioritized.length} image files the command touches (interpreter, shared objects, modules and their .pyc), found by running it on this machine.`, '');
  return out.join('\n');
}

await main();
