import type { Logger } from '../log/logger.js';
import { LayerKey } from '../layers/key.js';
import { referenceText, type ImageReference } from '../layers/names.js';
import type { LayerManager } from '../layers/manager.js';
import type { ResolvedLayer } from '../layers/resolver.js';
import type { LayerNode } from '../engine/layer-files.js';
import { MIN_DIRENTPLUS } from '../fuse/protocol.js';
import type { Attr, AttrReply, Awaitable, DirEntryPlus, Entry, Notifier, StatFs } from '../fuse/types.js';
import { DiffView, type ViewEntry } from './diff-view.js';
import { Errno, FsAnswer, notFound, readOnly } from './errno.js';
import { layerInfo } from './info.js';
import { BadNameError, checkDigestDir, decodeRefDir, encodeRefDir } from './names.js';
import {
  Low, NodeIdTable, ROOT_ID, layerKey, lowOf, makeId, parseKey, refKey, slotOf, type NodeTableJson,
} from './node-ids.js';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;
const TYPE_BITS = { dir: S_IFDIR, reg: S_IFREG, symlink: S_IFLNK, char: S_IFCHR, block: S_IFBLK, fifo: S_IFIFO } as const;

/**
 * How long the kernel may keep names and attributes. A layer's content never
 * changes (it is addressed by digest), so everything under `diff`, and
 * `diff`, `info` and `blob` themselves, are kept for a day, absent names
 * included. The store's own directories that exist are kept for a day too
 * (a path walk `<ref>/<digest>/diff/…` then asks nothing): their node ids
 * are a function of their names, and a released layer's directory is
 * dropped from the kernel's cache explicitly (Notifier.invalEntry), so that
 * its next lookup resolves it again. Absent names in the root and reference
 * directories are never kept: a lookup of a new name is what resolves a
 * layer. The root's and reference directories' attributes (their mtime
 * moves with every change of what they list, which resets the kernel's
 * cached listing) are kept a second, and invalidated at once when the store
 * changes what they list (Notifier.invalInode).
 */
const DAY = 86_400;
const STORE_DIR_ATTR = 1;
const LAYER_DIR_NAMES: readonly string[] = ['diff', 'info', 'blob'];
/** Layers a successor resolves again at once (see resolveAgain). */
const RESOLVE_AGAIN_CONCURRENCY = 4;

/** The kernel's 32-bit device number encoding (new_encode_dev). */
function makeDev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

function baseAttr(mode: number, ino: number, size: number, nlink: number, mtime: number): Attr {
  return { mode, ino, size, nlink, uid: 0, gid: 0, rdev: 0, blksize: 4096, blocks: Math.ceil(size / 4096) * 8, atime: mtime, mtime, ctime: mtime };
}

/** A resolved layer with its overlay view. */
export interface ServedLayer {
  resolved: ResolvedLayer;
  view: DiffView;
  info: Buffer;
}

interface RefRecord {
  kind: 'ref';
  slot: number;
  name: string;
  ref: ImageReference;
  /** Lookups the kernel may hold on the directory (undefined: not known, e.g. imported): at 0 after forgets, the slot is freed. */
  lookups: number | undefined;
}

interface LayerRecord {
  kind: 'layer';
  slot: number;
  refName: string;
  ref: ImageReference;
  digest: string;
  /** The layer manager's key. */
  key: LayerKey;
  /** Set while the layer is served: requests then answer synchronously. */
  served: ServedLayer | undefined;
}

type SlotRecord = RefRecord | LayerRecord;

const stale = (): FsAnswer => new FsAnswer(Errno.ESTALE);
const NEGATIVE: Entry = { nodeid: 0, attr: { ino: 0, mode: 0 }, entryTimeout: DAY };
const STATFS: StatFs = { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, namelen: 255 };
const then = <T, U>(v: Awaitable<T>, f: (x: T) => Awaitable<U>): Awaitable<U> => (v instanceof Promise ? v.then(f) : f(v as T));

/**
 * The store tree `<mnt>/<base64(ref)>/<digest>/{diff,info,blob,use}` as an
 * inode-based filesystem (src/fuse/types.ts FuseOperations, without the
 * metrics and errno mapping that src/fs/mount.ts adds). Node ids are a pure
 * function of what they name (node-ids.ts), so a process that imports this
 * one's slot table answers for every id the kernel holds, resolving layers
 * again as their ids come in. Requests on a served layer answer
 * synchronously; only a resolution or a read waits.
 */
export class StoreFs {
  private readonly ids: NodeIdTable;
  private readonly records = new Map<number, SlotRecord>();
  /** Each resolved layer's overlay view, built once (the resolver is the one registry of served layers; this only follows it). */
  private readonly views = new WeakMap<ResolvedLayer, ServedLayer>();
  /** Bumped whenever the set of resolved layers changes: the root's and reference directories' mtime. */
  private generation = 0;
  private readonly mountedAt = Date.now() / 1000;
  private warnedDigestAtTop = false;
  /** The serving session's cache invalidations (the latest session to attach: a successor replaces it). */
  private notifier: Notifier | undefined;
  /** The last listing change's invalidations while the kernel has not taken them all (see listingsChanged). */
  private invalidating: Promise<void> | undefined;
  /** Told of every read of a file under `diff` (reference, layer digest, path in the layer): `image optimize` records what a workload reads. */
  onRead: ((ref: ImageReference, digest: string, path: string) => void) | undefined;

  /**
   * Called (synchronously, before the answer that hands the id out is
   * written) whenever the slot table or the set of served layers changes:
   * under a keeper, the state is published then, since a process that
   * crashes cannot export it.
   */
  onStateChange: (() => void) | undefined;
  private readonly log: Logger;
  /** Layers whose failure to resolve again was logged, so a layer's many ids make one line per failure. */
  private readonly reportedFailures = new WeakSet<object>();

  /** `slotBits` below 21 only for tests (collisions on purpose). */
  constructor(private readonly resolver: LayerManager, opts: { log: Logger; slotBits?: number; onStateChange?: () => void }) {
    this.log = opts.log;
    this.ids = new NodeIdTable(opts.slotBits);
    this.onStateChange = opts.onStateChange;
  }

  /** The key's slot (taken if new: the table changed). */
  private slotFor(key: string): number {
    const before = this.ids.size;
    const slot = this.ids.slotFor(key);
    if (this.ids.size !== before) this.onStateChange?.();
    return slot;
  }

  // --- Node ids -------------------------------------------------------------------

  /** The slot table, for a successor (see node-ids.ts). */
  exportNodeTable(): NodeTableJson {
    return this.ids.export();
  }

  /**
   * Takes a predecessor's slot table, before serving. `lookupRefs` (the
   * session's lookup counts) lets reference directories be freed again once
   * forgotten; without it they are kept.
   */
  importNodeTable(table: NodeTableJson, lookupRefs?: ReadonlyMap<number, number>): void {
    this.ids.import(table);
    this.records.clear();
    // Reference directories the kernel may hold get their records now, with what is known of their lookups.
    for (const [slot, key] of table.slots) {
      if (parseKey(key)?.kind !== 'ref') continue;
      const id = makeId(slot, Low.REF_DIR);
      const rec = this.record(id);
      if (rec?.kind === 'ref') rec.lookups = lookupRefs ? lookupRefs.get(id) ?? 0 : undefined;
    }
  }

  /**
   * Merges a table while serving (a restart: the predecessor served
   * alongside and may have handed out ids this process has not seen). Its
   * slots win, as in importNodeTable; records whose slot now names another
   * key are dropped, the rest (and what they serve) are kept. Reference
   * directories new to this process are kept until unmount (their lookup
   * counts are the predecessor's).
   */
  mergeNodeTable(table: NodeTableJson): void {
    this.ids.import(table);
    for (const [slot, key] of table.slots) {
      const rec = this.records.get(slot);
      if (rec && (rec.kind === 'ref' ? refKey(rec.name) : layerKey(rec.refName, rec.digest)) !== key) this.records.delete(slot);
      if (!this.records.has(slot) && parseKey(key)?.kind === 'ref') {
        const made = this.record(makeId(slot, Low.REF_DIR));
        if (made?.kind === 'ref') made.lookups = undefined;
      }
    }
    this.onStateChange?.();
  }

  private markServed(rec: LayerRecord, s: ServedLayer): void {
    const fresh = rec.served === undefined;
    rec.served = s;
    if (fresh) this.onStateChange?.();
  }

  /** Keys of the layer directories served now (resolved and not released): what a successor resolves again at once. */
  servedLayerKeys(): string[] {
    const out: string[] = [];
    for (const r of this.records.values()) if (r.kind === 'layer' && r.served) out.push(layerKey(r.refName, r.digest));
    return out;
  }

  /**
   * Resolves a predecessor's served layers again (a few at a time) without
   * waiting for a request: the successor's status, listings and background
   * fetch then pick up where the predecessor was, and its first reads of a
   * layer wait for no resolution. Requests that come meanwhile share the
   * resolution; a layer that fails is logged (withServed) and tried again
   * on its next request.
   */
  async resolveAgain(keys: readonly string[]): Promise<void> {
    const queue = [...keys];
    // A few at a time: a node serving many layers hands over sooner, without
    // a burst of manifest and TOC requests at the registry.
    const worker = async (): Promise<void> => {
      for (let key = queue.shift(); key !== undefined; key = queue.shift()) {
        const slot = this.ids.peek(key);
        const rec = slot === undefined ? undefined : this.record(makeId(slot, Low.LAYER_DIR));
        if (rec?.kind !== 'layer' || rec.served) continue;
        try {
          await this.withServed(rec, () => undefined);
        } catch {
          // logged by withServed; tried again on the layer's next request
        }
      }
    };
    await Promise.all(Array.from({ length: RESOLVE_AGAIN_CONCURRENCY }, worker));
  }

  /** The record of an id's slot, made from the table's key when needed. */
  private record(id: number): SlotRecord | undefined {
    const slot = slotOf(id);
    const known = this.records.get(slot);
    if (known) return known;
    const key = this.ids.keyAt(slot);
    const parsed = key === undefined ? undefined : parseKey(key);
    if (!parsed) return undefined;
    let ref: ImageReference;
    try {
      ref = decodeRefDir(parsed.refName);
    } catch {
      return undefined;
    }
    const rec: SlotRecord = parsed.kind === 'ref'
      ? { kind: 'ref', slot, name: parsed.refName, ref, lookups: undefined }
      : { kind: 'layer', slot, refName: parsed.refName, ref, digest: parsed.digest, key: this.keyOf(ref, parsed.digest), served: undefined };
    this.records.set(slot, rec);
    return rec;
  }

  private refRecord(name: string, ref: ImageReference): RefRecord {
    const slot = this.slotFor(refKey(name));
    let rec = this.records.get(slot);
    if (rec?.kind !== 'ref') {
      rec = { kind: 'ref', slot, name, ref, lookups: 0 };
      this.records.set(slot, rec);
    }
    return rec;
  }

  private layerRecord(refName: string, ref: ImageReference, digest: string): LayerRecord {
    const slot = this.slotFor(layerKey(refName, digest));
    let rec = this.records.get(slot);
    if (rec?.kind !== 'layer') {
      rec = { kind: 'layer', slot, refName, ref, digest, key: this.keyOf(ref, digest), served: undefined };
      this.records.set(slot, rec);
    }
    return rec;
  }

  /** Canonical strings of the decoded references, so that keys cost no formatting per request. */
  private readonly canonical = new WeakMap<ImageReference, string>();

  private keyOf(ref: ImageReference, digest: string): LayerKey {
    let text = this.canonical.get(ref);
    if (text === undefined) {
      text = referenceText(ref);
      this.canonical.set(ref, text);
    }
    return new LayerKey(ref, digest, text);
  }

  /** Decoded `<base64(ref)>` names (bounded, since the names come from outside). */
  private readonly refNames = new Map<string, ImageReference>();

  private refOf(name: string): ImageReference {
    let ref = this.refNames.get(name);
    if (!ref) {
      ref = decodeRefDir(name);
      if (this.refNames.size >= 4096) this.refNames.clear();
      this.refNames.set(name, ref);
    }
    return ref;
  }

  /** What an id names, for log lines. */
  describe(id: number, name?: string): string {
    const tail = name === undefined ? '' : `/${name}`;
    if (id === ROOT_ID) return tail || '/';
    const rec = this.record(id);
    if (!rec) return `(unknown node ${id})${tail}`;
    if (rec.kind === 'ref') return `/${rec.name}${tail}`;
    const dir = `/${rec.refName}/${rec.digest}`;
    const low = lowOf(id);
    if (low === Low.LAYER_DIR) return dir + tail;
    if (low === Low.INFO) return `${dir}/info${tail}`;
    if (low === Low.BLOB) return `${dir}/blob${tail}`;
    const entry = rec.served?.view.entryAt(low);
    const path = entry ? (entry.kind === 'whiteout' ? `${entry.node.path} (whiteout)` : entry.node.path) : `(node ${low})`;
    return `${dir}/diff${path ? `/${path}` : ''}${tail}`;
  }

  // --- Layers ------------------------------------------------------------------------

  /** The served layer (the resolver resolves each key once) with its view, built once per resolution. */
  private layer(key: LayerKey): Promise<ServedLayer> {
    return this.resolver.resolve(key).then((resolved) => {
      let s = this.views.get(resolved);
      if (!s) {
        s = { resolved, view: new DiffView(resolved.content.index), info: layerInfo(resolved, this.log) };
        this.views.set(resolved, s);
        this.listingsChanged();
      }
      return s;
    }, (err: unknown) => {
      this.listingsChanged();
      throw err;
    });
  }

  /**
   * Runs `f` on the record's served layer: at once when served, else once
   * resolved (again: a layer released, or one whose ids this process took
   * over from a predecessor). A layer that cannot be resolved again fails
   * its requests (EIO) and is named in one log line per failed attempt;
   * other layers are not affected.
   */
  private withServed<T>(rec: LayerRecord, f: (s: ServedLayer) => Awaitable<T>): Awaitable<T> {
    if (rec.served) return f(rec.served);
    return this.layer(rec.key).then((s) => {
      this.markServed(rec, s);
      return f(s);
    }, (err: unknown) => {
      // The manager answers from its failure memory with the same error for a while: one line per failure, not per request.
      const seen = typeof err === 'object' && err !== null;
      if (!seen || !this.reportedFailures.has(err)) {
        if (seen) this.reportedFailures.add(err);
        this.log.error({ ref: referenceText(rec.ref), layer: rec.digest, err: (err as Error)?.message ?? String(err) }, 'a layer the kernel holds files of cannot be resolved again; its files answer EIO until it can');
      }
      throw err;
    });
  }

  private viewEntry(s: ServedLayer, id: number): ViewEntry {
    const entry = s.view.entryAt(lowOf(id));
    if (!entry) throw stale();
    return entry;
  }

  // --- Attributes -----------------------------------------------------------------------

  private storeMtime(): number {
    return this.mountedAt + this.generation / 1000;
  }

  private contentAttr(id: number, entry: ViewEntry): Attr {
    if (entry.kind === 'whiteout') return baseAttr(S_IFCHR, id, 0, 1, entry.node.mtime);
    const n = entry.node;
    const size = n.type === 'reg' ? n.size : n.type === 'symlink' ? Buffer.byteLength(n.linkName) : n.type === 'dir' ? 4096 : 0;
    // Symlinks are 0777 on Linux whatever the tar header says (as `tar -x` leaves them).
    const perm = n.type === 'symlink' ? 0o777 : n.mode;
    const a = baseAttr(TYPE_BITS[n.type] | perm, id, size, n.nlink, n.mtime);
    a.uid = n.uid;
    a.gid = n.gid;
    if (n.type === 'char' || n.type === 'block') a.rdev = makeDev(n.devMajor, n.devMinor);
    return a;
  }

  private contentEntry(slot: number, entry: ViewEntry): Entry {
    const id = makeId(slot, entry.low);
    return { nodeid: id, attr: this.contentAttr(id, entry), entryTimeout: DAY, attrTimeout: DAY };
  }

  private layerDirEntry(rec: LayerRecord): Entry {
    const id = makeId(rec.slot, Low.LAYER_DIR);
    return { nodeid: id, attr: baseAttr(S_IFDIR | 0o500, id, 4096, 3, this.mountedAt), entryTimeout: DAY, attrTimeout: DAY };
  }

  private fileEntry(rec: LayerRecord, s: ServedLayer, low: number): Entry {
    const id = makeId(rec.slot, low);
    const size = low === Low.INFO ? s.info.length : s.resolved.blobSize;
    return { nodeid: id, attr: baseAttr(S_IFREG | 0o400, id, size, 1, this.mountedAt), entryTimeout: DAY, attrTimeout: DAY };
  }

  private refEntry(rec: RefRecord): Entry {
    const id = makeId(rec.slot, Low.REF_DIR);
    return { nodeid: id, attr: baseAttr(S_IFDIR | 0o500, id, 4096, 2, this.storeMtime()), entryTimeout: DAY, attrTimeout: STORE_DIR_ATTR };
  }

  private rootAttr(): Attr {
    return baseAttr(S_IFDIR | 0o555, ROOT_ID, 4096, 2, this.storeMtime());
  }

  // --- Operations -----------------------------------------------------------------------

  lookup(parent: number, name: string): Awaitable<Entry | null> {
    if (parent === ROOT_ID) return this.lookupRef(name);
    const rec = this.record(parent);
    if (!rec) throw stale();
    const low = lowOf(parent);
    if (rec.kind === 'ref') {
      if (low !== Low.REF_DIR) throw stale();
      return this.lookupLayer(rec, name);
    }
    if (low === Low.LAYER_DIR) {
      if (name !== 'diff' && name !== 'info' && name !== 'blob') return null; // `use` included: it never exists
      return this.withServed(rec, (s) => (name === 'diff' ? this.contentEntry(rec.slot, s.view.root()) : this.fileEntry(rec, s, name === 'info' ? Low.INFO : Low.BLOB)));
    }
    if (low === Low.INFO || low === Low.BLOB) throw new FsAnswer(Errno.ENOTDIR);
    return this.withServed(rec, (s) => {
      const dir = this.viewEntry(s, parent);
      if (dir.kind !== 'node' || dir.node.type !== 'dir') throw new FsAnswer(Errno.ENOTDIR);
      const child = s.view.list(dir.node).byName.get(name);
      // A name absent from an immutable directory stays absent: the kernel may remember that.
      return child ? this.contentEntry(rec.slot, child) : NEGATIVE;
    });
  }

  /**
   * A name that cannot be a reference or a digest does not exist (ENOENT),
   * rather than being malformed (EINVAL): the kernel looks a name up before
   * it creates or renames anything, and the answer to `mkdir`, `mknod` or
   * `rename` in the store must be EROFS, which it can only be once the lookup
   * found nothing.
   */
  private lookupRef(name: string): Entry | null {
    let ref: ImageReference;
    try {
      ref = this.refOf(name);
    } catch (err) {
      if (!(err instanceof BadNameError)) throw err;
      this.noteBadName(`/${name}`, err);
      return null;
    }
    const rec = this.refRecord(name, ref);
    if (rec.lookups !== undefined) rec.lookups++;
    return this.refEntry(rec);
  }

  /** The layer directory exists once the layer resolves: its lookup is what resolves it. */
  private lookupLayer(refRec: RefRecord, name: string): Awaitable<Entry | null> {
    let digest: string;
    try {
      digest = checkDigestDir(name);
    } catch (err) {
      if (!(err instanceof BadNameError)) throw err;
      this.noteBadName(`/${refRec.name}/${name}`, err);
      return null;
    }
    const slot = this.ids.peek(layerKey(refRec.name, digest));
    const known = slot === undefined ? undefined : this.records.get(slot);
    if (known?.kind === 'layer' && known.served) return this.listingsCurrent(this.layerDirEntry(known));
    return this.layer(this.keyOf(refRec.ref, digest)).then((s) => {
      const rec = this.layerRecord(refRec.name, refRec.ref, digest);
      this.markServed(rec, s);
      return this.listingsCurrent(this.layerDirEntry(rec));
    }, (err: unknown) => {
      const pending = this.invalidating;
      if (!pending) throw err;
      return pending.then((): never => { throw err; });
    });
  }

  /** A store configured without `:ref` is looked up as `<mnt>/<digest>`: said once at warn, then at debug. */
  private noteBadName(path: string, err: BadNameError): void {
    const digestAtTop = /^\/sha256:[0-9a-f]{64}$/.test(path);
    if (digestAtTop && !this.warnedDigestAtTop) {
      this.warnedDigestAtTop = true;
      this.log.warn({ path }, 'a layer digest was looked up at the top of the store: containers/storage must name the store with ":ref" (additionallayerstores = ["<mnt>:ref"])');
    } else {
      this.log.debug({ path, err: err.message }, 'lookup of a name that cannot be in the store');
    }
  }

  /** Reference directories are freed from the slot table once the kernel forgot them (their names come from outside). */
  forget(nodeid: number, nlookup: number): void {
    if (nodeid === ROOT_ID || lowOf(nodeid) !== Low.REF_DIR) return;
    const rec = this.records.get(slotOf(nodeid));
    if (rec?.kind !== 'ref' || rec.lookups === undefined) return;
    rec.lookups -= nlookup;
    if (rec.lookups <= 0) {
      this.records.delete(rec.slot);
      this.ids.free(rec.slot);
      this.onStateChange?.();
    }
  }

  getattr(id: number): Awaitable<AttrReply> {
    if (id === ROOT_ID) return { attr: this.rootAttr(), attrTimeout: STORE_DIR_ATTR };
    const rec = this.record(id);
    if (!rec) throw stale();
    const low = lowOf(id);
    if (rec.kind === 'ref') {
      if (low !== Low.REF_DIR) throw stale();
      const e = this.refEntry(rec);
      return { attr: e.attr, attrTimeout: e.attrTimeout! };
    }
    return this.withServed(rec, (s) => {
      const e = low === Low.LAYER_DIR ? this.layerDirEntry(rec)
        : low === Low.INFO || low === Low.BLOB ? this.fileEntry(rec, s, low)
          : this.contentEntry(rec.slot, this.viewEntry(s, id));
      return { attr: e.attr, attrTimeout: e.attrTimeout! };
    });
  }

  /** Entries from `offset` on (offset = index in the listing, `.` and `..` first), as many as can fit in `size`. */
  readdirplus(id: number, offset: number, size: number): Awaitable<DirEntryPlus[]> {
    const room = Math.ceil(size / MIN_DIRENTPLUS);
    // Entries `offset` … of `.`, `..` and then `names`, built only for what is sent (the kernel's last call of a listing, past its end, builds nothing).
    const page = (names: readonly string[], entry: (i: number) => Entry): DirEntryPlus[] => {
      const out: DirEntryPlus[] = [];
      const end = names.length + 2;
      for (let i = offset; i < end && out.length < room; i++) out.push({ name: i === 0 ? '.' : i === 1 ? '..' : names[i - 2]!, offset: i + 1, entry: entry(i) });
      return out;
    };
    const dots = (self: number, parent: number) => (i: number): Entry => ({ nodeid: 0, attr: { ino: i === 0 ? self : parent, mode: S_IFDIR } });
    // The store's own directories are listed without entries (node id 0): the kernel looks each name up when used.
    const unlisted = (ino: number, mode: number): Entry => ({ nodeid: 0, attr: { ino, mode } });
    if (id === ROOT_ID) {
      const names = [...new Set(this.resolver.status().map((l) => encodeRefDir(l.ref)))];
      const dot = dots(ROOT_ID, ROOT_ID);
      return page(names, (i) => (i < 2 ? dot(i) : unlisted(makeId(this.slotFor(refKey(names[i - 2]!)), Low.REF_DIR), S_IFDIR)));
    }
    const rec = this.record(id);
    if (!rec) throw stale();
    const low = lowOf(id);
    if (rec.kind === 'ref') {
      if (low !== Low.REF_DIR) throw stale();
      const ref = referenceText(rec.ref);
      const names = this.resolver.status().filter((l) => l.ref === ref && l.state !== 'failed').map((l) => l.digest);
      const dot = dots(id, ROOT_ID);
      return page(names, (i) => (i < 2 ? dot(i) : unlisted(makeId(this.slotFor(layerKey(rec.name, names[i - 2]!)), Low.LAYER_DIR), S_IFDIR)));
    }
    if (low === Low.INFO || low === Low.BLOB) throw new FsAnswer(Errno.ENOTDIR);
    return this.withServed(rec, (s) => {
      if (low === Low.LAYER_DIR) {
        const refSlot = this.ids.peek(refKey(rec.refName));
        const dot = dots(id, refSlot === undefined ? ROOT_ID : makeId(refSlot, Low.REF_DIR));
        return page(LAYER_DIR_NAMES, (i) => (i < 2 ? dot(i) : i === 2 ? this.contentEntry(rec.slot, s.view.root()) : this.fileEntry(rec, s, i === 3 ? Low.INFO : Low.BLOB)));
      }
      const dir = this.viewEntry(s, id);
      if (dir.kind !== 'node' || dir.node.type !== 'dir') throw new FsAnswer(Errno.ENOTDIR);
      const listing = s.view.list(dir.node);
      if (offset >= listing.names.length + 2) return [];
      const parentId = dir.node === s.view.index.root ? makeId(rec.slot, Low.LAYER_DIR) : makeId(rec.slot, s.view.parentOf(dir.node).ino);
      const dot = dots(id, parentId);
      return page(listing.names, (i) => (i < 2 ? dot(i) : this.contentEntry(rec.slot, listing.entries[i - 2]!)));
    });
  }

  readlink(id: number): Awaitable<string> {
    const rec = this.record(id);
    if (rec?.kind !== 'layer') throw new FsAnswer(id === ROOT_ID || rec ? Errno.EINVAL : Errno.ESTALE);
    return this.withServed(rec, (s) => {
      const entry = this.viewEntry(s, id);
      if (entry.kind !== 'node' || entry.node.type !== 'symlink') throw new FsAnswer(Errno.EINVAL);
      return entry.node.linkName;
    });
  }

  /**
   * Exactly `size` bytes, fewer only at the end of the file: the kernel takes
   * a short reply for the end of the file and shrinks its size. File content
   * comes as the engine returns it: the verified chunks' pieces, in order,
   * which the reply writes out without joining; a read that cannot be served
   * whole fails (EIO).
   */
  read(id: number, offset: number, size: number): Awaitable<Uint8Array | readonly Uint8Array[]> {
    if (id === ROOT_ID) throw new FsAnswer(Errno.EISDIR);
    const rec = this.record(id);
    if (!rec) throw stale();
    if (rec.kind === 'ref') throw new FsAnswer(Errno.EISDIR);
    const low = lowOf(id);
    return this.withServed(rec, (s): Awaitable<Uint8Array | readonly Uint8Array[]> => {
      if (low === Low.LAYER_DIR) throw new FsAnswer(Errno.EISDIR);
      if (low === Low.INFO) return s.info.subarray(offset, offset + size);
      if (low === Low.BLOB) return then(s.resolved.layer.readBlobParts(offset, size), (parts) => this.checkLength(id, parts, offset, size, s.resolved.blobSize));
      const entry = this.viewEntry(s, id);
      if (entry.kind !== 'node') throw new FsAnswer(Errno.EINVAL);
      const node: LayerNode = entry.node;
      if (node.type !== 'reg') throw new FsAnswer(node.type === 'dir' ? Errno.EISDIR : Errno.EINVAL);
      this.onRead?.(rec.ref, rec.digest, node.path);
      return then(s.resolved.layer.readFileParts(node, offset, size, node.path), (parts) => this.checkLength(id, parts, offset, size, node.size));
    });
  }

  /** A reply shorter than asked before the end of the file would cut the file short in the kernel: refused (and said). */
  private checkLength<T extends Buffer | readonly Buffer[]>(id: number, data: T, offset: number, size: number, fileSize: number): T {
    const want = Math.max(0, Math.min(size, fileSize - offset));
    let got = 0;
    if (Buffer.isBuffer(data)) got = data.length;
    else for (const part of data as readonly Buffer[]) got += part.length;
    if (got !== want) {
      this.log.error({ path: this.describe(id), offset, size, fileSize, got }, 'BUG: a read came out shorter than asked before the end of the file; answered EIO');
      throw new FsAnswer(Errno.EIO);
    }
    return data;
  }

  getxattr(id: number, name: string): Awaitable<Buffer | null> {
    const rec = id === ROOT_ID ? undefined : this.record(id);
    if (rec?.kind !== 'layer' || lowOf(id) >= Low.BLOB) return null;
    return this.withServed(rec, (s) => s.view.xattrs(this.viewEntry(s, id)).get(name) ?? null);
  }

  listxattr(id: number): Awaitable<string[]> {
    const rec = id === ROOT_ID ? undefined : this.record(id);
    if (rec?.kind !== 'layer' || lowOf(id) >= Low.BLOB) return [];
    return this.withServed(rec, (s) => [...s.view.xattrs(this.viewEntry(s, id)).keys()]);
  }

  statfs(): StatFs {
    return STATFS;
  }

  /** `create(<layer>/use)`: containers/storage telling the store a layer is in use. The answer is ENOENT, as the protocol expects; anything else is EROFS. */
  create(parent: number, name: string): Awaitable<never> {
    const rec = parent === ROOT_ID ? undefined : this.record(parent);
    if (rec?.kind !== 'layer' || lowOf(parent) !== Low.LAYER_DIR || name !== 'use') throw readOnly();
    return this.withServed(rec, () => {
      this.resolver.use(rec.key);
      throw notFound();
    });
  }

  /** `rmdir(<ref>/<digest>)`: containers/storage releasing a layer. Answers ENOENT, as the protocol expects; anything else is EROFS. */
  rmdir(parent: number, name: string): Awaitable<never> {
    const rec = parent === ROOT_ID ? undefined : this.record(parent);
    if (rec?.kind !== 'ref' || lowOf(parent) !== Low.REF_DIR) throw readOnly();
    let digest: string;
    try {
      digest = checkDigestDir(name);
    } catch {
      throw readOnly();
    }
    const key = this.keyOf(rec.ref, digest);
    return this.resolver.release(key).then((released) => {
      if (released) this.dropLayer(key);
      // The listing without the layer is what the next readdir finds.
      return this.invalidating;
    }).then((): never => {
      throw notFound();
    });
  }

  /**
   * A released layer: its next request resolves it again (its node ids stay:
   * they are its slot's), and the kernel forgets its directory's name, so
   * that the next path walk through it is a lookup, which resolves it.
   */
  private dropLayer(key: LayerKey): void {
    const text = key.toString();
    for (const r of this.records.values()) {
      if (r.kind !== 'layer' || r.key.toString() !== text) continue;
      r.served = undefined;
      const refSlot = this.ids.peek(refKey(r.refName));
      if (refSlot !== undefined) void this.notifier?.invalEntry(makeId(refSlot, Low.REF_DIR), r.digest);
    }
    this.listingsChanged();
    this.onStateChange?.();
  }

  /** The session's way to the kernel's caches. */
  attach(notifier: Notifier): void {
    this.notifier = notifier;
  }

  /**
   * The set of resolved layers changed: the root's and reference
   * directories' mtime moves, and the kernel drops their attributes and
   * cached listings now rather than when their attribute timeout ends.
   */
  private listingsChanged(): void {
    this.generation++;
    const n = this.notifier;
    if (!n) return;
    const sent = [n.invalInode(ROOT_ID, 0, 0)];
    for (const r of this.records.values()) if (r.kind === 'ref') sent.push(n.invalInode(makeId(r.slot, Low.REF_DIR), 0, 0));
    // Waiting for the last change waits for the earlier ones too.
    const all: Promise<void> = Promise.all([this.invalidating, ...sent]).then(() => {
      if (this.invalidating === all) this.invalidating = undefined;
    });
    this.invalidating = all;
  }

  /**
   * `v` once the kernel dropped the listings the last change made stale: a
   * lookup that made a layer (and so maybe a reference) appear, or an rmdir
   * that made one go, is answered after that, so that a readdir its caller
   * makes next finds the new listing. Other requests do not wait for it:
   * the kernel may hold it up until a request in flight is answered (see
   * Notifier.invalInode).
   */
  private listingsCurrent<T>(v: T): Awaitable<T> {
    const pending = this.invalidating;
    return pending ? pending.then(() => v) : v;
  }

  mkdir(): never {
    throw readOnly();
  }

  unlink(): never {
    throw readOnly();
  }
}
