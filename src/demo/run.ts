import { spawn, execFile as execFileCb, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { convertImage } from '../convert/image-convert.js';
import { RegistryClient } from '../registry/client.js';
import { parseReference } from '../registry/reference.js';
import { buildDemoImage } from './image.js';

const execFile = promisify(execFileCb);
const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));

export const DEMO_STEPS = [
  'start a local registry',
  'build a small image from this machine\'s files',
  'convert it to eStargz (image convert)',
  'mount the store',
  'podman pull (lazy)',
  'podman run',
  'podman save (reads every layer)',
] as const;

type Print = (line: string) => void;

/** Everything the demo started, undone in reverse order by cleanup(). */
interface Started {
  work: string;
  registry?: ChildProcess;
  store?: { proc: ChildProcess; mnt: string };
  podmanEnv?: NodeJS.ProcessEnv;
  /** podman commands still running (an interrupted step leaves its command behind). */
  commands: Set<ChildProcess>;
  client?: RegistryClient;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

async function which(cmd: string): Promise<boolean> {
  return execFile('sh', ['-c', `command -v ${cmd}`]).then(() => true, () => false);
}

async function waitFor(what: string, ok: () => Promise<boolean>, proc: ChildProcess, timeoutMs: number, log?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (proc.exitCode !== null || proc.signalCode !== null || Date.now() > deadline) {
      const tail = log ? (await readFile(log, 'utf8').catch(() => '')).slice(-2000) : '';
      throw new Error(`${what} did not come up${proc.exitCode !== null ? ` (exit ${proc.exitCode})` : ''}${tail ? `:\n${tail}` : ''}`);
    }
    await sleep(100);
  }
}

export async function isMounted(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === path);
}

/** Compressed bytes the store fetched from registries so far (its /metrics). */
async function storeFetchedBytes(metricsUrl: string): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('estargz_store_registry_bytes_total')) total += Number(line.split(' ').pop());
  }
  return total;
}

function mb(n: number): string {
  return `${(n / 1e6).toFixed(2)} MB`;
}

/** Stops a child (with its process group when it was started detached) and waits for it, SIGKILL after `graceMs`. */
async function stop(proc: ChildProcess, graceMs: number, group = true): Promise<void> {
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

/** Mount points under `dir`, deepest first. */
async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(dir + '/')).sort((a, b) => b.length - a.length);
}

async function cleanup(s: Started, print: Print): Promise<void> {
  for (const c of s.commands) await stop(c, 10_000, false);
  if (s.podmanEnv) {
    const env = s.podmanEnv;
    for (const args of [['rm', '-a', '-f'], ['rmi', '-a', '-f'], ['system', 'reset', '-f']]) {
      await execFile('podman', args, { env, timeout: 60_000 }).catch(() => {});
    }
  }
  await s.client?.close().catch(() => {});
  if (s.store) {
    await stop(s.store.proc, 15_000);
    // The store unmounts on SIGTERM; should it have died first, the mount must not outlive the demo.
    if (await isMounted(s.store.mnt)) await execFile('umount', ['-l', s.store.mnt]).catch(() => {});
  }
  if (s.registry) await stop(s.registry, 5_000);
  // podman mounts its overlay storage under the graph root; one interrupted half-way may leave it mounted.
  for (const m of await mountsUnder(s.work)) await execFile('umount', ['-l', m]).catch(() => {});
  await rm(s.work, { recursive: true, force: true });
  print(`cleaned up: podman storage, store mount, registry and ${s.work} removed`);
}

/**
 * The one-command try-out: a local registry, a small image built from this
 * machine's files, `image convert`, the store mounted with a private config,
 * and a private podman that pulls lazily, runs and saves the image; each
 * step with its time and the registry bytes the store fetched. Everything
 * it starts is stopped and removed at the end, on failure and on
 * SIGINT/SIGTERM too. Needs root, docker-registry, podman and /dev/fuse.
 */
export async function runDemo(print: Print = (l) => process.stdout.write(l + '\n')): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo mounts a FUSE file system and runs podman with its own storage: run it as root');
  for (const cmd of ['docker-registry', 'podman', 'tar', 'ldd']) {
    if (!(await which(cmd))) throw new Error(`the demo needs ${cmd} (Debian: apt-get install docker-registry podman runc tar libc-bin)`);
  }
  const started: Started = { work: await mkdtemp(join(tmpdir(), 'estargz-demo-')), commands: new Set() };
  print(`work directory: ${started.work}`);
  let interrupted: string | null = null;
  let wake: () => void = () => {};
  const onSignal = (signal: NodeJS.Signals): void => {
    interrupted = signal;
    wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const interruptedPromise = new Promise<never>((_, reject) => {
    wake = () => reject(new Error(`interrupted by ${interrupted}`));
  });
  interruptedPromise.catch(() => {});

  let n = 0;
  const step = async <T>(fn: () => Promise<T>, describe?: (value: T) => string): Promise<T> => {
    const name = DEMO_STEPS[n++]!;
    print(`[${n}/${DEMO_STEPS.length}] ${name} ...`);
    const t0 = performance.now();
    const value = await Promise.race([fn(), interruptedPromise]);
    print(`      done in ${((performance.now() - t0) / 1000).toFixed(2)} s${describe ? `: ${describe(value)}` : ''}`);
    return value;
  };

  let failure: unknown = null;
  try {
    const work = started.work;
    const regPort = await freePort();
    const host = `127.0.0.1:${regPort}`;
    await step(async () => {
      await writeFile(join(work, 'registry.yml'), [
        'version: 0.1',
        'log:',
        '  level: warn',
        'storage:',
        '  filesystem:',
        `    rootdirectory: ${join(work, 'registry')}`,
        '  delete:',
        '    enabled: true',
        'http:',
        `  addr: ${host}`,
        '',
      ].join('\n'));
      const log = join(work, 'registry.log');
      const fd = openSync(log, 'a');
      // Its own process group: a Ctrl-C on the terminal reaches the demo, which then stops it in order.
      started.registry = spawn('docker-registry', ['serve', join(work, 'registry.yml')], { stdio: ['ignore', fd, fd], detached: true });
      closeSync(fd);
      await waitFor('docker-registry', async () => (await fetch(`http://${host}/v2/`).then((r) => r.status, () => 0)) === 200, started.registry, 10_000, log);
    }, () => `http://${host}`);

    started.client = new RegistryClient();
    const client = started.client;
    const image = await step(() => buildDemoImage(client, host, 'demo/app', join(work, 'image')),
      (img) => `${img.ref}, layers ${img.layers.map((l) => mb(l.size)).join(' + ')}`);

    const esgzRef = `${host}/demo/app:esgz`;
    const converted = await step(() => convertImage(client, parseReference(image.ref), parseReference(esgzRef)),
      (r) => `${esgzRef}@${r.digest.slice(0, 19)}…, layers ${r.manifests[0]!.layers.map((l) => mb(l.size)).join(' + ')}` +
        ` (the same as: estargz-store image convert ${image.ref} ${esgzRef})`);
    const layerBytes = converted.manifests[0]!.layers.reduce((a, l) => a + l.size, 0);

    const metricsPort = await freePort();
    const metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    await step(async () => {
      const mnt = join(work, 'mnt');
      await mkdir(mnt);
      // The background fetch is put off, so the bytes below are what each step itself needed.
      await writeFile(join(work, 'store.toml'), `metrics_address = "127.0.0.1:${metricsPort}"\nbackground_fetch_idle_sec = 600\n`);
      const log = join(work, 'store.log');
      const fd = openSync(log, 'a');
      const proc = spawn(process.execPath, [CLI, 'mount', '--config', join(work, 'store.toml'), '--root', join(work, 'store-root'), mnt],
        { stdio: ['ignore', fd, fd], detached: true, env: { ...process.env, ESTARGZ_LOG_LEVEL: process.env.ESTARGZ_LOG_LEVEL ?? 'warn' } });
      closeSync(fd);
      started.store = { proc, mnt };
      await waitFor('the store', async () => (await isMounted(mnt)) && (await fetch(metricsUrl).then((r) => r.ok, () => false)), proc, 20_000, log);
    }, () => `${started.store!.mnt} (metrics ${metricsUrl})`);

    // A podman of the demo's own: storage, run root and config files in the work directory, never /etc/containers.
    const pdir = join(work, 'podman');
    await mkdir(pdir);
    await writeFile(join(pdir, 'storage.conf'), [
      '[storage]', 'driver = "overlay"', `graphroot = "${pdir}/graph"`, `runroot = "${pdir}/run"`,
      '[storage.options]', `additionallayerstores = ["${started.store!.mnt}:ref"]`, '',
    ].join('\n'));
    await writeFile(join(pdir, 'containers.conf'), '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n');
    await writeFile(join(pdir, 'registries.conf'), `unqualified-search-registries = []\n[[registry]]\nlocation = "${host}"\ninsecure = true\n`);
    await writeFile(join(pdir, 'auth.json'), '{"auths":{}}\n');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      CONTAINERS_STORAGE_CONF: join(pdir, 'storage.conf'),
      CONTAINERS_CONF: join(pdir, 'containers.conf'),
      CONTAINERS_REGISTRIES_CONF: join(pdir, 'registries.conf'),
      REGISTRY_AUTH_FILE: join(pdir, 'auth.json'),
    };
    started.podmanEnv = env;
    const podman = (args: string[]): Promise<{ stdout: string }> => new Promise((resolve, reject) => {
      const child = execFileCb('podman', args, { env, timeout: 180_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        started.commands.delete(child);
        if (err) reject(new Error(`podman ${args.join(' ')}: ${err.message}${stderr ? `\n${stderr}` : ''}`));
        else resolve({ stdout });
      });
      started.commands.add(child);
    });

    let before = await storeFetchedBytes(metricsUrl);
    const fetched = async (): Promise<string> => {
      const now = await storeFetchedBytes(metricsUrl);
      const delta = now - before;
      before = now;
      return `the store fetched ${mb(delta)} from the registry (${((delta / layerBytes) * 100).toFixed(1)}% of the ${mb(layerBytes)} of layers)`;
    };
    await step(() => podman(['pull', '-q', esgzRef]));
    print(`      ${await fetched()}`);
    const ran = await step(() => podman(['run', '--rm', '--network', 'none', esgzRef, '/bin/sh', '-c', 'cat /etc/demo-hello; ls -l /data']));
    for (const line of ran.stdout.trimEnd().split('\n')) print(`      | ${line}`);
    print(`      ${await fetched()}`);
    await step(() => podman(['save', '-o', join(work, 'saved.tar'), esgzRef]));
    print(`      ${await fetched()}`);
  } catch (err) {
    failure = err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    // Signals during the clean-up are ignored: a second Ctrl-C must not leave a mount behind.
    const ignore = (): void => {};
    process.on('SIGINT', ignore);
    process.on('SIGTERM', ignore);
    try {
      await cleanup(started, print);
    } catch (err) {
      // The first failure is the one to report; a clean-up failure on top of it only gets a line.
      if (!failure) failure = err;
      else process.stderr.write(`estargz-store: demo clean-up: ${(err as Error).message}\n`);
    } finally {
      process.off('SIGINT', ignore);
      process.off('SIGTERM', ignore);
    }
  }
  if (failure) throw failure;
  if (interrupted) throw new Error(`interrupted by ${interrupted}`);
}
