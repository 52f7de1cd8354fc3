import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writePodmanConfig } from '../src/sandbox/podman.js';

const run = promisify(execFile);

/**
 * podman with its own graphroot, runroot and config files (src/sandbox/podman.ts),
 * so tests never touch the machine's /etc/containers or image store.
 */
export interface Podman {
  dir: string;
  env: NodeJS.ProcessEnv;
  run(args: string[], opts?: { timeoutMs?: number }): Promise<{ stdout: string; stderr: string }>;
  cleanup(): Promise<void>;
}

export interface PodmanOptions {
  /** storage.conf `additionallayerstores` entries. */
  additionalLayerStores?: string[];
  /** registries.conf extra top-level lines. */
  registriesExtra?: string;
}

export async function startPodman(opts: PodmanOptions = {}): Promise<Podman> {
  try {
    await run('podman', ['--version']);
  } catch {
    throw new Error('podman is missing: install the Debian packages podman and runc (scripts/install-system-deps.sh)');
  }
  const dir = await mkdtemp(join(tmpdir(), 'estargz-podman-'));
  const env = await writePodmanConfig(dir, opts);
  const podman: Podman = {
    dir,
    env,
    run: (args, o = {}) => run('podman', args, { env, timeout: o.timeoutMs ?? 120_000, maxBuffer: 64 << 20 }),
    cleanup: async () => {
      await run('podman', ['rm', '-a', '-f'], { env }).catch(() => {});
      await run('podman', ['rmi', '-a', '-f'], { env }).catch(() => {});
      await run('podman', ['system', 'reset', '-f'], { env }).catch(() => {});
      await rm(dir, { recursive: true, force: true }).catch(() => {});
    },
  };
  return podman;
}
