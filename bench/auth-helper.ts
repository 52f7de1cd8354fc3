/**
 * Start-up cost of the auth helper: containers/image runs
 * `estargz-store-auth-helper` on every pull, before the layers are looked up,
 * so its whole run is added to each pull. Measured side by side, interleaved
 * in rotating order, as child processes timed from spawn to exit by our clock:
 *
 * - `node -e 0`: the floor (starting Node at all);
 * - `estargz-store-auth-helper` (dist/src/cli/auth-helper.js): credentials
 *   JSON on stdin, handed to a live control socket;
 * - `estargz-store auth-helper` (the same through the full CLI, main.js,
 *   which loads the daemon's whole module graph): what the helper cost when
 *   it imported that graph;
 * - `--compare PATH`: another build's helper (e.g. an older checkout's
 *   dist/src/cli/auth-helper.js), against the same socket.
 *
 * The socket is the daemon's real control server (src/daemon/control.ts) in
 * this process, without FUSE; each helper call must be answered ok and store
 * the credentials, or the benchmark stops. One extra run of each helper under
 * `node --cpu-prof` says where its time goes. Writes
 * bench/results/auth-helper.md and bench/results/auth-helper-<timestamp>.json.
 *
 *   node dist/bench/auth-helper.js [--runs 40] [--warmup 3] [--compare PATH [--compare-label NAME]]
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SOCKET_NAME, startControlServer, storeControlHandler } from '../src/daemon/control.js';
import { createLogger } from '../src/log/logger.js';
import { RuntimeCredentials } from '../src/registry/auth/credentials.js';
import { formatProfile, summarizeProfiles } from './lib/cpuprofile.js';
import { describeMachine, loadNow, machineInfo, writeResult, writeTables } from './lib/machine.js';
import { summarize } from './lib/stats.js';
import { markdownTable } from './lib/table.js';

const USAGE = `usage: node dist/bench/auth-helper.js [options]
  --runs N          timed runs of each variant (default 40)
  --warmup N        untimed runs of each variant first (default 3)
  --compare PATH    also time this auth-helper.js (another build)
  --compare-label S its name in the tables (default: the path)
  --no-profile      skip the --cpu-prof run of each helper
  --no-write        print only: leave bench/results/auth-helper.md alone`;

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '40' },
    warmup: { type: 'string', default: '3' },
    compare: { type: 'string' },
    'compare-label': { type: 'string' },
    'no-profile': { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const runs = Number(args.runs);
const warmup = Number(args.warmup);
if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(warmup) || warmup < 0) {
  console.error(USAGE);
  process.exit(2);
}
const log = (s: string): void => void process.stderr.write(s + '\n');

const HELPER = fileURLToPath(new URL('../src/cli/auth-helper.js', import.meta.url));
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const REF = 'registry.example:5000/bench/app:1';
const INPUT = JSON.stringify({ [REF]: { username: 'bench', password: 'bench-password' } });

interface Variant {
  name: string;
  /** Node arguments; the helpers find the socket through ESTARGZ_STORE_ROOT or --root. */
  args: (root: string) => string[];
  /** True when a run hands credentials to the socket (checked after each run). */
  sends: boolean;
}

const VARIANTS: Variant[] = [
  { name: 'node -e 0', args: () => ['-e', '0'], sends: false },
  { name: 'estargz-store-auth-helper', args: () => [HELPER], sends: true },
  { name: 'estargz-store auth-helper (full CLI)', args: (root) => [CLI, 'auth-helper', '--root', root], sends: true },
  ...(args.compare ? [{ name: args['compare-label'] ?? `compare: ${args.compare}`, args: () => [args.compare!], sends: true }] : []),
];

/** Nearest-rank percentile (p in 0–100). */
function percentile(xs: readonly number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const GNU_TIME = '/usr/bin/time';

interface Run {
  wallMs: number;
  /** User + system CPU of the child (GNU time, Debian package `time`), or null without it. */
  cpuMs: number | null;
}

/**
 * One run: wall milliseconds from spawn to exit by our clock, and the child's
 * CPU time (less disturbed than wall time when other work shares the cores).
 * A failed run stops the benchmark: a fast failure is no result.
 */
function timeRun(nodeArgs: string[], root: string): Promise<Run> {
  const timed = existsSync(GNU_TIME);
  const cpuFile = join(root, 'cpu.txt');
  const [cmd, argv] = timed ? [GNU_TIME, ['-f', '%U %S', '-o', cpuFile, process.execPath, ...nodeArgs]] : [process.execPath, nodeArgs];
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(cmd, argv, { env: { ...process.env, ESTARGZ_STORE_ROOT: root }, stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code) => {
      const wallMs = Number(process.hrtime.bigint() - start) / 1e6;
      if (code !== 0) return reject(new Error(`node ${nodeArgs.join(' ')} exited ${code}: ${stderr.trim()}`));
      if (!timed) return resolve({ wallMs, cpuMs: null });
      readFile(cpuFile, 'utf8').then((text) => {
        const [user, sys] = text.trim().split(/\s+/).slice(-2).map(Number);
        resolve({ wallMs, cpuMs: ((user ?? NaN) + (sys ?? NaN)) * 1000 });
      }, reject);
    });
    child.stdin.end(INPUT);
  });
}

async function main(): Promise<void> {
  const machine = machineInfo();
  log(`machine: ${describeMachine(machine)}`);
  const root = await mkdtemp(join(tmpdir(), 'estargz-bench-helper-'));
  const credentials = new RuntimeCredentials();
  let received = 0;
  const server = await startControlServer(join(root, SOCKET_NAME), storeControlHandler({ log: createLogger('warn'), credentials, status: async () => [], credentialsAdded: () => { received++; } }));
  try {
    const samples: Record<string, number[]> = Object.fromEntries(VARIANTS.map((v) => [v.name, []]));
    const cpu: Record<string, number[]> = Object.fromEntries(VARIANTS.map((v) => [v.name, []]));
    const check = async (v: Variant, run: Promise<Run>): Promise<Run> => {
      const before = received;
      const t = await run;
      if (v.sends && received !== before + 1) throw new Error(`${v.name}: the control socket got ${received - before} credential sets, expected 1`);
      return t;
    };
    for (const v of VARIANTS) for (let i = 0; i < warmup; i++) await check(v, timeRun(v.args(root), root));
    if ((await credentials.lookup('registry.example:5000', 'bench/app'))?.username !== 'bench') throw new Error('the credentials did not reach the store');
    for (let i = 0; i < runs; i++) {
      // Rotating order: no variant always runs first (right after the previous round's slowest one).
      for (let k = 0; k < VARIANTS.length; k++) {
        const v = VARIANTS[(i + k) % VARIANTS.length]!;
        const r = await check(v, timeRun(v.args(root), root));
        samples[v.name]!.push(r.wallMs);
        if (r.cpuMs !== null) cpu[v.name]!.push(r.cpuMs);
      }
      if ((i + 1) % 10 === 0) log(`  ${i + 1}/${runs} rounds`);
    }

    const floor = summarize(samples['node -e 0']!).median;
    const rows = VARIANTS.map((v) => {
      const xs = samples[v.name]!;
      const s = summarize(xs);
      const c = cpu[v.name]!;
      return { name: v.name, median: s.median, p90: percentile(xs, 90), min: s.min, max: s.max, overFloor: s.median - floor, cpuMedian: c.length ? summarize(c).median : null };
    });

    let profiles = '';
    const profileRows: { name: string; summary: string }[] = [];
    if (!args['no-profile']) {
      for (const v of VARIANTS.filter((x) => x.sends)) {
        const dir = join(root, `prof-${profileRows.length}`);
        await check(v, timeRun(['--cpu-prof', '--cpu-prof-dir', dir, ...v.args(root)], root));
        for (const p of await summarizeProfiles(dir)) profileRows.push({ name: v.name, summary: formatProfile({ ...p, file: v.name }, 8) });
      }
      profiles = profileRows.map((p) => '```\n' + p.summary + '\n```').join('\n\n');
    }

    const lines: string[] = [];
    lines.push(`## Auth helper start-up (${runs} timed runs of each, interleaved in rotating order, after ${warmup} warm-up)`, '');
    lines.push(`Machine: ${describeMachine(machine)}`, '');
    lines.push('Wall time of one call, spawn to exit, against the daemon\'s control server (credentials JSON on stdin, answered ok).', '');
    lines.push(markdownTable(['command', 'median ms', 'p90 ms', 'min ms', 'max ms', 'median over node -e 0', 'CPU ms median'], rows.map((r) =>
      [r.name, r.median.toFixed(1), r.p90.toFixed(1), r.min.toFixed(1), r.max.toFixed(1), r.name === 'node -e 0' ? '' : `+${r.overFloor.toFixed(1)}`, r.cpuMedian === null ? 'n/a' : r.cpuMedian.toFixed(0)])));
    lines.push('', 'CPU ms: user + system time of the child (GNU time, 10 ms resolution), less disturbed than wall time when other work shares the cores.');
    if (profiles) lines.push('', 'One `node --cpu-prof` run of each (self time by file, then by function):', '', profiles);
    lines.push('', `Load average at the end (1/5/15 min): ${loadNow().join(' ')}.`);
    const markdown = lines.join('\n');
    console.log(markdown);

    const path = await writeResult('auth-helper', {
      benchmark: 'auth-helper',
      machine,
      settings: { runs, warmup, compare: args.compare ?? null, compareLabel: args['compare-label'] ?? null },
      variants: Object.fromEntries(rows.map((r) => [r.name, { ...r, summary: summarize(samples[r.name]!), samplesMs: samples[r.name], cpuMs: cpu[r.name] }])),
      markdown,
    });
    log(`wrote ${path}`);
    if (!args['no-write']) log(`wrote ${await writeTables('auth-helper', markdown, path)}`);
  } finally {
    server.close();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
