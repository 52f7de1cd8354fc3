import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { SOCKET_NAME, controlRequest } from '../src/daemon/control-protocol.js';
import type { ServingStatus } from '../src/daemon/daemon.js';
import type { LayerStatus } from '../src/layers/status.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

export type StoreStatus = ServingStatus & { layers: LayerStatus[] };

/**
 * A store daemon (`estargz-store mount`) in its own process, on a temporary
 * mountpoint. `proc` is the keeper (it holds the mount; SIGTERM unmounts,
 * SIGKILL leaves a stale mount); the store itself runs in its child, whose
 * pid `status()` gives.
 */
export interface RunningStore {
  mnt: string;
  root: string;
  proc: ChildProcess;
  /** What `status --json` prints: the serving process's pid, the keeper's, restarts, crashes, layers. */
  status(): Promise<StoreStatus>;
  /** Everything the daemon logged so far (JSON lines). */
  logs(): string;
  /** Resolves once the logs match `re` (the daemon logs asynchronously: a line may follow the FUSE reply it concerns); rejects after `ms`. */
  waitForLog(re: RegExp, ms?: number): Promise<void>;
  /** Path of a layer directory: `<mnt>/<base64(ref)>/<digest>`. */
  layerDir(ref: string, digest: string): string;
  /** SIGTERM, then wait for the process to exit; returns its exit code. */
  stop(): Promise<number | null>;
}

export async function isMounted(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === path);
}

/** Starts a store with `config` (TOML text) and waits until its mount is up. */
export async function startStore(config = '', extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<RunningStore> {
  const base = await mkdtemp(join(tmpdir(), 'estargz-store-'));
  const mnt = join(base, 'mnt');
  const root = join(base, 'root');
  await mkdir(mnt);
  const configPath = join(base, 'config.toml');
  await writeFile(configPath, config);
  let out = '';
  const proc = spawn(process.execPath, [CLI, 'mount', '--config', configPath, '--root', root, ...extraArgs, mnt], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ESTARGZ_LOG_LEVEL: 'debug', ...env },
  });
  proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 15_000;
  while (!(await isMounted(mnt))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`store did not mount at ${mnt} (exit ${proc.exitCode}):\n${out.slice(-3000)}`);
    }
    await sleep(50);
  }
  // Mounted by the keeper; serving once its control socket answers (the first store process is then up).
  const status = async (): Promise<StoreStatus> => {
    const res = await controlRequest(join(root, SOCKET_NAME), { op: 'status' });
    if (!res.ok) throw new Error(`status: ${res.error}`);
    return res as unknown as StoreStatus;
  };
  for (;;) {
    const ok = await status().then(() => true, () => false);
    if (ok) break;
    if (proc.exitCode !== null || Date.now() > deadline + 15_000) {
      proc.kill('SIGKILL');
      throw new Error(`store mounted at ${mnt} but did not serve (exit ${proc.exitCode}):\n${out.slice(-3000)}`);
    }
    await sleep(50);
  }
  return {
    mnt,
    root,
    proc,
    logs: () => out,
    status,
    waitForLog: async (re, ms = 5000) => {
      const deadline = Date.now() + ms;
      while (!re.test(out)) {
        if (Date.now() > deadline) throw new Error(`the store's logs did not match ${re} within ${ms} ms:\n${out.slice(-3000)}`);
        await sleep(20);
      }
    },
    layerDir: (ref, digest) => join(mnt, Buffer.from(ref).toString('base64'), digest),
    stop: async () => {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      const code = await Promise.race([exited, sleep(15_000, undefined, { ref: false }).then(() => { proc.kill('SIGKILL'); return -1; })]);
      await rm(base, { recursive: true, force: true }).catch(() => {});
      return code;
    },
  };
}
