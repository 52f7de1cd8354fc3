/**
 * The kernel's FUSE protocol as far as this binding speaks it: opcodes, INIT
 * flags and the layouts of the Float64Arrays shared with the native addon
 * (native/fuse_binding.c; keep both in step). Values are from
 * <linux/fuse.h> (protocol 7.38 and later).
 */
import { constants } from 'node:os';

export const Op = {
  LOOKUP: 1, FORGET: 2, GETATTR: 3, SETATTR: 4, READLINK: 5, SYMLINK: 6, MKNOD: 8, MKDIR: 9,
  UNLINK: 10, RMDIR: 11, RENAME: 12, LINK: 13, OPEN: 14, READ: 15, WRITE: 16, STATFS: 17,
  RELEASE: 18, FSYNC: 20, SETXATTR: 21, GETXATTR: 22, LISTXATTR: 23, REMOVEXATTR: 24, FLUSH: 25,
  INIT: 26, OPENDIR: 27, READDIR: 28, RELEASEDIR: 29, FSYNCDIR: 30, GETLK: 31, SETLK: 32,
  SETLKW: 33, ACCESS: 34, CREATE: 35, INTERRUPT: 36, BMAP: 37, DESTROY: 38, IOCTL: 39, POLL: 40,
  BATCH_FORGET: 42, FALLOCATE: 43, READDIRPLUS: 44, RENAME2: 45, LSEEK: 46, COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48, REMOVEMAPPING: 49, SYNCFS: 50, TMPFILE: 51,
} as const;
export type OpName = keyof typeof Op;

/** opcode → name, for counters and logs. */
export const opName: ReadonlyMap<number, OpName> = new Map(Object.entries(Op).map(([k, v]) => [v, k as OpName]));

/** INIT flags (fuse_init_in.flags / fuse_init_out.flags). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  EXPORT_SUPPORT: 1 << 4,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  NO_OPEN_SUPPORT: 1 << 17,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24,
  EXPLICIT_INVAL_DATA: 1 << 25,
  INIT_EXT: 1 << 30,
} as const;

/** The protocol version whose structs the addon was written against. */
/** Notify codes (fuse_out_header.error with unique 0): messages the filesystem sends unasked. */
export const Notify = { INVAL_INODE: 2, INVAL_ENTRY: 3 } as const;
/** fuse_out_header: len u32, error s32, unique u64. */
export const OUT_HEADER = 16;

export const KERNEL_MAJOR = 7;
export const KERNEL_MINOR = 38;

/** Root node id: the kernel's name for the mount's root directory. */
export const ROOT_ID = 1;

// --- Layouts shared with the addon -------------------------------------------

/** One row per request: opcode unique nodeid uid gid pid a0..a5. */
export const REQ_STRIDE = 12;
/** Rows the addon fills per wake-up at most. */
export const MAX_BATCH = 64;
/** Most buffers one vectored data reply takes (native MAX_REPLY_PARTS); a read of more is joined first. */
export const MAX_REPLY_PARTS = 256;
export const Req = { OPCODE: 0, UNIQUE: 1, NODEID: 2, UID: 3, GID: 4, PID: 5, A0: 6, A1: 7, A2: 8, A3: 9, A4: 10, A5: 11 } as const;

/** One row per entry: nodeid generation entryValid attrValid, 12 attr fields, then the dirent's next offset. */
export const ENTRY_STRIDE = 17;
export const Ent = {
  NODEID: 0, GENERATION: 1, ENTRY_VALID: 2, ATTR_VALID: 3,
  INO: 4, SIZE: 5, BLOCKS: 6, ATIME: 7, MTIME: 8, CTIME: 9, MODE: 10, NLINK: 11, UID: 12, GID: 13, RDEV: 14, BLKSIZE: 15,
  DIR_OFF: 16,
} as const;
/** Directory entries packed per reply at most (the kernel asks again for the rest). */
export const SCRATCH_ROWS = 4096;

/** Smallest record sizes (fuse_dirent with a 1-byte name; plus a fuse_entry_out), to bound how many rows a reply can use. */
export const MIN_DIRENT = 32;
export const MIN_DIRENTPLUS = 128 + 32;

/** Largest request the kernel may send us and largest read it may ask for. */
export const MAX_WRITE = 1 << 20;
export const MAX_PAGES = 256;

// --- errno -------------------------------------------------------------------

export const errno = constants.errno;

/** An error a handler throws to answer with a specific errno. */
export class FuseError extends Error {
  constructor(readonly errno: number, message?: string) {
    super(message ?? `errno ${errno}`);
  }
}

export const fuseError = (code: keyof typeof constants.errno): FuseError => new FuseError(constants.errno[code], code);

/**
 * The positive errno for a thrown value: FuseError, a Node system error
 * (negative .errno or .code), else EIO.
 */
export function toErrno(err: unknown): number {
  if (err instanceof FuseError) return err.errno;
  if (err && typeof err === 'object') {
    const e = err as { errno?: unknown; code?: unknown };
    if (typeof e.errno === 'number' && e.errno !== 0) return Math.abs(e.errno);
    if (typeof e.code === 'string' && e.code in constants.errno) return constants.errno[e.code as keyof typeof constants.errno];
  }
  return constants.errno.EIO;
}
