import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

export interface FoundFile {
  path: string;
  size: number;
  mtimeMs: number;
}

/**
 * Regular, non-empty files under `dir` (depth first, names in byte order,
 * no symlinks followed) of at most `maxFile` bytes each, until `budget`
 * bytes are collected. Unreadable directories are skipped.
 */
export async function listFiles(dir: string, budget: number, maxFile = Infinity): Promise<FoundFile[]> {
  const out: FoundFile[] = [];
  let used = 0;
  const walk = async (d: string): Promise<boolean> => {
    let names: string[];
    try {
      names = (await readdir(d)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    } catch {
      return true;
    }
    for (const name of names) {
      const path = join(d, name);
      const st = await lstat(path).catch(() => null);
      if (!st) continue;
      if (st.isDirectory()) {
        if (!(await walk(path))) return false;
      } else if (st.isFile() && st.size > 0 && st.size <= maxFile) {
        out.push({ path, size: st.size, mtimeMs: st.mtimeMs });
        used += st.size;
        if (used >= budget) return false;
      }
    }
    return true;
  };
  await walk(dir);
  return out;
}

/** The benchmarks' deterministic data and offsets come from the test helpers' seeded generator. */
export { prng } from '../../testkit/prng.js';

/** Collects a tar-stream pack's output: `done()` resolves with the whole archive once the pack ends. */
export function collectPack(pack: { on(event: string, fn: (arg: unknown) => void): unknown }): { done: () => Promise<Buffer> } {
  const parts: Buffer[] = [];
  pack.on('data', (d: unknown) => parts.push(d as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    pack.on('end', () => resolve());
    pack.on('error', (e) => reject(e as Error));
  });
  return { done: async () => { await ended; return Buffer.concat(parts); } };
}
