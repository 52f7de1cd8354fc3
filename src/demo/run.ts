import { spawn, execFile as execFileCb, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { convertImage } from '../convert/image-convert.js';
import { createLogger } from '../log/logger.js';
import { RegistryClient } from '../registry/client.js';
import { parseReference } from '../registry/reference.js';
import { privatePodman, type PrivatePodman } from '../sandbox/podman.js';
import { freePort, isMounted, stop, unmountUnder, waitFor, which } from '../sandbox/processes.js';
import { withCleanup, type Race } from '../sandbox/interrupts.js';
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
  /** Its cleanup() also stops podman commands still running (an interrupted step leaves its command behind). */
  podman?: PrivatePodman;
  client?: RegistryClient;
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

async function cleanup(s: Started, print: Print): Promise<void> {
  await s.podman?.cleanup();
  await s.client?.close().catch(() => {}); // cleanup goes on whatever one step says: a client that fails to close holds nothing on disk
  if (s.store) {
    await stop(s.store.proc, 15_000);
    // The store unmounts on SIGTERM; should it have died first, the mount must not outlive the demo.
    if (await isMounted(s.store.mnt)) await execFile('umount', ['-l', s.store.mnt]).catch(() => {});
  }
  if (s.registry) await stop(s.registry, 5_000);
  // podman mounts its overlay storage under the graph root; one interrupted half-way may leave it mounted.
  await unmountUnder(s.work);
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
  const started: Started = { work: await mkdtemp(join(tmpdir(), 'estargz-demo-')) };
  print(`work directory: ${started.work}`);
  // The first failure is the one to report; a clean-up failure on top of it only gets a line.
  await withCleanup((race) => demoSteps(started, print, race), () => cleanup(started, print),
    (err) => process.stderr.write(`estargz-store: demo clean-up: ${err.message}\n`));
}

async function demoSteps(started: Started, print: Print, race: Race): Promise<void> {
  let n = 0;
  const step = async <T>(fn: () => Promise<T>, describe?: (value: T) => string): Promise<T> => {
    const name = DEMO_STEPS[n++]!;
    print(`[${n}/${DEMO_STEPS.length}] ${name} ...`);
    const t0 = performance.now();
    const value = await race(fn());
    print(`      done in ${((performance.now() - t0) / 1000).toFixed(2)} s${describe ? `: ${describe(value)}` : ''}`);
    return value;
  };

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

  started.client = new RegistryClient({ log: createLogger(process.env.ESTARGZ_LOG_LEVEL) });
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
    // A metrics endpoint that does not answer yet is a store not up yet: polled again until the deadline.
    await waitFor('the store', async () => (await isMounted(mnt)) && (await fetch(metricsUrl).then((r) => r.ok, () => false)), proc, 20_000, log);
  }, () => `${started.store!.mnt} (metrics ${metricsUrl})`);

  // A podman of the demo's own: storage, run root and config files in the work directory, never /etc/containers.
  started.podman = await privatePodman(join(work, 'podman'), { layerStore: started.store!.mnt, insecureRegistries: [host] });
  const podman = started.podman.run;

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
}
