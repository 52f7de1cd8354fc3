import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** What a result was measured on, stored with every JSON result so runs from different machines are not compared blindly. */
export interface MachineInfo {
  date: string;
  cpus: number;
  cpuModel: string;
  memBytes: number;
  kernel: string;
  node: string;
  /** 1/5/15-minute load averages when the run started: other work on the machine (tests, builds) skews timings. */
  loadavg: number[];
  gitCommit: string | null;
  /** True when the work tree had uncommitted changes: the commit alone then does not name the code measured. */
  gitDirty: boolean | null;
}

/** The repository root: the nearest folder above this module that holds package.json (works from bench/ and dist/bench/). */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('no package.json above the bench scripts');
    dir = up;
  }
}

function git(args: string[]): string | null {
  try {
    return execFileSync('git', args, { cwd: repoRoot(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null; // not a checkout, or no git: the result is still worth keeping
  }
}

export function machineInfo(): MachineInfo {
  const list = cpus();
  // The benchmarks' own outputs do not count: a full run writes them as it goes.
  const status = git(['status', '--porcelain', '--', '.', ':(exclude)bench/results', ':(exclude)bench/RESULTS.md']);
  return {
    date: new Date().toISOString(),
    cpus: list.length,
    cpuModel: list[0]?.model.trim() ?? 'unknown',
    memBytes: totalmem(),
    kernel: release(),
    node: process.version,
    loadavg: loadNow(),
    gitCommit: git(['rev-parse', 'HEAD']),
    gitDirty: status === null ? null : status.length > 0,
  };
}

/** 1/5/15-minute load averages, rounded. */
export function loadNow(): number[] {
  return loadavg().map((x) => Math.round(x * 100) / 100);
}

export function describeMachine(m: MachineInfo): string {
  const commit = m.gitCommit ? `${m.gitCommit.slice(0, 12)}${m.gitDirty ? ' (+ uncommitted changes)' : ''}` : 'unknown';
  return `${m.date} · ${m.cpus} × ${m.cpuModel}, ${(m.memBytes / 2 ** 30).toFixed(1)} GiB · Node ${m.node} · ` +
    `commit ${commit} · load ${m.loadavg.join(' ')}`;
}

/** Writes `bench/results/<name>-<timestamp>.json` and returns its path. */
export async function writeResult(name: string, data: object): Promise<string> {
  const dir = join(repoRoot(), 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const path = join(dir, `${name}-${stamp}.json`);
  // Load at the end too: a rise during the run means something else competed for the 2 cores.
  const end = { finishedAt: new Date().toISOString(), loadavgEnd: loadNow() };
  await writeFile(path, JSON.stringify({ ...data, ...end }, null, 2) + '\n');
  return path;
}

/**
 * Writes `bench/results/<name>.md`: the tables of the latest run, ending with
 * the name of the JSON they came from (so `report` and a reader can tell which
 * run a table belongs to). Returns its path.
 */
export async function writeTables(name: string, markdown: string, jsonPath: string): Promise<string> {
  const path = join(repoRoot(), 'bench', 'results', `${name}.md`);
  await writeFile(path, `${markdown.trimEnd()}\n\nRaw samples: \`${jsonPath.slice(jsonPath.lastIndexOf('/') + 1)}\`.\n`);
  return path;
}
