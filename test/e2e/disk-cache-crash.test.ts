import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { cacheRecords, flipRecordByte, recordIsWhole, type CachedRecord } from '../../testkit/disk-cache-packs.js';
import { pushTestImage } from '../../testkit/images.js';
import { randomBytes, type SpecEntry } from '../../testkit/layer-tar.js';
import { freePort, startRegistry, type Registry } from '../../testkit/registry.js';
import { startStore, type RunningStore } from '../../testkit/store.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const KiB = 1 << 10;
const MiB = 1 << 20;

interface Image {
  ref: string;
  layer: string;
  files: Map<string, Buffer>;
}

/** Files of mixed sizes: one chunk (inline hash), several 256 KiB chunks (hashed on the cache's thread), empty. */
function files(seed: number): Map<string, Buffer> {
  return new Map([
    ['data/one-chunk', randomBytes(40 * KiB, seed)],
    ['data/big', randomBytes(3 * MiB + 123, seed + 1)],
    ['data/medium', randomBytes(700 * KiB, seed + 2)],
    ['data/small', Buffer.from(`small ${seed}\n`)],
    ['data/empty', Buffer.alloc(0)],
  ]);
}

/** Pushes a gzip image of `content` and converts it to eStargz with 256 KiB chunks. */
async function pushEstargz(reg: Registry, repo: string, content: Map<string, Buffer>): Promise<Image> {
  const entries: SpecEntry[] = [{ name: 'data/', type: 'directory' }];
  for (const [name, bytes] of content) entries.push({ name, type: 'file', content: bytes });
  await pushTestImage(reg.host, repo, 'gzip', { layers: [entries] });
  const ref = `${reg.host}/${repo}:esgz`;
  const conv = JSON.parse((await run(process.execPath, [CLI, 'image', 'convert', `${reg.host}/${repo}:gzip`, ref, '--chunk-size', String(256 * KiB), '--json'])).stdout) as { manifests: { layers: { digest: string }[] }[] };
  return { ref, layer: conv.manifests[0]!.layers[0]!.digest, files: content };
}

/** Chunks of 256 KiB in the image's files (all distinct: random content). */
function chunkCount(image: Image): number {
  return [...image.files.values()].reduce((n, b) => n + Math.ceil(b.length / (256 * KiB)), 0);
}

/** Reads every file of `image` through the store and compares it with what was pushed. */
async function readAll(store: RunningStore, image: Image): Promise<void> {
  for (const [name, want] of image.files) {
    const got = await readFile(join(store.layerDir(image.ref, image.layer), 'diff', name));
    assert.ok(got.equals(want), `${name}: ${got.length} bytes read, ${want.length} pushed, equal content`);
  }
}

/** Polls `cond` until it holds; fails after 30 s (the writes start 2 s after the reads). */
async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(5);
  }
}

async function metric(port: number, line: RegExp): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = text.split('\n').find((l) => line.test(l));
  return m ? Number(m.slice(m.lastIndexOf(' ') + 1)) : 0;
}

describe('the store\'s disk cache: a killed store, damaged files, a full disk', () => {
  let reg: Registry;
  let work: string;
  let cache: string;
  const stores: RunningStore[] = [];

  before(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), 'estargz-e2e-cache-'));
    cache = join(work, 'cache');
  });
  after(async () => {
    for (const s of stores) await s.stop(); // a no-op for the stopped ones
    await reg?.stop();
    await rm(work, { recursive: true, force: true });
  });

  /** A store on the shared cache directory, no background fetch (only reads fill the cache), metrics on `port`. */
  const start = async (port: number): Promise<RunningStore> => {
    const store = await startStore([
      'no_background_fetch = true',
      `metrics_address = "127.0.0.1:${port}"`,
      '[cache]',
      `dir = ${JSON.stringify(cache)}`,
    ].join('\n'));
    stores.push(store);
    return store;
  };

  test('SIGKILL during writes, then a flipped and a cut-short pack: the next store serves every byte right and fetches the damaged chunks again', async () => {
    const first = await pushEstargz(reg, 'e2e/cache-one', files(1));
    const second = await pushEstargz(reg, 'e2e/cache-two', files(100));
    const hexes = (records: CachedRecord[]): string[] => records.map((r) => r.hex).sort();

    // 1. A store reads the first image; SIGTERM flushes its queue to disk (and seals the pack: an index beside it).
    const a = await start(await freePort());
    await readAll(a, first);
    assert.equal(await a.stop(), 0);
    const written = await cacheRecords(cache);
    assert.equal(written.length, chunkCount(first), 'every chunk of the first image is on disk');
    for (const r of written) assert.ok(await recordIsWhole(r), `${r.hex} is whole`);
    assert.ok((await readdir(join(cache, 'packs'))).some((n) => n.endsWith('.idx')), 'the pack is sealed');

    // 2. A second store reads the second image and is killed with SIGKILL once its writes have begun.
    const b = await start(await freePort());
    await readAll(b, second);
    await until(async () => (await cacheRecords(cache)).length > written.length, 'the second store writes its queue');
    b.proc.kill('SIGKILL');
    await new Promise((resolve) => b.proc.once('exit', resolve));
    await run('umount', ['-l', b.mnt]); // the killed store's FUSE mount
    await b.stop(); // already gone: this removes its temporary directory
    const afterKill = await cacheRecords(cache);
    assert.ok(afterKill.length > written.length, `${afterKill.length - written.length} of ${chunkCount(second)} chunks of the second image written before the kill`);

    // 3. Damage the first image's pack: one byte flipped in a chunk, and the pack cut short inside its last large chunk
    //    (what follows it, the small files' chunks, goes with it).
    const flipped = written[1]!;
    const cut = written.filter((r) => r.length >= 1000).at(-1)!;
    assert.notEqual(cut, flipped);
    await flipRecordByte(flipped);
    await truncate(cut.pack, cut.offset + (cut.length >> 1));

    // 4. A third store on the same cache: every byte right. The flipped chunk is found when read (counted, logged, fetched
    //    again); the cut one is not indexed (the pack is shorter than its index says, so it is read header by header).
    const port = await freePort();
    const c = await start(port);
    assert.deepEqual(await readdir(join(cache, 'tmp')), [], 'no unfinished write is left at start');
    await readAll(c, first);
    await readAll(c, second);
    assert.equal(await metric(port, /^estargz_store_verification_failures_total\{what="disk_cache"\}/), 1, 'one damaged chunk served from disk');
    const damaged = c.logs().split('\n').filter((l) => l.includes('disk cache entry is damaged'))
      .map((l) => (JSON.parse(l) as { digest: string; path: string; offset: number }));
    assert.deepEqual(damaged.map((d) => [d.digest, d.path, d.offset]), [[`sha256:${flipped.hex}`, flipped.pack, flipped.offset]]);
    assert.match(c.logs(), /a pack is shorter than its index says/);
    const lost = written.filter((r) => r.offset >= cut.offset).length;
    assert.ok(await metric(port, /^estargz_store_cache_requests_total\{tier="disk",result="hit"\}/) >= afterKill.length - 1 - lost, 'the intact chunks were served from disk');
    assert.equal(await c.stop(), 0);

    // The refetched chunks were written again, whole, in a new pack; every record the packs hold after the cut is whole but the flipped one.
    const final = await cacheRecords(cache);
    assert.ok(hexes(final).includes(flipped.hex) && hexes(final).includes(cut.hex));
    for (const r of final) if (!(r.pack === flipped.pack && r.offset === flipped.offset)) assert.ok(await recordIsWhole(r), `${r.hex} in ${r.pack} is whole`);
  });

  test('a cache disk that fills up (ENOSPC): one warning, the cache is off, and the store goes on serving from the registry', async () => {
    const first = await pushEstargz(reg, 'e2e/full-one', files(7));
    const second = await pushEstargz(reg, 'e2e/full-two', files(70));
    const small = join(work, 'small');
    await run('mkdir', ['-p', small]);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', small]);
    try {
      const store = await startStore(['no_background_fetch = true', '[cache]', `dir = ${JSON.stringify(join(small, 'cache'))}`].join('\n'));
      stores.push(store);
      await readAll(store, first); // ~3.8 MiB of chunks queued for a 256 KiB disk
      await until(() => store.logs().includes('disk cache unusable'), 'the store turns its disk cache off');
      const warnings = store.logs().split('\n').filter((l) => l.includes('disk cache unusable')).map((l) => JSON.parse(l) as { dir: string; code: string });
      assert.equal(warnings.length, 1);
      assert.equal(warnings[0]!.dir, join(small, 'cache'));
      assert.equal(warnings[0]!.code, 'ENOSPC');
      await readAll(store, second); // nothing of it is cached anywhere: from the registry
      await readAll(store, first);
      assert.equal(await store.stop(), 0);
      assert.doesNotMatch(store.logs(), /unhandled|"level":50/i, 'no error logged');
      assert.deepEqual(await readdir(join(small, 'cache', 'tmp')), [], 'the write that failed left nothing behind');
    } finally {
      await run('umount', [small]);
    }
  });
});
