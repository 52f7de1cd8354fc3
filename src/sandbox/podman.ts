import { execFile as execFileCb, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stop } from './processes.js';

const execFile = promisify(execFileCb);

/**
 * A podman of our own: storage, run root and config files in `dir`, never
 * the machine's /etc/containers or image store. The containers.conf settings
 * are what podman needs in a VM without CAP_SYS_RESOURCE and with a hybrid
 * cgroup layout (runc rather than crun).
 */
export interface PrivatePodman {
  dir: string;
  env: NodeJS.ProcessEnv;
  /** Runs podman; fails with its stderr. Commands still running are stopped by cleanup(). */
  run(args: string[], opts?: { timeoutMs?: number }): Promise<{ stdout: string; stderr: string }>;
  /** Starts podman without waiting (its exit is the caller's to watch); stopped by cleanup() if still running. */
  spawn(args: string[], stdio?: 'inherit' | 'pipe'): ChildProcess;
  /** Stops running commands, removes containers, images and storage (the directory itself is the caller's). */
  cleanup(): Promise<void>;
}

export interface PrivatePodmanOptions {
  /** Mountpoint of an estargz-store, used as `additionallayerstores = ["<mnt>:ref"]`. */
  layerStore?: string;
  /** Registries spoken to over plain HTTP. */
  insecureRegistries?: string[];
  /** auth.json content for podman's pulls. */
  authJson?: string;
}

export interface PodmanConfigOptions {
  /** storage.conf `additionallayerstores` entries as written ("<mnt>:ref"). */
  additionalLayerStores?: string[];
  /** registries.conf lines after `unqualified-search-registries = []`. */
  registriesExtra?: string;
  /** auth.json content (default: no credentials); written owner-only. */
  authJson?: string;
}

/** Writes storage.conf, containers.conf, registries.conf and auth.json into `dir`; returns the environment that points podman at them. */
export async function writePodmanConfig(dir: string, opts: PodmanConfigOptions = {}): Promise<NodeJS.ProcessEnv> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'storage.conf'), [
    '[storage]', 'driver = "overlay"', `graphroot = "${dir}/graph"`, `runroot = "${dir}/run"`,
    '[storage.options]', `additionallayerstores = [${(opts.additionalLayerStores ?? []).map((s) => JSON.stringify(s)).join(', ')}]`, '',
  ].join('\n'));
  await writeFile(join(dir, 'containers.conf'), '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n');
  await writeFile(join(dir, 'registries.conf'), `unqualified-search-registries = []\n${opts.registriesExtra ?? ''}\n`);
  // podman insists that REGISTRY_AUTH_FILE exists.
  await writeFile(join(dir, 'auth.json'), opts.authJson ?? '{"auths":{}}\n', { mode: 0o600 });
  return {
    ...process.env,
    CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'),
    CONTAINERS_CONF: join(dir, 'containers.conf'),
    CONTAINERS_REGISTRIES_CONF: join(dir, 'registries.conf'),
    REGISTRY_AUTH_FILE: join(dir, 'auth.json'),
  };
}

export async function privatePodman(dir: string, opts: PrivatePodmanOptions = {}): Promise<PrivatePodman> {
  const env = await writePodmanConfig(dir, {
    ...(opts.layerStore && { additionalLayerStores: [`${opts.layerStore}:ref`] }),
    ...(opts.authJson && { authJson: opts.authJson }),
    registriesExtra: (opts.insecureRegistries ?? []).map((h) => `[[registry]]\nlocation = ${JSON.stringify(h)}\ninsecure = true`).join('\n'),
  });
  const running = new Set<ChildProcess>();
  const track = (child: ChildProcess): ChildProcess => {
    running.add(child);
    child.once('exit', () => running.delete(child));
    return child;
  };
  return {
    dir,
    env,
    run: (args, o = {}) => new Promise((resolve, reject) => {
      track(execFileCb('podman', args, { env, timeout: o.timeoutMs ?? 180_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`podman ${args.join(' ')}: ${err.message.split('\n')[0]}${stderr ? `\n${stderr.trimEnd()}` : ''}`));
        else resolve({ stdout, stderr });
      }));
    }),
    spawn: (args, stdio = 'pipe') => track(spawnPodman(args, env, stdio)),
    cleanup: async () => {
      // Containers first, killed at once (-t 0): a `podman run` still waiting then returns by itself.
      await execFile('podman', ['rm', '-a', '-f', '-t', '0'], { env, timeout: 60_000 }).catch(() => {});
      for (const c of running) await stop(c, 10_000, false);
      for (const args of [['rm', '-a', '-f'], ['rmi', '-a', '-f'], ['system', 'reset', '-f']]) {
        await execFile('podman', args, { env, timeout: 60_000 }).catch(() => {}); // best effort: each step runs whatever the last one said
      }
    },
  };
}

function spawnPodman(args: string[], env: NodeJS.ProcessEnv, stdio: 'inherit' | 'pipe'): ChildProcess {
  return spawn('podman', args, { env, stdio: ['ignore', stdio, stdio] });
}
