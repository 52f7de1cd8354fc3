/**
 * Where the store process's memory goes: its resident set idle (right after
 * it serves), after W1 (resolve layer 1 + read a small file) and after W3
 * (every file of layer 2, cold, in a session of its own as in bench/e2e.ts),
 * on the python test image, for one or more store configurations (and node
 * flags) side by side, sessions interleaved. For each point: VmRSS and the
 * peak (VmHWM) of the store process (the keeper's child), its anonymous vs
 * file-backed resident memory, its PSS (file pages shared with the keeper,
 * the same node binary, count half), its thread count, and from its /metrics the
 * main isolate's V8 heap (used / total) and external memory (Buffers and
 * ArrayBuffers, SharedArrayBuffers included) and the memory chunk cache's
 * bytes. Worker isolates are not in the V8 figures: compare variants with
 * different `pool.workers` for their cost.
 *
 *   node dist/bench/footprint.js [--runs 3] [--variant 'name=TOML'] … [--env 'name=KEY=VALUE'] …
 *
 * A variant is `name=config lines` (`\n` separates lines; dotted keys such as
 * `pool.workers = 1` are plain TOML); the default is one variant, the
 * defaults. `--env 'name=NODE_OPTIONS=--max-semi-space-size=1'` sets an
 * environment variable for that variant's store processes (the keeper and
 * its child both see it), e.g. node flags or MALLOC_ARENA_MAX.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { startRegistry } from '../testkit/registry.js';
import { esgzRef, prepareImages, smallFileOf, type BenchImage } from './lib/e2e-images.js';
import { describeMachine, machineInfo, writeResult, writeTables } from './lib/machine.js';
import { summarize } from './lib/stats.js';
import { metric, scrapeMetrics, startBenchStore, w1ResolveAndRead, w3AllFiles, type BenchStore } from './lib/store-workloads.js';
import { markdownTable } from './lib/table.js';

const USAGE = `usage: node dist/bench/footprint.js [options]
  --runs N           sessions of each kind per variant (default 3)
  --variant NAME=TOML  a store configuration to measure (repeatable; default: defaults=)
  --env NAME=KEY=VALUE  environment for that variant's store processes (repeatable)
  --cli NAME=PATH    that variant runs another build's CLI (e.g. /work/main/dist/src/cli/main.js)
  --settle-ms MS     wait this long after start / after a workload before sampling (default 1000)
  --smaps            after each W3, print the store's largest resident anonymous mappings
  --no-write         print only: write neither bench/results/footprint.md nor the JSON`;

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    variant: { type: 'string', multiple: true, default: ['defaults='] },
    env: { type: 'string', multiple: true, default: [] },
    cli: { type: 'string', multiple: true, default: [] },
    'settle-ms': { type: 'string', default: '1000' },
    smaps: { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const log = (s: string): void => void process.stderr.write(s + '\n');
const MiB = 2 ** 20;

interface Variant {
  name: string;
  config: string;
  env: Record<string, string>;
  cli?: string;
}

const split = (s: string): [string, string] => {
  const i = s.indexOf('=');
  return i < 0 ? [s, ''] : [s.slice(0, i), s.slice(i + 1)];
};
const variants: Variant[] = args.variant.map((v) => {
  const [name, config] = split(v);
  const env = Object.fromEntries(args.env.map(split).filter(([n]) => n === name).map(([, kv]) => split(kv)));
  const cli = args.cli.map(split).find(([n]) => n === name)?.[1];
  return { name, config: config.replace(/\\n/g, '\n'), env, ...(cli && { cli }) };
});

/** One look at the store process. */
interface Point {
  rss: number;
  hwm: number;
  anon: number;
  file: number;
  /** Proportional set size: resident pages shared with other processes (the keeper runs the same node binary) count by share. */
  pss: number;
  threads: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  memCache: number;
  /** Chunks read back from the disk cache so far (a memory cache too small for read-ahead shows here). */
  diskHits: number;
  /** CPU seconds the store process has used so far (all its threads: main, decode workers, libuv). */
  cpu: number;
}

async function look(store: BenchStore): Promise<Point> {
  const status = await readFile(`/proc/${store.pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN) * 1024;
  const rollup = await readFile(`/proc/${store.pid}/smaps_rollup`, 'utf8').catch(() => '');
  const m = await scrapeMetrics(store.metricsUrl);
  // utime and stime, fields 14 and 15 of /proc/PID/stat (after the parenthesised command), in clock ticks (100 Hz on Linux).
  const stat = (await readFile(`/proc/${store.pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return {
    cpu: (Number(stat[11]) + Number(stat[12])) / 100,
    rss: kb('VmRSS'),
    hwm: kb('VmHWM'),
    anon: kb('RssAnon'),
    file: kb('RssFile'),
    pss: Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? NaN) * 1024,
    threads: kb('Threads') / 1024,
    heapUsed: metric(m, 'estargz_store_nodejs_heap_size_used_bytes'),
    heapTotal: metric(m, 'estargz_store_nodejs_heap_size_total_bytes'),
    external: metric(m, 'estargz_store_nodejs_external_memory_bytes'),
    memCache: metric(m, 'estargz_store_cache_bytes', { tier: 'memory' }),
    diskHits: metric(m, 'estargz_store_cache_requests_total', { tier: 'disk', result: 'hit' }),
  };
}

/** The resident anonymous mappings of a process, largest first (V8 heap pages, malloc arenas of each thread, thread stacks…), summed by size class. */
async function largestMappings(pid: number): Promise<string> {
  const text = await readFile(`/proc/${pid}/smaps`, 'utf8');
  const maps: { range: string; name: string; size: number; rss: number }[] = [];
  let cur: { range: string; name: string; size: number; rss: number } | undefined;
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+-[0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      cur = { range: head[1]!, name: head[2]!, size: 0, rss: 0 };
      maps.push(cur);
      continue;
    }
    const kv = /^(Size|Anonymous):\s+(\d+) kB/.exec(line);
    if (kv && cur) cur[kv[1] === 'Size' ? 'size' : 'rss'] = Number(kv[2]) * 1024;
  }
  const anon = maps.filter((m) => m.rss > 0).sort((a, b) => b.rss - a.rss);
  const bySize = new Map<string, { n: number; rss: number }>();
  for (const m of anon) {
    const k = `${m.name || '[anon]'} ${(m.size / MiB).toFixed(m.size < MiB ? 2 : 0)} MiB`;
    const e = bySize.get(k) ?? { n: 0, rss: 0 };
    e.n++;
    e.rss += m.rss;
    bySize.set(k, e);
  }
  const rows = [...bySize].sort((a, b) => b[1].rss - a[1].rss).slice(0, 15);
  return rows.map(([k, e]) => `    ${(e.rss / MiB).toFixed(1).padStart(6)} MiB resident in ${e.n} × ${k}`).join('\n');
}

type Stage = 'idle' | 'W1' | 'W3' | 'W3+settle';
type Samples = Record<Stage, Point[]>;

/** A workload's wall time and the CPU seconds the store spent in it (W1: since start, W3: after the untimed resolve), a figure a busy machine blurs less than wall time. */
async function session(v: Variant, img: BenchImage, host: string, kind: 'W1' | 'W3', settleMs: number, into: Samples): Promise<{ seconds: number; cpu: number }> {
  const store = await startBenchStore({
    config: v.config,
    logLevel: 'warn',
    env: v.env,
    ...(v.cli && { cli: v.cli }),
  });
  try {
    await sleep(settleMs);
    const idle = await look(store);
    into.idle.push(idle);
    const ref = esgzRef(host, img);
    const [l1, l2] = [img.layers[0]!, img.layers[1] ?? img.layers[0]!];
    if (kind === 'W1') {
      const r = await w1ResolveAndRead(store.layerDir(ref, l1.lazy.key), smallFileOf(l1));
      const p = await look(store);
      into.W1.push(p);
      return { seconds: r.seconds, cpu: p.cpu - idle.cpu };
    }
    const dir = store.layerDir(ref, l2.lazy.key);
    await stat(join(dir, 'diff'));
    const before = await look(store);
    const r = await w3AllFiles(dir, l2.fileBytes);
    const p = await look(store);
    into.W3.push(p);
    if (args.smaps) log(await largestMappings(store.pid));
    await sleep(settleMs);
    into['W3+settle'].push(await look(store));
    return { seconds: r.seconds, cpu: p.cpu - before.cpu };
  } finally {
    await store.stop();
  }
}

async function main(): Promise<void> {
  const runs = Number(args.runs);
  const machine = machineInfo();
  const settleMs = Number(args['settle-ms']);
  log(`machine: ${describeMachine(machine)}`);
  const reg = await startRegistry();
  try {
    const [img] = await prepareImages(reg.host, ['python'], log);
    const results = new Map<string, { samples: Samples; w1: { seconds: number; cpu: number }[]; w3: { seconds: number; cpu: number }[] }>();
    for (const v of variants) results.set(v.name, { samples: { idle: [], W1: [], W3: [], 'W3+settle': [] }, w1: [], w3: [] });
    for (let run = 0; run < runs; run++) {
      // Interleaved: every variant's W1 and W3 session in each run, the order rotating.
      const order = variants.flatMap((v) => (['W1', 'W3'] as const).map((k) => ({ v, k })));
      for (let i = 0; i < order.length; i++) {
        const { v, k } = order[(i + run) % order.length]!;
        const r = results.get(v.name)!;
        const s = await session(v, img!, reg.host, k, settleMs, r.samples);
        (k === 'W1' ? r.w1 : r.w3).push(s);
        const p = r.samples[k].at(-1)!;
        log(`  run ${run + 1}/${runs} ${v.name} ${k}: ${s.seconds.toFixed(3)} s (store CPU ${s.cpu.toFixed(2)} s), RSS ${(p.rss / MiB).toFixed(0)} MiB, peak ${(p.hwm / MiB).toFixed(0)} MiB`);
      }
    }
    const med = (xs: number[]): string => (xs.length ? (summarize(xs).median / MiB).toFixed(1) : '—');
    const rows: string[][] = [];
    for (const v of variants) {
      const r = results.get(v.name)!;
      for (const stage of ['idle', 'W1', 'W3', 'W3+settle'] as const) {
        const ps = r.samples[stage];
        const secs = stage === 'W1' ? r.w1 : stage === 'W3' ? r.w3 : [];
        rows.push([
          v.name, stage, med(ps.map((p) => p.rss)), med(ps.map((p) => p.hwm)), med(ps.map((p) => p.anon)), med(ps.map((p) => p.file)), med(ps.map((p) => p.pss)),
          med(ps.map((p) => p.heapUsed)), med(ps.map((p) => p.heapTotal)), med(ps.map((p) => p.external)), med(ps.map((p) => p.memCache)),
          ps.length ? String(summarize(ps.map((p) => p.threads)).median) : '—',
          ps.length ? String(summarize(ps.map((p) => p.diskHits)).median) : '—',
          secs.length ? summarize(secs.map((x) => x.seconds)).median.toFixed(3) : '',
          secs.length ? summarize(secs.map((x) => x.cpu)).median.toFixed(2) : '',
        ]);
      }
    }
    const md = [
      `# Store footprint (python image), medians of ${runs} sessions per variant and kind`, '',
      `Machine: ${describeMachine(machine)}`, '',
      ...variants.map((v) => `- **${v.name}**: ${v.config.trim() ? `\`${v.config.trim().replace(/\n/g, '; ')}\`` : 'defaults'}${Object.entries(v.env).map(([k, x]) => `, ${k}=\`${x}\``).join('')}${v.cli ? `, CLI ${v.cli}` : ''}`), '',
      markdownTable(['variant', 'point', 'RSS MiB', 'peak MiB', 'anon MiB', 'file MiB', 'PSS MiB', 'heap used', 'heap total', 'external', 'mem cache', 'threads', 'disk cache hits', 'workload s', 'store CPU s'], rows),
    ].join('\n');
    console.log(md);
    if (!args['no-write']) {
      // Medians per variant and point, for report.ts (idle, W1, W3 RSS and peaks).
      const medians = Object.fromEntries(variants.map((v) => {
        const r = results.get(v.name)!;
        return [v.name, Object.fromEntries((['idle', 'W1', 'W3', 'W3+settle'] as const).map((stage) => {
          const ps = r.samples[stage];
          return [stage, ps.length ? { rssMiB: summarize(ps.map((p) => p.rss)).median / MiB, peakMiB: summarize(ps.map((p) => p.hwm)).median / MiB } : null];
        }))];
      }));
      const path = await writeResult('footprint', { machine, args, runs, variants, medians, samples: Object.fromEntries(results) });
      log(`wrote ${await writeTables('footprint', md, path)} and ${path}`);
    }
  } finally {
    await reg.stop();
  }
}

await main();
