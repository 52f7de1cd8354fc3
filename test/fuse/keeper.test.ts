/**
 * The keeper (src/fuse/keeper.ts): a FUSE mount that survives restarts,
 * upgrades and crashes of the process serving it, checked through the
 * kernel with the toy filesystem served by kept children.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { closeSync, existsSync, openSync, readSync, writeSync } from 'node:fs';
import { open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Journal } from '../../src/fuse/keeper-protocol.js';
import { Op, REQ_STRIDE } from '../../src/fuse/protocol.js';
import type { ToyTreeSpec } from './toy-fs.js';
import { isMounted, startKeptToy, startReader, until, type KeptToy, type Pass } from './keeper-harness.js';

const DIRS = 10;
const FILES = 30; // 300 files
const MiB = 1 << 20;
const { ESTALE, ENOENT } = constants.errno;
const run = promisify(execFile);

async function errCode(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
}

const failed = (p: Pass): number => p.eio + p.wrong + p.other;
const summary = (ps: Pass[]): string => JSON.stringify(ps.filter((p) => failed(p) > 0).map((p) => ({ pass: p.pass, eio: p.eio, wrong: p.wrong, other: p.other, errors: p.errors })));

/** Polls /proc/self/mountinfo while running: how often the mount was absent. */
function watchMount(mnt: string): { stop(): Promise<{ checks: number; absent: number }> } {
  let checks = 0;
  let absent = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      checks++;
      if (!(await isMounted(mnt))) absent++;
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  return { stop: async () => { running = false; await loop; return { checks, absent }; } };
}

describe('keeper: restart without unmounting', () => {
  let toy: KeptToy;
  const broken = join(tmpdir(), `estargz-keeper-broken-${process.pid}`);
  before(async () => { toy = await startKeptToy({ manyDirs: DIRS, manyFiles: FILES, hugeSize: MiB, ttl: 0, failStartIfExists: broken } as ToyTreeSpec); });
  after(async () => { await toy.stop(); await rm(broken, { force: true }); });

  it('serves the mount from a child it supervises, and knows its pid', async () => {
    const s = await toy.status();
    assert.ok(s.pid && s.pid !== toy.child.pid);
    assert.equal(await readFile(join(toy.mnt, 'hello.txt'), 'utf8'), 'hello world\n');
    assert.equal(await readFile(join(toy.mnt, 'many', 'd03', 'f007'), 'utf8'), 'many/d03/f7\n');
  });

  it('restarts 10 times under a reader loop over 300 files: 0 failed reads, the mount never absent', async () => {
    const reader = startReader(toy.mnt, 4, DIRS, FILES);
    await reader.waitPasses(2, 60_000);
    const baseline = Math.max(...reader.passes.map((p) => p.maxMs));
    const watch = watchMount(toy.mnt);
    const pids = new Set<number>([(await toy.status()).pid!]);
    const ready: number[] = [];
    const t0 = Date.now() / 1000;
    for (let i = 0; i < 10; i++) {
      const seen = reader.passes.length;
      const r = await toy.restart();
      assert.ok(!pids.has(r.pid), 'a new process each time');
      pids.add(r.pid);
      ready.push(r.readyMs);
      // Let the reader run a pass that spans or follows this restart.
      await reader.waitPasses(seen + 1, 60_000);
    }
    const t1 = Date.now() / 1000;
    await reader.waitPasses(reader.passes.length + 1, 60_000);
    const passes = await reader.stop();
    const mount = await watch.stop();
    assert.equal(passes.reduce((n, p) => n + failed(p), 0), 0, `failed reads: ${summary(passes)}`);
    assert.ok(passes.every((p) => p.ok === DIRS * FILES));
    assert.equal(mount.absent, 0, `the mount was absent in ${mount.absent} of ${mount.checks} checks`);
    const during = passes.filter((p) => p.end >= t0 && p.start <= t1);
    const stall = Math.max(...during.map((p) => p.maxMs));
    // Old and new servers read side by side: no window without a reader, which
    // would stall reads for a whole server start (hundreds of ms to seconds).
    // (The ≲100 ms figure is for a quiet machine; on a loaded one even reads
    // without restarts take that long.)
    assert.ok(stall < 1000, `a read took ${stall.toFixed(0)} ms during restarts`);
    const s = await toy.status();
    assert.equal(s.restarts, 10);
    assert.equal(s.crashes, 0);
    process.stderr.write(`# restart: ${passes.length} passes, 0 failed; slowest read during restarts ${stall.toFixed(1)} ms (before: ${baseline.toFixed(1)} ms); new server ready after ${Math.min(...ready).toFixed(0)}–${Math.max(...ready).toFixed(0)} ms\n`);
  });

  it('a restart whose new server fails to start leaves the old one serving', async () => {
    const s0 = await toy.status();
    await writeFile(broken, '');
    try {
      await assert.rejects(toy.restart(), /restart failed; pid \d+ serves on/);
    } finally {
      await rm(broken, { force: true });
    }
    const s1 = await toy.status();
    assert.equal(s1.pid, s0.pid);
    assert.equal(s1.failedRestarts, s0.failedRestarts + 1);
    assert.equal(s1.crashes, 0);
    assert.equal(await readFile(join(toy.mnt, 'many', 'd09', 'f029'), 'utf8'), 'many/d09/f29\n');
    // The next version starts again.
    const r = await toy.restart();
    assert.equal(r.previousPid, s0.pid);
    assert.equal(await readFile(join(toy.mnt, 'hello.txt'), 'utf8'), 'hello world\n');
  });

  it('carries the state: a node id handed out before a restart is still answered after it', async () => {
    const fh = await open(join(toy.mnt, 'cycle', 'x'));
    try {
      const before = await fh.stat();
      await toy.restart();
      const afterStat = await fh.stat(); // attributes expire at once: a GETATTR reaches the new server
      assert.equal(afterStat.ino, before.ino);
    } finally {
      await fh.close();
    }
  });
  it('backs off while successors keep failing after a crash, and serves again once one starts; a read waiting meanwhile completes', async () => {
    const s0 = await toy.status();
    await writeFile(broken, '');
    const t0 = Date.now();
    process.kill(s0.pid!, 'SIGKILL');
    await until(async () => (await toy.status()).pid !== s0.pid, 5000, 'the crash to be seen');
    // Waits in the kernel (no server) until a successor serves.
    const waiting = readFile(join(toy.mnt, 'many', 'd02', 'f003'), 'utf8');
    await until(async () => (await toy.status()).generation >= s0.generation + 4, 20_000, 'four successors tried', 20);
    const tries = (await toy.status()).generation - s0.generation;
    const elapsed = Date.now() - t0;
    // Delays of 0, 100, 200, … ms between the tries: no tight loop.
    assert.ok(elapsed >= 300, `${tries} tries in ${elapsed} ms`);
    assert.ok(await isMounted(toy.mnt));
    await rm(broken, { force: true });
    await until(async () => (await toy.status()).pid !== undefined, 15_000, 'a successor serving', 20);
    assert.equal(await waiting, 'many/d02/f3\n');
    const s1 = await toy.status();
    assert.ok(s1.crashes >= 1);
    process.stderr.write(`# crash loop: ${s1.generation - s0.generation} tries until one started, ${Date.now() - t0} ms; the waiting read completed\n`);
  });
});

describe('keeper: a server killed with requests in flight', () => {
  let toy: KeptToy;
  const killAfterRead = join(tmpdir(), `estargz-keeper-killread-${process.pid}`);
  before(async () => { toy = await startKeptToy({ manyDirs: DIRS, manyFiles: FILES, hugeSize: MiB, ttl: 0, readDelayMs: 25, killAfterReadIfExists: killAfterRead } as ToyTreeSpec); });
  after(async () => { await toy.stop(); await rm(killAfterRead, { force: true }); });

  it('is replaced within 5 s on the same connection; every request completes; later passes are all correct', async () => {
    const reader = startReader(toy.mnt, 8, DIRS, FILES);
    let watch: ReturnType<typeof watchMount> | undefined;
    // If a read hangs, the reader (stuck in the kernel until the mount goes) and the watch must not keep the run alive.
    try {
      await reader.waitPasses(1, 60_000);
      watch = watchMount(toy.mnt);
      const kills: { at: number; back: number }[] = [];
      for (let round = 0; round < 3; round++) {
        let s = await toy.status();
        await until(async () => { s = await toy.status(); return s.inFlight >= 2; }, 20_000, 'reads in flight', 2);
        const pid = s.pid!;
        const at = Date.now();
        process.kill(pid, 'SIGKILL');
        await until(async () => { const n = await toy.status(); return n.pid !== undefined && n.pid !== pid; }, 5000, 'a successor serving', 5);
        kills.push({ at: at / 1000, back: Date.now() / 1000 });
        assert.ok(Date.now() - at < 5000);
        await reader.waitPasses(reader.passes.length + 1, 60_000);
      }
      const lastBack = kills[kills.length - 1]!.back;
      const want = reader.passes.length + 2;
      await reader.waitPasses(want, 120_000);
      const passes = await reader.stop();
      const mount = await watch.stop();
      const s = await toy.status();
      // No read hung (every pass finished), and none failed other than with EIO.
      for (const p of passes) assert.equal(p.ok + p.eio, DIRS * FILES, `pass ${p.pass}: ${JSON.stringify(p)}`);
      // Passes that started after the last successor took over are all correct.
      const later = passes.filter((p) => p.start > lastBack);
      assert.ok(later.length >= 2);
      assert.ok(later.every((p) => p.ok === DIRS * FILES), summary(later));
      assert.equal(mount.absent, 0, 'the mount never went away');
      assert.equal(s.crashes, 3);
      assert.ok(s.replayed >= 3, `requests answered for dead servers: ${s.replayed}`);
      const eio = passes.reduce((n, p) => n + p.eio, 0);
      const back = kills.map((k) => ((k.back - k.at) * 1000).toFixed(0)).join(', ');
      process.stderr.write(`# crash: 3 SIGKILLs, serving again after ${back} ms; ${s.replayed} in-flight requests answered by successors; ${eio} EIO reads in ${passes.length} passes\n`);
    } finally {
      void reader.stop();
      void watch?.stop();
    }
  });

  it('answers node ids a crashed server handed out and its successor does not know with ESTALE (no crash)', async () => {
    const fh = await open(join(toy.mnt, 'cycle', 'y'));
    try {
      await fh.stat();
      const s0 = await toy.status();
      process.kill(s0.pid!, 'SIGKILL');
      await until(async () => { const n = await toy.status(); return n.pid !== undefined && n.pid !== s0.pid; }, 5000, 'a successor');
      const errno = await fh.stat().then(() => 0, (err: NodeJS.ErrnoException) => -(err.errno ?? 0));
      assert.ok(errno === ESTALE || errno === ENOENT, `stat of an unknown node id: errno ${errno}`);
      assert.equal(await readFile(join(toy.mnt, 'hello.txt'), 'utf8'), 'hello world\n');
      const s1 = await toy.status();
      assert.equal(s1.crashes, s0.crashes + 1);
      assert.ok(s1.pid !== s0.pid);
    } finally {
      await fh.close().catch(() => {});
    }
  });

  it('survives forged journal entries (unknown uniques, node ids and opcodes) left by a dead server', async () => {
    const s0 = await toy.status();
    const forged = [
      { op: Op.GETATTR, nodeid: 987_654_321 },
      { op: Op.READ, nodeid: 999_999_999, a0: 0, a1: 4096 },
      { op: Op.LOOKUP, nodeid: 55_555_555, name: 'x' },
      { op: Op.LOOKUP, nodeid: 1, name: 'hello.txt' },
      { op: Op.READDIRPLUS, nodeid: 424242, a0: 0, a1: 4096 },
      { op: Op.MKDIR, nodeid: 1, a0: 0o755, name: 'evil' },
      { op: 999, nodeid: 1 },
    ];
    // Written into the live server's own journal, in free slots, as it would have recorded them.
    const jfd = openSync(`/proc/${s0.pid}/fd/4`, 'r+');
    try {
      const head = Buffer.alloc(Journal.HEADER);
      readSync(jfd, head, 0, head.length, 0);
      assert.equal(head.readUInt32LE(0), Journal.MAGIC);
      const slots = head.readUInt32LE(8);
      let slot = slots - 1;
      forged.forEach((f, k) => {
        const unique = 2 ** 40 + 2 * k;
        const buf = Buffer.alloc(Journal.SLOT_SIZE);
        for (;; slot--) {
          const st = Buffer.alloc(4);
          readSync(jfd, st, 0, 4, Journal.HEADER + slot * Journal.SLOT_SIZE);
          if (st.readUInt32LE(0) === 0) break;
        }
        const row = new Float64Array(REQ_STRIDE);
        row[0] = f.op; row[1] = unique; row[2] = f.nodeid; row[6] = f.a0 ?? 0; row[7] = f.a1 ?? 0;
        Buffer.from(row.buffer).copy(buf, Journal.ROW);
        const name = Buffer.from(f.name ?? '');
        name.copy(buf, Journal.NAME);
        buf.writeUInt32LE(name.length, Journal.NAME_LEN);
        buf.writeBigUInt64LE(BigInt(unique), Journal.UNIQUE);
        buf.writeUInt32LE(1, Journal.STATE);
        writeSync(jfd, buf, 0, buf.length, Journal.HEADER + slot * Journal.SLOT_SIZE);
        slot--;
      });
    } finally {
      closeSync(jfd);
    }
    process.kill(s0.pid!, 'SIGKILL');
    await until(async () => { const n = await toy.status(); return n.pid !== undefined && n.pid !== s0.pid; }, 5000, 'a successor');
    const s1 = await toy.status();
    assert.ok(s1.replayed - s0.replayed >= forged.length, `replayed ${s1.replayed - s0.replayed}`);
    // The successor answered them all (the kernel refused the answers) and serves on.
    assert.equal(await readFile(join(toy.mnt, 'many', 'd01', 'f001'), 'utf8'), 'many/d01/f1\n');
    assert.equal((await stat(join(toy.mnt, 'big.bin'))).size, 3 * MiB + 12345);
    const s2 = await toy.status();
    assert.equal(s2.pid, s1.pid);
    assert.equal(s2.crashes, s1.crashes);
    assert.equal(s2.orphans, 0);
  });

  it('answers a request its server had read but not yet journaled when it was killed', async () => {
    const s0 = await toy.status();
    // The successor started now dies right after reading its first request, before recording it in a slot.
    await writeFile(killAfterRead, '');
    process.kill(s0.pid!, 'SIGKILL');
    await until(async () => { const n = await toy.status(); return n.pid !== undefined && n.pid !== s0.pid; }, 5000, 'a successor');
    assert.equal(existsSync(killAfterRead), false, 'the successor armed the hook');
    const s1 = await toy.status();
    // In a child process: a request lost for good would hang this read, unkillably (until the mount goes).
    const t0 = Date.now();
    const read = run('cat', [join(toy.mnt, 'many', 'd04', 'f005')]).then((r) => r.stdout);
    const got = await Promise.race([read, sleep(20_000, undefined, { ref: false }).then(() => 'no answer within 20 s')]);
    assert.equal(got, 'many/d04/f5\n');
    process.stderr.write(`# a request read and not journaled: answered by the next successor after ${Date.now() - t0} ms\n`);
    // Its answer may precede the keeper's promoting the next successor.
    let s2 = s1;
    await until(async () => { s2 = await toy.status(); return s2.pid !== undefined && s2.pid !== s1.pid; }, 5000, 'the next successor serving');
    assert.equal(s2.crashes, s1.crashes + 1, 'the successor died on the read');
    // Taken from the dead server's read buffer (it was in no slot) and answered by the next one.
    assert.ok(s2.replayed > s1.replayed, `replayed ${s1.replayed} → ${s2.replayed}`);
    assert.equal(s2.orphans, 0);
  });
});

describe('keeper: a small journal', () => {
  it('stops reading while the journal is full and resumes on each answer: 32 concurrent readers, 16 slots, all reads correct', async () => {
    const toy = await startKeptToy({ manyDirs: DIRS, manyFiles: FILES, hugeSize: MiB, ttl: 0, readDelayMs: 20 }, undefined, { journalSlots: 16 });
    try {
      const reader = startReader(toy.mnt, 32, DIRS, FILES);
      let most = 0;
      const watching = (async () => {
        while (reader.passes.length < 2) {
          most = Math.max(most, (await toy.status()).inFlight);
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
      await reader.waitPasses(2, 120_000);
      await watching;
      const passes = await reader.stop();
      assert.ok(passes.every((p) => p.ok === DIRS * FILES), summary(passes));
      assert.ok(most <= 16, `${most} requests in flight with 16 slots`);
      assert.ok(most >= 12, `the journal filled up (${most} in flight at most)`);
    } finally {
      await toy.stop();
    }
  });
});

describe('keeper: many restarts', () => {
  let toy: KeptToy;
  before(async () => { toy = await startKeptToy({ manyDirs: DIRS, manyFiles: FILES, hugeSize: MiB, ttl: 0 }); });
  after(async () => { await toy.stop(); });

  it('restarts up to 1,000 times (as many as fit in ~60 s) without growth in the keeper\'s fds or memory', async () => {
    const reader = startReader(toy.mnt, 2, DIRS, FILES);
    await reader.waitPasses(1, 60_000);
    const many = await toy.restartMany(1000, 60_000, 20);
    await reader.waitPasses(reader.passes.length + 1, 60_000);
    const passes = await reader.stop();
    assert.equal(many.failed, 0);
    assert.ok(many.count >= 25, `${many.count} restarts`);
    assert.equal(passes.reduce((n, p) => n + failed(p), 0), 0, summary(passes));
    assert.equal(many.after.fds, many.before.fds, `keeper fds ${many.before.fds} → ${many.after.fds}`);
    const grew = many.after.rss - many.before.rss;
    assert.ok(grew < 16 * MiB, `keeper RSS ${many.before.rss} → ${many.after.rss}`);
    const s = await toy.status();
    assert.equal(s.crashes, 0);
    process.stderr.write(`# ${many.count} restarts in ${(many.ms / 1000).toFixed(1)} s (ready after ${many.meanReadyMs.toFixed(0)} ms on average, ${many.maxReadyMs.toFixed(0)} ms at most); keeper fds ${many.before.fds} → ${many.after.fds}, RSS ${(many.before.rss / MiB).toFixed(1)} → ${(many.after.rss / MiB).toFixed(1)} MiB, heap ${(many.before.heapUsed / MiB).toFixed(1)} → ${(many.after.heapUsed / MiB).toFixed(1)} MiB; ${passes.length} reader passes, 0 failed\n`);
  });
});

describe('keeper: the keeper itself killed', () => {
  it('leaves a stale mount that the next keeper cleans before mounting', async () => {
    const first = await startKeptToy({ manyDirs: 1, manyFiles: 1, hugeSize: MiB });
    const mnt = first.mnt;
    let second: KeptToy | undefined;
    try {
      assert.equal(await readFile(join(mnt, 'hello.txt'), 'utf8'), 'hello world\n');
      const server = (await first.status()).pid!;
      first.child.kill('SIGKILL');
      // Its server exits when the keeper is gone: the mount stays, dead.
      await until(async () => readFile(`/proc/${server}/status`, 'utf8').then((t) => /State:\s+Z/.test(t), () => true), 5000, 'the server to exit');
      assert.ok(await isMounted(mnt));
      assert.equal(await errCode(stat(join(mnt, 'hello.txt'))), 'ENOTCONN');
      second = await startKeptToy({ manyDirs: 1, manyFiles: 1, hugeSize: MiB }, mnt);
      assert.equal(await readFile(join(mnt, 'hello.txt'), 'utf8'), 'hello world\n');
    } finally {
      await second?.stop();
      await first.stop();
    }
  });
});
