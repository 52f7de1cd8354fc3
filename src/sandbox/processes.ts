import { execFile as execFileCb, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

/** Helpers for commands that start local processes and mounts (demo, image optimize) and must leave none behind. */

const execFile = promisify(execFileCb);

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export async function which(cmd: string): Promise<boolean> {
  return execFile('sh', ['-c', `command -v ${cmd}`]).then(() => true, () => false); // `command -v` fails: not installed
}

/** Polls `ok` until it holds; fails (with the tail of `log`) when `proc` exits or `timeoutMs` passes. */
export async function waitFor(what: string, ok: () => Promise<boolean>, proc: ChildProcess, timeoutMs: number, log?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (proc.exitCode !== null || proc.signalCode !== null || Date.now() > deadline) {
      const tail = log ? (await readFile(log, 'utf8').catch(() => '')).slice(-2000) : ''; // no log yet: the error says so without a tail
      throw new Error(`${what} did not come up${proc.exitCode !== null ? ` (exit ${proc.exitCode})` : ''}${tail ? `:\n${tail}` : ''}`);
    }
    await sleep(100);
  }
}

export async function isMounted(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === path);
}

/** Mount points under `dir`, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(dir + '/')).sort((a, b) => b.length - a.length);
}

/** Lazily unmounts whatever is still mounted under `dir` (podman's overlay of an interrupted run, say). */
export async function unmountUnder(dir: string): Promise<void> {
  for (const m of await mountsUnder(dir)) await execFile('umount', ['-l', m]).catch(() => {}); // best effort: one that will not go must not keep the others
}

/** Stops a child (with its process group when it was started detached) and waits for it, SIGKILL after `graceMs`. */
export async function stop(proc: ChildProcess, graceMs: number, group = true): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const signal = (sig: NodeJS.Signals): void => {
    try {
      if (group) process.kill(-proc.pid!, sig);
      else proc.kill(sig);
    } catch {
      proc.kill(sig);
    }
  };
  signal('SIGTERM');
  const timer = setTimeout(() => signal('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
