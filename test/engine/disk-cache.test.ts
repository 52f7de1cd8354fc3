import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, appendFile, mkdtemp, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { ActivityClock } from '../../src/engine/activity.js';
import { DiskChunkCache } from '../../src/engine/cache/disk-cache.js';
import { testTelemetry } from '../../testkit/telemetry.js';

/** One logger and metrics for every store part this file builds, so the tests can read the counters back. */
const telemetry = testTelemetry();

const exec = promisify(execFile);
const DISK_CACHE_URL = new URL('../../src/engine/cache/disk-cache.js', import.meta.url).href;
const TELEMETRY_URL = new URL('../../testkit/telemetry.js', import.meta.url).href;

const digestOf = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const exists = (p: string): Promise<boolean> => access(p).then(() => true, () => false);

/** A cache file's path: `<dir>/<first two hex>/<hex>`. */
const fileOf = (dir: string, digest: string): string => join(dir, digest.slice(7, 9), digest.slice(7));

/** Temporary cache directories for one describe block, removed after it. */
function tempDirs(): () => Promise<string> {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  return async () => {
    const d = await mkdtemp(join(tmpdir(), 'estargz-disk-cache-'));
    dirs.push(d);
    return d;
  };
}

describe('disk chunk cache: writes behind', () => {
  const newDir = tempDirs();

  test('a queued chunk is served from the queue, written after the pause, and found again after a reopen', async () => {
    const dir = await newDir();
    const cache = await DiskChunkCache.open(dir, 1 << 20, telemetry);
    const bytes = randomBytes(4096);
    const digest = digestOf(bytes);
    const written = cache.put(digest, bytes);
    assert.equal(cache.has(digest), true);
    assert.deepEqual(await cache.get(digest), bytes);
    assert.equal(await exists(fileOf(dir, digest)), false, 'written during the burst');
    await written;
    assert.equal(await exists(fileOf(dir, digest)), true);
    const reopened = await DiskChunkCache.open(dir, 1 << 20, telemetry);
    assert.deepEqual(await reopened.get(digest), bytes);
  });

  test('flush writes every queued chunk at once; a second put of the same chunk writes it once', async () => {
    const dir = await newDir();
    const cache = await DiskChunkCache.open(dir, 1 << 20, telemetry);
    const chunks = Array.from({ length: 20 }, () => randomBytes(1000));
    const puts = chunks.map((b) => cache.put(digestOf(b), b));
    puts.push(cache.put(digestOf(chunks[0]!), chunks[0]!));
    await cache.flush();
    for (const b of chunks) assert.equal(await exists(fileOf(dir, digestOf(b))), true);
    await Promise.all(puts); // every put's promise has settled
    assert.equal(cache.size, 20 * 1000);
  });

  test('a flush that runs out of time drops the rest, answers every put, and the chunks can be queued again', async () => {
    const dir = await newDir();
    const cache = await DiskChunkCache.open(dir, 1 << 20, telemetry);
    const chunks = Array.from({ length: 50 }, () => randomBytes(1000));
    const puts = chunks.map((b) => cache.put(digestOf(b), b));
    await cache.flush(0);
    await Promise.all(puts);
    const again = chunks.map((b) => cache.put(digestOf(b), b));
    await cache.flush();
    await Promise.all(again);
    for (const b of chunks) assert.equal(await exists(fileOf(dir, digestOf(b))), true);
    assert.equal(cache.size, 50 * 1000);
  });
});

/** Failures counted under `verification_failures_total{what="disk_cache"}` so far. */
async function diskCacheFailures(): Promise<number> {
  const metric = await telemetry.metrics.verificationFailures.get();
  return metric.values.find((v) => v.labels.what === 'disk_cache')?.value ?? 0;
}

describe('disk chunk cache: the write-behind queue is bounded in bytes', () => {
  const newDir = tempDirs();

  test('a busy store still writes once more than maxPendingBytes wait, down to half of it, oldest first', async () => {
    const dir = await newDir();
    const activity = new ActivityClock();
    const busy = setInterval(() => activity.note(), 20);
    try {
      activity.note();
      const cache = await DiskChunkCache.open(dir, 64 << 20, telemetry, activity, { maxPendingBytes: 100 << 10 });
      const chunks = Array.from({ length: 5 }, () => randomBytes(30 << 10));
      const puts = chunks.map((b) => cache.put(digestOf(b), b));
      // 150 KiB queued against a 100 KiB bound: the oldest go to disk until 50 KiB or less wait, while the store stays busy.
      await Promise.all(puts.slice(0, 4));
      for (const b of chunks.slice(0, 4)) assert.equal(await exists(fileOf(dir, digestOf(b))), true);
      assert.equal(await exists(fileOf(dir, digestOf(chunks[4]!))), false, 'the newest waits for a quiet moment');
      assert.deepEqual(await cache.get(digestOf(chunks[4]!)), chunks[4], 'served from the queue meanwhile');
      await cache.flush();
      await puts[4];
      assert.equal(await exists(fileOf(dir, digestOf(chunks[4]!))), true);
    } finally {
      clearInterval(busy);
    }
  });
});

describe('disk chunk cache: chunks read back', () => {
  const newDir = tempDirs();

  test('a large chunk read back from disk is checked in shared memory, hashed where it is', async () => {
    const dir = await newDir();
    const bytes = randomBytes(1 << 20);
    const first = await DiskChunkCache.open(dir, 64 << 20, telemetry);
    await Promise.all([first.put(digestOf(bytes), bytes), first.flush()]);
    const cache = await DiskChunkCache.open(dir, 64 << 20, telemetry);
    const got = await cache.get(digestOf(bytes));
    assert.deepEqual(got, bytes);
    assert.ok(got!.buffer instanceof SharedArrayBuffer);
  });
});

describe('disk chunk cache: damaged files are never served', () => {
  const newDir = tempDirs();
  /** A cache holding `chunks` on disk (written, then reopened so they are served from files, not the queue). */
  const cacheWith = async (chunks: Buffer[]): Promise<{ dir: string; cache: DiskChunkCache }> => {
    const dir = await newDir();
    const first = await DiskChunkCache.open(dir, 64 << 20, telemetry);
    for (const b of chunks) void first.put(digestOf(b), b);
    await first.flush();
    return { dir, cache: await DiskChunkCache.open(dir, 64 << 20, telemetry) };
  };
  /** The damaged chunk is a miss, its file is gone, one failure is counted, and the chunk can be cached again. */
  const assertDropped = async (dir: string, cache: DiskChunkCache, bytes: Buffer, failuresBefore: number): Promise<void> => {
    const digest = digestOf(bytes);
    assert.equal(await cache.get(digest), undefined);
    assert.equal(await exists(fileOf(dir, digest)), false, 'the damaged file is deleted');
    assert.equal(await diskCacheFailures(), failuresBefore + 1);
    assert.equal(cache.has(digest), false);
    await Promise.all([cache.put(digest, bytes), cache.flush()]);
    const again = await DiskChunkCache.open(dir, 64 << 20, telemetry);
    assert.deepEqual(await again.get(digest), bytes);
  };

  // 16 KiB is hashed on the main thread, 1 MiB on the hashing thread.
  for (const size of [16 << 10, 1 << 20]) {
    test(`a flipped byte in a ${size >> 10} KiB file is detected, the file deleted and counted`, async () => {
      const [bad, good] = [randomBytes(size), randomBytes(size)];
      const { dir, cache } = await cacheWith([bad, good]);
      const damaged = Buffer.from(bad);
      damaged[size >> 1]! ^= 0x01;
      await writeFile(fileOf(dir, digestOf(bad)), damaged);
      const before = await diskCacheFailures();
      await assertDropped(dir, cache, bad, before);
      assert.deepEqual(await cache.get(digestOf(good)), good, 'the other file is served');
    });

    test(`a ${size >> 10} KiB file truncated before the store started is detected (it is indexed at its short size)`, async () => {
      const bytes = randomBytes(size);
      const dir = await newDir();
      const first = await DiskChunkCache.open(dir, 64 << 20, telemetry);
      await Promise.all([first.put(digestOf(bytes), bytes), first.flush()]);
      await truncate(fileOf(dir, digestOf(bytes)), size - 100);
      const cache = await DiskChunkCache.open(dir, 64 << 20, telemetry);
      assert.equal(cache.has(digestOf(bytes)), true);
      await assertDropped(dir, cache, bytes, await diskCacheFailures());
    });
  }

  test('a file whose length changed after it was indexed is dropped without hashing; so is one grown before the start', async () => {
    const [shrunk, grown] = [randomBytes(200_000), randomBytes(3000)];
    const { dir, cache } = await cacheWith([shrunk, grown]);
    await truncate(fileOf(dir, digestOf(shrunk)), 1000);
    await assertDropped(dir, cache, shrunk, await diskCacheFailures());
    await appendFile(fileOf(dir, digestOf(grown)), Buffer.from('trailing'));
    const reopened = await DiskChunkCache.open(dir, 64 << 20, telemetry);
    await assertDropped(dir, reopened, grown, await diskCacheFailures());
  });

  test('an empty file under a digest\'s name (what a power loss can leave) is a miss', async () => {
    const bytes = randomBytes(5000);
    const dir = await newDir();
    await DiskChunkCache.open(dir, 1 << 20, telemetry);
    await writeFile(fileOf(dir, digestOf(bytes)), Buffer.alloc(0));
    const cache = await DiskChunkCache.open(dir, 1 << 20, telemetry);
    await assertDropped(dir, cache, bytes, await diskCacheFailures());
  });

  test('temporary files left by a crash are removed at open and never indexed', async () => {
    const bytes = randomBytes(8000);
    const dir = await newDir();
    await DiskChunkCache.open(dir, 1 << 20, telemetry);
    const hex = digestOf(bytes).slice(7);
    await writeFile(join(dir, 'tmp', `${hex}.0123456789ab`), bytes.subarray(0, 3000));
    await writeFile(join(dir, 'tmp', `${hex}.ba9876543210`), bytes);
    const cache = await DiskChunkCache.open(dir, 1 << 20, telemetry);
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
    assert.equal(cache.has(digestOf(bytes)), false);
    assert.equal(cache.size, 0);
    assert.equal(await cache.get(digestOf(bytes)), undefined);
  });

  test('a process killed with SIGKILL while writing leaves only whole files under digest names', async () => {
    const dir = await newDir();
    // The child queues 400 chunks of 128 KiB and flushes them (5 s allowed); the parent kills it once the first files are there.
    const child = spawn(process.execPath, ['--input-type=module', '-e', `
      import { randomBytes, createHash } from 'node:crypto';
      const { DiskChunkCache } = await import(${JSON.stringify(DISK_CACHE_URL)});
      const { testTelemetry } = await import(${JSON.stringify(TELEMETRY_URL)});
      const cache = await DiskChunkCache.open(process.argv[1], 1 << 30, testTelemetry());
      for (let i = 0; i < 400; i++) {
        const b = randomBytes(128 << 10);
        void cache.put('sha256:' + createHash('sha256').update(b).digest('hex'), b);
      }
      process.send('queued');
      await cache.flush(60_000);
      process.send('flushed');
    `, dir], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const messages: string[] = [];
    child.on('message', (m: string) => messages.push(m));
    const filesIn = async (): Promise<string[]> => {
      const out: string[] = [];
      for (const sub of (await readdir(dir).catch(() => [] as string[])).filter((s) => /^[0-9a-f]{2}$/.test(s))) {
        for (const name of await readdir(join(dir, sub)).catch(() => [] as string[])) out.push(join(dir, sub, name));
      }
      return out;
    };
    const deadline = Date.now() + 30_000;
    while ((await filesIn()).length < 10 && !messages.includes('flushed') && Date.now() < deadline) await sleep(2);
    child.kill('SIGKILL');
    await exited;
    assert.ok(!messages.includes('flushed'), 'the child was killed before it had written everything');

    const files = await filesIn();
    assert.ok(files.length >= 10 && files.length < 400, `${files.length} files written before the kill`);
    const before = await diskCacheFailures();
    const cache = await DiskChunkCache.open(dir, 1 << 30, telemetry);
    assert.deepEqual(await readdir(join(dir, 'tmp')), [], 'the unfinished write is removed');
    for (const f of files) {
      const digest = `sha256:${f.slice(-64)}`;
      const bytes = await cache.get(digest);
      assert.ok(bytes, `${f} is served`);
      assert.equal(digestOf(bytes), digest);
      assert.equal(bytes.length, 128 << 10);
    }
    assert.equal(await diskCacheFailures(), before, 'no file under a digest name was damaged');
  });
});

// A real full disk: a 256 KiB tmpfs (mounting it needs root, as the FUSE tests do).
describe('disk chunk cache: a full or read-only disk turns it off', () => {
  let mnt: string;
  before(async () => {
    mnt = await mkdtemp(join(tmpdir(), 'estargz-disk-cache-full-'));
    await exec('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt]);
  });
  after(async () => {
    await exec('umount', [mnt]).catch(() => {});
    await rm(mnt, { recursive: true, force: true });
  });
  /** A directory on the emptied, writable tmpfs. */
  const freshDir = async (name: string): Promise<string> => {
    await exec('mount', ['-o', 'remount,rw', mnt]);
    for (const entry of await readdir(mnt)) await rm(join(mnt, entry), { recursive: true, force: true });
    return join(mnt, name);
  };

  test('ENOSPC while writing: one warning, the cache is off, the queue dropped, and nothing throws', async (t) => {
    const dir = await freshDir('enospc');
    const warn = t.mock.method(telemetry.log, 'warn');
    const cache = await DiskChunkCache.open(dir, 64 << 20, telemetry);
    assert.equal(cache.enabled, true);
    const chunks = Array.from({ length: 10 }, () => randomBytes(64 << 10)); // 640 KiB into 256 KiB
    const puts = chunks.map((b) => cache.put(digestOf(b), b));
    await cache.flush();
    await Promise.all(puts); // every put is answered
    assert.equal(cache.enabled, false);
    const warnings = warn.mock.calls.filter((c) => String(c.arguments[1]).includes('disk cache unusable'));
    assert.equal(warnings.length, 1, 'one warning');
    assert.deepEqual({ ...(warnings[0]!.arguments[0] as object), err: undefined }, { dir, code: 'ENOSPC', err: undefined });
    assert.deepEqual(await readdir(join(dir, 'tmp')), [], 'the partial write is removed');
    // Off: nothing served from it (not even what was written before), nothing queued, no throw.
    for (const b of chunks) {
      assert.equal(cache.has(digestOf(b)), false);
      assert.equal(await cache.get(digestOf(b)), undefined);
    }
    const late = randomBytes(1000);
    await cache.put(digestOf(late), late);
    assert.equal(cache.has(digestOf(late)), false);
    await cache.flush();
    assert.equal(warn.mock.calls.filter((c) => String(c.arguments[1]).includes('disk cache unusable')).length, 1, 'still one warning');
  });

  test('a disk that becomes read-only (EROFS) turns the cache off the same way', async () => {
    const dir = await freshDir('erofs');
    const cache = await DiskChunkCache.open(dir, 64 << 20, telemetry);
    const first = randomBytes(4000);
    await Promise.all([cache.put(digestOf(first), first), cache.flush()]);
    assert.deepEqual(await cache.get(digestOf(first)), first);
    await exec('mount', ['-o', 'remount,ro', mnt]);
    const second = randomBytes(4000);
    await Promise.all([cache.put(digestOf(second), second), cache.flush()]);
    assert.equal(cache.enabled, false);
    assert.equal(await cache.get(digestOf(second)), undefined);
  });

  test('a cache directory that cannot be created opens disabled', async () => {
    await freshDir('x');
    await exec('mount', ['-o', 'remount,ro', mnt]);
    const cache = await DiskChunkCache.open(join(mnt, 'never'), 64 << 20, telemetry);
    assert.equal(cache.enabled, false);
    const b = randomBytes(100);
    await cache.put(digestOf(b), b);
    assert.equal(await cache.get(digestOf(b)), undefined);
  });
});
