import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { DiskChunkCache } from '../../src/engine/cache/disk-cache.js';

const digestOf = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const exists = (p: string): Promise<boolean> => access(p).then(() => true, () => false);

describe('disk chunk cache: writes behind', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  const newDir = async (): Promise<string> => {
    const d = await mkdtemp(join(tmpdir(), 'estargz-disk-cache-'));
    dirs.push(d);
    return d;
  };
  const fileOf = (dir: string, digest: string): string => join(dir, digest.slice(7, 9), digest.slice(7));

  test('a queued chunk is served from the queue, written after the pause, and found again after a reopen', async () => {
    const dir = await newDir();
    const cache = await DiskChunkCache.open(dir, 1 << 20);
    const bytes = randomBytes(4096);
    const digest = digestOf(bytes);
    const written = cache.put(digest, bytes);
    assert.equal(cache.has(digest), true);
    assert.deepEqual(await cache.get(digest), bytes);
    assert.equal(await exists(fileOf(dir, digest)), false, 'written during the burst');
    await written;
    assert.equal(await exists(fileOf(dir, digest)), true);
    const reopened = await DiskChunkCache.open(dir, 1 << 20);
    assert.deepEqual(await reopened.get(digest), bytes);
  });

  test('flush writes every queued chunk at once; a second put of the same chunk writes it once', async () => {
    const dir = await newDir();
    const cache = await DiskChunkCache.open(dir, 1 << 20);
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
    const cache = await DiskChunkCache.open(dir, 1 << 20);
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
