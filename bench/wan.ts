/**
 * The end-to-end workloads (see bench/e2e.ts) with the registry behind a
 * userspace shaping TCP proxy (bench/lib/shaper.ts: RTT/2 one-way delay each
 * way, a token-bucket bandwidth limit per direction shared by all
 * connections, the TCP handshake charged) on loopback, at 20 ms / 200 Mbit/s
 * and 50 ms / 50 Mbit/s by default. The store and the full-pull reference
 * (curl | gunzip | tar -x) both reach the registry through the proxy (the
 * image reference names the proxy's host:port); images are pushed and
 * converted directly. Every store session runs again on the Go reference
 * store (bench/lib/goref.ts), as its own cold session right after ours in the
 * rotation, through the same proxy (a plain-HTTP mirror entry for the
 * proxy's host:port). Writes bench/results/wan.md and
 * bench/results/wan-<timestamp>.json.
 *
 *   node dist/bench/wan.js [--runs 5] [--profiles 20:200,50:50] [--images python] [--workloads ...] [--no-goref]
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startRegistry } from '../testkit/registry.js';
import { ALL_WORKLOADS, MB, buildCases, parseSelection, busyNote, layersTable, runCases, summarizeCases, type CaseSummary } from './lib/e2e-cases.js';
import { prepareImages } from './lib/e2e-images.js';
import { gorefBinary, gorefConfig } from './lib/goref.js';
import { describeMachine, loadNow, machineInfo, writeResult, writeTables } from './lib/machine.js';
import { startShaper } from './lib/shaper.js';
import { formatSummary } from './lib/stats.js';
import { markdownTable } from './lib/table.js';

const USAGE = `usage: node dist/bench/wan.js [options]
  --runs N              cold runs of every workload per profile (default 5)
  --profiles LIST       RTT_MS:MBIT_PER_S pairs (default 20:200,50:50)
  --images LIST         python, bookworm-like (default python)
  --workloads LIST      W1,W2,W3,W3p,W4,W5,W6 (default all)
  --parallel-readers N  readers of W3p (default 8)
  --chunk-size BYTES     image convert --chunk-size (default: the converter's, 4 MiB)
  --store-config TOML   extra config lines for the store
  --keep-logs DIR       save every store's log there
  --max-other CORES      before each session wait for a quiet 250 ms (≤ CORES busy; default 0.3; 0 = don't wait)
  --quiet-wait S         wait at most S seconds for it (default 5)
  --no-goref            leave out the Go reference store (default: built from Debian's source and measured side by side)
  --goref-bin BIN       a gorefstore binary to use instead of building one
  --goref-config TOML   extra config lines for the Go store (its keys, e.g. 'noprefetch = true')
  --no-write            print only: leave bench/results/wan.md alone
  --from-json FILE      measure nothing: render wan.md again from a results JSON`;

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    profiles: { type: 'string', default: '20:200,50:50' },
    images: { type: 'string', default: 'python' },
    workloads: { type: 'string', default: ALL_WORKLOADS.join(',') },
    'parallel-readers': { type: 'string', default: '8' },
    'store-config': { type: 'string', default: '' },
    'chunk-size': { type: 'string' },
    'keep-logs': { type: 'string' },
    'max-other': { type: 'string', default: '0.3' },
    'quiet-wait': { type: 'string', default: '5' },
    'no-goref': { type: 'boolean', default: false },
    'goref-bin': { type: 'string' },
    'goref-config': { type: 'string', default: '' },
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
const profiles = args.profiles.split(',').filter(Boolean).map((p) => {
  const [rtt, mbps] = p.split(':').map(Number);
  return { rttMs: rtt!, mbps: mbps! };
});
if (!Number.isInteger(runs) || runs < 1 || profiles.some((p) => !Number.isFinite(p.rttMs) || !Number.isFinite(p.mbps)) ||
  !selection) {
  console.error(USAGE);
  process.exit(2);
}
const { images, workloads } = selection;
const log = (s: string): void => void process.stderr.write(s + '\n');
const STORE_CONFIG = args['store-config'].replace(/\\n/g, '\n');
const GOREF_EXTRA = args['goref-config'].replace(/\\n/g, '\n');

/** The Go store: measured (its build and the config of the last profile, which differs only in the proxy's port) or why not. */
type GorefMeta = { measured: true; build: string; config: string } | { measured: false; why: string };

interface ProfileResult {
  rttMs: number;
  mbps: number;
  sums: CaseSummary[];
  busy: string;
  proxy: { connections: number; bytesUp: number; bytesDown: number };
  wallSeconds: number;
}

async function main(): Promise<void> {
  const machine = machineInfo();
  log(`machine: ${describeMachine(machine)}`);
  const reg = await startRegistry();
  const results: ProfileResult[] = [];
  const raw: unknown[] = [];
  try {
    const imgs = await prepareImages(reg.host, images, log, args['chunk-size'] ? { chunkSize: Number(args['chunk-size']) } : {});
    const cases = buildCases(imgs, workloads);
    const goBin = await gorefBinary({ skip: args['no-goref'], bin: args['goref-bin'] }, log);
    if ('missing' in goBin) log(`WARNING: no Go store column: ${goBin.missing}`);
    let goref: GorefMeta = 'missing' in goBin ? { measured: false, why: goBin.missing } : { measured: true, build: goBin.key, config: '' };
    const port = Number(reg.host.split(':')[1]);
    for (const p of profiles) {
      log(`profile: ${p.rttMs} ms RTT, ${p.mbps} Mbit/s`);
      const shaper = await startShaper({ targetHost: '127.0.0.1', targetPort: port, rttMs: p.rttMs, mbps: p.mbps });
      const started = performance.now();
      try {
        const logDir = args['keep-logs'] ? join(args['keep-logs'], `${p.rttMs}ms-${p.mbps}mbit`) : undefined;
        if (logDir) await mkdir(logDir, { recursive: true });
        // The Go store names the image by the proxy's host:port too: a plain-HTTP mirror of itself.
        const goConfig = gorefConfig([shaper.host], GOREF_EXTRA);
        if (goref.measured) goref = { ...goref, config: goConfig };
        const { samples, fullPulls, gorefSamples } = await runCases(cases, runs, {
          reg,
          refHost: shaper.host,
          storeConfig: STORE_CONFIG,
          ...(logDir && { logDir }),
          parallelReaders: Number(args['parallel-readers']),
          quiet: Number(args['max-other']) > 0 ? { maxCores: Number(args['max-other']), maxWaitMs: Number(args['quiet-wait']) * 1000 } : null,
          statPasses: 0,
          log,
          ...('bin' in goBin && { goref: { bin: goBin.bin, config: goConfig } }),
        });
        const sums = summarizeCases(cases, samples, fullPulls, gorefSamples);
        results.push({ ...p, sums, busy: busyNote(samples, fullPulls), proxy: shaper.stats(), wallSeconds: (performance.now() - started) / 1000 });
        raw.push({ profile: p, shaper: shaper.options, samples, fullPulls, gorefSamples });
      } finally {
        await shaper.close();
      }
    }
    const md = report(machine, imgs, results, { runs, storeConfig: STORE_CONFIG, loadEnd: loadNow(), goref });
    console.log(md);
    const path = await writeResult('wan', {
      machine, args, storeConfig: STORE_CONFIG, runs, loadEnd: loadNow(), goref,
      images: imgs.map(({ tars: _t, ...i }) => ({ ...i, layers: i.layers.map(({ filePaths: _f, ...l }) => l) })),
      profiles: results, raw,
    });
    log(`raw samples: ${path}`);
    if (!args['no-write']) {
      log(`wrote ${await writeTables('wan', md, path)}`);
    }
  } finally {
    await reg.stop();
  }
}

/** --from-json: the tables of an earlier run, without measuring. */
async function fromJson(file: string): Promise<void> {
  const j = JSON.parse(await readFile(file, 'utf8')) as {
    machine: ReturnType<typeof machineInfo>; images: Awaited<ReturnType<typeof prepareImages>>; profiles: ProfileResult[];
    runs: number; storeConfig: string; loadEnd?: number[]; loadavgEnd?: number[]; goref?: GorefMeta;
  };
  const md = report(j.machine, j.images, j.profiles, { runs: j.runs, storeConfig: j.storeConfig, loadEnd: j.loadEnd ?? j.loadavgEnd ?? [], ...(j.goref && { goref: j.goref }) });
  console.log(md);
  if (!args['no-write']) {
    log(`wrote ${await writeTables('wan', md, file)}`);
  }
}

function report(machine: ReturnType<typeof machineInfo>, imgs: Awaited<ReturnType<typeof prepareImages>>, results: ProfileResult[], meta: { runs: number; storeConfig: string; loadEnd: number[]; goref?: GorefMeta }): string {
  const out: string[] = [];
  out.push('# WAN benchmark: the store through a shaping proxy', '');
  out.push(`Machine: ${describeMachine(machine)}`, '');
  out.push(`${meta.runs} cold runs per workload and profile, interleaved, each a new store process with a new cache root. ` +
    'The registry is reached through bench/lib/shaper.ts (one-way delay RTT/2 each way, a token-bucket bandwidth limit per direction shared by all ' +
    'connections and served round-robin, the TCP handshake charged as one extra RTT before a new connection\'s first request); no loss and no TCP slow ' +
    'start are modelled, so real paths are slower. The store and curl both name the proxy\'s host:port. ' +
    `Store config: ${meta.storeConfig.trim() ? `\`${meta.storeConfig.trim()}\`` : 'defaults'}. Load average at the end ${meta.loadEnd.join(' ')}.`, '');
  const lt = layersTable(imgs);
  out.push(markdownTable(lt.header, lt.rows), '');
  const go = meta.goref;
  out.push(go === undefined
    ? 'This result predates the Go store measured side by side: there is no Go column; targets are for loopback and not applied.'
    : !go.measured
      ? `The Go reference store was not measured in this run (${go.why.split('\n')[0]}); targets are for loopback and not applied.`
      : 'The Go reference store (containerd/stargz-snapshotter `store` package v0.12.0, Debian\'s source, behind our main in bench/goref; see bench/e2e.ts) ran every store session again, ' +
        'each a cold session of its own right after ours in the rotation, through the same proxy (a plain-HTTP mirror entry for the proxy\'s host:port)' +
        `${GOREF_EXTRA.trim() ? `, with \`${GOREF_EXTRA.trim()}\`` : ', with its defaults (background fetch after 5 s idle, prefetch by landmark)'}. ` +
        'Its registry bytes and requests come from the access log (user agent `gorefstore`). Targets are for loopback and not applied.', '');
  for (const r of results) {
    out.push(`## ${r.rttMs} ms RTT, ${r.mbps} Mbit/s`, '');
    const floor = (bytes: number): string => `${((bytes * 8) / (r.mbps * 1e6) + r.rttMs / 1000).toFixed(2)}`;
    const rows = r.sums.map((s) => [
      s.workload,
      s.image,
      s.label,
      formatSummary(s.seconds, 3),
      s.mbps === null || s.workload === 'W1' ? '—' : s.mbps.toFixed(1),
      s.fullPull && s.workload !== 'W5' ? `${formatSummary(s.fullPull.seconds, 3)} (L${s.fullPull.key.split('/L')[1]})` : '—',
      s.storeBytes === null ? '—' : (s.storeBytes / MB).toFixed(2),
      s.storeRequests === null ? '—' : String(s.storeRequests),
      s.storeBytes === null || s.workload === 'W5' ? '—' : floor(s.storeBytes),
      `${s.peakRssMiB.median.toFixed(0)}`,
      ...(go?.measured ? goCells(s) : []),
    ]);
    const goHeader = go?.measured ? ['Go store s median (min–max)', 'Go MB from the registry', 'Go requests', 'Go peak RSS MiB'] : [];
    out.push(markdownTable(['workload', 'image', 'what', 'ours s median (min–max)', 'ours MB/s', 'full pull s (same layer, same proxy)', 'store MB from the registry', 'store requests', 'wire floor s (bytes at line rate + 1 RTT)', 'store peak RSS MiB', ...goHeader], rows), '');
    out.push(`Proxy: ${r.proxy.connections} connections, ${(r.proxy.bytesDown / MB).toFixed(1)} MB down, ${(r.proxy.bytesUp / MB).toFixed(2)} MB up; profile took ${(r.wallSeconds / 60).toFixed(1)} min. ${r.busy}`, '');
  }
  out.push('Columns: **ours** is seconds (median, min–max) of the cold runs; all but W1 start after an untimed `stat <layer>/diff` (layer resolved through the proxy). ' +
    '**full pull** is `curl | gunzip | tar -x` of the gzip layer through the same proxy. **wire floor**: the store\'s registry bytes at the line rate plus one RTT, the least any fetch strategy that moves those bytes could take (the bytes include resolution and read-ahead that may still be arriving when the workload ends, so a workload can beat it, as W2 does at 50 Mbit/s); ' +
    'the gap above it is round trips (requests made one after the other) and CPU.', '');
  return out.join('\n');
}

/** The Go store's cells of a row: its time (and how it compares with ours), registry bytes and requests, peak RSS. */
function goCells(s: CaseSummary): string[] {
  const g = s.goref;
  if (!g) return ['—', '—', '—', '—'];
  const ratio = g.seconds.median / s.seconds.median;
  return [
    `${formatSummary(g.seconds, 3)} · ${ratio >= 1 ? `${ratio.toFixed(2)}× ours` : `${(1 / ratio).toFixed(2)}× faster than ours`}`,
    g.storeBytes === null ? '—' : (g.storeBytes / MB).toFixed(2),
    g.storeRequests === null ? '—' : String(g.storeRequests),
    g.peakRssMiB.median.toFixed(0),
  ];
}

if (args['from-json']) await fromJson(args['from-json']);
else await main();
