/**
 * Restarts, upgrades and crashes of the store under its keeper (issue 14):
 * a real registry, a real mount, and readers in child processes (python):
 * nothing here touches the mount from the test process itself. The reader
 * re-reads the 300 files of a served layer pass after pass, dropping the
 * page cache, dentries and inodes between passes (`echo 3 >
 * /proc/sys/vm/drop_caches`), so every pass goes through lookups and reads
 * to whichever store process serves.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { startPassReader, type PassReader } from '../../testkit/pass-reader.js';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { RESTART_TIMEOUT_MS, SOCKET_NAME, controlRequest } from '../../src/daemon/control-protocol.js';
import { startFaultProxy, type FaultProxy } from '../../testkit/fault-proxy.js';
import { pushTestImage } from '../../testkit/images.js';
import { randomBytes, type SpecEntry } from '../../testkit/layer-tar.js';
import { freePort, startRegistry, type Registry } from '../../testkit/registry.js';
import { isMounted, startStore, type RunningStore } from '../../testkit/store.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const KiB = 1024;
const FILES = 300;

/** 300 files in 10 directories, 1–48 KiB, half random and half compressible, each with its own content. */
function manyFiles(): { spec: SpecEntry[]; expected: [string, string][] } {
  const spec: SpecEntry[] = [];
  const expected: [string, string][] = [];
  for (let d = 0; d < 10; d++) {
    spec.push({ name: `d${d}/`, type: 'directory' });
    for (let f = 0; f < FILES / 10; f++) {
      const i = d * 100 + f;
      const size = KiB + ((i * 7919) % (47 * KiB));
      const content = i % 2 ? randomBytes(size, i + 1) : Buffer.from(`file ${i} `.repeat(Math.ceil(size / 8)).slice(0, size));
      spec.push({ name: `d${d}/f${f}`, type: 'file', content });
      expected.push([`d${d}/f${f}`, createHash('sha256').update(content).digest('hex')]);
    }
  }
  return { spec, expected };
}

// --- The reader -------------------------------------------------------------------

const READER_PY = String.raw`
import hashlib, json, os, sys, threading, time
root, manifest, mnt = sys.argv[1], sys.argv[2], sys.argv[3]
files = json.load(open(manifest))
stop = threading.Event()
def watch_stdin():
    sys.stdin.read()
    stop.set()
threading.Thread(target=watch_stdin, daemon=True).start()
def mounted():
    with open('/proc/self/mountinfo') as f:
        return any(l.split(' ')[4] == mnt for l in f)
n = 0
while not stop.is_set():
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3')
    res = {'pass': n, 'ok': 0, 'wrong': 0, 'failed': 0, 'errors': [], 'maxMs': 0.0, 'maxAt': 0.0, 'slow': [], 'absent': 0, 'start': time.time()}
    if not mounted(): res['absent'] += 1
    lock = threading.Lock()
    nxt = [0]
    def work():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(files):
                return
            rel, want = files[i]
            t0 = time.time()
            kind, err = 'ok', None
            try:
                with open(os.path.join(root, rel), 'rb') as f:
                    got = hashlib.sha256(f.read()).hexdigest()
                if got != want:
                    kind, err = 'wrong', rel
            except OSError as e:
                kind, err = 'failed', '%s: %s' % (rel, os.strerror(e.errno or 0))
            ms = (time.time() - t0) * 1000
            with lock:
                res[kind] += 1
                if err and len(res['errors']) < 5: res['errors'].append(err)
                if ms >= 100 and len(res['slow']) < 50: res['slow'].append([t0, ms])
                if ms > res['maxMs']:
                    res['maxMs'], res['maxAt'] = ms, t0
    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts: t.start()
    for t in ts: t.join()
    if not mounted(): res['absent'] += 1
    res['end'] = time.time()
    print(json.dumps(res), flush=True)
    n += 1
`;

interface Pass {
  pass: number;
  ok: number;
  wrong: number;
  failed: number;
  errors: string[];
  /** The slowest open+read+close of the pass, and when it started (epoch seconds). */
  maxMs: number;
  maxAt: number;
  /** Reads that took 100 ms or more: [start (epoch seconds), ms]. */
  slow: [number, number][];
  absent: number;
  start: number;
  end: number;
}

type Reader = PassReader<Pass>;

function startReader(dir: string, manifest: string, mnt: string): Reader {
  return startPassReader<Pass>(READER_PY, [dir, manifest, mnt]);
}

/** Every pass read every file right, with the mount present. */
function assertAllCorrect(passes: Pass[]): void {
  for (const p of passes) {
    assert.equal(p.wrong, 0, `pass ${p.pass}: wrong bytes in ${p.errors.join(', ')}`);
    assert.equal(p.failed, 0, `pass ${p.pass}: failed reads: ${p.errors.join(', ')}`);
    assert.equal(p.ok, FILES, `pass ${p.pass}`);
    assert.equal(p.absent, 0, `pass ${p.pass}: the mount was absent`);
  }
}

/** Watches /proc/self/mountinfo (not the mount) every few ms: how often the mount was missing. */
function watchMount(mnt: string): { stop(): Promise<number> } {
  let absent = 0;
  let on = true;
  const loop = (async () => {
    while (on) {
      if (!(await isMounted(mnt))) absent++;
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  return { stop: async () => { on = false; await loop; return absent; } };
}

/** Scrapes /metrics every 20 ms: failed scrapes and the longest run of them. */
function watchMetrics(port: number): { stop(): Promise<{ scrapes: number; failed: number; longestGapMs: number }> } {
  let on = true;
  let scrapes = 0;
  let failed = 0;
  let gapSince: number | undefined;
  let longestGapMs = 0;
  const loop = (async () => {
    while (on) {
      const ok = await fetch(`http://127.0.0.1:${port}/metrics`).then(async (r) => { await r.arrayBuffer(); return r.ok; }, () => false);
      scrapes++;
      const now = performance.now();
      if (ok) {
        if (gapSince !== undefined) longestGapMs = Math.max(longestGapMs, now - gapSince);
        gapSince = undefined;
      } else {
        failed++;
        gapSince ??= now;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return { stop: async () => { on = false; await loop; return { scrapes, failed, longestGapMs }; } };
}

describe('restarts, upgrades and crashes under the keeper', () => {
  let reg: Registry;
  let proxy: FaultProxy;
  let store: RunningStore;
  let work: string;
  let manifest: string;
  let diff: string;
  let manyDigest: string;
  let goneRef: string;
  let goneDigest: string;
  let metricsPort: number;
  let configText: string;
  const sock = (): string => join(store.root, SOCKET_NAME);
  const restart = async (): Promise<{ pid: number; previousPid: number; readyMs: number; totalMs: number }> => {
    const r = await controlRequest(sock(), { op: 'restart' }, RESTART_TIMEOUT_MS);
    if (!r.ok) throw new Error(r.error);
    return r as unknown as { pid: number; previousPid: number; readyMs: number; totalMs: number };
  };
  const convert = async (from: string, to: string): Promise<string> => {
    const conv = JSON.parse((await run(process.execPath, [CLI, 'image', 'convert', from, to, '--json'], { maxBuffer: 16 << 20 })).stdout) as { manifests: { layers: { digest: string }[] }[] };
    return conv.manifests[0]!.layers[0]!.digest;
  };

  before(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.url);
    work = await mkdtemp(join(tmpdir(), 'estargz-restart-'));
    const { spec, expected } = manyFiles();
    await pushTestImage(reg.host, 'e2e/many', 'gzip', { layers: [spec] });
    const ref = `${proxy.host}/e2e/many:esgz`;
    const digest = await convert(`${proxy.host}/e2e/many:gzip`, ref);
    await pushTestImage(reg.host, 'e2e/gone', 'gzip', { layers: [[{ name: 'etc/', type: 'directory' }, { name: 'etc/gone', type: 'file', content: randomBytes(300 * KiB, 77) }]] });
    goneRef = `${proxy.host}/e2e/gone:esgz`;
    goneDigest = await convert(`${proxy.host}/e2e/gone:gzip`, goneRef);
    manifest = join(work, 'manifest.json');
    await writeFile(manifest, JSON.stringify(expected));
    metricsPort = await freePort();
    configText = `metrics_address = "127.0.0.1:${metricsPort}"\n`;
    store = await startStore(configText);
    diff = join(store.layerDir(ref, digest), 'diff');
    manyDigest = digest;
  });
  after(async () => {
    await store?.stop();
    await proxy?.stop();
    await reg?.stop();
    await rm(work, { recursive: true, force: true });
  });

  test('status --json names the serving process (the keeper\'s child), the keeper, restarts and crashes', async () => {
    const { stdout } = await run(process.execPath, [CLI, 'status', '--root', store.root, '--json']);
    const s = JSON.parse(stdout) as { pid: number; keeperPid: number; restarts: number; crashes: number; failedRestarts: number; layers: unknown[] };
    assert.equal(s.keeperPid, store.proc.pid);
    assert.ok(Number.isInteger(s.pid) && s.pid !== s.keeperPid);
    const ppid = Number((await readFile(`/proc/${s.pid}/stat`, 'utf8')).split(') ')[1]!.split(' ')[1]);
    assert.equal(ppid, store.proc.pid, 'the serving process is the keeper\'s child');
    assert.deepEqual([s.restarts, s.crashes, s.failedRestarts], [0, 0, 0]);
    // Its main thread (the FUSE replies) at main_thread_nice's default, above the process's other threads.
    const nice = async (tid: string): Promise<number> => Number((await readFile(`/proc/${s.pid}/task/${tid}/stat`, 'utf8')).split(') ').at(-1)!.split(' ')[16]);
    assert.equal(await nice(String(s.pid)), -5);
    const others = await Promise.all((await readdir(`/proc/${s.pid}/task`)).filter((tid) => tid !== String(s.pid)).map(nice));
    assert.ok(others.length > 0 && others.every((n) => n >= 0), `other threads: ${JSON.stringify(others)}`);
    assert.ok(Array.isArray(s.layers));
  });

  test('restarts while a reader re-reads 300 files with caches dropped: no failed read, every byte right, the mount always there', async (t: TestContext) => {
    const reader = startReader(diff, manifest, store.mnt);
    const mount = watchMount(store.mnt);
    const metrics = watchMetrics(metricsPort);
    const windows: [number, number][] = [];
    const results = [];
    try {
      await reader.waitPasses(3);
      // The first through the command, as `systemctl reload` runs it.
      let t0 = Date.now() / 1000;
      const first = await run(process.execPath, [CLI, 'restart', '--root', store.root, '--json']);
      windows.push([t0, Date.now() / 1000]);
      results.push(JSON.parse(first.stdout) as { pid: number; previousPid: number; readyMs: number; totalMs: number });
      for (let i = 1; i < 6; i++) {
        await reader.waitPasses(reader.passes.length + 1);
        t0 = Date.now() / 1000;
        results.push(await restart());
        windows.push([t0, Date.now() / 1000]);
      }
      await reader.waitPasses(reader.passes.length + 2);
    } finally {
      await reader.stop();
    }
    const absent = await mount.stop();
    const scrapes = await metrics.stop();
    const passes = reader.passes;
    assertAllCorrect(passes);
    assert.equal(absent, 0, 'the mount was missing from mountinfo');
    for (let i = 1; i < results.length; i++) assert.equal(results[i]!.previousPid, results[i - 1]!.pid);
    assert.equal(new Set(results.map((r) => r.pid)).size, results.length, 'a new process each time');
    const s = await store.status();
    assert.equal(s.pid, results.at(-1)!.pid);
    assert.equal(s.restarts, 6);
    assert.equal(s.crashes, 0);
    const during = passes.filter((p) => windows.some(([a, b]) => p.start < b && p.end > a));
    const quiet = passes.slice(1).filter((p) => !during.includes(p));
    const longest = (ps: Pass[]): number => Math.max(0, ...ps.map((p) => p.maxMs));
    t.diagnostic(`${passes.length} passes, ${during.length} during the 6 restarts; longest read during restarts ${longest(during).toFixed(0)} ms, without ${longest(quiet).toFixed(0)} ms`);
    // Where the slow reads fell: while the new process started (the old one serving), or after it served.
    const phases = { starting: 0, handingOver: 0, after: 0 };
    for (const [at, ms] of passes.flatMap((p) => p.slow)) {
      const i = windows.findIndex(([a, b]) => at >= a && at <= b);
      if (i < 0) phases.after = Math.max(phases.after, ms);
      else if (at < windows[i]![0] + results[i]!.readyMs / 1000) phases.starting = Math.max(phases.starting, ms);
      else phases.handingOver = Math.max(phases.handingOver, ms);
    }
    t.diagnostic(`slow reads (≥100 ms): ${passes.flatMap((p) => p.slow).length}; longest while the new process started ${phases.starting.toFixed(0)} ms, after it served ${phases.handingOver.toFixed(0)} ms, outside restarts ${phases.after.toFixed(0)} ms`);
    t.diagnostic(`restart: ready after ${results.map((r) => r.readyMs).join('/')} ms, old gone after ${results.map((r) => r.totalMs).join('/')} ms`);
    t.diagnostic(`/metrics scraped ${scrapes.scrapes} times, ${scrapes.failed} failed, longest gap ${scrapes.longestGapMs.toFixed(0)} ms`);
    assert.ok(scrapes.longestGapMs < 1000, `the metrics endpoint was gone for ${scrapes.longestGapMs} ms`);
  });

  test('SIGKILL of the serving process during the loop: served again within 5 s, every pass right', async (t: TestContext) => {
    const reader = startReader(diff, manifest, store.mnt);
    const mount = watchMount(store.mnt);
    let killToServing = 0;
    try {
      await reader.waitPasses(2);
      const before = await store.status();
      const t0 = performance.now();
      assert.ok(before.pid);
      process.kill(before.pid, 'SIGKILL');
      // Served again: the keeper has a new serving process, and a whole pass starts and ends after the kill.
      for (;;) {
        const s = await store.status().catch(() => undefined);
        if (s && s.pid !== before.pid) break;
        assert.ok(performance.now() - t0 < 5000, 'no successor serving within 5 s');
        await new Promise((r) => setTimeout(r, 10));
      }
      killToServing = performance.now() - t0;
      const killedAt = Date.now() / 1000 - killToServing / 1000;
      await reader.waitPasses(reader.passes.length + 2);
      // The first pass to end after the kill is the one that waited for the successor (it may have started during the cache drop).
      const hit = reader.passes.find((p) => p.end >= killedAt);
      t.diagnostic(`kill → successor serving ${killToServing.toFixed(0)} ms; longest read of the pass the kill hit ${hit ? hit.maxMs.toFixed(0) : '?'} ms`);
    } finally {
      await reader.stop();
    }
    assert.equal(await mount.stop(), 0, 'the mount was missing from mountinfo');
    assertAllCorrect(reader.passes);
    const s = await store.status();
    assert.equal(s.crashes, 1);
    assert.ok(killToServing < 5000);
    await store.waitForLog(/the serving process died; starting a successor on the same connection/);
  });

  test('a restart into a version that does not start fails with the reason; the old process serves on', async () => {
    const configPath = join(dirname(store.root), 'config.toml');
    const reader = startReader(diff, manifest, store.mnt);
    try {
      await reader.waitPasses(1);
      const before = await store.status();
      // What a broken upgrade looks like from here: the new process throws while it starts.
      await writeFile(configPath, `${configText}prefetch_size = "lots"\n`);
      const r = await run(process.execPath, [CLI, 'restart', '--root', store.root]).then(() => undefined, (err: { code: number; stderr: string }) => err);
      assert.ok(r, 'restart exits non-zero');
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`restart failed; pid ${before.pid} serves on: .*prefetch_size = "lots" is not valid`));
      const after = await store.status();
      assert.equal(after.pid, before.pid);
      assert.equal(after.failedRestarts, before.failedRestarts + 1);
      await reader.waitPasses(reader.passes.length + 2);
    } finally {
      await writeFile(configPath, configText);
      await reader.stop();
    }
    assertAllCorrect(reader.passes);
  });

  test('a successor that cannot resolve a layer again answers EIO for its files and names it; other layers work', async () => {
    const goneFile = join(store.layerDir(goneRef, goneDigest), 'diff', 'etc', 'gone');
    // Holds the file open across the restart, so the kernel keeps its node id, then reads it again past the page cache.
    const holder = spawn('python3', ['-c', [
      'import os, sys',
      'fd = os.open(sys.argv[1], os.O_RDONLY)',
      'print(len(os.pread(fd, 1 << 20, 0)), flush=True)',
      'sys.stdin.readline()',
      'os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)',
      'try:',
      '    print(len(os.pread(fd, 1 << 20, 0)), flush=True)',
      'except OSError as e:',
      '    print(os.strerror(e.errno), flush=True)',
    ].join('\n'), goneFile], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: holder.stdout! })[Symbol.asyncIterator]();
    assert.equal((await lines.next()).value, String(300 * KiB));
    proxy.addFault({ path: '/e2e/gone/', kind: 'status', status: 404, times: Infinity });
    try {
      await restart();
      holder.stdin!.write('\n');
      assert.equal((await lines.next()).value, 'Input/output error');
      await store.waitForLog(new RegExp(`"layer":"${goneDigest}".*cannot be resolved again`));
      const reader = startReader(diff, manifest, store.mnt);
      await reader.waitPasses(2).finally(() => reader.stop());
      assertAllCorrect(reader.passes);
    } finally {
      proxy.clearFaults();
      holder.kill();
    }
  });

  test('30 restarts back to back: each one serves; the keeper\'s fds and memory stay flat', async (t: TestContext) => {
    // A count, not a time budget: how many fit in a minute is the machine's
    // load, not the keeper's behaviour.
    const WARMUP = 5;
    const RESTARTS = 30;
    let warm = await store.status();
    const t0 = Date.now();
    for (let count = 1; count <= RESTARTS; count++) {
      await restart();
      if (count === WARMUP) warm = await store.status();
    }
    const end = await store.status();
    t.diagnostic(`${RESTARTS} restarts in ${((Date.now() - t0) / 1000).toFixed(0)} s; keeper fds ${warm.keeperFds} → ${end.keeperFds}, RSS ${(warm.keeperRssBytes / 2 ** 20).toFixed(1)} → ${(end.keeperRssBytes / 2 ** 20).toFixed(1)} MiB (after ${WARMUP} and after ${RESTARTS})`);
    // ±1: a status request's own socket and /proc/self/fd listing come and go.
    assert.ok(end.keeperFds <= warm.keeperFds + 1, `the keeper's fd count grew: ${warm.keeperFds} → ${end.keeperFds}`);
    assert.ok(end.keeperRssBytes - warm.keeperRssBytes < 24 * 2 ** 20, `the keeper's RSS grew by ${end.keeperRssBytes - warm.keeperRssBytes} bytes`);
    assert.equal(end.crashes, 1, 'only the SIGKILL of the test above');
    // Nothing read the layer during these restarts: each new process resolved it again from its predecessor's state.
    const served = async (): Promise<boolean> => (await store.status()).layers.some((l) => l.digest === manyDigest && l.state !== 'failed' && l.state !== 'resolving');
    for (let i = 0; i < 100 && !(await served()); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(await served(), JSON.stringify((await store.status()).layers.map((l) => [l.digest, l.state])));
    const reader = startReader(diff, manifest, store.mnt);
    await reader.waitPasses(1).finally(() => reader.stop());
    assertAllCorrect(reader.passes);
  });

  test('SIGTERM unmounts; the store processes go with the keeper', async (t: TestContext) => {
    const { pid } = await store.status();
    assert.ok(pid);
    const mnt = store.mnt;
    const t0 = performance.now();
    assert.equal(await store.stop(), 0);
    // Stopping writes the disk cache's queue out first (up to 5 s on a busy disk), as before the keeper.
    t.diagnostic(`stopped in ${(performance.now() - t0).toFixed(0)} ms`);
    assert.equal(await isMounted(mnt), false);
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
  });
});
