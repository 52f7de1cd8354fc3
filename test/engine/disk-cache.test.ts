import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { ActivityClock } from '../../src/engine/activity.js';
import { DiskChunkCache } from '../../src/engine/cache/disk-cache.js';
import { cacheRecords, flipRecordByte, packBytesOnDisk, recordIsWhole, type CachedRecord } from '../../testkit/disk-cache-packs.js';
import { testTelemetry } from '../../testkit/telemetry.js';

/** One logger and metrics for every store part this file builds, so the tests can read the counters back. */
const telemetry = testTelemetry();

const exec = promisify(execFile);
const DISK_CACHE_URL = new URL('../../src/engine/cache/disk-cache.js', import.meta.url).href;
const TELEMETRY_URL = new URL('../../testkit/telemetry.js', import.meta.url).href;

const digestOf = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
/** The chunk's record in the cache's packs, if written. */
const recordOf = async (dir: string, digest: string): Promise<CachedRecord | undefined> => (await cacheRecords(dir)).find((r) => r.hex === digest.slice(7));
const onDisk = async (dir: string, digest: string): Promise<boolean> => (await recordOf(dir, digest)) !== undefined;

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

describe('disk chunk cache: writes behind, in packs', () => {
  const newDir = tempDirs();

  test('a queued chunk is served from the queue, written once the store is idle, and found again after a reopen', async () => {
    const dir = await newDir();
    const cache = await DiskChunkCache.open(dir, 1 << 20, telemetry);
    const bytes = randomBytes(4096);
    const digest = digestOf(bytes);
    const written = cache.put(digest, bytes);
    assert.equal(cache.has(digest), true);
    assert.deepEqual(await cache.get(digest), bytes);
    await written;
    assert.equal(await onDisk(dir, digest), true);
    const reopened = await DiskChunkCache.open(dir, 1 << 20, telemetry);
    assert.deepEqual(await reopened.get(digest), bytes);
    await Promise.all([cache.close(), reopened.close()]);
  });

  test('flush writes every queued chunk, in one pack, and seals it; a second put of the same chunk writes it once', async () => {
    const dir = await newDir();
    const cache = await DiskChunkCache.open(dir, 1 << 20, telemetry);
    const chunks = Array.from({ length: 20 }, () => randomBytes(1000));
    const puts = chunks.map((b) => cache.put(digestOf(b), b));
    puts.push(cache.put(digestOf(chunks[0]!), chunks[0]!));
    await cache.flush();
    await Promise.all(puts); // every put's promise has settled
    const records = await cacheRecords(dir);
    assert.deepEqual(records.map((r) => r.hex).sort(), chunks.map((b) => digestOf(b).slice(7)).sort(), 'each chunk once');
    assert.equal(new Set(records.map((r) => r.pack)).size, 1, 'one pack');
    assert.deepEqual((await readdir(join(dir, 'packs'))).sort(), ['00000001.idx', '00000001.pack']);
    assert.equal(cache.size, await packBytesOnDisk(dir), 'size is what the packs and indexes take');
    // The next chunk starts a new pack: the sealed one is never appended to.
    const late = randomBytes(500);
    await Promise.all([cache.put(digestOf(late), late), cache.flush()]);
    assert.equal((await recordOf(dir, digestOf(late)))!.pack, join(dir, 'packs', '00000002.pack'));
    await cache.close();
  });

  test('a flush that runs out of time drops the rest, answers every put, and the chunks can be queued again', async () => {
    const dir = await newDir();
    const cache = await DiskChunkCache.open(dir, 4 << 20, telemetry);
    const chunks = Array.from({ length: 50 }, () => randomBytes(1000));
    const puts = chunks.map((b) => cache.put(digestOf(b), b));
    await cache.flush(0);
    await Promise.all(puts);
    const again = chunks.map((b) => cache.put(digestOf(b), b));
    await cache.flush();
    await Promise.all(again);
    const hexes = new Set((await cacheRecords(dir)).map((r) => r.hex));
    for (const b of chunks) assert.ok(hexes.has(digestOf(b).slice(7)));
    assert.equal(cache.size, await packBytesOnDisk(dir));
    await cache.close();
  });

  test('a busy store writes nothing until more than maxPendingBytes wait, then the oldest, down to half of it', async () => {
    const dir = await newDir();
    const activity = new ActivityClock();
    const busy = setInterval(() => activity.note(), 20);
    try {
      activity.note();
      const cache = await DiskChunkCache.open(dir, 64 << 20, telemetry, activity, { maxPendingBytes: 100 << 10 });
      const chunks = Array.from({ length: 5 }, () => randomBytes(30 << 10));
      const puts = chunks.slice(0, 3).map((b) => cache.put(digestOf(b), b));
      await sleep(300);
      assert.deepEqual(await cacheRecords(dir), [], '90 KiB queued, under the bound: nothing written while busy');
      // 150 KiB queued against a 100 KiB bound: the oldest go to disk until 50 KiB or less wait, while the store stays busy.
      puts.push(...chunks.slice(3).map((b) => cache.put(digestOf(b), b)));
      await Promise.all(puts.slice(0, 4));
      for (const b of chunks.slice(0, 4)) assert.equal(await onDisk(dir, digestOf(b)), true);
      assert.equal(await onDisk(dir, digestOf(chunks[4]!)), false, 'the newest waits for a quiet moment');
      assert.deepEqual(await cache.get(digestOf(chunks[4]!)), chunks[4], 'served from the queue meanwhile');
      await cache.flush();
      await puts[4];
      assert.equal(await onDisk(dir, digestOf(chunks[4]!)), true);
      await cache.close();
    } finally {
      clearInterval(busy);
    }
  });

  test('a pack left unsealed by a killed store is read header by header, then sealed', async () => {
    const dir = await newDir();
    const first = await DiskChunkCache.open(dir, 64 << 20, telemetry);
    const chunks = Array.from({ length: 3 }, () => randomBytes(2000));
    await Promise.all(chunks.map((b) => first.put(digestOf(b), b))); // written, not flushed: no index
    assert.deepEqual(await readdir(join(dir, 'packs')), ['00000001.pack']);
    const cache = await DiskChunkCache.open(dir, 64 << 20, telemetry);
    for (const b of chunks) assert.deepEqual(await cache.get(digestOf(b)), b);
    assert.deepEqual((await readdir(join(dir, 'packs'))).sort(), ['00000001.idx', '00000001.pack']);
    await Promise.all([first.close(), cache.close()]);
  });

  test('the file-per-chunk layout of an earlier version is removed at open, and not served', async () => {
    const dir = await newDir();
    const bytes = randomBytes(3000);
    const hex = digestOf(bytes).slice(7);
    await mkdir(join(dir, hex.slice(0, 2)), { recursive: true });
    await writeFile(join(dir, hex.slice(0, 2), hex), bytes);
    const cache = await DiskChunkCache.open(dir, 1 << 20, telemetry);
    assert.equal(cache.has(digestOf(bytes)), false);
    const deadline = Date.now() + 5000;
    while ((await readdir(dir)).includes(hex.slice(0, 2)) && Date.now() < deadline) await sleep(5);
    assert.deepEqual((await readdir(dir)).sort(), ['packs', 'tmp']);
    await cache.close();
  });
});

describe('disk chunk cache: bounded in bytes, a pack at a time', () => {
  const newDir = tempDirs();

  test('past the bound the least recently used pack goes (a read counts as a use), and a restart keeps that order', async () => {
    const dir = await newDir();
    const bound = 600 << 10;
    const cache = await DiskChunkCache.open(dir, bound, telemetry, new ActivityClock(), { packBytes: 200 << 10 });
    // Four packs of one 150 KiB chunk each (a flush seals the pack).
    const chunks = Array.from({ length: 4 }, () => randomBytes(150 << 10));
    for (const b of chunks.slice(0, 3)) await Promise.all([cache.put(digestOf(b), b), cache.flush()]);
    assert.deepEqual(await cache.get(digestOf(chunks[0]!)), chunks[0], 'the oldest pack is read: now the most recently used');
    await Promise.all([cache.put(digestOf(chunks[3]!), chunks[3]!), cache.flush()]);
    assert.ok(cache.size <= bound, `${cache.size} bytes within ${bound}`);
    assert.equal(cache.size, await packBytesOnDisk(dir));
    assert.equal(cache.has(digestOf(chunks[1]!)), false, 'the least recently used pack went');
    for (const i of [0, 2, 3]) assert.deepEqual(await cache.get(digestOf(chunks[i]!)), chunks[i]);
    await cache.close();

    // A restart orders packs by mtime: pack 3 read long ago, the others now; the next eviction takes pack 3.
    const old = (Date.now() - 3_600_000) / 1000;
    await utimes(join(dir, 'packs', '00000003.pack'), old, old);
    const reopened = await DiskChunkCache.open(dir, bound, telemetry, new ActivityClock(), { packBytes: 200 << 10 });
    const next = randomBytes(150 << 10);
    await Promise.all([reopened.put(digestOf(next), next), reopened.flush()]);
    assert.equal(reopened.has(digestOf(chunks[2]!)), false);
    for (const b of [chunks[0]!, chunks[3]!, next]) assert.deepEqual(await reopened.get(digestOf(b)), b);
    await reopened.close();
  });

  test('a chunk larger than the bound is not cached; a chunk larger than a pack gets a pack of its own', async () => {
    const dir = await newDir();
    const cache = await DiskChunkCache.open(dir, 1 << 20, telemetry, new ActivityClock(), { packBytes: 256 << 10 });
    const huge = randomBytes(1 << 20);
    await Promise.all([cache.put(digestOf(huge), huge), cache.flush()]);
    assert.equal(cache.has(digestOf(huge)), false);
    const [small, big] = [randomBytes(10 << 10), randomBytes(700 << 10)];
    await Promise.all([cache.put(digestOf(small), small), cache.put(digestOf(big), big), cache.flush()]);
    const records = await cacheRecords(dir);
    assert.notEqual(records.find((r) => r.hex === digestOf(small).slice(7))!.pack, records.find((r) => r.hex === digestOf(big).slice(7))!.pack);
    assert.deepEqual(await cache.get(digestOf(big)), big);
    assert.ok(cache.size <= 1 << 20);
    await cache.close();
  });
});

/** Failures counted under `verification_failures_total{what="disk_cache"}` so far. */
async function diskCacheFailures(): Promise<number> {
  const metric = await telemetry.metrics.verificationFailures.get();
  return metric.values.find((v) => v.labels.what === 'disk_cache')?.value ?? 0;
}

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
    await Promise.all([first.close(), cache.close()]);
  });
});

describe('disk chunk cache: damaged packs are never served', () => {
  const newDir = tempDirs();
  /** A cache holding `chunks` on disk (written, then reopened so they are served from packs, not the queue). */
  const cacheWith = async (chunks: Buffer[]): Promise<{ dir: string; cache: DiskChunkCache }> => {
    const dir = await newDir();
    const first = await DiskChunkCache.open(dir, 64 << 20, telemetry);
    for (const b of chunks) void first.put(digestOf(b), b);
    await first.close();
    return { dir, cache: await DiskChunkCache.open(dir, 64 << 20, telemetry) };
  };
  /** The damaged chunk is a miss, out of the index, one failure is counted, and the chunk can be cached again. */
  const assertDropped = async (dir: string, cache: DiskChunkCache, bytes: Buffer, failuresBefore: number): Promise<void> => {
    const digest = digestOf(bytes);
    assert.equal(await cache.get(digest), undefined);
    assert.equal(await diskCacheFailures(), failuresBefore + 1);
    assert.equal(cache.has(digest), false);
    await Promise.all([cache.put(digest, bytes), cache.flush()]);
    assert.deepEqual(await cache.get(digest), bytes);
    const again = await DiskChunkCache.open(dir, 64 << 20, telemetry);
    assert.deepEqual(await again.get(digest), bytes, 'the copy written last is the one indexed after a restart');
    await Promise.all([cache.close(), again.close()]);
  };

  // 16 KiB is hashed on the main thread, 1 MiB on the hashing thread.
  for (const size of [16 << 10, 1 << 20]) {
    test(`a flipped byte in a ${size >> 10} KiB chunk is detected, dropped and counted; the chunk beside it is served`, async () => {
      const [bad, good] = [randomBytes(size), randomBytes(size)];
      const { dir, cache } = await cacheWith([bad, good]);
      await flipRecordByte((await recordOf(dir, digestOf(bad)))!);
      const before = await diskCacheFailures();
      await assertDropped(dir, cache, bad, before);
      assert.deepEqual(await cache.get(digestOf(good)), good, 'the other chunk is served');
      await cache.close();
    });
  }

  test('a pack cut short while indexed: the cut chunk is dropped and counted; before the start: it is not indexed, the rest is', async () => {
    const [first, last] = [randomBytes(200_000), randomBytes(3000)];
    const { dir, cache } = await cacheWith([first, last]);
    const cut = (await recordOf(dir, digestOf(last)))!;
    await truncate(cut.pack, cut.offset + 1000);
    await assertDropped(dir, cache, last, await diskCacheFailures());

    const { dir: dir2, cache: unused } = await cacheWith([first, last]);
    await unused.close();
    const cut2 = (await recordOf(dir2, digestOf(last)))!;
    await truncate(cut2.pack, cut2.offset + 1000);
    const before = await diskCacheFailures();
    const reopened = await DiskChunkCache.open(dir2, 64 << 20, telemetry);
    assert.equal(reopened.has(digestOf(last)), false, 'the index is longer than the pack: the pack is scanned instead');
    assert.deepEqual(await reopened.get(digestOf(first)), first);
    assert.equal(await diskCacheFailures(), before, 'nothing was served from the cut record, so nothing failed');
    await reopened.close();
  });

  test('a garbled index is not trusted: the pack is scanned; an empty pack (what a power loss can leave) holds nothing', async () => {
    const bytes = randomBytes(5000);
    const { dir, cache } = await cacheWith([bytes]);
    await cache.close();
    await writeFile(join(dir, 'packs', '00000001.idx'), Buffer.from('EGZI garbage'));
    await writeFile(join(dir, 'packs', '00000002.pack'), Buffer.alloc(0));
    const reopened = await DiskChunkCache.open(dir, 64 << 20, telemetry);
    assert.deepEqual(await reopened.get(digestOf(bytes)), bytes);
    assert.equal(reopened.size, await packBytesOnDisk(dir));
    await reopened.close();
  });

  test('a pack removed by hand is a miss for every chunk in it, and nothing throws', async () => {
    const chunks = [randomBytes(4000), randomBytes(4000)];
    const { dir, cache } = await cacheWith(chunks);
    await rm(join(dir, 'packs'), { recursive: true });
    for (const b of chunks) assert.equal(await cache.get(digestOf(b)), undefined);
    assert.equal(cache.has(digestOf(chunks[0]!)), false);
    assert.equal(cache.size, 0);
    await cache.close();
  });

  test('temporary files left by a crash are removed at open and never indexed', async () => {
    const bytes = randomBytes(8000);
    const dir = await newDir();
    await (await DiskChunkCache.open(dir, 1 << 20, telemetry)).close();
    const hex = digestOf(bytes).slice(7);
    await writeFile(join(dir, 'tmp', `${hex}.0123456789ab`), bytes.subarray(0, 3000));
    await writeFile(join(dir, 'packs', '00000007.idx.tmp'), bytes);
    await writeFile(join(dir, 'packs', '00000008.idx'), bytes);
    const cache = await DiskChunkCache.open(dir, 1 << 20, telemetry);
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
    assert.deepEqual(await readdir(join(dir, 'packs')), [], 'an index under its temporary name, and one without its pack, are gone');
    assert.equal(cache.has(digestOf(bytes)), false);
    assert.equal(cache.size, 0);
    assert.equal(await cache.get(digestOf(bytes)), undefined);
    await cache.close();
  });

  test('a process killed with SIGKILL while writing leaves packs whose every readable record is whole', async () => {
    const dir = await newDir();
    // The child queues 400 chunks of 128 KiB and flushes them (60 s allowed); the parent kills it once the first records are there.
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
    const deadline = Date.now() + 30_000;
    while ((await cacheRecords(dir)).length < 10 && !messages.includes('flushed') && Date.now() < deadline) await sleep(1);
    child.kill('SIGKILL');
    await exited;
    assert.ok(!messages.includes('flushed'), 'the child was killed before it had written everything');

    const records = await cacheRecords(dir);
    assert.ok(records.length >= 10 && records.length < 400, `${records.length} records written before the kill`);
    const before = await diskCacheFailures();
    const cache = await DiskChunkCache.open(dir, 1 << 30, telemetry);
    assert.deepEqual(await readdir(join(dir, 'tmp')), [], 'tmp/ is emptied');
    for (const r of records) {
      assert.ok(await recordIsWhole(r), `record ${r.hex} in ${r.pack} is whole`);
      const bytes = await cache.get(`sha256:${r.hex}`);
      assert.ok(bytes, `${r.hex} is served`);
      assert.equal(digestOf(bytes), `sha256:${r.hex}`);
      assert.equal(bytes.length, 128 << 10);
    }
    assert.equal(await diskCacheFailures(), before, 'no record was damaged');
    await cache.close();
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
