import { execFile } from 'node:child_process';
import { access, lstat, readFile, readdir, readlink, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { SpecEntry } from './layer-tar.js';

const run = promisify(execFile);

const PYTHON = '/usr/bin/python3.11';
const STDLIB = '/usr/lib/python3.11';
const BUSYBOX = '/bin/busybox';

/**
 * A runnable python image built from this machine's Debian python3.11, with
 * no network: layer 1 is busybox, the shared libraries python and its
 * extension modules need, and the merged-/usr symlinks; layer 2 is the
 * interpreter and its standard library (thousands of files). Tests use it
 * for `podman run … python3 -c 'import json,email,http.client,sqlite3'`.
 */
export async function pythonImageLayers(): Promise<SpecEntry[][]> {
  for (const [path, pkg] of [[PYTHON, 'python3.11'], [BUSYBOX, 'busybox-static'], [`${STDLIB}/lib-dynload`, 'libpython3.11-stdlib']] as const) {
    try {
      await access(path);
    } catch {
      throw new Error(`${path} is missing: install the Debian package ${pkg} (scripts/install-system-deps.sh)`);
    }
  }
  const stdlib = await walk(STDLIB, (p) => !/\/(test|tests|idlelib|tkinter|turtledemo|ensurepip|lib2to3)(\/|$)/.test(p));
  const dynload = stdlib.filter((p) => p.endsWith('.so'));
  const libs = await sharedLibraries([PYTHON, ...dynload]);

  const base = new Entries();
  base.symlink('bin', 'usr/bin');
  base.symlink('lib', 'usr/lib');
  base.symlink('lib64', 'usr/lib64');
  await base.file('/usr/bin/busybox', BUSYBOX, 0o755);
  for (const applet of ['sh', 'echo', 'cat', 'ls', 'true', 'env']) base.symlink(`usr/bin/${applet}`, 'busybox');
  for (const lib of libs) await base.copy(lib);
  base.dir('etc');
  base.dir('tmp', 0o1777);
  base.text('etc/hello', 'hello from the python test image\n');

  const py = new Entries();
  await py.copy(PYTHON);
  py.symlink('usr/bin/python3', 'python3.11');
  for (const p of stdlib) await py.copy(p);
  return [base.list(), py.list()];
}

/** Files and directories under `root` (no symlink following), filtered. */
async function walk(root: string, keep: (p: string) => boolean): Promise<string[]> {
  const out: string[] = [];
  for (const name of await readdir(root)) {
    const p = join(root, name);
    if (!keep(p)) continue;
    const st = await lstat(p);
    if (st.isDirectory()) out.push(...(await walk(p, keep)));
    else out.push(p);
  }
  return out;
}

/** The shared libraries (and the dynamic loader) that `ldd` lists for the binaries, as real paths. */
async function sharedLibraries(binaries: string[]): Promise<string[]> {
  const found = new Set<string>();
  for (const bin of binaries) {
    const { stdout } = await run('ldd', [bin]).catch(() => ({ stdout: '' }));
    for (const m of stdout.matchAll(/(?:=>\s*)?(\/[^\s]+)\s+\(0x/g)) found.add(m[1]!);
  }
  const out = new Set<string>();
  for (const p of found) {
    out.add(p);
    out.add(await realpath(p));
  }
  return [...out];
}

/** Builds a layer's entries with every parent directory explicit, in order. */
class Entries {
  private readonly entries = new Map<string, SpecEntry>();

  private parents(path: string): void {
    const parts = path.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (dir && !this.entries.has(dir)) this.entries.set(dir, { name: `${dir}/`, type: 'directory', mode: 0o755, mtime: 1700000000 });
    }
  }

  dir(path: string, mode = 0o755): void {
    this.parents(path);
    this.entries.set(path, { name: `${path}/`, type: 'directory', mode, mtime: 1700000000 });
  }

  symlink(path: string, target: string): void {
    this.parents(path);
    this.entries.set(path, { name: path, type: 'symlink', linkname: target, mode: 0o777, mtime: 1700000000 });
  }

  text(path: string, content: string): void {
    this.parents(path);
    this.entries.set(path, { name: path, type: 'file', content: Buffer.from(content), mode: 0o644, mtime: 1700000000 });
  }

  async file(path: string, from: string, mode: number): Promise<void> {
    const rel = path.replace(/^\//, '');
    this.parents(rel);
    this.entries.set(rel, { name: rel, type: 'file', content: await readFile(from), mode, mtime: 1700000000 });
  }

  /** Copies a host path as it is (file or symlink), under its /usr path (merged /usr). */
  async copy(hostPath: string): Promise<void> {
    const rel = hostPath.replace(/^\/(lib|lib64|bin)\//, 'usr/$1/').replace(/^\//, '');
    if (this.entries.has(rel)) return;
    const st = await lstat(hostPath);
    this.parents(rel);
    if (st.isSymbolicLink()) {
      this.entries.set(rel, { name: rel, type: 'symlink', linkname: await readlink(hostPath), mode: 0o777, mtime: Math.floor(st.mtimeMs / 1000) });
      return;
    }
    this.entries.set(rel, { name: rel, type: 'file', content: await readFile(hostPath), mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000) });
  }

  list(): SpecEntry[] {
    return [...this.entries.values()];
  }
}

