import { readFile } from 'node:fs/promises';

/**
 * The prioritized-files list as a file (`image optimize --record-only`
 * writes it, `image convert --prioritized-files @FILE` reads it):
 *
 *     # comment
 *     /etc/passwd            ← before any section: every layer
 *     [layer 1 sha256:…]     ← the files of the image's first layer (the digest is the source layer's, checked when given)
 *     /bin/busybox
 *     [layer 2]
 *     /app/main.py
 *
 * A path line is the file's path in the image; a line starting with `/` is
 * always a path (so names starting with `#` or `[` can be written).
 */
export interface PrioritizedList {
  /** Files for every layer. */
  all: string[];
  /** Per layer (0-based index in the manifest). */
  layers: Map<number, { digest?: string; paths: string[] }>;
}

export class ListFileError extends Error {}

const SECTION = /^\[layer (\d+)(?: (sha256:[0-9a-f]{64}))?\]$/;

export function parseList(text: string, where: string): PrioritizedList {
  const list: PrioritizedList = { all: [], layers: new Map() };
  let current = list.all;
  text.split('\n').forEach((raw, i) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim() === '' || line.startsWith('#')) return;
    if (line.startsWith('[')) {
      const m = SECTION.exec(line.trim());
      if (!m || Number(m[1]) < 1) throw new ListFileError(`${where}:${i + 1}: expected "[layer N]" or "[layer N sha256:…]" (N from 1), got ${JSON.stringify(line)}`);
      const index = Number(m[1]) - 1;
      const section = list.layers.get(index) ?? { paths: [], ...(m[2] && { digest: m[2] }) };
      list.layers.set(index, section);
      current = section.paths;
      return;
    }
    current.push(line.startsWith('/') ? line : line.trim());
  });
  return list;
}

export async function readList(path: string): Promise<PrioritizedList> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ListFileError(`cannot read the prioritized-files list ${path}: ${(err as Error).message}`);
  }
  return parseList(text, path);
}

/** One section per layer that has files, paths written with a leading `/`; names with a line break cannot be written and are left out. */
export function formatList(source: string, layers: { digest: string; paths: readonly string[] }[]): string {
  const lines = [`# files read by the workload of ${source}, in the order of their first read, per layer`];
  layers.forEach((l, i) => {
    const paths = l.paths.filter((p) => !p.includes('\n') && !p.includes('\r'));
    if (paths.length === 0) return;
    lines.push(`[layer ${i + 1} ${l.digest}]`, ...paths.map((p) => `/${p.replace(/^\/+/, '')}`));
  });
  return lines.join('\n') + '\n';
}

/**
 * The list for one layer of the source image (convertImage's
 * prioritizedFilesByLayer): its section's files, then the files for every
 * layer. A section naming a layer the image does not have, or another
 * digest, was recorded from another image: refused.
 */
export function filesForLayer(list: PrioritizedList, layer: { index: number; digest: string; count: number }, where: string): string[] {
  for (const index of list.layers.keys()) {
    if (index >= layer.count) throw new ListFileError(`${where}: [layer ${index + 1}] but the image has ${layer.count} layer(s)`);
  }
  const section = list.layers.get(layer.index);
  if (section?.digest && section.digest !== layer.digest) {
    throw new ListFileError(`${where}: [layer ${layer.index + 1}] was recorded for ${section.digest}, but the image's layer ${layer.index + 1} is ${layer.digest}`);
  }
  return [...(section?.paths ?? []), ...list.all];
}
