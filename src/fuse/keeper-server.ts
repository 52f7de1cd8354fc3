/**
 * The server side of a kept mount: a program the keeper starts (and starts
 * again after a crash, or anew on restart) calls `serveKept(build)` once.
 * It receives the live FUSE connection (fd 3), its in-flight journal (fd 4)
 * and, over IPC, what INIT settled, the state to start from and the
 * journals of predecessors that died holding requests; it answers those,
 * then serves until unmounted, told to hand over (detach), or orphaned
 * (the keeper is gone: it exits, leaving a stale mount the next mount
 * cleans).
 */
import { closeSync, openSync } from 'node:fs';
import { FuseSession, type SessionOptions } from './session.js';
import { FUSE_FD, JOURNAL_FD, type FromServer, type OrphanRef, type StartReason, type ToServer } from './keeper-protocol.js';
import type { FuseOperations } from './types.js';

export interface KeptServer {
  ops: FuseOperations;
  /** Timeouts and the like (INIT was settled by the keeper). */
  session?: SessionOptions;
  /**
   * JSON-serializable state a successor needs to answer for node ids this
   * process handed out (e.g. the store's slot table). Called on export
   * (restart) and after each importState.
   */
  exportState?(): unknown;
  /**
   * State from a predecessor: once before serving (the state it exported,
   * or the last one it published before crashing) and, after a restart,
   * once more with its final state. It must merge, not replace: the second
   * call comes while this process already serves. A promise returned by the
   * first call is awaited before this process reads its first request (the
   * predecessor serves meanwhile on a restart); the second call's is not.
   */
  importState?(state: unknown): void | Promise<void>;
}

export interface KeptContext {
  reason: StartReason;
  /** 1 for the first server of a mount, +1 for each successor. */
  generation: number;
  mountpoint: string;
  /** Tell the keeper the state changed (a successor after a crash starts from the last one published). */
  publishState(state: unknown): void;
}

/** How often a detached server checks whether it has answered everything it held. */
const DRAIN_POLL_MS = 2;

function send(m: FromServer): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    process.send(m, undefined, {}, () => resolve());
  });
}

function nextStart(): Promise<Extract<ToServer, { t: 'start' }>> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: ToServer): void => {
      if (m.t !== 'start') return;
      process.off('message', onMsg);
      resolve(m);
    };
    process.on('message', onMsg);
    process.once('disconnect', () => reject(new Error('the keeper went away before starting this server')));
  });
}

function adopt(session: FuseSession, orphans: readonly OrphanRef[]): number {
  let replayed = 0;
  for (const o of orphans) {
    // A memfd reopened through the keeper's /proc entry: the same journal.
    const fd = openSync(o.path, 'r+');
    try {
      replayed += session.adoptJournal(fd);
    } finally {
      closeSync(fd);
    }
  }
  return replayed;
}

/** Runs a kept server; resolves never (the process exits when its part is over). */
export async function serveKept(build: (ctx: KeptContext) => KeptServer | Promise<KeptServer>): Promise<void> {
  if (!process.send) throw new Error('serveKept: this program is started by a keeper (it needs the IPC channel, fd 3 and fd 4)');
  // The keeper is gone: a mount no one supervises should not linger alive.
  process.once('disconnect', () => process.exit(0));
  const start = await nextStart();
  let server: KeptServer;
  let session: FuseSession;
  let replayed: number;
  try {
    server = await build({
      reason: start.reason,
      generation: start.generation,
      mountpoint: start.mountpoint,
      publishState: (state) => { void send({ t: 'state', state }); },
    });
    if (start.state !== undefined && start.state !== null) await server.importState?.(start.state);
    session = FuseSession.serveKept(FUSE_FD, server.ops, start.negotiated, JOURNAL_FD, [], server.session);
    replayed = adopt(session, start.orphans);
  } catch (err) {
    await send({ t: 'failed', error: (err as Error).stack ?? String(err) });
    process.exit(1);
  }
  // Unmounted (ENODEV) or aborted: nothing left to serve. (0: we detached.)
  void session.ended.then((errno) => { if (errno) setImmediate(() => process.exit(0)); });
  const publish = (): void => { if (server.exportState) void send({ t: 'state', state: server.exportState() }); };

  process.on('message', (m: ToServer) => {
    switch (m.t) {
      case 'adopt': {
        const n = adopt(session, m.orphans);
        void send({ t: 'adopted', ids: m.orphans.map((o) => o.id), replayed: n });
        return;
      }
      case 'export':
        void send({ t: 'exported', state: server.exportState?.() ?? null });
        return;
      case 'merge':
        void server.importState?.(m.state);
        publish();
        return;
      case 'detach': {
        session.detach();
        const check = (): void => {
          if (session.inFlight() > 0) { setTimeout(check, DRAIN_POLL_MS); return; }
          void send({ t: 'drained', state: server.exportState?.() ?? null }).then(() => process.exit(0));
        };
        check();
        return;
      }
      default:
    }
  });
  void send({ t: 'adopted', ids: start.orphans.map((o) => o.id), replayed });
  await send({ t: 'ready', pid: process.pid, negotiated: session.negotiated, replayed });
  publish();
}
