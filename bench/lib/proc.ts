import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const GNU_TIME = '/usr/bin/time';

/** One child-process run: wall time from our clock, peak RSS and CPU from the kernel's accounting. */
export interface ProcSample {
  wallMs: number;
  /** Peak resident set of the child, bytes (ru_maxrss, or VmHWM when polled). */
  peakRssBytes: number;
  /** CPU seconds in user and kernel mode; null where only /proc polling was available. */
  userS: number | null;
  sysS: number | null;
  /** How peak RSS was taken: GNU time's %M, or polling /proc/PID/status. */
  rssMethod: 'gnu-time' | 'proc-poll';
  stdout: string;
  stderr: string;
}

export class ProcError extends Error {
  constructor(message: string, readonly stderr: string) {
    super(message);
  }
}

/**
 * Runs `cmd args` to completion and measures it. GNU time (Debian package
 * `time`) reports the child's own ru_maxrss and CPU times exactly; without it
 * we poll VmHWM, which is a high-water mark, so only growth in the last poll
 * interval can be missed.
 */
export async function runMeasured(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; method?: ProcSample['rssMethod'] } = {}): Promise<ProcSample> {
  if (opts.method !== 'proc-poll' && existsSync(GNU_TIME)) return runWithGnuTime(cmd, args, opts.env);
  return runWithPolling(cmd, args, opts.env);
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  wallMs: number;
}

function run(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv | undefined, onSpawn?: (pid: number) => () => void): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const stop = child.pid !== undefined && onSpawn ? onSpawn(child.pid) : () => {};
    child.on('error', (e) => {
      stop();
      reject(e);
    });
    child.on('close', (code, signal) => {
      const wallMs = Number(process.hrtime.bigint() - start) / 1e6;
      stop();
      resolve({ code, signal, wallMs, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}

function checkExit(cmd: string, args: readonly string[], e: Exit): void {
  if (e.code !== 0) {
    throw new ProcError(`${cmd} ${args.join(' ')} failed (${e.signal ?? `exit ${e.code}`}): ${e.stderr.trim().slice(-2000)}`, e.stderr);
  }
}

async function runWithGnuTime(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv | undefined): Promise<ProcSample> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-time-'));
  const report = join(dir, 'time.txt');
  try {
    // -o keeps GNU time's line out of the child's stderr; %M is KiB.
    const e = await run(GNU_TIME, ['-f', '%M %U %S', '-o', report, cmd, ...args], env);
    checkExit(cmd, args, e);
    const lines = (await readFile(report, 'utf8')).trim().split('\n');
    const [rssKiB, user, sys] = (lines[lines.length - 1] ?? '').split(' ').map(Number);
    if (rssKiB === undefined || !Number.isFinite(rssKiB)) throw new Error(`cannot read GNU time's report: ${lines.join(' / ')}`);
    return { wallMs: e.wallMs, peakRssBytes: rssKiB * 1024, userS: user ?? null, sysS: sys ?? null, rssMethod: 'gnu-time', stdout: e.stdout, stderr: e.stderr };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function runWithPolling(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv | undefined): Promise<ProcSample> {
  let peakKiB = 0;
  const e = await run(cmd, args, env, (pid) => {
    const poll = async (): Promise<void> => {
      try {
        const m = /VmHWM:\s+(\d+)\s+kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
        if (m) peakKiB = Math.max(peakKiB, Number(m[1]));
      } catch {
        // the child has exited between polls
      }
    };
    void poll();
    const timer = setInterval(() => void poll(), 20);
    return () => clearInterval(timer);
  });
  checkExit(cmd, args, e);
  return { wallMs: e.wallMs, peakRssBytes: peakKiB * 1024, userS: null, sysS: null, rssMethod: 'proc-poll', stdout: e.stdout, stderr: e.stderr };
}

/** Runs a command for its output (setup and checks, not timed). */
export async function runQuiet(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const e = await run(cmd, args, opts.env);
  checkExit(cmd, args, e);
  return e.stdout;
}
