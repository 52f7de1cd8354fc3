/**
 * Test helper: ToyFs mounted by a child process (test/fuse/toy-child.ts) on
 * a temporary directory, with its counters readable over IPC. The test
 * process only touches the mount with async fs calls and child processes.
 */
import { execFile, fork, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { ChildStats } from './toy-child.js';
import type { ToyTreeSpec } from './toy-fs.js';
import type { Negotiated } from '../../src/fuse/types.js';

const run = promisify(execFile);
const CHILD = fileURLToPath(new URL('./toy-child.js', import.meta.url));

export interface ToyMount {
  mnt: string;
  child: ChildProcess;
  pid: number;
  negotiated: Negotiated;
  stats(): Promise<ChildStats>;
  /** Asks the child to hand the connection to a successor; resolves with the successor's pid once it serves. */
  handoff(): Promise<number>;
  stop(): Promise<void>;
}

export async function isMounted(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === path);
}

function nextMessage<T>(child: ChildProcess, key: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: Record<string, unknown>): void => {
      if (!(key in m)) return;
      child.off('message', onMsg);
      child.off('exit', onExit);
      resolve(m as T);
    };
    const onExit = (code: number | null): void => {
      child.off('message', onMsg);
      reject(new Error(`toy child exited (${code}) before sending ${key}`));
    };
    child.on('message', onMsg);
    child.once('exit', onExit);
  });
}

export async function startToy(spec: ToyTreeSpec): Promise<ToyMount> {
  const base = await mkdtemp(join(tmpdir(), 'estargz-fuse-test-'));
  const mnt = join(base, 'mnt');
  await mkdir(mnt);
  const child = fork(CHILD, ['mount', mnt, JSON.stringify(spec)], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const ready = await nextMessage<{ pid: number; negotiated: Negotiated }>(child, 'ready');
  let successor: number | undefined;
  return {
    mnt,
    child,
    pid: ready.pid,
    negotiated: ready.negotiated,
    stats: async () => {
      const reply = nextMessage<{ stats: ChildStats }>(child, 'stats');
      child.send({ cmd: 'stats' });
      return (await reply).stats;
    },
    handoff: async () => {
      const reply = nextMessage<{ successor: number }>(child, 'successor');
      child.send({ cmd: 'handoff' });
      successor = (await reply).successor;
      return successor;
    },
    stop: async () => {
      if (child.exitCode === null && child.connected) {
        const exited = new Promise<void>((r) => child.once('exit', () => r()));
        child.send({ cmd: 'close' });
        await Promise.race([exited, new Promise<void>((r) => setTimeout(r, 5000).unref())]);
      }
      if (child.exitCode === null) child.kill('SIGKILL');
      // A successor (or a killed child) leaves the mount: a lazy unmount ends it (the successor exits on ENODEV).
      if (await isMounted(mnt)) await run('umount', ['-l', mnt]).catch(() => {});
      if (successor) {
        const deadline = Date.now() + 5000;
        while (Date.now() < deadline && (await readFile(`/proc/${successor}/status`, 'utf8').then((s) => !/State:\s+Z/.test(s), () => false))) {
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      await rm(base, { recursive: true, force: true }).catch(() => {});
    },
  };
}

/** Polls `check` until it returns true (or fails after `ms`). */
export async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
