/**
 * Loads the addon built from native/ by `npm ci` (node-gyp, see binding.gyp)
 * and types what it exports. Loaded on first use, not at import, so commands
 * that never mount do not need it built.
 */
import { createRequire } from 'node:module';

export interface NativeSession {
  start(): void;
  stop(): void;
  replyError(unique: number, errno: number): number;
  replyEntry(unique: number): number;
  replyAttr(unique: number): number;
  replyData(unique: number, data?: Uint8Array, offset?: number, length?: number): number;
  /** The buffers' bytes in order, one writev (at most MAX_REPLY_PARTS of them; more, or a non-Buffer, answers EIO). */
  replyDataVec(unique: number, parts: readonly Uint8Array[]): number;
  replyOpen(unique: number, fh: number, openFlags: number): number;
  replyXattrSize(unique: number, size: number): number;
  replyStatfs(unique: number, blocks: number, bfree: number, bavail: number, files: number, ffree: number, bsize: number, namelen: number, frsize: number): number;
  replyInit(unique: number, major: number, minor: number, maxReadahead: number, flags: number, flags2: number, maxBackground: number, congestionThreshold: number, maxWrite: number, timeGran: number, maxPages: number): number;
  /** Entries sent, or -errno. */
  replyDir(unique: number, plus: boolean, size: number, count: number, names: string[]): number;
  /** Journals every request read from now on (until answered) in a journal made by createJournal. */
  setJournal(fd: number): void;
  /** Requests read and not yet answered (0 without a journal). */
  journalUsed(): number;
  /** Takes over live entries of another journal from slot `from`: rows 0..count-1 of the requests array and `extras` hold them; next is -1 when done. */
  adoptJournal(fd: number, from: number, extras: (string | undefined)[]): { count: number; next: number };
  /** After a batch, keep reading for up to this many µs while nothing else is ready on the loop (0: off). */
  setBusyPoll(microseconds: number): void;
  /** The busy poll's running hit rate, 0..1: below 0.5 it spins only on a probe (native on_readable). */
  busyPollScore(): number;
  /** The unique of the last reply written (0 before any). */
  lastReplied(): number;
  /** Replies the kernel refused (ENOENT: the request was interrupted and is gone, or had been answered). */
  refusedReplies(): number;
}

/** Called once per batch: `count` request rows are in the requests array; `ended` is the errno that ended the connection (ENODEV: unmounted), else 0. */
export type BatchCallback = (count: number, extras: (string | Float64Array | undefined)[], ended: number) => void;

export interface FuseAddon {
  Session: new (fd: number, callback: BatchCallback, requests: Float64Array, scratch: Float64Array) => NativeSession;
  openDevice(): number;
  mount(source: string, target: string, fstype: string, flags: number, data: string): void;
  /** 0 or errno. */
  umount(target: string, flags: number): number;
  /** A new in-flight journal (memfd, close-on-exec) of at least `slots` slots; returns its fd. */
  createJournal(slots: number): number;
  /** Live entries of a journal. */
  journalLive(fd: number): number;
}

const ADDON = '../../../build/Release/fuse_binding.node';

export function loadAddon(): FuseAddon {
  try {
    return createRequire(import.meta.url)(ADDON) as FuseAddon;
  } catch (err) {
    throw new Error(`the FUSE addon is not built (${(err as Error).message.split('\n')[0]}): run npm ci (it builds native/ with node-gyp; needs the Debian package build-essential)`);
  }
}
