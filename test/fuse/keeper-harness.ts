/**
 * Test helpers for kept mounts: a keeper child (keeper-child.ts) on a
 * temporary mountpoint, and a reader loop in a python child that re-reads
 * the toy's many/dNN/fNNN files pass after pass (dropping each file's pages
 * with posix_fadvise, so every pass reaches the server), from several
 * threads, and reports each pass as a JSON line. Nothing here touches the
 * mount from the test process's own thread.
 */
import { execFile, fork, type ChildProcess } from 'node:child_process';
import { startPassReader, type PassReader } from '../../testkit/pass-reader.js';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { KeeperStatus, RestartResult } from '../../src/fuse/keeper.js';
import type { KeeperUsage, ManyRestarts } from './keeper-child.js';
import type { ToyTreeSpec } from './toy-fs.js';

const run = promisify(execFile);
const CHILD = fileURLToPath(new URL('./keeper-child.js', import.meta.url));

export async function isMounted(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === path);
}

/** The next message carrying one of `keys`. */
function nextMessage<T>(child: ChildProcess, key: string | string[], ms = 120_000): Promise<T> {
  const keys = typeof key === 'string' ? [key] : key;
  return new Promise((resolve, reject) => {
    const done = (): void => { clearTimeout(timer); child.off('message', onMsg); child.off('exit', onExit); };
    const onMsg = (m: Record<string, unknown>): void => { if (keys.some((k) => k in m)) { done(); resolve(m as T); } };
    const onExit = (code: number | null, signal: string | null): void => { done(); reject(new Error(`keeper child exited (${code ?? signal}) before sending ${key}`)); };
    const timer = setTimeout(() => { done(); reject(new Error(`no ${key} from the keeper child within ${ms} ms`)); }, ms);
    child.on('message', onMsg);
    child.once('exit', onExit);
  });
}

export interface KeptToy {
  mnt: string;
  child: ChildProcess;
  status(): Promise<KeeperStatus>;
  usage(): Promise<KeeperUsage>;
  restart(): Promise<RestartResult>;
  restartMany(n: number, ms: number, warmup: number): Promise<ManyRestarts>;
  stop(): Promise<void>;
}

/** A keeper child serving ToyFs on `mnt` (a fresh temporary directory unless given). */
export async function startKeptToy(spec: ToyTreeSpec, mnt?: string, keeperOpts: { journalSlots?: number } = {}): Promise<KeptToy> {
  const base = mnt ? undefined : await mkdtemp(join(tmpdir(), 'estargz-keeper-test-'));
  const mountpoint = mnt ?? join(base!, 'mnt');
  await mkdir(mountpoint, { recursive: true });
  const child = fork(CHILD, [mountpoint, JSON.stringify(spec), JSON.stringify(keeperOpts)], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  await nextMessage(child, 'ready', 30_000);
  const ask = async <T>(cmd: Record<string, unknown>, key: string, ms?: number): Promise<T> => {
    const reply = nextMessage<Record<string, T>>(child, key, ms);
    child.send(cmd);
    return (await reply)[key]!;
  };
  return {
    mnt: mountpoint,
    child,
    status: () => ask<KeeperStatus>({ cmd: 'status' }, 'status'),
    usage: () => ask<KeeperUsage>({ cmd: 'usage' }, 'usage'),
    restart: async () => {
      const reply = nextMessage<{ restarted?: RestartResult; restartFailed?: string }>(child, ['restarted', 'restartFailed']);
      child.send({ cmd: 'restart' });
      const r = await reply;
      if (!r.restarted) throw new Error(r.restartFailed);
      return r.restarted;
    },
    restartMany: (n, ms, warmup) => ask<ManyRestarts>({ cmd: 'restartMany', n, ms, warmup }, 'many', ms + 60_000),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null && child.connected) {
        await ask({ cmd: 'stop' }, 'stopped', 20_000).catch(() => child.kill('SIGKILL'));
      }
      if (await isMounted(mountpoint)) await run('umount', ['-l', mountpoint]).catch(() => {});
      if (base) await rm(base, { recursive: true, force: true }).catch(() => {});
    },
  };
}

// --- The reader loop ------------------------------------------------------------

const READER_PY = String.raw`
import json, os, sys, threading, time
mnt, nthreads, ndirs, nfiles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
files = []
for d in range(ndirs):
    dn = 'd%02d' % d
    for f in range(nfiles):
        files.append((os.path.join(mnt, 'many', dn, 'f%03d' % f), ('many/%s/f%d\n' % (dn, f)).encode()))
stop = threading.Event()
def watch_stdin():
    sys.stdin.read()
    stop.set()
threading.Thread(target=watch_stdin, daemon=True).start()
n = 0
while not stop.is_set():
    lock = threading.Lock()
    res = {'pass': n, 'ok': 0, 'eio': 0, 'wrong': 0, 'other': 0, 'errors': [], 'maxMs': 0.0, 'maxAt': 0.0, 'start': time.time()}
    nxt = [0]
    def work():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(files):
                return
            path, want = files[i]
            t0 = time.time()
            kind = 'ok'
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    data = os.read(fd, 65536)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
                if data != want:
                    kind = 'wrong'
                    err = '%s: %r' % (path, data[:40])
            except OSError as e:
                kind = 'eio' if e.errno == 5 else 'other'
                err = '%s: %s' % (path, os.strerror(e.errno or 0))
            ms = (time.time() - t0) * 1000
            with lock:
                res[kind] += 1
                if kind != 'ok' and len(res['errors']) < 5:
                    res['errors'].append(err)
                if ms > res['maxMs']:
                    res['maxMs'] = ms
                    res['maxAt'] = t0
    ts = [threading.Thread(target=work) for _ in range(nthreads)]
    for t in ts: t.start()
    for t in ts: t.join()
    res['end'] = time.time()
    print(json.dumps(res), flush=True)
    n += 1
`;

export interface Pass {
  pass: number;
  ok: number;
  eio: number;
  wrong: number;
  other: number;
  errors: string[];
  /** The slowest single open+read+close of the pass, and when it started (epoch seconds). */
  maxMs: number;
  maxAt: number;
  start: number;
  end: number;
}

export type Reader = PassReader<Pass>;

export function startReader(mnt: string, threads: number, dirs: number, files: number): Reader {
  return startPassReader<Pass>(READER_PY, [mnt, String(threads), String(dirs), String(files)], 30_000);
}

/** Polls `check` until true (fails after `ms`). */
export async function until(check: () => Promise<boolean>, ms: number, what: string, every = 10): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}
