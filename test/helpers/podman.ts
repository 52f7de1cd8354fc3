import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * podman with its own graphroot, runroot and config files, so tests never
 * touch the machine's /etc/containers or image store. The two containers.conf
 * settings are what podman needs in this VM (no CAP_SYS_RESOURCE; crun
 * rejects the hybrid cgroup layout).
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
  const stores = opts.additionalLayerStores ?? [];
  await writeFile(join(dir, 'storage.conf'), [
    '[storage]',
    'driver = "overlay"',
    `graphroot = "${dir}/graph"`,
    `runroot = "${dir}/run"`,
    '[storage.options]',
    `additionallayerstores = [${stores.map((s) => JSON.stringify(s)).join(', ')}]`,
    '',
  ].join('\n'));
  await writeFile(join(dir, 'containers.conf'), [
    '[containers]',
    'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]',
    '[engine]',
    'runtime = "runc"',
    '',
  ].join('\n'));
  await writeFile(join(dir, 'registries.conf'), `unqualified-search-registries = []\n${opts.registriesExtra ?? ''}\n`);
  // podman insists that REGISTRY_AUTH_FILE exists.
  await writeFile(join(dir, 'auth.json'), '{"auths":{}}\n');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'),
    CONTAINERS_CONF: join(dir, 'containers.conf'),
    CONTAINERS_REGISTRIES_CONF: join(dir, 'registries.conf'),
    REGISTRY_AUTH_FILE: join(dir, 'auth.json'),
  };
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
