// podman 5.4 for tests, on a Debian 12 machine whose own podman is 4.3.1.
//
// podman 5 comes from Debian 13 ("trixie"), in a chroot that
// scripts/podman5/build-chroot.sh builds once (debootstrap, about 80 s) and
// keeps in a cache directory (PODMAN5_CACHE, default
// /var/cache/estargz-store/podman5; PODMAN5_REBUILD=1 rebuilds it). Each
// startPodman5() runs scripts/podman5/session.sh, which holds a private mount
// namespace with the chroot set up in it: the cached rootfs read-only, and this
// run's own /etc/containers, graphroot, /var/tmp, /run and /tmp. podman
// commands enter that namespace with nsenter. Nothing is mounted in the
// machine's namespace, and the machine's /etc/containers is never read.
//
// The session ends when its stdin closes: on stop(), or when this process
// dies in any way (the pipe closes), so no namespace outlives a test run.

import { execFile as execFileCb, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFile = promisify(execFileCb);

const SCRIPTS = fileURLToPath(new URL('../../scripts/podman5/', import.meta.url));
const PROJECT = fileURLToPath(new URL('../../', import.meta.url));
const CACHE = process.env['PODMAN5_CACHE'] ?? '/var/cache/estargz-store/podman5';
const INSTALL_HINT = 'it needs root, debootstrap (scripts/install-system-deps.sh) and the Debian mirror http://deb.debian.org (PODMAN5_MIRROR)';

/** Where things appear inside the chroot. */
export const CHROOT = {
  store: '/var/lib/estargz-store/store',
  storeRoot: '/var/lib/estargz-store/root',
  project: '/opt/estargz-store',
  node: '/usr/local/bin/node',
  authHelper: '/opt/p5/bin/auth-helper',
  authHelperLog: '/var/tmp/auth-helper.log',
  graphroot: '/var/lib/containers/storage',
} as const;

export interface Podman5Chroot {
  rootfs: string;
  /** First line of the ready marker: podman's version and the build time. */
  description: string;
  /** The first word of podman 5's User-Agent on registry requests: `containers/<c/image version>`. */
  userAgent: string;
}

/** Checked (or built) once per process: with PODMAN5_REBUILD=1 a second check would rebuild again. */
let ensured: Promise<Podman5Chroot> | undefined;

/**
 * Builds the chroot if the cache has none (build-chroot.sh: locked, so
 * concurrent runs build it once). Throws with the build's own message and
 * the install step when it cannot be built.
 */
export function ensurePodman5Chroot(): Promise<Podman5Chroot> {
  ensured ??= buildOrCheck();
  return ensured;
}

async function buildOrCheck(): Promise<Podman5Chroot> {
  try {
    await execFile(join(SCRIPTS, 'build-chroot.sh'), [], { timeout: 20 * 60_000, maxBuffer: 16 << 20 });
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    const detail = `${e.stderr ?? ''}${e.stdout ?? ''}`.trim() || e.message;
    throw new Error(`the podman 5 chroot could not be built in ${CACHE} (scripts/podman5/build-chroot.sh; ${INSTALL_HINT}):\n${detail}`);
  }
  const marker = await readFile(join(CACHE, 'ready'), 'utf8');
  const cimage = /^c-image=(\S+)$/m.exec(marker)?.[1];
  if (!cimage) throw new Error(`${CACHE}/ready names no c/image version; rebuild with PODMAN5_REBUILD=1`);
  return { rootfs: join(CACHE, 'rootfs'), description: marker.split('\n')[0]!, userAgent: `containers/${cimage}` };
}

export interface Podman5Options {
  /** The store's FUSE mount on the host; storage.conf names it with `:ref`. */
  storeMnt: string;
  /** The store's --root (store.sock): given, the auth helper can be switched on. */
  storeRoot?: string;
  /** Registries podman may reach over plain HTTP ("127.0.0.1:PORT"). */
  insecureRegistries: string[];
}

export interface Podman5 {
  chroot: Podman5Chroot;
  /** This run's state on the host (see scripts/podman5/session.sh). */
  runDir: string;
  /** Runs podman in the chroot. */
  run(args: string[], opts?: { timeoutMs?: number }): Promise<{ stdout: string; stderr: string }>;
  /** The host path of a path under /var/tmp or /var/lib/containers in the chroot. */
  hostPath(chrootPath: string): string;
  /** Names (or stops naming) the store's auth helper in registries.conf; read by the next podman command. */
  setAuthHelper(on: boolean): Promise<void>;
  /** The helper wrapper's log: one `called` and one `exit N` line per call. */
  authHelperLog(): Promise<string>;
  /** The storage layers of a pulled image, top first, with the store directory each one is served from (if any). */
  imageLayers(ref: string): Promise<StorageLayer[]>;
  stop(): Promise<void>;
}

export interface StorageLayer {
  id: string;
  /** c/storage's `overlay/<id>/additionallayer`: the store directory (in the chroot) backing the layer. */
  additionalLayer?: string;
}

const PATH_IN_CHROOT = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const READY_TIMEOUT_MS = 20 * 60_000; // the session waits for a rebuild by another run

/** Sessions not yet stopped: their stdin is closed synchronously if this process exits without stop(). */
const live = new Set<ChildProcess>();

export async function startPodman5(opts: Podman5Options): Promise<Podman5> {
  const chroot = await ensurePodman5Chroot();
  const runDir = await mkdtemp(join(tmpdir(), 'estargz-podman5-'));
  for (const d of ['etc-containers', 'containers', 'vartmp', 'bin']) await mkdir(join(runDir, d));
  await writeFile(join(runDir, '.podman5-run'), ''); // the session may remove this directory when it ends
  await writeConfig(runDir, opts, false);
  await writeAuthHelper(runDir);
  const args = [join(SCRIPTS, 'session.sh'), runDir, opts.storeMnt];
  if (opts.storeRoot !== undefined) args.push(opts.storeRoot, PROJECT, process.execPath);
  let session: Session;
  try {
    session = await startSession(args);
  } catch (err) {
    await rm(runDir, { recursive: true, force: true });
    throw err;
  }
  const { child, pid, exited } = session;
  let stopping: Promise<void> | undefined;
  const graph = join(runDir, 'containers', 'storage');

  const podman: Podman5 = {
    chroot,
    runDir,
    run: (a, o = {}) => execFile('nsenter', [
      '-t', String(pid), '-m', '--', 'chroot', chroot.rootfs, '/usr/bin/env', '-i', PATH_IN_CHROOT, 'HOME=/root', 'LANG=C.UTF-8',
      // this machine has cgroups v1, which podman 5 still runs on but warns about on every command
      'PODMAN_IGNORE_CGROUPSV1_WARNING=1', 'TMPDIR=/var/tmp', 'podman', ...a,
    ], { timeout: o.timeoutMs ?? 180_000, maxBuffer: 64 << 20 }),
    hostPath: (p) => {
      for (const [inside, outside] of [['/var/tmp', 'vartmp'], ['/var/lib/containers', 'containers']] as const) {
        if (p === inside || p.startsWith(`${inside}/`)) return join(runDir, outside, p.slice(inside.length));
      }
      throw new Error(`hostPath: ${p} is not under /var/tmp or /var/lib/containers`);
    },
    setAuthHelper: async (on) => {
      if (on && opts.storeRoot === undefined) throw new Error('setAuthHelper: start podman 5 with storeRoot to use the auth helper');
      await writeConfig(runDir, opts, on);
    },
    authHelperLog: () => readFile(join(runDir, 'vartmp', 'auth-helper.log'), 'utf8').catch(() => ''),
    imageLayers: (ref) => storageLayers(graph, ref),
    stop: () => (stopping ??= (async () => {
      // EOF: the session removes leftover containers and the run directory, then exits; its namespace goes with it
      child.stdin?.end();
      await exited;
      live.delete(child);
      await rm(runDir, { recursive: true, force: true });
    })()),
  };
  return podman;
}

interface Session {
  child: ChildProcess;
  /** The pid holding the mount namespace. */
  pid: number;
  exited: Promise<void>;
}

function startSession(args: string[]): Promise<Session> {
  const child = spawn(args[0]!, args.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.unref();
  (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  child.stdin?.on('error', () => {}); // EPIPE once the session has exited
  live.add(child);
  installExitHook();
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.stdin?.end();
      reject(new Error(`podman 5 session not ready within ${READY_TIMEOUT_MS / 1000} s:\n${err}`));
    }, READY_TIMEOUT_MS);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^ready (\d+)\n/m.exec(out); // a whole line: the pid may arrive in two pieces
      if (!m) return;
      clearTimeout(timer);
      child.stdout!.removeAllListeners('data');
      child.stdout!.resume();
      (child.stdout as unknown as { unref?: () => void }).unref?.();
      (child.stderr as unknown as { unref?: () => void }).unref?.();
      resolve({ child, pid: Number(m[1]), exited });
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      live.delete(child);
      reject(new Error(`podman 5 session exited (code ${code}) before it was ready:\n${err}${out}`));
    });
  });
}

let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Closing the pipe is enough: the session sees EOF and ends on its own.
  process.on('exit', () => {
    for (const child of live) child.stdin?.destroy();
  });
}

/**
 * The settings this machine needs, all inside the chroot: no CAP_SYS_RESOURCE
 * (podman's default rlimits fail), cgroups v1 with no systemd or journald,
 * and a network shared with the host (netns "host": podman creates no bridge
 * and no firewall rules here).
 */
async function writeConfig(runDir: string, opts: Podman5Options, authHelper: boolean): Promise<void> {
  const dir = join(runDir, 'etc-containers');
  await writeFile(join(dir, 'storage.conf'), [
    '[storage]',
    'driver = "overlay"',
    'runroot = "/run/containers/storage"',
    `graphroot = "${CHROOT.graphroot}"`,
    '[storage.options]',
    `additionallayerstores = ["${CHROOT.store}:ref"]`,
    '[storage.options.overlay]',
    'mountopt = "nodev"',
    '',
  ].join('\n'));
  await writeFile(join(dir, 'containers.conf'), [
    '[containers]',
    'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]',
    'netns = "host"',
    'log_driver = "k8s-file"',
    '[engine]',
    'runtime = "runc"',
    'cgroup_manager = "cgroupfs"',
    'events_logger = "file"',
    '',
  ].join('\n'));
  await writeFile(join(dir, 'policy.json'), '{"default":[{"type":"insecureAcceptAnything"}]}\n');
  const lines = [
    // a top-level key: it must come before the first [[registry]] table
    ...(authHelper ? [`additional-layer-store-auth-helper = "${CHROOT.authHelper}"`] : []),
    'unqualified-search-registries = []',
    ...opts.insecureRegistries.flatMap((r) => ['[[registry]]', `location = "${r}"`, 'insecure = true']),
    '',
  ];
  await writeFile(join(dir, 'registries.conf'), lines.join('\n'));
}

/**
 * podman execs the helper with the pull's credentials as JSON on stdin; the
 * wrapper runs the store's own helper with the host's node, and logs each call
 * and its exit code (never the credentials) where the test can read them.
 */
async function writeAuthHelper(runDir: string): Promise<void> {
  const path = join(runDir, 'bin', 'auth-helper');
  await writeFile(path, [
    '#!/bin/sh',
    `echo called >> ${CHROOT.authHelperLog}`,
    `ESTARGZ_STORE_ROOT=${CHROOT.storeRoot} ${CHROOT.node} ${CHROOT.project}/dist/src/cli/auth-helper.js "$@" 2>> ${CHROOT.authHelperLog}`,
    'rc=$?',
    `echo "exit $rc" >> ${CHROOT.authHelperLog}`,
    'exit $rc',
    '',
  ].join('\n'), { mode: 0o755 });
}

interface ImagesJson { id: string; names?: string[]; layer: string }
interface LayersJson { id: string; parent?: string }

/** Reads c/storage's overlay-images.json and overlay-layers.json of the graphroot. */
async function storageLayers(graph: string, ref: string): Promise<StorageLayer[]> {
  const images = JSON.parse(await readFile(join(graph, 'overlay-images', 'images.json'), 'utf8')) as ImagesJson[];
  const layers = JSON.parse(await readFile(join(graph, 'overlay-layers', 'layers.json'), 'utf8')) as LayersJson[];
  const image = images.find((i) => i.names?.includes(ref));
  if (!image) throw new Error(`no image named ${ref} in ${graph}`);
  const out: StorageLayer[] = [];
  for (let id: string | undefined = image.layer; id; id = layers.find((l) => l.id === id)?.parent) {
    const al = await readFile(join(graph, 'overlay', id, 'additionallayer'), 'utf8').catch(() => undefined);
    out.push(al === undefined ? { id } : { id, additionalLayer: al.trim() });
  }
  return out;
}
