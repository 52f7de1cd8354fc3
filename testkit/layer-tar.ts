import { createHash } from 'node:crypto';
import tar from 'tar-stream';
import { LANDMARK_CONTENTS, cleanEntryName } from '../src/estargz/toc.js';
import type { TreeEntry } from './fixtures.js';

/** One entry of a generated test layer. */
export interface SpecEntry {
  name: string;
  type: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  mode?: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  /** Unix seconds. */
  mtime?: number;
  content?: Buffer;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** xattr name → value (written as PAX SCHILY.xattr records). */
  xattrs?: Record<string, string>;
}

/** Writes the spec as a tar archive with tar-stream (PAX records where ustar cannot hold a field). */
export async function makeLayerTar(spec: SpecEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const parts: Buffer[] = [];
  pack.on('data', (d: unknown) => parts.push(d as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    pack.on('end', () => resolve());
    pack.on('error', reject);
  });
  for (const e of spec) {
    const pax: Record<string, string> = Object.fromEntries(Object.entries(e.xattrs ?? {}).map(([k, v]) => [`SCHILY.xattr.${k}`, v]));
    // tar-stream writes ustar numbers only: values that do not fit go in PAX records, as GNU tar does.
    const uid = e.uid ?? 0;
    const gid = e.gid ?? 0;
    const mtime = e.mtime ?? 1700000000;
    if (uid > 0o777777) pax.uid = String(uid);
    if (gid > 0o777777) pax.gid = String(gid);
    if (mtime > 0o77777777777) pax.mtime = String(mtime);
    await new Promise<void>((resolve, reject) => {
      pack.entry({
        name: e.name,
        type: e.type,
        mode: e.mode ?? (e.type === 'directory' ? 0o755 : 0o644),
        uid: pax.uid ? 0 : uid,
        gid: pax.gid ? 0 : gid,
        uname: e.uname ?? '',
        gname: e.gname ?? '',
        mtime: new Date((pax.mtime ? 0 : mtime) * 1000),
        linkname: e.linkname,
        devmajor: e.devmajor,
        devminor: e.devminor,
        size: e.type === 'file' ? (e.content?.length ?? 0) : 0,
        pax: Object.keys(pax).length ? pax : undefined,
      }, e.type === 'file' ? (e.content ?? Buffer.alloc(0)) : Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await ended;
  return Buffer.concat(parts);
}

const TREE_TYPE: Record<SpecEntry['type'], TreeEntry['type']> = {
  file: 'reg', directory: 'dir', symlink: 'symlink', link: 'hardlink', 'character-device': 'char', 'block-device': 'block', fifo: 'fifo',
};

function hex(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** The tree `layer ls --json` must print for a layer converted from `spec` (later duplicates win). */
export function expectedTree(spec: SpecEntry[], landmark: string): TreeEntry[] {
  const byPath = new Map<string, TreeEntry>();
  byPath.set(landmark, {
    path: landmark, type: 'reg', mode: 0, uid: 0, gid: 0, size: 1, mtime: 0,
    linkname: null, devmajor: null, devminor: null, xattrs: {}, sha256: hex(Buffer.of(LANDMARK_CONTENTS)),
  });
  for (const e of spec) {
    const type = TREE_TYPE[e.type];
    const isDev = type === 'char' || type === 'block';
    const path = cleanEntryName(e.name);
    byPath.delete(path);
    byPath.set(path, {
      path,
      type,
      mode: (e.mode ?? (e.type === 'directory' ? 0o755 : 0o644)) & 0o7777,
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      size: type === 'reg' ? (e.content?.length ?? 0) : 0,
      mtime: e.mtime ?? 1700000000,
      linkname: type === 'symlink' || type === 'hardlink' ? e.linkname ?? '' : null,
      devmajor: isDev ? e.devmajor ?? 0 : null,
      devminor: isDev ? e.devminor ?? 0 : null,
      xattrs: Object.fromEntries(Object.entries(e.xattrs ?? {}).sort().map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
      sha256: type === 'reg' ? hex(e.content ?? Buffer.alloc(0)) : null,
    });
  }
  return [...byPath.values()].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
}

/** Deterministic pseudo-random bytes (incompressible content without a seed file). */
export function randomBytes(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}
