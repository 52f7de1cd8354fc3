/**
 * The inode-based filesystem interface the session calls: what a filesystem
 * on this binding implements. Node ids are the caller's (1 is the root);
 * they must stay below 2^53 (they cross into JS as numbers).
 */

export type Awaitable<T> = T | Promise<T>;

export interface RequestContext {
  uid: number;
  gid: number;
  pid: number;
}

/** Times are seconds since the epoch (fractions allowed). */
export interface Attr {
  ino: number;
  /** Full st_mode: type bits and permissions. */
  mode: number;
  size?: number;
  nlink?: number;
  uid?: number;
  gid?: number;
  rdev?: number;
  /** Default: ceil(size / 512). */
  blocks?: number;
  /** Default: 4096. */
  blksize?: number;
  atime?: number;
  mtime?: number;
  ctime?: number;
}

/** A lookup answer; the timeouts (seconds) override the session's defaults. */
export interface Entry {
  /** 0 makes a negative entry (cached for entryTimeout). */
  nodeid: number;
  generation?: number;
  attr: Attr;
  entryTimeout?: number;
  attrTimeout?: number;
}

export interface AttrReply {
  attr: Attr;
  /** Seconds; default: the session's attrTimeout. */
  attrTimeout?: number;
}

export interface DirEntry {
  name: string;
  /** The offset of the entry after this one (what the next READDIR starts at). */
  offset: number;
  ino: number;
  /** st_mode (only the type bits are used). */
  mode: number;
}

export interface DirEntryPlus {
  name: string;
  offset: number;
  entry: Entry;
}

export interface StatFs {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  namelen: number;
  frsize: number;
}

/**
 * What a filesystem implements. Each handler returns a value or a promise;
 * throwing (or rejecting) answers with an errno (FuseError, a Node system
 * error, else EIO). Optional write-like handlers default to EROFS.
 */
export interface FuseOperations {
  /** null: ENOENT (or a negative entry when the session has a negativeTimeout). */
  lookup(parent: number, name: string, ctx: RequestContext): Awaitable<Entry | null>;
  /** The kernel dropped `nlookup` references to `nodeid` (no reply). */
  forget?(nodeid: number, nlookup: number): void;
  getattr(nodeid: number, ctx: RequestContext): Awaitable<AttrReply>;
  /** Entries from `offset` on; the session sends as many as fit in `size` bytes. */
  readdir?(nodeid: number, offset: number, size: number, ctx: RequestContext): Awaitable<DirEntry[]>;
  /** Like readdir, with each entry's lookup answer: the kernel caches them (one lookup reference per entry sent, . and .. excepted). */
  readdirplus?(nodeid: number, offset: number, size: number, ctx: RequestContext): Awaitable<DirEntryPlus[]>;
  /**
   * At most `size` bytes from `offset`; fewer only at end of file. A list of
   * buffers is sent as they are, in order, in one write (a read spanning
   * several cached chunks needs no joined copy).
   */
  read?(nodeid: number, offset: number, size: number, ctx: RequestContext): Awaitable<Uint8Array | readonly Uint8Array[]>;
  readlink?(nodeid: number, ctx: RequestContext): Awaitable<string | Uint8Array>;
  /** null: ENODATA. */
  getxattr?(nodeid: number, name: string, ctx: RequestContext): Awaitable<string | Uint8Array | null>;
  listxattr?(nodeid: number, ctx: RequestContext): Awaitable<string[]>;
  statfs?(nodeid: number, ctx: RequestContext): Awaitable<Partial<StatFs>>;
  /** Only asked without default_permissions. Default: EROFS for W_OK, else allowed. */
  access?(nodeid: number, mask: number, ctx: RequestContext): Awaitable<void>;
  mkdir?(parent: number, name: string, mode: number, ctx: RequestContext): Awaitable<Entry>;
  rmdir?(parent: number, name: string, ctx: RequestContext): Awaitable<void>;
  unlink?(parent: number, name: string, ctx: RequestContext): Awaitable<void>;
  /** May only refuse (throw): a successful create is not supported by this binding yet. */
  create?(parent: number, name: string, mode: number, flags: number, ctx: RequestContext): Awaitable<never>;
  /** Called once by each session that starts serving these operations, with the way to reach the kernel's caches. */
  attach?(notifier: Notifier): void;
}

/**
 * Invalidations of the kernel's caches, sent as FUSE notify messages on the
 * connection: what lets a filesystem give long timeouts to things that change
 * rarely but must then be seen at once. Both resolve with 0 or an errno
 * (ENOENT: the kernel holds nothing of that, which is fine) once the kernel
 * took the message, and do nothing once the session stopped serving. Both
 * are written off the JS thread: the kernel may hold a message up until a
 * request is answered, which that thread must stay free to do.
 */
export interface Notifier {
  /**
   * The node's attributes (and, with `offset` ≥ 0, its cached pages from
   * `offset` on, `length` bytes, 0 = to the end: a directory's cached
   * listing) are fetched again on next use. The kernel takes no inode lock
   * for this but locks each cached page it drops, so it waits for a READ
   * (or a listing being copied out of the cache) in flight on that node. A
   * request whose answer must find the caches already dropped (a lookup that
   * made a new name appear in a listing) is answered once this resolved.
   */
  invalInode(nodeid: number, offset: number, length: number): Promise<number>;
  /**
   * The kernel forgets the name `name` in directory `parent` (and the parent's
   * attributes): its next use is a LOOKUP. The kernel takes the parent's
   * inode lock for this, which a request on that directory (lookup, rmdir,
   * create) holds until answered: so it is written after the current turn,
   * and a request on that directory must not wait for it.
   */
  invalEntry(parent: number, name: string): Promise<number>;
}

/**
 * What INIT settled; a process adopting a live connection (handed over, or
 * inherited from a crashed one) gets it from its predecessor, since the
 * kernel sends INIT only once per connection.
 */
export interface Negotiated {
  major: number;
  minor: number;
  flags: number;
  flags2: number;
  maxReadahead: number;
  maxWrite: number;
  maxPages: number;
  maxBackground: number;
  congestionThreshold: number;
  timeGran: number;
}
