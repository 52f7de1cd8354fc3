/**
 * The keeper: the process that owns a FUSE mount while other processes
 * serve it. It mounts (and answers INIT), then runs a server program
 * (src/fuse/keeper-server.ts) as a child holding the connection as fd 3.
 * The keeper keeps its own fd to the connection, so the mount outlives any
 * server: when one dies unexpectedly a successor is started on the same
 * connection and first answers what the dead one had read (its in-flight
 * journal, fd 4); on restart() a new server starts from the code installed
 * now, serves alongside the old one, and the old one stops reading, answers
 * what it holds and exits. The keeper serves no FUSE request itself, so it
 * can live in a process that also touches the mount.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync } from 'node:fs';
import { readFile, statfs } from 'node:fs/promises';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log/logger.js';
import type { FromServer, OrphanRef, StartReason, ToServer } from './keeper-protocol.js';
import { unmountConnection, type MountParams } from './mount.js';
import { loadAddon, type FuseAddon } from './native.js';
import { FuseSession, type SessionOptions } from './session.js';
import type { Negotiated } from './types.js';

export interface KeeperOptions {
  mount: MountParams;
  /** The server program (a JS file that calls serveKept), run with this node; loaded anew by each server, so a restart runs the code installed now. */
  entry: string;
  args?: string[];
  execArgv?: string[];
  env?: NodeJS.ProcessEnv;
  /** What INIT asks for (readdirplus, maxReadahead, maxBackground); default readdirplus on. */
  init?: SessionOptions;
  /** In-flight journal slots per server (default 1024): more requests than this are not read until some are answered. */
  journalSlots?: number;
  /** A server that is not serving after this long is a failed start (default 30 s). */
  readyTimeoutMs?: number;
  /** A detached server still holding requests after this long is killed; its successor answers them (default 60 s). */
  drainTimeoutMs?: number;
  logger: Logger;
}

export interface KeeperStatus {
  mountpoint: string;
  /** The serving process (undefined while a successor is being started). */
  pid: number | undefined;
  generation: number;
  restarts: number;
  failedRestarts: number;
  crashes: number;
  /** Requests of dead servers answered by their successors. */
  replayed: number;
  /** Requests the serving process has read and not answered. */
  inFlight: number;
  /** Journals of dead servers not yet taken over. */
  orphans: number;
}

export interface RestartResult {
  pid: number;
  previousPid: number;
  /** From the request until the new server serves. */
  readyMs: number;
  /** Until the old one has answered what it held and exited. */
  totalMs: number;
}

const STREAK_WINDOW_MS = 10_000;
const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 4000;
const EXPORT_TIMEOUT_MS = 5000;
const STOP_GRACE_MS = 5000;

type Msg<T extends FromServer['t']> = Extract<FromServer, { t: T }>;

/** One server child and the journal it writes. */
class ServerProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  role: 'starting' | 'serving' | 'draining' = 'starting';
  alive = true;

  constructor(readonly journal: number, fuseFd: number, opts: KeeperOptions, readonly generation: number) {
    this.child = spawn(process.execPath, [...(opts.execArgv ?? []), opts.entry, ...(opts.args ?? [])], {
      stdio: ['ignore', 'inherit', 'inherit', fuseFd, journal, 'ipc'],
      env: opts.env ?? process.env,
    });
    // Gone means exited and its IPC channel drained (messages sent before exit still arrive first).
    const exit = new Promise<void>((r) => this.child.once('exit', () => r()));
    const channel = new Promise<void>((r) => this.child.once('disconnect', () => r()));
    const failed = new Promise<void>((r) => this.child.once('error', () => { if (this.child.pid === undefined) r(); }));
    this.exited = Promise.race([Promise.all([exit, channel]).then(() => {}), failed]).then(() => { this.alive = false; });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  send(m: ToServer): void {
    if (this.alive && this.child.connected) this.child.send(m, (err) => { void err; /* a dead child: its exit is handled */ });
  }

  /** The next message of type `t` (after sending `m`, if given); rejects on exit, a 'failed' message or timeout. */
  request<T extends FromServer['t']>(t: T, ms: number, m?: ToServer): Promise<Msg<T>> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.child.off('message', onMsg);
        this.child.off('disconnect', onGone);
      };
      const onMsg = (x: FromServer): void => {
        if (x.t === t) { done(); resolve(x as Msg<T>); } else if (x.t === 'failed') { done(); reject(new Error(`server ${this.pid} failed: ${x.error}`)); }
      };
      const onGone = (): void => { done(); reject(new Error(`server ${this.pid} exited`)); };
      const timer = setTimeout(() => { done(); reject(new Error(`server ${this.pid}: no '${t}' within ${ms} ms`)); }, ms);
      this.child.on('message', onMsg);
      this.child.once('disconnect', onGone);
      if (!this.alive || !this.child.connected) onGone();
      else if (m) this.send(m);
    });
  }

  kill(): void {
    if (this.alive) this.child.kill('SIGKILL');
  }
}

interface Orphan {
  fd: number;
  /** The server it was handed to and that has not confirmed taking it yet. */
  sentTo?: ServerProcess;
}

export class Keeper {
  private current: ServerProcess | undefined;
  private readonly servers = new Set<ServerProcess>();
  private readonly orphans: Orphan[] = [];
  private state: unknown = null;
  private generation = 0;
  private crashStreak = 0;
  private lastCrashAt = 0;
  private restarting: Promise<RestartResult> | undefined;
  private recovering = false;
  private stopping: Promise<void> | undefined;
  private readonly counters = { restarts: 0, failedRestarts: 0, crashes: 0, replayed: 0 };
  private readonly log: Logger;

  private constructor(
    private readonly addon: FuseAddon,
    private readonly fd: number,
    readonly negotiated: Negotiated,
    readonly mountpoint: string,
    private readonly opts: KeeperOptions,
  ) {
    this.log = opts.logger.child({ mountpoint });
  }

  /** Cleans a stale mount, mounts, answers INIT and starts the first server; resolves once it serves. */
  static async start(opts: KeeperOptions): Promise<Keeper> {
    const addon = loadAddon();
    const mountpoint = resolve(opts.mount.mountpoint);
    const log = opts.logger;
    await cleanStaleMount(addon, mountpoint, log);
    const journal = addon.createJournal(opts.journalSlots ?? 1024);
    let mounted: { fd: number; negotiated: Negotiated };
    try {
      mounted = await FuseSession.mountKept({ ...opts.mount, mountpoint }, journal, opts.init);
    } catch (err) {
      closeSync(journal);
      throw err;
    }
    const keeper = new Keeper(addon, mounted.fd, mounted.negotiated, mountpoint, opts);
    // Requests that came between INIT and the first server (rare) are its to answer.
    keeper.retire(journal);
    const first = keeper.spawn('mount', null, true);
    try {
      await first.request('ready', opts.readyTimeoutMs ?? 30_000);
    } catch (err) {
      await keeper.stop();
      throw new Error(`the server program did not start: ${(err as Error).message}`);
    }
    keeper.promote(first);
    return keeper;
  }

  /** The pid of the process serving the mount now (what `status` reports). */
  get pid(): number | undefined {
    return this.current?.pid;
  }

  status(): KeeperStatus {
    return {
      mountpoint: this.mountpoint,
      pid: this.current?.pid,
      generation: this.generation,
      ...this.counters,
      inFlight: this.current ? this.addon.journalLive(this.current.journal) : 0,
      orphans: this.orphans.length,
    };
  }

  /**
   * Replaces the serving process without unmounting: a new one (from the code
   * installed now) starts with the old one's state and serves; then the old
   * one stops reading, answers what it holds, hands over its final state and
   * exits. If the new one fails to start, the old one serves on and this
   * rejects. Restarts run one after the other.
   */
  restart(): Promise<RestartResult> {
    if (this.stopping) return Promise.reject(new Error('the keeper is stopping'));
    // The previous restart's failure was its caller's: this one runs after it either way.
    const p = (this.restarting ?? Promise.resolve()).catch(() => {}).then(() => this.handoff());
    this.restarting = p;
    // p's failure goes to this caller (returned below); the bookkeeping chain must not be an unhandled rejection.
    p.then(() => {}, () => {}).finally(() => { if (this.restarting === p) this.restarting = undefined; });
    return p;
  }

  /** Unmounts and ends every server. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  // --- Servers -----------------------------------------------------------------------

  private spawn(reason: StartReason, state: unknown, withOrphans: boolean): ServerProcess {
    const journal = this.addon.createJournal(this.opts.journalSlots ?? 1024);
    const s = new ServerProcess(journal, this.fd, this.opts, ++this.generation);
    this.servers.add(s);
    s.child.on('message', (m: FromServer) => this.onMessage(s, m));
    s.child.on('error', (err) => this.log.error({ err: err.message }, 'server process error'));
    void s.exited.then(() => this.onExit(s));
    const orphans = withOrphans ? this.orphans.filter((o) => !o.sentTo) : [];
    for (const o of orphans) o.sentTo = s;
    s.send({ t: 'start', reason, generation: s.generation, mountpoint: this.mountpoint, negotiated: this.negotiated, state, orphans: orphans.map((o) => this.ref(o)) });
    this.log.info({ pid: s.pid, generation: s.generation, reason, orphans: orphans.length }, 'server starting');
    return s;
  }

  private ref(o: Orphan): OrphanRef {
    return { id: o.fd, path: `/proc/${process.pid}/fd/${o.fd}` };
  }

  private promote(s: ServerProcess): void {
    s.role = 'serving';
    this.current = s;
    this.log.info({ pid: s.pid, generation: s.generation }, 'server serving');
    this.offerOrphans();
  }

  private onMessage(s: ServerProcess, m: FromServer): void {
    if (m.t === 'state') {
      if (s.role === 'serving') this.state = m.state;
    } else if (m.t === 'adopted') {
      this.counters.replayed += m.replayed;
      for (const id of m.ids) {
        const i = this.orphans.findIndex((o) => o.fd === id && o.sentTo === s);
        if (i >= 0) closeSync(this.orphans.splice(i, 1)[0]!.fd);
      }
      if (m.replayed > 0) this.log.warn({ pid: s.pid, requests: m.replayed }, 'answered the requests a dead server held');
    } else if (m.t === 'failed') {
      this.log.error({ pid: s.pid, error: m.error }, 'server failed to start');
    }
  }

  /** A dead server's journal: closed if empty, else kept for a server to answer. */
  private retire(journal: number): void {
    if (this.addon.journalLive(journal) === 0) closeSync(journal);
    else this.orphans.push({ fd: journal });
  }

  private onExit(s: ServerProcess): void {
    this.servers.delete(s);
    const { exitCode: code, signalCode: signal } = s.child;
    for (const o of this.orphans) if (o.sentTo === s) o.sentTo = undefined;
    this.retire(s.journal);
    if (s === this.current) {
      this.current = undefined;
      if (!this.stopping) {
        this.counters.crashes++;
        this.noteCrash();
        this.log.error({ pid: s.pid, code, signal }, 'the serving process died; starting a successor on the same connection');
        void this.recover();
      }
    } else if (s.role !== 'draining' || code !== 0) {
      if (!this.stopping) this.log.warn({ pid: s.pid, code, signal, role: s.role }, 'a server process ended');
    }
    this.offerOrphans();
  }

  /** Hands journals of dead servers to the serving one. */
  private offerOrphans(): void {
    const s = this.current;
    if (!s || this.stopping) return;
    const pending = this.orphans.filter((o) => !o.sentTo);
    if (pending.length === 0) return;
    for (const o of pending) o.sentTo = s;
    s.send({ t: 'adopt', orphans: pending.map((o) => this.ref(o)) });
  }

  private noteCrash(): void {
    const now = Date.now();
    if (now - this.lastCrashAt > STREAK_WINDOW_MS) this.crashStreak = 0;
    this.crashStreak++;
    this.lastCrashAt = now;
  }

  /** The first successor starts at once; a crash loop backs off (doubling, capped under the 5 s promise). */
  private backoffMs(): number {
    return this.crashStreak <= 1 ? 0 : Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (this.crashStreak - 2));
  }

  private async recover(): Promise<void> {
    if (this.recovering) return;
    this.recovering = true;
    try {
      while (!this.current && !this.stopping) {
        if (this.restarting) {
          // A restart's new server may become the serving one.
          await this.restarting.catch(() => {});
          continue;
        }
        const delay = this.backoffMs();
        if (delay > 0) await sleep(delay);
        if (this.current || this.stopping) break;
        const s = this.spawn('crash', this.state, true);
        try {
          await s.request('ready', this.opts.readyTimeoutMs ?? 30_000);
          this.promote(s);
        } catch (err) {
          this.log.error({ pid: s.pid, err: (err as Error).message }, 'a successor failed to start');
          this.noteCrash();
          s.kill();
          await s.exited;
        }
      }
    } finally {
      this.recovering = false;
    }
  }

  private async handoff(): Promise<RestartResult> {
    if (this.stopping) throw new Error('the keeper is stopping');
    const old = this.current;
    if (!old) throw new Error('no server is serving (a successor to a crashed one is starting)');
    const t0 = performance.now();
    // The old server's state now; it may still change (merged once it has drained).
    const snapshot = await old.request('exported', EXPORT_TIMEOUT_MS, { t: 'export' }).then((m) => m.state, () => this.state);
    const next = this.spawn('restart', snapshot, false);
    try {
      await next.request('ready', this.opts.readyTimeoutMs ?? 30_000);
    } catch (err) {
      this.counters.failedRestarts++;
      next.kill();
      await next.exited;
      throw new Error(`restart failed; ${this.current ? `pid ${this.current.pid} serves on` : 'no server is serving'}: ${(err as Error).message}`);
    }
    const readyMs = performance.now() - t0;
    this.promote(next);
    this.counters.restarts++;
    if (old.alive) {
      old.role = 'draining';
      try {
        const drained = await old.request('drained', this.opts.drainTimeoutMs ?? 60_000, { t: 'detach' });
        next.send({ t: 'merge', state: drained.state });
      } catch (err) {
        // Killed, its journal goes to the new server, which answers what it held.
        this.log.warn({ pid: old.pid, err: (err as Error).message }, 'the old server did not drain; killing it');
        old.kill();
      }
      await old.exited;
    }
    const totalMs = performance.now() - t0;
    this.log.info({ pid: next.pid, previousPid: old.pid, readyMs: Math.round(readyMs), totalMs: Math.round(totalMs) }, 'restarted without unmounting');
    return { pid: next.pid, previousPid: old.pid, readyMs, totalMs };
  }

  private async shutdown(): Promise<void> {
    await this.restarting?.catch(() => {}); // a restart's failure was its caller's; shutdown only waits for it to end
    // The kernel ends the connection: servers read ENODEV and exit.
    unmountConnection(this.addon, this.mountpoint);
    const all = [...this.servers];
    const gone = Promise.all(all.map((s) => s.exited));
    const timer = sleep(STOP_GRACE_MS, undefined, { ref: false });
    if (await Promise.race([gone.then(() => true), timer.then(() => false)]) === false) for (const s of all) s.kill();
    await gone;
    for (const o of this.orphans.splice(0)) closeSync(o.fd);
    closeSync(this.fd);
    this.current = undefined;
    this.log.info('unmounted');
  }
}

/**
 * A mount left by a keeper that was killed (its servers exit with it)
 * answers ENOTCONN: lazily unmounted here. A mount that answers belongs to a
 * live store: an error.
 */
export async function cleanStaleMount(addon: FuseAddon, mountpoint: string, log: Logger): Promise<void> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => ''); // no mount table to read: nothing stale to clean
  const mounted = info.split('\n').some((l) => unescapeMountPath(l.split(' ')[4] ?? '') === mountpoint);
  if (!mounted) return;
  // STATFS always reaches the server (a stat may be answered from the kernel's cache).
  const err = await Promise.race([
    statfs(mountpoint).then(() => undefined, (e: NodeJS.ErrnoException) => e.code ?? 'error'),
    sleep(2000, 'timeout', { ref: false }),
  ]);
  if (err !== 'ENOTCONN' && err !== 'ECONNABORTED') {
    throw new Error(`${mountpoint} is already mounted and ${err === undefined ? 'answering' : `failing with ${err}`}: stop whatever serves it first`);
  }
  log.warn({ mountpoint }, 'cleaning a stale mount left by a keeper that did not unmount');
  addon.umount(mountpoint, 2 /* MNT_DETACH */);
}

function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}
