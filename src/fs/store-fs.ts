import type { LayerResolver, ResolvedLayer } from '../engine/resolver.js';
import { formatReference, type ImageReference } from '../registry/reference.js';
import { DiffView, type ViewEntry } from './diff-view.js';
import { Errno, FsAnswer, notFound, readOnly } from './errno.js';
import { logger } from '../log/logger.js';
import { BadNameError, checkDigestDir, decodeRefDir, encodeRefDir } from './names.js';
import { layerInfo } from './info.js';

/** What fuse-native turns into a struct stat. Times are in milliseconds. */
export interface Stat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  ino: number;
  rdev: number;
  blksize: number;
  blocks: number;
  atime: number;
  mtime: number;
  ctime: number;
  dev: number;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;
const TYPE_BITS = { dir: S_IFDIR, reg: S_IFREG, symlink: S_IFLNK, char: S_IFCHR, block: S_IFBLK, fifo: S_IFIFO } as const;

/** The kernel's 32-bit device number encoding (new_encode_dev). */
function makeDev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

function baseStat(mode: number, ino: number, size: number, nlink: number, mtimeMs: number): Stat {
  return { mode, uid: 0, gid: 0, size, nlink, ino, rdev: 0, blksize: 4096, blocks: Math.ceil(size / 4096) * 8, atime: mtimeMs, mtime: mtimeMs, ctime: mtimeMs, dev: 0 };
}

/** Where a store path leads. */
type Target =
  | { kind: 'root' }
  | { kind: 'ref'; name: string; ref: ImageReference }
  | { kind: 'layer'; refName: string; ref: ImageReference; digest: string }
  | { kind: 'info' | 'blob'; ref: ImageReference; digest: string }
  | { kind: 'use'; ref: ImageReference; digest: string }
  | { kind: 'diff'; ref: ImageReference; digest: string; inner: string };

/** A resolved layer with its overlay view and inode range. */
export interface ServedLayer {
  resolved: ResolvedLayer;
  view: DiffView;
  info: Buffer;
  dirIno: number;
}

/**
 * The store tree `<mnt>/<base64(ref)>/<digest>/{diff,info,blob,use}`, as
 * path-based operations (fuse-native's libfuse 2 high-level API). Everything
 * is asynchronous: a slow resolution of one layer never holds up another.
 */
export class StoreFs {
  private readonly served = new Map<string, Promise<ServedLayer>>();
  private readonly syntheticIno = new Map<string, number>();
  private nextIno = 2;
  private readonly mountedAt = Date.now();

  constructor(private readonly resolver: LayerResolver) {}

  private ino(key: string): number {
    let ino = this.syntheticIno.get(key);
    if (ino === undefined) {
      ino = this.nextIno++;
      this.syntheticIno.set(key, ino);
    }
    return ino;
  }

  /** Inode blocks by layer key: a released layer that resolves again keeps its inode numbers (overlayfs and the kernel may still hold them). */
  private readonly inoBlocks = new Map<string, { base: number; count: number }>();

  /** Reserves (or finds again) the block of inode numbers of a layer's files. */
  private inoBlock(key: string, count: number): number {
    const known = this.inoBlocks.get(key);
    if (known && known.count >= count) return known.base;
    const base = this.nextIno;
    this.nextIno += count;
    this.inoBlocks.set(key, { base, count });
    return base;
  }

  /** Decoded `<base64(ref)>` names: every request under a layer starts with one (bounded, since the names come from outside). */
  private readonly refNames = new Map<string, ImageReference>();

  /** Canonical strings of the decoded references, so that per-request keys cost no formatting. */
  private readonly canonical = new WeakMap<ImageReference, string>();

  private layerKey(ref: ImageReference, digest: string): string {
    let text = this.canonical.get(ref);
    if (text === undefined) {
      text = formatReference(ref);
      this.canonical.set(ref, text);
    }
    return `${text}|${digest}`;
  }

  private refOf(name: string): ImageReference {
    let ref = this.refNames.get(name);
    if (!ref) {
      ref = decodeRefDir(name);
      if (this.refNames.size >= 4096) this.refNames.clear();
      this.refNames.set(name, ref);
    }
    return ref;
  }

  /**
   * Where a path leads. A name that cannot be a reference or a digest does
   * not exist (ENOENT), rather than being malformed (EINVAL): the kernel
   * looks a name up before it creates or renames anything, and the answer to
   * `mkdir`, `mknod` or `rename` in the store must be EROFS, which it can only
   * be once the lookup found nothing.
   */
  private parse(path: string): Target {
    try {
      return this.parseNames(path);
    } catch (err) {
      if (!(err instanceof BadNameError)) throw err;
      this.noteBadName(path, err);
      throw notFound();
    }
  }

  /** A store configured without `:ref` is looked up as `<mnt>/<digest>`: said once at warn, then at debug. */
  private noteBadName(path: string, err: BadNameError): void {
    const digestAtTop = /^\/sha256:[0-9a-f]{64}$/.test(path);
    if (digestAtTop && !this.warnedDigestAtTop) {
      this.warnedDigestAtTop = true;
      logger.warn({ path }, 'a layer digest was looked up at the top of the store: containers/storage must name the store with ":ref" (additionallayerstores = ["<mnt>:ref"])');
    } else {
      logger.debug({ path, err: err.message }, 'lookup of a name that cannot be in the store');
    }
  }

  private warnedDigestAtTop = false;

  private parseNames(path: string): Target {
    const parts = path.split('/').filter((p) => p !== '');
    if (parts.length === 0) return { kind: 'root' };
    const ref = this.refOf(parts[0]!);
    if (parts.length === 1) return { kind: 'ref', name: parts[0]!, ref };
    const digest = checkDigestDir(parts[1]!);
    if (parts.length === 2) return { kind: 'layer', refName: parts[0]!, ref, digest };
    const leaf = parts[2]!;
    if (leaf === 'diff') return { kind: 'diff', ref, digest, inner: parts.slice(3).join('/') };
    if (parts.length === 3 && (leaf === 'info' || leaf === 'blob' || leaf === 'use')) return { kind: leaf, ref, digest };
    throw notFound();
  }

  /** Resolves a layer once and builds its view; failures are not kept here (the resolver remembers them briefly). */
  private layer(ref: ImageReference, digest: string): Promise<ServedLayer> {
    const key = this.layerKey(ref, digest);
    let p = this.served.get(key);
    if (!p) {
      p = this.resolver.resolve(ref, digest).then((resolved) => {
        const view = new DiffView(resolved.estargz.index, this.inoBlock(key, DiffView.inoSpan(resolved.estargz.index)));
        return { resolved, view, info: layerInfo(resolved), dirIno: this.ino(key) };
      });
      this.served.set(key, p);
      p.catch(() => this.served.get(key) === p && this.served.delete(key));
    }
    return p;
  }

  private async viewEntry(t: Extract<Target, { kind: 'diff' }>): Promise<{ served: ServedLayer; entry: ViewEntry }> {
    const served = await this.layer(t.ref, t.digest);
    const entry = served.view.lookup(t.inner);
    if (!entry) throw notFound();
    return { served, entry };
  }

  private nodeStat(entry: ViewEntry): Stat {
    if (entry.kind === 'whiteout') return baseStat(S_IFCHR, entry.ino, 0, 1, entry.mtime * 1000);
    const n = entry.node;
    const size = n.type === 'reg' ? n.size : n.type === 'symlink' ? Buffer.byteLength(n.linkName) : n.type === 'dir' ? 4096 : 0;
    // Symlinks are 0777 on Linux whatever the tar header says (as `tar -x` leaves them).
    const perm = n.type === 'symlink' ? 0o777 : n.mode;
    const st = baseStat(TYPE_BITS[n.type] | perm, entry.ino, size, n.nlink, n.mtime * 1000);
    st.uid = n.uid;
    st.gid = n.gid;
    if (n.type === 'char' || n.type === 'block') st.rdev = makeDev(n.devMajor, n.devMinor);
    return st;
  }

  async getattr(path: string): Promise<Stat> {
    const t = this.parse(path);
    switch (t.kind) {
      case 'root': return baseStat(S_IFDIR | 0o555, 1, 4096, 2, this.mountedAt);
      case 'ref': return baseStat(S_IFDIR | 0o500, this.ino(t.name), 4096, 2, this.mountedAt);
      case 'layer': {
        const served = await this.layer(t.ref, t.digest);
        return baseStat(S_IFDIR | 0o500, served.dirIno, 4096, 3, this.mountedAt);
      }
      case 'info': {
        const served = await this.layer(t.ref, t.digest);
        return baseStat(S_IFREG | 0o400, this.ino(`${served.dirIno}/info`), served.info.length, 1, this.mountedAt);
      }
      case 'blob': {
        const served = await this.layer(t.ref, t.digest);
        return baseStat(S_IFREG | 0o400, this.ino(`${served.dirIno}/blob`), served.resolved.blobSize, 1, this.mountedAt);
      }
      case 'use': throw notFound();
      case 'diff': return this.nodeStat((await this.viewEntry(t)).entry);
    }
  }

  async readdir(path: string): Promise<{ names: string[]; stats?: Stat[] }> {
    const t = this.parse(path);
    switch (t.kind) {
      case 'root': {
        const refs = new Set(this.resolver.status().map((l) => encodeRefDir(l.ref)));
        return { names: ['.', '..', ...refs] };
      }
      case 'ref': {
        const ref = formatReference(t.ref);
        return { names: ['.', '..', ...this.resolver.status().filter((l) => l.ref === ref && l.state !== 'failed').map((l) => l.digest)] };
      }
      case 'layer':
        await this.layer(t.ref, t.digest);
        return { names: ['.', '..', 'diff', 'info', 'blob'] };
      case 'diff': {
        const { served, entry } = await this.viewEntry(t);
        if (entry.kind !== 'node' || entry.node.type !== 'dir') throw new FsAnswer(Errno.ENOTDIR);
        const listing = served.view.list(entry.node);
        return { names: ['.', '..', ...listing.keys()], stats: [this.nodeStat(entry), this.nodeStat(entry), ...[...listing.values()].map((e) => this.nodeStat(e))] };
      }
      default:
        throw new FsAnswer(Errno.ENOTDIR);
    }
  }

  async readlink(path: string): Promise<string> {
    const t = this.parse(path);
    if (t.kind !== 'diff') throw new FsAnswer(Errno.EINVAL);
    const { entry } = await this.viewEntry(t);
    if (entry.kind !== 'node' || entry.node.type !== 'symlink') throw new FsAnswer(Errno.EINVAL);
    return entry.node.linkName;
  }

  /**
   * Reads into `buf`; returns the byte count (short only at the end of the
   * file). By path, with no open/release: answering OPEN and RELEASE in JS
   * cost two FUSE round trips per file, about 45 % of a warm read of a
   * layer's small files, for handles that only saved this parse. Without an
   * open handler libfuse accepts every open itself, so a write is refused
   * here at `write` (EROFS), and O_TRUNC at its truncate, not at open.
   */
  async read(path: string, buf: Buffer, length: number, position: number): Promise<number> {
    const t = this.parse(path);
    let data: Buffer;
    if (t.kind === 'info') data = (await this.layer(t.ref, t.digest)).info.subarray(position, position + length);
    else if (t.kind === 'blob') data = await (await this.layer(t.ref, t.digest)).resolved.layer.readBlob(position, length);
    else if (t.kind === 'diff') {
      const { served, entry } = await this.viewEntry(t);
      if (entry.kind !== 'node') throw new FsAnswer(Errno.EINVAL);
      if (entry.node.type !== 'reg') throw new FsAnswer(entry.node.type === 'dir' ? Errno.EISDIR : Errno.EINVAL);
      data = await served.resolved.layer.readFile(entry.node, position, length, t.inner);
    } else if (t.kind === 'use') {
      throw notFound();
    } else {
      throw new FsAnswer(Errno.EISDIR);
    }
    return data.copy(buf, 0, 0, Math.min(length, data.length));
  }

  async getxattr(path: string, name: string): Promise<Buffer | null> {
    const t = this.parse(path);
    if (t.kind !== 'diff') return null;
    const { served, entry } = await this.viewEntry(t);
    return served.view.xattrs(entry).get(name) ?? null;
  }

  async listxattr(path: string): Promise<string[]> {
    const t = this.parse(path);
    if (t.kind !== 'diff') return [];
    const { served, entry } = await this.viewEntry(t);
    return [...served.view.xattrs(entry).keys()];
  }

  /** A write-like request on a name that cannot exist is refused as a write (EROFS), not as a missing name. */
  private parseForWrite(path: string): Target {
    try {
      return this.parseNames(path);
    } catch (err) {
      if (err instanceof BadNameError || (err instanceof FsAnswer && err.errno === Errno.ENOENT)) throw readOnly();
      throw err;
    }
  }

  /** `create(<layer>/use)`: containers/storage telling the store a layer is in use. The answer is ENOENT either way. */
  async create(path: string): Promise<never> {
    const t = this.parseForWrite(path);
    if (t.kind !== 'use') throw readOnly();
    await this.layer(t.ref, t.digest);
    this.resolver.use(t.ref, t.digest);
    throw notFound();
  }

  /** `rmdir(<ref>/<digest>)`: containers/storage releasing a layer. Answers ENOENT, as the protocol expects. */
  async rmdir(path: string): Promise<never> {
    const t = this.parseForWrite(path);
    if (t.kind !== 'layer') throw readOnly();
    if (await this.resolver.release(t.ref, t.digest)) this.served.delete(this.layerKey(t.ref, t.digest));
    throw notFound();
  }
}
