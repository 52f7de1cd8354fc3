import { createHash } from 'node:crypto';
import { EstargzError } from './errors.js';
import { readFileChunks } from './file-chunks.js';
import { compareNames, type LayerNode } from './layer-index.js';
import type { EstargzBlob } from './open.js';
import type { RangedSource } from './source.js';
import { parseModtime } from './toc.js';

/** One TOC entry as `layer ls --json` prints it (the fixtures' tree shape). */
export interface ListedEntry {
  path: string;
  type: 'dir' | 'reg' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string | null;
  devmajor: number | null;
  devminor: number | null;
  /** name → base64 of the raw value */
  xattrs: Record<string, string>;
  /** hex sha256 of the content, read and verified chunk by chunk (regular files). */
  sha256: string | null;
}

/** Reads a regular file through its verified chunks and returns its hex sha256. */
export async function hashFile(source: RangedSource, node: LayerNode, path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const { bytes } of readFileChunks(source, node, path)) hash.update(bytes);
  const hex = hash.digest('hex');
  if (node.digest && node.digest !== `sha256:${hex}`) {
    throw new EstargzError('CHUNK_DIGEST_MISMATCH', `file ${JSON.stringify(path)}: chunks verify but the whole file hashes to sha256:${hex}, the TOC says ${node.digest}`, {
      path, expected: node.digest, actual: `sha256:${hex}`,
    });
  }
  return hex;
}

/**
 * Lists the TOC's entries (no implicit directories, no chunk entries), sorted
 * by path in code-point order, with each regular file's content hash.
 */
export async function listEntries(blob: EstargzBlob, source: RangedSource): Promise<ListedEntry[]> {
  const records = [...blob.index.records].sort((a, b) => compareNames(a.path, b.path));
  const hashes = new Map<LayerNode, string>();
  const out: ListedEntry[] = [];
  for (const { path, entry, node } of records) {
    const isHardlink = entry.type === 'hardlink';
    let sha256: string | null = null;
    if (!isHardlink && node.type === 'reg') {
      let hex = hashes.get(node);
      if (hex === undefined) {
        hex = await hashFile(source, node, path);
        hashes.set(node, hex);
      }
      sha256 = hex;
    }
    const isDevice = node.type === 'char' || node.type === 'block';
    // A hardlink's own tar header is listed as it is (the raw tar view); its content is the target's.
    out.push({
      path,
      type: isHardlink ? 'hardlink' : node.type,
      mode: isHardlink ? (entry.mode ?? 0) & 0o7777 : node.mode,
      uid: isHardlink ? entry.uid ?? 0 : node.uid,
      gid: isHardlink ? entry.gid ?? 0 : node.gid,
      size: isHardlink ? 0 : node.size,
      mtime: isHardlink ? parseModtime(entry.modtime) : node.mtime,
      linkname: isHardlink ? (entry.linkName ?? '') : node.type === 'symlink' ? node.linkName : null,
      devmajor: !isHardlink && isDevice ? node.devMajor : null,
      devminor: !isHardlink && isDevice ? node.devMinor : null,
      xattrs: isHardlink ? { ...(entry.xattrs ?? {}) } : Object.fromEntries([...node.xattrs].map(([k, v]) => [k, v.toString('base64')])),
      sha256,
    });
  }
  return out;
}
