/**
 * The Go reference store (containerd/stargz-snapshotter's `store` package,
 * v0.12.0 from Debian's golang-github-containerd-stargz-snapshotter-dev),
 * built from our own small main in bench/goref/src/gorefstore and started
 * the way the benchmarks start ours: a new process, a new cache root and a
 * new mountpoint per session, so the two can be measured side by side.
 *
 * The build runs in GOPATH mode (GO111MODULE=off, GOPATH=bench/goref:/usr/share/gocode)
 * as test/interop builds esgzref: Debian ships the library as GOPATH source
 * and nothing can be downloaded. The binary is cached under the bench cache
 * dir by a key over our Go sources, the Go toolchain and the installed
 * Debian Go source packages, so it is built once per change of any of them.
 */
import { execFile as execFileCb, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const execFile = promisify(execFileCb);

/** The user agent the Go store sends (bench/goref/src/gorefstore/hosts.go), so the registry log tells its traffic apart. */
export const GOREF_USER_AGENT = 'gorefstore';

const DEBIAN_GOCODE = '/usr/share/gocode';
const REFERENCE_STORE_SRC = join(DEBIAN_GOCODE, 'src/github.com/containerd/stargz-snapshotter/store');
const INSTALL_HINT = 'install golang-go and golang-github-containerd-stargz-snapshotter-dev (scripts/install-system-deps.sh)';

/** The repository root: the nearest folder above this module that holds package.json (from bench/lib and dist/bench/lib). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('no package.json above bench/lib/goref');
    dir = up;
  }
  return dir;
}

/** GOPATH root of our main (its package is src/gorefstore). */
export function gorefGopath(): string {
  return join(repoRoot(), 'bench', 'goref');
}

async function goFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.endsWith('.go')).sort().map((f) => join(dir, f));
}

/** What the binary depends on: our sources, `go version`, and the versions of every installed Debian Go source package. */
async function buildKey(): Promise<string> {
  const h = createHash('sha256');
  for (const f of await goFiles(join(gorefGopath(), 'src', 'gorefstore'))) h.update(f.slice(f.lastIndexOf('/') + 1)).update('\0').update(await readFile(f)).update('\0');
  h.update((await execFile('go', ['version'])).stdout);
  // Every golang-*-dev package: the store pulls in dozens of them (go-fuse, containerd, …).
  const { stdout } = await execFile('dpkg-query', ['-W', '-f', '${Package} ${Version}\n', 'golang-*']).catch(() => ({ stdout: 'no dpkg' }));
  h.update(stdout.split('\n').sort().join('\n'));
  return h.digest('hex').slice(0, 16);
}

export interface GorefBuild {
  path: string;
  /** The cache key (part of the path): which sources and packages the binary was built from. */
  key: string;
  /** True when an earlier build with the same key was reused. */
  cached: boolean;
}

/**
 * Builds bench/goref/src/gorefstore once per key into `<cacheDir>/goref/<key>/gorefstore`
 * (default cache dir: $TMPDIR/estargz-bench, the benchmarks' input cache).
 * Returns the reason instead when Go or the Debian source is missing.
 */
export async function buildGoref(cacheDir = join(tmpdir(), 'estargz-bench')): Promise<GorefBuild | { error: string }> {
  try {
    await execFile('go', ['version']);
  } catch (err) {
    return { error: `the Go toolchain is not available (${(err as Error).message}); ${INSTALL_HINT}` };
  }
  if (!existsSync(join(REFERENCE_STORE_SRC, 'manager.go'))) return { error: `no reference store source at ${REFERENCE_STORE_SRC}; ${INSTALL_HINT}` };
  const key = await buildKey();
  const dir = join(cacheDir, 'goref', key);
  const out = join(dir, 'gorefstore');
  if (existsSync(out)) return { path: out, key, cached: true };
  await mkdir(dir, { recursive: true });
  const partial = `${out}.${process.pid}.tmp`;
  try {
    await execFile('go', ['build', '-o', partial, 'gorefstore'], {
      cwd: gorefGopath(),
      env: {
        ...process.env,
        GO111MODULE: 'off',
        GOPATH: `${gorefGopath()}:${DEBIAN_GOCODE}`,
        GOFLAGS: '',
        GOCACHE: join(cacheDir, 'goref', 'gocache'),
        CGO_ENABLED: '0',
      },
      maxBuffer: 16 << 20,
    });
  } catch (err) {
    await rm(partial, { force: true });
    const e = err as Error & { stderr?: string };
    return { error: `go build gorefstore (GOPATH mode) failed; ${INSTALL_HINT}\n${e.stderr ?? e.message}` };
  }
  await rename(partial, out); // atomic: a concurrent or interrupted build never leaves a half-written binary under the key
  // Builds for older keys (16 MB each) are never used again.
  for (const d of await readdir(join(cacheDir, 'goref'))) {
    if (d !== key && d !== 'gocache') await rm(join(cacheDir, 'goref', d), { recursive: true, force: true });
  }
  return { path: out, key, cached: false };
}

/**
 * The Go store's binary for a benchmark run, or why it is left out (then the
 * benchmark's Go column says so and the rest runs as before): `skip` leaves
 * it out, `bin` uses a given binary, otherwise buildGoref's.
 */
export async function gorefBinary(opts: { skip?: boolean; bin?: string | undefined }, log: (s: string) => void): Promise<{ bin: string; key: string } | { missing: string }> {
  if (opts.skip) return { missing: 'left out (--no-goref)' };
  if (opts.bin) return { bin: opts.bin, key: 'given (--goref-bin)' };
  const b = await buildGoref();
  if ('error' in b) return { missing: b.error };
  log(`Go reference store: ${b.path} (${b.cached ? 'cached build' : 'built'})`);
  return { bin: b.path, key: b.key };
}

/**
 * The Go store's config.toml: `extra` (its own keys: noprefetch, [blob], …)
 * first, since top-level keys must precede tables, then for every registry
 * host a plain-HTTP mirror entry keyed by that host (the reference looks
 * mirrors up by the image reference's host).
 */
export function gorefConfig(registryHosts: readonly string[], extra = ''): string {
  const lines = [extra.trim()];
  for (const h of registryHosts) lines.push('', `[[resolver.host."${h}".mirrors]]`, `host = "${h}"`, 'insecure = true');
  return lines.join('\n').trimStart() + '\n';
}

export interface GorefStore {
  mnt: string;
  root: string;
  proc: ChildProcess;
  pid: number;
  /** Seconds from spawn to the mount answering. */
  startSeconds: number;
  logs(): string;
  /** `<mnt>/<base64(ref)>/<digest>`: the reference v0.12.0 names layer dirs by the compressed layer digest. */
  layerDir(ref: string, digest: string): string;
  /** SIGTERM (the main unmounts), wait, lazy-unmount whatever is left, remove the session dir; returns the exit code. */
  stop(): Promise<number | null>;
}

export interface GorefStartOptions {
  /** The binary from buildGoref. */
  bin: string;
  /** config.toml text (see gorefConfig). */
  config: string;
  /** logrus level (default info). */
  logLevel?: string;
  /** Keep the store's log in this file when it stops. */
  logFile?: string;
  env?: NodeJS.ProcessEnv;
}

async function isMounted(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === path);
}

/** Detaches a mount left behind (store killed, or busy at SIGTERM) so the session dir can be removed. */
async function forceUnmount(mnt: string): Promise<void> {
  if (!(await isMounted(mnt))) return;
  await execFile('fusermount', ['-u', '-z', mnt]).catch(() => execFile('umount', ['-l', mnt]).catch(() => {}));
}

/** Starts the Go store on a new mountpoint with a new root and waits until the mount is up. */
export async function startGorefStore(opts: GorefStartOptions): Promise<GorefStore> {
  const base = await mkdtemp(join(tmpdir(), 'estargz-bench-goref-'));
  const mnt = join(base, 'mnt');
  const root = join(base, 'root');
  await mkdir(mnt);
  const configPath = join(base, 'config.toml');
  await writeFile(configPath, opts.config);
  let out = '';
  const started = performance.now();
  const proc = spawn(opts.bin, ['-config', configPath, '-root', root, '-log-level', opts.logLevel ?? 'info', mnt], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // DOCKER_CONFIG to an empty dir: the docker-config keychain must not pick up the machine's logins.
    env: { ...process.env, DOCKER_CONFIG: base, ...opts.env },
  });
  const keep = (d: Buffer): void => {
    out += d.toString();
    if (out.length > 8 << 20) out = out.slice(-(4 << 20));
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 20_000;
  while (!(await isMounted(mnt))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      await exited;
      await forceUnmount(mnt);
      await rm(base, { recursive: true, force: true }).catch(() => {});
      throw new Error(`the Go store did not mount at ${mnt} (exit ${proc.exitCode}):\n${out.slice(-3000)}`);
    }
    await sleep(10);
  }
  const startSeconds = (performance.now() - started) / 1000;
  let stopping: Promise<number | null> | undefined;
  return {
    mnt,
    root,
    proc,
    pid: proc.pid!,
    startSeconds,
    logs: () => out,
    layerDir: (ref, digest) => join(mnt, Buffer.from(ref).toString('base64'), digest),
    stop: () => (stopping ??= (async () => {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      const code = await Promise.race([exited, sleep(20_000).then(() => { proc.kill('SIGKILL'); return -1; })]);
      await forceUnmount(mnt);
      if (opts.logFile) await writeFile(opts.logFile, out).catch(() => {});
      await rm(base, { recursive: true, force: true }).catch(() => {});
      return code;
    })()),
  };
}
