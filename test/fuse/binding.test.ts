/**
 * The FUSE binding (native/ + src/fuse/) with a toy in-memory filesystem
 * served by a child process, checked through the kernel from here.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile, readlink, stat, statfs, mkdir, writeFile, appendFile, unlink, rename, symlink, chmod, rmdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { InitFlag } from '../../src/fuse/protocol.js';
import { patternBytes } from './toy-fs.js';
import { isMounted, startToy, until, type ToyMount } from './toy-mount.js';

const run = promisify(execFile);
const MiB = 1 << 20;
const SPEC = { manyDirs: 50, manyFiles: 100, hugeSize: 64 * MiB };

async function errCode(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
}

async function py(code: string, ...args: string[]): Promise<string> {
  return (await run('python3', ['-c', code, ...args])).stdout;
}

describe('FUSE binding: a toy filesystem through the kernel', () => {
  let toy: ToyMount;
  before(async () => { toy = await startToy(SPEC); });
  after(async () => { await toy.stop(); });

  it('negotiates READDIRPLUS (always), 1 MiB requests, no OPEN', () => {
    const n = toy.negotiated;
    assert.equal(n.major, 7);
    assert.ok(n.flags & InitFlag.DO_READDIRPLUS);
    assert.equal(n.flags & InitFlag.READDIRPLUS_AUTO, 0);
    assert.ok(n.flags & InitFlag.MAX_PAGES);
    assert.equal(n.maxPages, 256);
    assert.equal(n.maxWrite, MiB);
  });

  it('lists directories and stats entries with their modes, sizes, nlink and stable inode numbers', async () => {
    assert.deepEqual((await readdir(toy.mnt)).sort(), ['big.bin', 'cycle', 'dir', 'hello.txt', 'huge.bin', 'link', 'many', 'pieces.bin']);
    assert.deepEqual(await readdir(join(toy.mnt, 'dir')), ['exec.sh']);
    const hello = await stat(join(toy.mnt, 'hello.txt'));
    assert.equal(hello.mode, 0o100644);
    assert.equal(hello.size, 12);
    assert.equal(hello.nlink, 1);
    assert.equal(hello.mtimeMs, 1_700_000_000_000);
    const dir = await stat(join(toy.mnt, 'dir'));
    assert.equal(dir.mode, 0o040750);
    assert.equal(dir.nlink, 2);
    assert.equal((await stat(join(toy.mnt, 'many'))).nlink, 52);
    assert.equal((await stat(join(toy.mnt, 'dir', 'exec.sh'))).mode, 0o100755);
    assert.equal((await stat(join(toy.mnt, 'big.bin'))).size, 3 * MiB + 12345);
    // Inode numbers are the filesystem's, the same on every stat, distinct per file.
    const inos = await Promise.all(['hello.txt', 'big.bin', 'dir', 'link'].map(async (n) => (await lstat(join(toy.mnt, n))).ino));
    assert.equal(new Set(inos).size, 4);
    assert.equal((await stat(join(toy.mnt, 'hello.txt'))).ino, hello.ino);
    const st = await statfs(toy.mnt);
    assert.equal(st.bsize, 4096);
    assert.equal(st.blocks, 1000);
  });

  it('reads small and 3 MiB files byte for byte, and follows symlinks', async () => {
    assert.equal(await readFile(join(toy.mnt, 'hello.txt'), 'utf8'), 'hello world\n');
    assert.equal(await readFile(join(toy.mnt, 'dir', 'exec.sh'), 'utf8'), '#!/bin/sh\n');
    assert.equal(await readFile(join(toy.mnt, 'many', 'd07', 'f042'), 'utf8'), 'many/d07/f42\n');
    const big = await readFile(join(toy.mnt, 'big.bin'));
    assert.equal(big.length, 3 * MiB + 12345);
    assert.ok(big.equals(patternBytes(0, big.length)), '3 MiB file bytes differ');
    // A read from an unaligned offset in the middle.
    const fh = await open(join(toy.mnt, 'big.bin'));
    try {
      const buf = Buffer.alloc(100_000);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 2 * MiB - 777);
      assert.equal(bytesRead, buf.length);
      assert.ok(buf.equals(patternBytes(2 * MiB - 777, buf.length)));
    } finally {
      await fh.close();
    }
    // A file answered as a list of pieces (one writev; joined first when a 1 MiB read has more than 256).
    const pieces = await readFile(join(toy.mnt, 'pieces.bin'));
    assert.ok(pieces.equals(patternBytes(0, 3 * MiB + 12345)), 'pieces.bin bytes differ');
    const ph = await open(join(toy.mnt, 'pieces.bin'));
    try {
      for (const [at, len] of [[3 * MiB + 12000, 345], [5, 9999], [MiB - 3, 70_000]] as const) {
        const buf = Buffer.alloc(len);
        const { bytesRead } = await ph.read(buf, 0, len, at);
        assert.equal(bytesRead, len);
        assert.ok(buf.equals(patternBytes(at, len)), `pieces.bin [${at}, +${len})`);
      }
    } finally {
      await ph.close();
    }
    assert.equal(await readlink(join(toy.mnt, 'link')), 'hello.txt');
    assert.ok((await lstat(join(toy.mnt, 'link'))).isSymbolicLink());
    assert.equal(await readFile(join(toy.mnt, 'link'), 'utf8'), 'hello world\n');
  });

  it('a reply step that throws after its answer went out does not answer again', async () => {
    const s0 = await toy.stats();
    const st = await stat(join(toy.mnt, 'reply-then-throw'));
    assert.equal(st.size, 12, "the lookup's answer (hello.txt's entry) arrived");
    const s1 = await toy.stats();
    assert.equal(s1.handlerErrors - s0.handlerErrors, 1, 'the throw was reported');
    assert.equal(s1.refusedReplies - s0.refusedReplies, 0, 'no second answer was sent (the kernel would refuse it)');
  });

  it('answers getxattr and listxattr (sizes, values, ENODATA)', async () => {
    const file = join(toy.mnt, 'hello.txt');
    const out = await py(`import os,sys
p=sys.argv[1]
print(sorted(os.listxattr(p)))
print(os.getxattr(p,'user.greeting').decode())
print(len(os.getxattr(p,'user.empty')))
try:
  os.getxattr(p,'user.missing'); print('no error')
except OSError as e: print(e.errno)
print(os.listxattr(${JSON.stringify(join(toy.mnt, 'dir'))}))`, file);
    assert.deepEqual(out.trim().split('\n'), ["['user.empty', 'user.greeting']", 'hi there', '0', '61', '[]']);
  });

  it('answers ENOENT for names that do not exist', async () => {
    assert.equal(await errCode(stat(join(toy.mnt, 'nope'))), 'ENOENT');
    assert.equal(await errCode(readFile(join(toy.mnt, 'dir', 'nope'))), 'ENOENT');
    assert.equal(await errCode(stat(join(toy.mnt, 'many', 'd99', 'f000'))), 'ENOENT');
    assert.equal(await errCode(readdir(join(toy.mnt, 'hello.txt'))), 'ENOTDIR');
  });

  it('refuses every write-like request with EROFS', async () => {
    const m = toy.mnt;
    assert.equal(await errCode(mkdir(join(m, 'newdir'))), 'EROFS');
    assert.equal(await errCode(writeFile(join(m, 'new.txt'), 'x')), 'EROFS');
    assert.equal(await errCode(writeFile(join(m, 'hello.txt'), 'x')), 'EROFS');
    assert.equal(await errCode(appendFile(join(m, 'hello.txt'), 'x')), 'EROFS');
    assert.equal(await errCode(unlink(join(m, 'hello.txt'))), 'EROFS');
    assert.equal(await errCode(rmdir(join(m, 'dir'))), 'EROFS');
    assert.equal(await errCode(rename(join(m, 'hello.txt'), join(m, 'hello2.txt'))), 'EROFS');
    assert.equal(await errCode(symlink('x', join(m, 'sym'))), 'EROFS');
    assert.equal(await errCode(chmod(join(m, 'hello.txt'), 0o600)), 'EROFS');
    assert.equal(await errCode(py(`import os,sys\nos.setxattr(sys.argv[1],'user.x',b'1')`, join(m, 'hello.txt')).catch((e: { stderr: string }) => {
      throw Object.assign(new Error(e.stderr), { code: /Read-only file system/.test(e.stderr) ? 'EROFS' : 'other' });
    })), 'EROFS');
    // Nothing changed.
    assert.equal(await readFile(join(m, 'hello.txt'), 'utf8'), 'hello world\n');
  });

  it('gets sequential reads as 1 MiB requests (never larger), bytes intact', async () => {
    const before = (await toy.stats()).toy.readSizes;
    const { stdout } = await run('bash', ['-c', `dd if=${join(toy.mnt, 'huge.bin')} bs=1M status=none | sha256sum`]);
    const period = patternBytes(0, MiB);
    const h = createHash('sha256');
    for (let k = 0; k < SPEC.hugeSize / MiB; k++) h.update(period);
    const want = h.digest('hex');
    assert.equal(stdout.split(' ')[0], want);
    const afterSizes = (await toy.stats()).toy.readSizes;
    const sizes: Record<number, number> = {};
    let bytes = 0;
    for (const [k, v] of Object.entries(afterSizes)) {
      const n = v - (before[k] ?? 0);
      if (n > 0) { sizes[Number(k)] = n; bytes += Number(k) * n; }
    }
    const largest = Math.max(...Object.keys(sizes).map(Number));
    // The mount's read-ahead is raised to 1 MiB: sequential reads come as 1 MiB requests, never more.
    assert.equal(largest, MiB, `largest read ${largest} bytes: ${JSON.stringify(sizes)}`);
    assert.ok(bytes >= SPEC.hugeSize, `the reads cover the file (${bytes} bytes in ${JSON.stringify(sizes)})`);
    // Reads must be large: a 64 MiB file in few requests, not 4 KiB pages.
    const requests = Object.values(sizes).reduce((a, b) => a + b, 0);
    assert.ok(requests <= SPEC.hugeSize / (512 * 1024), `${requests} requests for 64 MiB: ${JSON.stringify(sizes)}`);
  });

  it('serves a find -printf walk of 5,000 entries from READDIRPLUS, with few lookups or getattrs', async () => {
    const before = (await toy.stats()).sessionOps;
    const { stdout } = await run('find', [join(toy.mnt, 'many'), '-printf', '%p %s %m %i\\n'], { maxBuffer: 64 * MiB });
    const lines = stdout.trim().split('\n');
    assert.equal(lines.length, 1 + 50 + 5000);
    assert.ok(lines.includes(`${join(toy.mnt, 'many', 'd49', 'f099')} 13 644 ${lines.find((l) => l.includes('d49/f099'))!.split(' ')[3]}`));
    const ops = (await toy.stats()).sessionOps;
    const delta = (k: string): number => (ops[k] ?? 0) - (before[k] ?? 0);
    const perEntry = delta('LOOKUP') + delta('GETATTR');
    assert.ok(delta('READDIRPLUS') > 0, 'READDIRPLUS used');
    assert.ok(perEntry < 5050 / 20, `${delta('LOOKUP')} lookups and ${delta('GETATTR')} getattrs for 5,050 entries`);
    // A second walk: all from the kernel's caches.
    await run('find', [join(toy.mnt, 'many'), '-printf', '%p %s %m\\n'], { maxBuffer: 64 * MiB });
    const again = (await toy.stats()).sessionOps;
    const d = (k: string): number => (again[k] ?? 0) - (ops[k] ?? 0);
    const warm = ['LOOKUP', 'GETATTR', 'READDIRPLUS', 'READDIR'].map((k) => `${k} ${d(k)}`).join(', ');
    // Only the directories' atime, which the kernel invalidates after listing them on a writable mount (one GETATTR each).
    assert.ok(d('LOOKUP') + d('READDIRPLUS') + d('READDIR') === 0 && d('GETATTR') <= 51, `a warm walk reached the filesystem: ${warm}`);
  });

  it('survives 10,000 lookup/forget cycles with no growth in fds, memory or lookup references', async () => {
    const name = join(toy.mnt, 'cycle', 'x');
    const cycle = async (n: number): Promise<void> => { for (let i = 0; i < n; i++) await stat(name); };
    await cycle(1000);
    await until(async () => (await toy.stats()).toy.cycleLive <= 2, 10_000, 'forgets of the warm-up cycles');
    const s0 = await toy.stats();
    await cycle(10_000);
    await until(async () => (await toy.stats()).toy.cycleLive <= 2, 10_000, 'forgets of 10,000 cycles');
    const s1 = await toy.stats();
    assert.ok(s1.toy.cycleLookups - s0.toy.cycleLookups >= 10_000, `${s1.toy.cycleLookups - s0.toy.cycleLookups} lookups`);
    assert.ok((s1.sessionOps.FORGET ?? 0) + (s1.sessionOps.BATCH_FORGET ?? 0) > (s0.sessionOps.FORGET ?? 0) + (s0.sessionOps.BATCH_FORGET ?? 0), 'forgets arrived');
    assert.equal(s1.fds, s0.fds, 'open fds');
    assert.ok(s1.refNodes <= s0.refNodes + 2, `lookup references held: ${s0.refNodes} → ${s1.refNodes} nodes`);
    assert.ok(s1.refTotal <= s0.refTotal + 2, `lookup references total: ${s0.refTotal} → ${s1.refTotal}`);
    assert.ok(s1.heapUsed - s0.heapUsed < 4 * MiB, `heap ${s0.heapUsed} → ${s1.heapUsed}`);
  });
});

describe('FUSE binding: busy polling (the JS thread keeps reading after a batch while idle)', () => {
  let toy: ToyMount;
  // The longest busy poll the config allows; reads answer from a timer, as
  // the store's answer a worker's or a socket's event.
  before(async () => { toy = await startToy({ manyDirs: 4, manyFiles: 50, hugeSize: MiB, ttl: 0, readDelayMs: 2, busyPollUs: 1000 }); });
  after(async () => { await toy.stop(); });

  it('answers back-to-back requests and replies that wait on timers, and the loop keeps turning', async () => {
    const s0 = await toy.stats();
    const started = performance.now();
    // One caller sends GETATTRs back to back (statx with AT_STATX_FORCE_SYNC
    // always asks the filesystem), so the binding is never idle for long…
    const getattrs = py(`import ctypes,sys
libc=ctypes.CDLL(None,use_errno=True)
buf=ctypes.create_string_buffer(256)
p=sys.argv[1].encode()
for i in range(4000):
  if libc.statx(-100,p,0x2000,0x7ff,buf)!=0: raise OSError(ctypes.get_errno(),'statx')
print('ok')`, join(toy.mnt, 'hello.txt'));
    // …while others read files whose replies wait on a timer.
    const reads = (async () => {
      for (let d = 0; d < 4; d++) {
        const names = Array.from({ length: 50 }, (_, f) => join(toy.mnt, 'many', `d0${d}`, `f${String(f).padStart(3, '0')}`));
        const got = await Promise.all(names.map((n) => readFile(n, 'utf8')));
        got.forEach((text, f) => assert.equal(text, `many/d0${d}/f${f}\n`));
      }
    })();
    assert.equal((await getattrs).trim(), 'ok');
    await reads;
    const elapsedMs = performance.now() - started;
    const s1 = await toy.stats();
    assert.ok((s1.sessionOps.GETATTR ?? 0) - (s0.sessionOps.GETATTR ?? 0) >= 4000, 'every statx reached the filesystem');
    // A 5 ms interval in the serving process: polling never holds the loop
    // for long (2 ms at most per wake-up), so it fires about every 5 ms; a
    // loop starved by polling would not fire at all.
    const ticks = s1.ticks - s0.ticks;
    assert.ok(ticks >= elapsedMs / 5 / 4, `${ticks} timer firings in ${elapsedMs.toFixed(0)} ms`);
  });

  it('stops spinning for a caller whose requests come further apart than the spin, and spins again for one that does not', async () => {
    // Its own mount, with entries cached: each statx below is one GETATTR, nothing else.
    const cached = await startToy({ manyDirs: 1, manyFiles: 1, hugeSize: MiB, ttl: 3600, busyPollUs: 1000 });
    try {
      await sparseThenDense(cached);
    } finally {
      await cached.stop();
    }
  });
});

/** Busy polling (1 ms) turns off for GETATTRs 5 ms apart and on again for back-to-back ones: its hit rate, read from the serving process. */
async function sparseThenDense(toy: ToyMount): Promise<void> {
  const statx = (count: number, sleepS: number): Promise<string> => py(`import ctypes,sys,time
libc=ctypes.CDLL(None,use_errno=True)
buf=ctypes.create_string_buffer(256)
p=sys.argv[1].encode()
for i in range(${count}):
  if libc.statx(-100,p,0x2000,0x7ff,buf)!=0: raise OSError(ctypes.get_errno(),'statx')
  if ${sleepS} > 0: time.sleep(${sleepS})
print('ok')`, join(toy.mnt, 'hello.txt'));
  // A GETATTR every 5 ms: every 1 ms spin misses.
  assert.equal((await statx(60, 0.005)).trim(), 'ok');
  const sparse = (await toy.stats()).busyPollScore;
  assert.ok(sparse < 0.5, `hit rate ${sparse} after sparse requests: the spin should be off`);
  // Back to back again: the probes (one wake-up in 16) find requests and turn it back on.
  assert.equal((await statx(3000, 0)).trim(), 'ok');
  const dense = (await toy.stats()).busyPollScore;
  // (The caller's last request leaves a wait that misses: 7/8 of a full score at most.)
  assert.ok(dense >= 0.75, `hit rate ${dense} after back-to-back requests: the spin should be on`);
}

describe('FUSE binding: a filesystem whose forget throws', () => {
  let toy: ToyMount;
  before(async () => { toy = await startToy({ manyDirs: 4, manyFiles: 50, hugeSize: MiB, ttl: 0, forgetThrows: true }); });
  after(async () => { await toy.stop(); });

  it('still answers every request (forgets arrive in the same batches as lookups and reads)', { timeout: 120_000 }, async () => {
    const s0 = await toy.stats();
    // Each stat of /cycle/x makes a new node the kernel soon forgets; other
    // callers keep lookups and reads coming, so forgets share batches with them.
    const cycles = Array.from({ length: 4 }, async () => { for (let i = 0; i < 1000; i++) await stat(join(toy.mnt, 'cycle', 'x')); });
    const readers = Array.from({ length: 4 }, async (_, d) => {
      for (let round = 0; round < 5; round++) {
        for (let f = 0; f < 50; f++) {
          assert.equal(await readFile(join(toy.mnt, 'many', `d0${d}`, `f${String(f).padStart(3, '0')}`), 'utf8'), `many/d0${d}/f${f}\n`);
        }
      }
    });
    await Promise.all([...cycles, ...readers]);
    await until(async () => ((await toy.stats()).toy.ops.forget ?? 0) > (s0.toy.ops.forget ?? 0), 10_000, 'forgets (each one threw)');
    const s1 = await toy.stats();
    assert.ok((s1.sessionOps.FORGET ?? 0) + (s1.sessionOps.BATCH_FORGET ?? 0) > (s0.sessionOps.FORGET ?? 0) + (s0.sessionOps.BATCH_FORGET ?? 0), 'forgets reached the session');
    // And the session serves on.
    assert.equal(await readFile(join(toy.mnt, 'hello.txt'), 'utf8'), 'hello world\n');
    assert.ok(await isMounted(toy.mnt), 'still mounted');
  });
});

describe('FUSE binding: the connection outlives its process', () => {
  it('a successor adopts the mounted fd (inherited as fd 3) with the negotiated parameters and serves on', async () => {
    const toy = await startToy({ manyDirs: 2, manyFiles: 3, hugeSize: MiB });
    try {
      assert.equal(await readFile(join(toy.mnt, 'hello.txt'), 'utf8'), 'hello world\n');
      const successor = await toy.handoff();
      assert.notEqual(successor, toy.pid);
      await until(async () => toy.child.exitCode !== null, 5000, 'the first process to exit');
      assert.ok(await isMounted(toy.mnt), 'still mounted');
      // New lookups and reads reach the successor.
      assert.equal(await readFile(join(toy.mnt, 'many', 'd01', 'f002'), 'utf8'), 'many/d01/f2\n');
      assert.ok((await readFile(join(toy.mnt, 'huge.bin'))).equals(patternBytes(0, MiB)));
      assert.equal(await errCode(mkdir(join(toy.mnt, 'x'))), 'EROFS');
    } finally {
      await toy.stop();
    }
  });

  it('a killed server leaves a dead mount that a lazy unmount cleans', async () => {
    const toy = await startToy({ manyDirs: 1, manyFiles: 1, hugeSize: MiB });
    try {
      await stat(join(toy.mnt, 'hello.txt'));
      toy.child.kill('SIGKILL');
      await until(async () => toy.child.exitCode !== null || toy.child.signalCode !== null, 5000, 'the kill');
      assert.equal(await errCode(stat(join(toy.mnt, 'nope'))), 'ENOTCONN');
      await run('umount', ['-l', toy.mnt]);
      assert.equal(await isMounted(toy.mnt), false);
    } finally {
      await toy.stop();
    }
  });
});
