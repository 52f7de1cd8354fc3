/**
 * End-to-end benchmark of the store daemon on loopback: a local Distribution
 * registry, images built from this machine's files (pushed as gzip and
 * converted with our `image convert`; the python one also written as
 * zstd:chunked, as podman 5 pushes it, and looked up by manifest checksum),
 * and the store mounted as a real FUSE filesystem, measured with ordinary
 * tools (stat, dd, find, cat, sha256sum).
 *
 *   W1  lookup of layer 1's diff (resolves the layer) + read a small file
 *   W2  one large file, cold (dd bs=1M); then warm dd through FUSE
 *   W3  every file of a layer, cold (find -type f -exec cat {} +)
 *   W3p the same with parallel readers (node, --parallel-readers)
 *   W4  sha256sum <layer>/blob (the export path)
 *   W5  W3 again on the same store (warm), then warm stat
 *   W6  find diff -printf '%p %s %m\n' (metadata walk), cold
 *
 * Every session is cold: a new store process with a new cache root and a
 * new mount. Sessions are interleaved (the order rotates each run), and the
 * full-pull reference (curl | gunzip | tar -x of the gzip layer; for the
 * zstd:chunked image curl | zstd -dc | tar -x of its blob) of each
 * layer touched runs in the same rotation, as does every store session again
 * on the Go reference store (bench/lib/goref.ts: containerd/stargz-snapshotter's
 * store package, Debian's v0.12.0, behind our own small main; it reads no
 * zstd:chunked of podman's layout, so the zstd image runs on ours only). Writes
 * bench/results/e2e.md, bench/results/e2e.svg and bench/results/e2e-<timestamp>.json.
 *
 *   node dist/bench/e2e.js [--runs 5] [--images python,bookworm-like,python-zstd] [--workloads W1,W2,...] [--no-goref]
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { startRegistry } from '../testkit/registry.js';
import { formatProfile, summarizeProfiles } from './lib/cpuprofile.js';
import {
  ALL_WORKLOADS, MB, parseSelection, TARGET_WARM_DD_MBPS, TARGET_WARM_STAT_US,
  buildCases, busyNote, casesTable, formatsTable, gorefTable, layersTable, runCases, summarizeCases, type CaseSummary, type Workload,
} from './lib/e2e-cases.js';
import { prepareImages } from './lib/e2e-images.js';
import { buildGoref, gorefConfig } from './lib/goref.js';
import { describeMachine, loadNow, machineInfo, writeResult, writeTables } from './lib/machine.js';
import { fuseFloor, type FloorResult } from './lib/fuse-floor.js';
import { formatSummary, summarize } from './lib/stats.js';
import { groupedBarChart } from './lib/svg-chart.js';
import { markdownTable } from './lib/table.js';

const USAGE = `usage: node dist/bench/e2e.js [options]
  --runs N               cold runs of every workload (default 5)
  --images LIST          python, bookworm-like, python-zstd (default all three; python-zstd = the
                         python image's layers as zstd:chunked, the store asked by manifest checksum)
  --workloads LIST       W1,W2,W3,W3p,W4,W5,W6 (default all)
  --parallel-readers N   readers of W3p (default 8)
  --stat-passes N        warm stat passes over the layer's files after W5 (default 3)
  --chunk-size BYTES     image convert --chunk-size (default: the converter's, 4 MiB)
  --zstd-chunk-size B    chunk size of the zstd:chunked writer (default 65536, about c/storage's average)
  --store-config TOML    extra config lines for the store (e.g. 'noprefetch = true')
  --store-log-level L    the store's log level (default info)
  --keep-logs DIR        save every store's log there
  --cpu-prof DIR         run the stores with node --cpu-prof into DIR and print a summary
  --max-other CORES      before each session wait for a quiet 250 ms (≤ CORES busy; default 0.3; 0 = don't wait)
  --quiet-wait S         wait at most S seconds for it (default 5)
  --floor-passes N       passes of the FUSE floor (trivial in-memory FS, same tree; default 3, 0 = skip)
  --no-goref             leave out the Go reference store (default: built from Debian's source and measured side by side)
  --goref-bin BIN        a gorefstore binary to use instead of building one
  --goref-config TOML    extra config lines for the Go store (its keys, e.g. 'noprefetch = true')
  --goref-log-level L    the Go store's log level (default info)
  --no-write             print only: leave bench/results/e2e.md and e2e.svg alone
  --from-json FILE       measure nothing: render e2e.md and e2e.svg again from a results JSON`;

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    images: { type: 'string', default: 'python,bookworm-like,python-zstd' },
    workloads: { type: 'string', default: ALL_WORKLOADS.join(',') },
    'parallel-readers': { type: 'string', default: '8' },
    'stat-passes': { type: 'string', default: '3' },
    'store-config': { type: 'string', default: '' },
    'chunk-size': { type: 'string' },
    'zstd-chunk-size': { type: 'string' },
    'store-log-level': { type: 'string', default: 'info' },
    'keep-logs': { type: 'string' },
    'cpu-prof': { type: 'string' },
    'max-other': { type: 'string', default: '0.3' },
    'quiet-wait': { type: 'string', default: '5' },
    'floor-passes': { type: 'string', default: '3' },
    'no-goref': { type: 'boolean', default: false },
    'goref-bin': { type: 'string' },
    'goref-config': { type: 'string', default: '' },
    'goref-log-level': { type: 'string', default: 'info' },
    'no-write': { type: 'boolean', default: false },
    'from-json': { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const runs = Number(args.runs);
const selection = parseSelection(args.images, args.workloads);
if (!Number.isInteger(runs) || runs < 1 || !selection) {
  console.error(USAGE);
  process.exit(2);
}
const { images, workloads } = selection;
const log = (s: string): void => void process.stderr.write(s + '\n');

/** The store's configuration for every session: the defaults (background fetch starts after 5 s idle, no prefetch without a landmark). */
const STORE_CONFIG = args['store-config'].replace(/\\n/g, '\n');
/** The Go store's extra config: defaults otherwise (background fetch after 5 s idle, prefetch by landmark, TOC verified by the annotation). */
const GOREF_EXTRA = args['goref-config'].replace(/\\n/g, '\n');

/** The Go store's binary, or why it is left out (then the Go column says so and the rest runs as before). */
async function gorefBinary(): Promise<{ bin: string; key: string } | { missing: string }> {
  if (args['no-goref']) return { missing: 'left out (--no-goref)' };
  if (args['goref-bin']) return { bin: args['goref-bin'], key: 'given (--goref-bin)' };
  const b = await buildGoref();
  if ('error' in b) return { missing: b.error };
  log(`Go reference store: ${b.path} (${b.cached ? 'cached build' : 'built'})`);
  return { bin: b.path, key: b.key };
}

async function main(): Promise<void> {
  const machine = machineInfo();
  log(`machine: ${describeMachine(machine)}`);
  const reg = await startRegistry();
  try {
    const prepStarted = performance.now();
    const imgs = await prepareImages(reg.host, images, log, {
      ...(args['chunk-size'] && { chunkSize: Number(args['chunk-size']) }),
      ...(args['zstd-chunk-size'] && { zstdChunkSize: Number(args['zstd-chunk-size']) }),
    });
    log(`images ready in ${((performance.now() - prepStarted) / 1000).toFixed(1)} s`);
    const cases = buildCases(imgs, workloads);
    const goBin = await gorefBinary();
    if ('missing' in goBin) log(`WARNING: no Go store column: ${goBin.missing}`);
    const goConfig = gorefConfig([reg.host], GOREF_EXTRA);
    if (args['keep-logs']) await mkdir(args['keep-logs'], { recursive: true });
    const profDir = args['cpu-prof'];
    if (profDir) await mkdir(profDir, { recursive: true });
    const started = performance.now();
    const { samples, fullPulls, gorefSamples } = await runCases(cases, runs, {
      reg,
      refHost: reg.host,
      storeConfig: STORE_CONFIG,
      storeLogLevel: args['store-log-level'],
      ...(args['keep-logs'] && { logDir: args['keep-logs'] }),
      ...(profDir && { storeNodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profDir}`] }),
      parallelReaders: Number(args['parallel-readers']),
      quiet: Number(args['max-other']) > 0 ? { maxCores: Number(args['max-other']), maxWaitMs: Number(args['quiet-wait']) * 1000 } : null,
      statPasses: Number(args['stat-passes']),
      log,
      ...('bin' in goBin && { goref: { bin: goBin.bin, config: goConfig, logLevel: args['goref-log-level'] } }),
    });
    const wallSeconds = (performance.now() - started) / 1000;
    const sums = summarizeCases(cases, samples, fullPulls, gorefSamples);
    const floors = await floorRows(imgs, cases, Number(args['floor-passes']));
    const goref: GorefMeta = 'bin' in goBin ? { measured: true, build: goBin.key, config: goConfig } : { measured: false, why: goBin.missing };
    const meta: RunMeta = { runs, storeConfig: STORE_CONFIG, logLevel: args['store-log-level'], loadEnd: loadNow(), goref };
    const md = report(machine, imgs, sums, wallSeconds, busyNote(samples, fullPulls), meta, floors);
    console.log(md);
    if (profDir) {
      for (const p of await summarizeProfiles(profDir)) console.log('\n```\n' + formatProfile(p) + '\n```');
    }
    const path = await writeResult('e2e', {
      machine, args, storeConfig: STORE_CONFIG, runs, wallSeconds, meta,
      images: imgs.map(({ tars: _t, ...i }) => ({ ...i, layers: i.layers.map(({ filePaths: _f, ...l }) => l) })),
      summaries: sums, samples, fullPulls, gorefSamples, floors,
    });
    log(`raw samples: ${path}`);
    if (!args['no-write']) await writeOutputs(md, sums, machine.date, path);
  } finally {
    await reg.stop();
  }
}

async function writeOutputs(md: string, sums: CaseSummary[], date: string, jsonPath: string): Promise<void> {
  const tables = await writeTables('e2e', md, jsonPath);
  await writeFile(join(dirname(tables), 'e2e.svg'), chart(sums, date));
  log(`wrote ${tables} and e2e.svg`);
}

type GorefMeta = { measured: true; build: string; config: string } | { measured: false; why: string };

interface RunMeta {
  runs: number;
  storeConfig: string;
  logLevel: string;
  loadEnd: number[];
  /** The Go reference store: measured (with its build key and config) or why not. Absent in results from before it was measured. */
  goref?: GorefMeta;
}

/** --from-json: the tables and chart of an earlier run, without measuring. */
async function fromJson(file: string): Promise<void> {
  const j = JSON.parse(await readFile(file, 'utf8')) as {
    machine: ReturnType<typeof machineInfo>; wallSeconds: number; images: Awaited<ReturnType<typeof prepareImages>>; summaries: CaseSummary[];
    samples: Parameters<typeof busyNote>[0]; fullPulls: Parameters<typeof busyNote>[1]; runs: number; storeConfig: string; meta?: RunMeta; loadavgEnd?: number[];
    floors?: FloorRow[];
  };
  const meta: RunMeta = j.meta ?? { runs: j.runs, storeConfig: j.storeConfig, logLevel: 'info', loadEnd: j.loadavgEnd ?? [] };
  const md = report(j.machine, j.images, j.summaries, j.wallSeconds, busyNote(j.samples, j.fullPulls), meta, j.floors ?? []);
  console.log(md);
  if (!args['no-write']) await writeOutputs(md, j.summaries, j.machine.date, file);
}

interface FloorRow {
  image: string;
  layer: number;
  passes: FloorResult[];
}

/** The FUSE floor (our binding, a do-nothing FS) on every layer that W3, W5 or W6 ran on. */
async function floorRows(imgs: Awaited<ReturnType<typeof prepareImages>>, cases: ReturnType<typeof buildCases>, passes: number): Promise<FloorRow[]> {
  if (passes <= 0) return [];
  const rows: FloorRow[] = [];
  // By tar: python-zstd serves the python image's very tars, whose floor is the same.
  const seen = new Set<Buffer>();
  for (const c of cases) {
    if (!['W2', 'W3', 'W5', 'W6'].includes(c.workload)) continue;
    const tar = c.image.tars[c.layer.index - 1]!;
    if (seen.has(tar)) continue;
    seen.add(tar);
    log(`FUSE floor on ${c.image.name} layer ${c.layer.index} …`);
    rows.push({ image: c.image.name, layer: c.layer.index, passes: await fuseFloor(tar, passes) });
  }
  return rows;
}

function floorTable(floors: FloorRow[], sums: CaseSummary[]): string[] {
  if (!floors.length) return [];
  const rows: string[][] = [];
  const ours = (img: string, w: string, layer: number): CaseSummary | undefined =>
    sums.find((s) => s.image === img && s.workload === w && new RegExp(`layer ${layer}\\b`).test(s.label));
  for (const f of floors) {
    const cell = (vals: number[], o: CaseSummary | undefined): [string, string, string] => {
      const m = summarize(vals).median;
      if (!o) return [m.toFixed(3), '—', '—'];
      return [m.toFixed(3), o.seconds.median.toFixed(3), `${((m / o.seconds.median) * 100).toFixed(0)}%`];
    };
    for (const [w, vals, what] of [
      ['W6', f.passes.map((p) => p.metadataWalk), "find -printf '%p %s %m'"],
      ['W3', f.passes.map((p) => p.readAllCold), 'find -type f -exec cat, new mount (reads answered from memory)'],
      ['W5', f.passes.map((p) => p.readAllWarm), 'the same again (page cache)'],
    ] as const) {
      const o = ours(f.image, w, f.layer);
      if (!o) continue;
      rows.push([w, f.image, String(f.layer), what, ...cell([...vals], o)]);
    }
    // Warm dd: the W2 session's warm read of the layer's largest file.
    const w2 = sums.find((s) => s.image === f.image && s.workload === 'W2');
    const dd = w2?.extra.warmDd as { path: string; seconds: { median: number } } | undefined;
    const seq = f.passes.map((p) => p.seqRead).filter((x) => x);
    if (dd && seq.length && seq[0]!.path === dd.path) {
      const m = summarize(seq.map((x) => x.seconds)).median;
      rows.push(['warm dd', f.image, String(f.layer), `dd bs=1M of ${dd.path.split('/').pop()} (${(seq[0]!.bytes / MB).toFixed(1)} MB), page cache dropped: floor ${(seq[0]!.bytes / MB / m).toFixed(0)} MB/s, ours ${(seq[0]!.bytes / MB / dd.seconds.median).toFixed(0)} MB/s`,
        m.toFixed(4), dd.seconds.median.toFixed(4), `${((m / dd.seconds.median) * 100).toFixed(0)}%`]);
    }
  }
  return [
    '## The FUSE binding\'s floor',
    '',
    'The same commands on a trivial filesystem on the same FUSE binding (bench/lib/fuse-floor.ts) serving the same tree from memory as the store mounts it ' +
      '(READDIRPLUS, no OPEN/OPENDIR, 1 MiB reads, a day of entry/attr caching) and answering every request at once: the cost of the binding itself ' +
      '(kernel → /dev/fuse reader thread → JS main thread → reply, per request), which no change inside the store removes. ' +
      `Median of ${floors[0]!.passes.length} passes, each on a new mount, after the store runs.`,
    '',
    markdownTable(['workload', 'image', 'layer', 'command', 'floor s', 'ours s (median)', 'floor / ours'], rows),
    '',
  ];
}

function report(machine: ReturnType<typeof machineInfo>, imgs: Awaited<ReturnType<typeof prepareImages>>, sums: CaseSummary[], wallSeconds: number, busy: string, meta: RunMeta, floors: FloorRow[]): string {
  const out: string[] = [];
  out.push('# End-to-end benchmark: the store on loopback', '');
  out.push(`Machine: ${describeMachine(machine)}`, '');
  out.push(`${meta.runs} cold runs per workload, interleaved; every cold session is a new store process with a new cache root and mount. ` +
    `Store config: ${meta.storeConfig.trim() ? `\`${meta.storeConfig.trim()}\`` : 'defaults'} (+ metrics_address), log level ${meta.logLevel}. ` +
    `Measured in ${(wallSeconds / 60).toFixed(1)} min; load average at the end ${meta.loadEnd.join(' ')}. ${busy}`, '');
  out.push('## Images', '');
  for (const img of imgs) out.push(`- \`${img.name}\`: ${img.description}; ${img.format === 'zstd:chunked' ? 'writing its layers' : '`image convert`'} took ${img.convertSeconds.toFixed(1)} s.`);
  out.push('');
  const lt = layersTable(imgs);
  out.push(markdownTable(lt.header, lt.rows), '');
  out.push('## Workloads: ours vs the full pull of the same layer vs the Go reference store, all measured in this run', '');
  const t = casesTable(sums, { goColumn: true });
  out.push(markdownTable(t.header, t.rows), '');
  const ft = formatsTable(sums);
  if (ft.rows.length) {
    out.push('## The same image as eStargz and as zstd:chunked', '');
    out.push('The python image\'s two layer tars served lazily in both formats, in the same run: eStargz (our `image convert`, looked up by layer digest) and zstd:chunked ' +
      '(podman 5\'s layout, looked up by manifest checksum as podman ≥ 5.1 asks); each beside its own full pull (`curl | gunzip | tar -x` of the gzip layer, ' +
      '`curl | zstd -dc | tar -x` of the zstd:chunked blob). Medians (min–max) of the cold runs; registry MB as the store fetched them (access log). ' +
      'The Go store has no reader for podman\'s zstd:chunked (its `zstdchunked` package is an older, incompatible layout), so it has no column here.', '');
    out.push(markdownTable(ft.header, ft.rows), '');
  }
  const go = meta.goref;
  const goBullet = go === undefined
    ? '- **Go store, measured**: this result predates the side-by-side Go store; its Go column is empty.'
    : !go.measured
      ? `- **Go store, measured**: not measured in this run (${go.why.split('\n')[0]}).`
      : '- **Go store, measured**: the reference store (containerd/stargz-snapshotter `store` package v0.12.0, Debian\'s golang-github-containerd-stargz-snapshotter-dev, ' +
        'behind our own main in bench/goref: in-memory metadata, no kubeconfig keychain) on the same images, same registry, same workloads and commands, each run a cold session of its own ' +
        '(new process, new cache root, new mount) in the same rotation as ours; "N× ours" is its median over ours. ' +
        `Its config: defaults plus a plain-HTTP mirror entry for the registry${GOREF_EXTRA.trim() ? ` and \`${GOREF_EXTRA.trim()}\`` : ''} ` +
        '(TOC verified against the layer annotation, background fetch after 5 s idle, prefetch by landmark, 50,000-byte fetch chunks). ' +
        'It has no /metrics, so the per-operation breakdown below is ours only; its registry bytes come from the access log (user agent `gorefstore`). ' +
        'Its layer directories are named by the compressed layer digest (the protocol podman 4 speaks), as ours accept too.';
  out.push(
    'How to read it:',
    '',
    '- **ours**: seconds, median (min–max) of the cold runs. Everything but W1 starts after an untimed `stat <layer>/diff` (the layer resolved: manifest, config, footer, TOC); W1 is that resolution plus the small read. W2 and the warm dd are dd\'s own time (`copied, X s`, process start excluded); W3–W6 are the wall time of the command. MB = 10^6 bytes.',
    '- **full-pull reference**: `curl -s <gzip blob> | gunzip | tar -x -C <new dir>` of the layer the workload touches (the plain gzip layer, what a normal pull fetches; for `python-zstd` `curl -s <zstd:chunked blob> | zstd -dc | tar -x`), same run, same registry; with the bytes curl fetched.',
    goBullet,
    '- **target**: from the issue (set from the reference store\'s published figures for a similar image); verdict against the absolute target (W4 also needs the blob fetched about once: ≤ 1.05× its size, TOC and manifest included).',
    '- **registry bytes (store)**: what Distribution\'s access log says it sent to user agent `estargz-store` from the store\'s start to the end of the workload (resolution included; W5: during W5 only).',
    '- **store peak RSS**: VmHWM of the store process at the end of the workload (W5: reset with clear_refs before it).',
    '',
  );
  const gt = gorefTable(sums);
  if (gt.rows.length) {
    out.push('## The Go store\'s side', '');
    out.push('Medians of its cold runs; registry bytes and requests from the access log, from its start to the end of the workload (W5: during W5 only); peak RSS as for ours.', '');
    out.push(markdownTable(gt.header, gt.rows), '');
  }
  out.push('## Warm paths', '');
  const warmRows: string[][] = [];
  for (const s of sums) {
    const dd = s.extra.warmDd as { path: string; size: number; mbps: number; seconds: { median: number; min: number; max: number; n: number; mean: number }; fuseShare: number } | undefined;
    if (dd) {
      warmRows.push([s.image, `warm sequential read through FUSE: dd bs=1M of ${dd.path} (${(dd.size / MB).toFixed(1)} MB), page cache dropped, dd's own time`, `${formatSummary(dd.seconds, 4)} s`, `${dd.mbps.toFixed(0)} MB/s`, `≥ ${TARGET_WARM_DD_MBPS} MB/s`, dd.mbps >= TARGET_WARM_DD_MBPS ? 'met' : 'missed', `${(dd.fuseShare * 100).toFixed(0)}% of the bytes crossed FUSE`]);
    }
    const st = s.extra.warmStatUs as { median: number; min: number; max: number } | undefined;
    if (st) {
      warmRows.push([s.image, `warm stat: fs.promises.stat of every file of the layer, sequential, after W5`, `${st.median.toFixed(1)} µs (${st.min.toFixed(1)}–${st.max.toFixed(1)})`, '—', `≤ ${TARGET_WARM_STAT_US} µs`, st.median <= TARGET_WARM_STAT_US ? 'met' : 'missed', 'per call']);
    }
  }
  out.push(markdownTable(['image', 'what', 'median (min–max)', 'rate', 'target', 'verdict', 'note'], warmRows), '');
  out.push(...floorTable(floors, sums));
  out.push('## Where the time and bytes go (medians per session, from the store\'s /metrics)', '');
  const mRows: string[][] = [];
  for (const s of sums) {
    if (s.workload === 'W5') continue;
    mRows.push([
      s.key,
      s.resolveSeconds ? `${(s.resolveSeconds.median * 1000).toFixed(0)} ms` : '(in W1)',
      s.storeRequests === null ? '—' : String(s.storeRequests),
      s.storeBytes === null ? '—' : (s.storeBytes / MB).toFixed(2),
      s.fullPull ? `${(s.fullPull.bytes / MB).toFixed(2)}` : '—',
    ]);
  }
  out.push(markdownTable(['case', 'untimed resolve before it', 'store requests to the registry', 'store MB from the registry', 'full pull MB'], mRows), '');
  return out.join('\n');
}

const SHORT: Record<Exclude<Workload, 'W3p'>, string> = {
  W1: 'resolve layer + read small file',
  W2: 'one large file, cold',
  W3: 'every file of a layer, cold',
  W4: 'sha256sum <layer>/blob',
  W5: 'W3 again, warm',
  W6: 'find diff -printf (metadata)',
};

function chart(sums: CaseSummary[], date: string): string {
  const ws: Exclude<Workload, 'W3p'>[] = ['W1', 'W2', 'W3', 'W4', 'W5', 'W6'];
  const find = (img: string, w: string) => sums.find((s) => s.image === img && s.workload === w);
  const withZstd = sums.some((s) => s.image === 'python-zstd');
  const groups = ws.filter((w) => sums.some((s) => s.workload === w)).map((w) => {
    const py = find('python', w);
    const bw = find('bookworm-like', w);
    const zs = find('python-zstd', w);
    const r = (s: CaseSummary | undefined): [number, number] | null => (s ? [s.seconds.min, s.seconds.max] : null);
    const fpr = (s: CaseSummary | undefined): [number, number] | null => (s?.fullPull && w !== 'W5' ? [s.fullPull.seconds.min, s.fullPull.seconds.max] : null);
    const gor = (s: CaseSummary | undefined): [number, number] | null => (s?.goref ? [s.goref.seconds.min, s.goref.seconds.max] : null);
    return {
      label: `${w}\n${SHORT[w]}`,
      values: [
        py?.seconds.median ?? null,
        py?.goref?.seconds.median ?? null,
        py?.fullPull && w !== 'W5' ? py.fullPull.seconds.median : null,
        bw?.seconds.median ?? null,
        bw?.goref?.seconds.median ?? null,
        bw?.fullPull && w !== 'W5' ? bw.fullPull.seconds.median : null,
        ...(withZstd ? [zs?.seconds.median ?? null, zs?.fullPull && w !== 'W5' ? zs.fullPull.seconds.median : null] : []),
      ],
      ranges: [r(py), gor(py), fpr(py), r(bw), gor(bw), fpr(bw), ...(withZstd ? [r(zs), fpr(zs)] : [])],
    };
  });
  const targetSeconds: Record<string, number | null> = { W1: 0.058, W2: null, W3: 1.0, W4: 0.4, W5: 0.1, W6: 0.1 };
  return groupedBarChart({
    title: 'estargz-store end to end on loopback: ours vs the Go reference store vs full pull (seconds, log scale, lower is better)',
    subtitle: `${date.slice(0, 10)} · medians of cold runs with min–max · all three measured in the same run, interleaved, on the same images`,
    unit: 's',
    series: [
      { name: 'ours, python image', color: '#1f77b4' },
      { name: 'Go store, python image', color: '#ff7f0e', hatched: true },
      { name: 'full pull of that layer, python image', color: '#9ecae1' },
      { name: 'ours, bookworm-like image', color: '#2ca02c' },
      { name: 'Go store, bookworm-like image', color: '#d62728', hatched: true },
      { name: 'full pull of that layer, bookworm-like', color: '#a1d99b' },
      ...(withZstd ? [
        { name: 'ours, python image as zstd:chunked', color: '#9467bd' },
        { name: 'full pull (zstd -dc) of that layer, zstd:chunked', color: '#c5b0d5' },
      ] : []),
    ],
    groups,
    targets: groups.map((_, i) => targetSeconds[ws.filter((w) => sums.some((s) => s.workload === w))[i]!] ?? null),
  });
}

if (args['from-json']) await fromJson(args['from-json']);
else await main();


