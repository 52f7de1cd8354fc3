import { createHash } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { lstat, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { convertLayer, type ConvertOptions, type ConvertResult } from '../../src/estargz/writer/convert.js';
import { runQuiet } from './proc.js';

/** A directory of this machine to take files from, up to a byte budget of regular-file content. */
export interface InputRoot {
  dir: string;
  budgetBytes: number;
  /** Leave out regular files larger than this (a small-files input). */
  maxFileBytes?: number;
}

export interface LayerInputSpec {
  /** Short name, used in tables and in the cache file name. */
  name: string;
  roots: InputRoot[];
}

export interface LayerInput {
  name: string;
  path: string;
  bytes: number;
  /** How the input was made: 'generated' from this machine's files, or 'given' with --input. */
  origin: 'generated' | 'given';
  cached: boolean;
}

/** Where generated inputs are kept between runs (building one takes seconds and reads hundreds of MB). */
export function benchCacheDir(): string {
  return join(tmpdir(), 'estargz-bench');
}

/** Orders like GNU tar --sort=name (bytewise), so the listing, and therefore the tar, is stable. */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * Lists a root depth first in name order, taking regular files while they fit
 * the root's budget and stopping once it is 90% used. Directories and symlinks are kept; sockets
 * and devices are skipped (a layer built from a rootfs has none in these trees).
 */
async function listRoot(root: InputRoot, out: { path: string; line: string }[]): Promise<void> {
  let used = 0;
  const walk = async (dir: string): Promise<boolean> => {
    let names: string[];
    try {
      names = (await readdir(dir)).sort(byteOrder);
    } catch {
      return true; // unreadable folder: leave it out, keep going
    }
    for (const name of names) {
      const path = join(dir, name);
      const st = await lstat(path).catch(() => null);
      if (!st) continue;
      if (st.isDirectory()) {
        out.push({ path, line: `d ${path}` });
        if (!(await walk(path))) return false;
      } else if (st.isSymbolicLink()) {
        out.push({ path, line: `l ${path}` });
      } else if (st.isFile()) {
        if (root.maxFileBytes !== undefined && st.size > root.maxFileBytes) continue;
        if (used + st.size > root.budgetBytes) {
          // Close to the budget: stop. Otherwise skip this big file and keep filling, so one large
          // binary early in name order does not leave the root mostly unused.
          if (used >= root.budgetBytes * 0.9) return false;
          continue;
        }
        used += st.size;
        out.push({ path, line: `f ${path} ${st.size} ${st.mtimeMs} ${st.ino}` });
      }
    }
    return true;
  };
  out.push({ path: root.dir, line: `d ${root.dir}` });
  await walk(root.dir);
}

/**
 * Makes (or reuses) a layer tar of this machine's files. The cache key hashes
 * the listing (paths, sizes, mtimes), so the tar is rebuilt when the files
 * change, e.g. after packages are installed.
 */
export async function ensureLayerInput(spec: LayerInputSpec): Promise<LayerInput> {
  const listing: { path: string; line: string }[] = [];
  for (const root of spec.roots) {
    if (existsSync(root.dir)) await listRoot(root, listing);
  }
  if (listing.length === 0) throw new Error(`input ${spec.name}: none of ${spec.roots.map((r) => r.dir).join(', ')} exists`);
  const key = createHash('sha256').update(listing.map((l) => l.line).join('\n')).digest('hex').slice(0, 16);
  const dir = benchCacheDir();
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${spec.name}-${key}.tar`);
  if (existsSync(path)) return { name: spec.name, path, bytes: (await stat(path)).size, origin: 'generated', cached: true };

  // A stale tar for an older listing is hundreds of MB: drop it.
  for (const f of await readdir(dir)) {
    if (f.startsWith(`${spec.name}-`) && f.endsWith('.tar')) await rm(join(dir, f), { force: true });
  }
  const listFile = join(dir, `${spec.name}-${key}.list`);
  // NUL-separated and relative to /, so entries are named like a rootfs layer's (usr/bin/...).
  await writeFile(listFile, listing.map((l) => l.path.replace(/^\/+/, '') + '\0').join(''));
  const partial = `${path}.partial-${process.pid}`;
  try {
    // GNU format (the default) rather than pax: GNU tar's pax output adds atime/ctime records to
    // every entry, which real image layers do not have. --no-recursion: the list names every entry.
    await runQuiet('tar', ['--create', '--file', partial, '--format=gnu', '--no-recursion', '--null', '-C', '/', '--files-from', listFile]);
    await rename(partial, path);
  } finally {
    await rm(partial, { force: true });
    await rm(listFile, { force: true });
  }
  return { name: spec.name, path, bytes: (await stat(path)).size, origin: 'generated', cached: false };
}

/** A tar given on the command line, used as it is. */
export async function givenInput(path: string): Promise<LayerInput> {
  const st = await stat(path);
  if (!st.isFile()) throw new Error(`--input ${path} is not a file`);
  const name = path.split('/').pop()!.replace(/\.(tar|tar\.gz|tgz)$/, '');
  return { name, path, bytes: st.size, origin: 'given', cached: false };
}

/** Reads the file once so the first timed run does not pay for cold page cache and later ones do not gain from it. */
export async function warmPageCache(path: string): Promise<void> {
  await runQuiet('sh', ['-c', 'cat "$1" > /dev/null', 'sh', path]);
}

/** Converts a layer tar held in memory to an eStargz file at `path` (the converter's defaults unless `opts` says otherwise). */
export async function convertTarToFile(tarBytes: Buffer, path: string, opts: ConvertOptions = {}): Promise<ConvertResult> {
  const out = createWriteStream(path);
  const result = await convertLayer(Readable.from([tarBytes]), out, opts);
  out.end();
  await finished(out);
  return result;
}
