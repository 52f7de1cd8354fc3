/**
 * Load and soak: 64 concurrent readers over 4 eStargz layers served by a
 * real store process from a local registry. Cold phase: every file read
 * once, whole, in random order (the store fetches from the registry); warm
 * phase: random files (whole) and random ranges for --duration, with the
 * page cache dropped every --drop-caches-every so reads reach the store.
 * Every byte read is checked against the source. Reports per phase reads/s,
 * MB/s, errors, wrong bytes, the store's RSS and open fds (start, end, time
 * series) and its event-loop delay, with verdicts for "RSS and fds flat after
 * warm-up" and "p99 ≤ 20 ms, max ≤ 100 ms". Writes bench/results/soak.md
 * and bench/results/soak-<timestamp>.json.
 *
 *   node dist/bench/soak.js [--duration 10m] [--readers 64] [--layers 4] [--drop-caches-every 20s] [--no-write]
 */
import { mkdir } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { startRegistry } from '../testkit/registry.js';
import { ALLOC_PROBE_JS, allocTable, phaseAllocs } from './lib/alloc-report.js';
import { formatLongTasks, formatProfile, longTasksOf, summarizeProfiles } from './lib/cpuprofile.js';
import { describeMachine, loadNow, machineInfo, writeResult, writeTables, type MachineInfo } from './lib/machine.js';
import { prepareSoakImage } from './lib/soak-image.js';
import { phasesTable, runSoak, seriesTable, verdicts, TARGET_MAX_MS, TARGET_P99_MS, type SoakResult } from './lib/soak.js';
import { MiB } from './lib/stats.js';

const USAGE = `usage: node dist/bench/soak.js [options]
  --duration T           warm phase length: 600, 90s, 10m (default 10m)
  --readers N            concurrent readers (default 64)
  --layers N             layers (default 4)
  --layer-mb N           file content per layer, MiB (default 96: 4 layers exceed the 256 MiB memory cache)
  --drop-caches-every T  echo 3 > /proc/sys/vm/drop_caches this often in the warm phase (default 20s; 0 = never)
  --cold-max T           longest cold pass (default 5m)
  --metrics-every T      scrape the store's /metrics this often (default 5s; RSS and fds are read every second)
  --store-config TOML    extra config lines for the store (\\n for newlines)
  --store-log-level L    the store's log level (default info)
  --keep-log FILE        save the store's log (stdout + stderr) there
  --cpu-prof DIR         run the store with node --cpu-prof into DIR and print a summary
  --store-node-args=ARGS more node flags for the store, space-separated (e.g. --store-node-args=--trace-gc)
  --no-restart-pass      skip the restart pass (after warm: restart the store, disk cache kept, read every file again)
  --store-cli PATH       run the store from another build's dist/src/cli/main.js (before/after runs with this harness)
  --alloc-probe DIR      count the store's main-thread buffer allocations and GCs per phase (bench/lib/alloc-probe.ts; slows the store a little)
  --no-write             print only: write neither bench/results/soak.md nor the JSON`;

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10m' },
    readers: { type: 'string', default: '64' },
    layers: { type: 'string', default: '4' },
    'layer-mb': { type: 'string', default: '96' },
    'drop-caches-every': { type: 'string', default: '20s' },
    'cold-max': { type: 'string', default: '5m' },
    'metrics-every': { type: 'string', default: '5s' },
    'store-config': { type: 'string', default: '' },
    'store-log-level': { type: 'string', default: 'info' },
    'keep-log': { type: 'string' },
    'cpu-prof': { type: 'string' },
    'store-node-args': { type: 'string', default: '' },
    'alloc-probe': { type: 'string' },
    'store-cli': { type: 'string' },
    'no-write': { type: 'boolean', default: false },
    'no-restart-pass': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

/** "600", "90s", "10m", "1h" → seconds. */
function seconds(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(s|m|h)?$/.exec(text.trim());
  if (!m) return NaN;
  return Number(m[1]) * ({ s: 1, m: 60, h: 3600 }[m[2] as 's' | 'm' | 'h'] ?? 1);
}

const duration = seconds(args.duration);
const dropEvery = seconds(args['drop-caches-every']);
const coldMax = seconds(args['cold-max']);
const readers = Number(args.readers);
const layers = Number(args.layers);
const layerMb = Number(args['layer-mb']);
if (![duration, dropEvery, coldMax].every((x) => Number.isFinite(x) && x >= 0) || duration <= 0 || !Number.isInteger(readers) || readers < 1 || !Number.isInteger(layers) || layers < 1 || !(layerMb > 0)) {
  console.error(USAGE);
  process.exit(2);
}
const log = (s: string): void => void process.stderr.write(s + '\n');
const storeConfig = args['store-config'].replace(/\\n/g, '\n');

function report(machine: MachineInfo, r: SoakResult, meta: { prepareSeconds: number; loadEnd: number[] }): string {
  const out: string[] = [];
  out.push('# Load and soak: concurrent readers on a real store', '');
  out.push(`Machine: ${describeMachine(machine)}`, '');
  const files = r.layers.reduce((n, l) => n + l.files, 0);
  const bytes = r.layers.reduce((n, l) => n + l.fileBytes, 0);
  out.push(
    `${r.readers} readers (one process of async fs, libuv pool sized to match) over ${r.layers.length} eStargz layers ` +
      `(${files.toLocaleString('en-US')} files, ${(bytes / MiB).toFixed(0)} MiB of content, ${(r.layers.reduce((n, l) => n + l.esgzBytes, 0) / MiB).toFixed(0)} MiB of blobs; ` +
      'half the files compressible; 50% of the bytes in 4.5–16 MiB files of 2–4 chunks, 20% in 256 KiB–4 MiB, 30% in 256 B–256 KiB files) ' +
      `on a local Distribution registry. Store config: ${storeConfig.trim() ? `\`${storeConfig.trim()}\`` : 'defaults'} (+ metrics_address); ` +
      `images made and converted in ${meta.prepareSeconds.toFixed(0)} s; store mounted in ${r.storeStartSeconds.toFixed(2)} s; load average at the end ${meta.loadEnd.join(' ')}.`,
    '',
    `- **cold**: a new store and cache root; every file read once, whole (128 KiB preads), in one shuffled queue shared by the readers${r.coldCompleted ? '' : ' (**cut short** by --cold-max)'}.`,
    `- **warm**: for ${args.duration}, each reader picks a random file and reads it whole or reads one random range (4 KiB–1 MiB, log-uniform); ` +
      (r.droppedCaches > 0 ? `the page cache was dropped ${r.droppedCaches} times (every ${args['drop-caches-every']}) so reads reach the store.` : `the page cache was not dropped${r.dropCachesError ? ` (${r.dropCachesError})` : ''}.`),
    '- Every pread is compared with the file\'s source bytes. reads/s = preads answered; MB = 10^6 bytes.',
    '- **delay**: the store\'s event-loop delay. p50 and p99 from its cumulative lag histogram (`estargz_store_event_loop_lag_seconds`, a 10 ms timer\'s lateness) over the phase; ' +
      `max from its delay gauge (\`estargz_store_event_loop_delay_seconds{quantile="1"}\`, scraped every ${args['metrics-every']}: a scrape costs the store a few ms of main thread, so not every second); "worst 10 s p99" is the largest p99 over any 10-s window. ` +
      `Targets: p99 ≤ ${TARGET_P99_MS} ms, max ≤ ${TARGET_MAX_MS} ms.`,
    '- **RSS, fds**: VmRSS of /proc/<pid>/status and the entries of /proc/<pid>/fd of the store process, every second.',
    '',
  );
  out.push(phasesTable(r), '');
  const blobs = r.layers.reduce((n, l) => n + l.esgzBytes, 0);
  const ofBlobs = (b: number): string => `${(b / 1e6).toFixed(1)} MB = ${(b / blobs).toFixed(3)}× the blobs`;
  out.push(`**Registry bytes** (the store's \`estargz_store_registry_bytes_total\`, blobs ${(blobs / 1e6).toFixed(1)} MB): cold start to the end of the warm phase ${ofBlobs(r.registryBytes.cold)}` +
    (r.registryBytes.restart !== undefined && r.restartPass
      ? `; after \`estargz-store restart\` (disk cache kept), every file read again in ${r.restartPass.seconds.toFixed(1)} s${r.restartPass.completed ? '' : ' (cut short)'}, ${r.restartPass.ops} reads, ${r.restartPass.errors} errors, ${r.restartPass.wrongBytes} wrong bytes: the successor took ${ofBlobs(r.registryBytes.restart)}.`
      : '; no restart pass.'), '');
  out.push('## Verdicts', '');
  for (const v of verdicts(r)) out.push(`- ${v.ok ? 'PASS' : 'FAIL'} ${v.name}: ${v.detail}`);
  out.push('');
  if (r.errorSamples.length) {
    out.push('## First errors', '', ...r.errorSamples.map((s) => `- ${s}`), '');
  }
  out.push('## Time series (every second is in the JSON)', '');
  out.push(seriesTable(r), '');
  return out.join('\n');
}

async function main(): Promise<void> {
  const machine = machineInfo();
  log(`machine: ${describeMachine(machine)}`);
  const profDir = args['cpu-prof'];
  if (profDir) await mkdir(profDir, { recursive: true });
  const probeDir = args['alloc-probe'];
  if (probeDir) {
    await mkdir(probeDir, { recursive: true });
    process.env.ESTARGZ_ALLOC_PROBE_DIR = probeDir; // inherited by the keeper and the store
  }
  const nodeArgs = [
    ...(profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : []),
    ...(probeDir ? [`--import=${ALLOC_PROBE_JS}`] : []),
    ...args['store-node-args'].split(' ').filter(Boolean),
  ];
  const reg = await startRegistry();
  try {
    const image = await prepareSoakImage(reg.host, layers, layerMb * MiB, log);
    log(`image ready in ${image.prepareSeconds.toFixed(1)} s`);
    const r = await runSoak(image, {
      readers,
      warmSeconds: duration,
      coldMaxSeconds: coldMax,
      dropCachesEverySec: dropEvery,
      metricsEverySec: seconds(args['metrics-every']) || 5,
      storeConfig,
      storeLogLevel: args['store-log-level'],
      ...(nodeArgs.length && { storeNodeArgs: nodeArgs }),
      ...(args['keep-log'] && { storeLogFile: args['keep-log'] }),
      restartPass: !args['no-restart-pass'],
      ...(args['store-cli'] && { storeCli: args['store-cli'] }),
      log,
    });
    let md = report(machine, r, { prepareSeconds: image.prepareSeconds, loadEnd: loadNow() });
    if (probeDir) {
      const allocs = await phaseAllocs(probeDir, r.storePid, r.clock);
      md += '\n## Main-thread allocations (alloc probe)\n\n' + allocTable(allocs) + '\n';
    }
    console.log(md);
    if (profDir) {
      for (const p of await summarizeProfiles(profDir)) console.log('\n```\n' + formatProfile(p, 25) + '\n```');
      for (const { file, tasks } of await longTasksOf(profDir, 40)) if (tasks.length) console.log('\n```\n' + formatLongTasks(file, tasks, 12) + '\n```');
      // The cold phase is short: its stalls (15 ms and up) listed on their own, or the warm phase's would crowd them out.
      const cold = r.clock.cold;
      if (cold) {
        for (const { file, tasks } of await longTasksOf(profDir, 15)) {
          const inCold = tasks.filter((t) => t.atUs >= cold.startUs && t.atUs < cold.endUs);
          if (inCold.length) console.log('\n```\ncold phase only: ' + formatLongTasks(file, inCold, 20) + '\n```');
        }
      }
    }
    if (!args['no-write']) {
      const path = await writeResult('soak', { machine, args, storeConfig, result: r });
      log(`wrote ${await writeTables('soak', md, path)} and ${path}`);
    }
    if (!verdicts(r).slice(0, 2).every((v) => v.ok)) process.exitCode = 1;
  } finally {
    await reg.stop();
  }
}

await main();
