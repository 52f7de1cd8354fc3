/**
 * What a keeper (src/fuse/keeper.ts) and the server programs it starts
 * (src/fuse/keeper-server.ts) say to each other over the child's IPC
 * channel, which fds a server inherits, and the layout of the in-flight
 * journal (native/fuse_binding.c; keep in step).
 */
import type { Negotiated } from './types.js';

/** The FUSE connection, inherited through spawn's stdio. */
export const FUSE_FD = 3;
/** This server's own in-flight journal (a memfd). */
export const JOURNAL_FD = 4;

/** Why a server was started. */
export type StartReason = 'mount' | 'crash' | 'restart';

/** An orphan journal (of a server that died holding requests): the keeper's fd, opened by the server through /proc. */
export interface OrphanRef {
  id: number;
  path: string;
}

export type ToServer =
  /** First message: everything a server needs to serve. */
  | { t: 'start'; reason: StartReason; generation: number; mountpoint: string; negotiated: Negotiated; state: unknown; orphans: OrphanRef[] }
  /** Answer these dead servers' requests too. */
  | { t: 'adopt'; orphans: OrphanRef[] }
  /** Send the state a successor should start from. */
  | { t: 'export' }
  /** A successor serves: stop reading, answer what you hold, send the final state, exit. */
  | { t: 'detach' }
  /** The predecessor's final state (after a restart): merge it. */
  | { t: 'merge'; state: unknown };

export type FromServer =
  | { t: 'ready'; pid: number; negotiated: Negotiated | undefined; replayed: number }
  /** The server's state changed: what a successor after a crash starts from. */
  | { t: 'state'; state: unknown }
  | { t: 'adopted'; ids: number[]; replayed: number }
  | { t: 'exported'; state: unknown }
  | { t: 'drained'; state: unknown }
  | { t: 'failed'; error: string };

/**
 * Journal layout: a header (magic, version, slots, slot size, flags: u32
 * each), then slots (an open-addressing table keyed by unique), then, with
 * READBUF in the flags, at the next 4 KiB boundary, the server's read buffer:
 * it reads each request straight into the journal, so one read but not yet
 * in a slot when the server died is there for the successor (a non-zero
 * length in its fuse_in_header).
 */
export const Journal = {
  MAGIC: 0x4e524a46,
  VERSION: 1,
  HEADER: 64,
  FLAGS: 16,
  READBUF: 1,
  SLOT_SIZE: 384,
  NAME_MAX: 256,
  /** Slot fields (byte offsets): state u32 (0 free, 1 live), name_len u32, unique u64, 12 f64 (the decoded request row), name. */
  STATE: 0,
  NAME_LEN: 4,
  UNIQUE: 8,
  ROW: 16,
  NAME: 16 + 12 * 8,
} as const;
