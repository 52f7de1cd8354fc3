// What the kernel may keep of the store's tree, checked over a real FUSE
// mount by counting the requests that reach the store: a path walk through
// the store's own directories asks nothing once they are known (warm stat at
// kernel speed), while every name that is not there yet is still asked, a
// released layer is looked up again, and listings follow what is resolved.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, rmdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { handlerErrorReporter, storeOperations } from '../../src/fs/mount.js';
import { StoreFs } from '../../src/fs/store-fs.js';
import type { OpName } from '../../src/fuse/protocol.js';
import { FuseSession } from '../../src/fuse/session.js';
import { layerBlob, stubResolver, type StubResolver } from './stub-layer.js';
import { testTelemetry } from '../../testkit/telemetry.js';

const REF = 'registry.example/app/image:v1';
const OTHER_REF = 'registry.example/app/other:v2';
const DIGEST_A = `sha256:${'a'.repeat(64)}`;
const DIGEST_B = `sha256:${'b'.repeat(64)}`;
const refDirName = (ref: string): string => Buffer.from(ref).toString('base64');

describe('the store\'s kernel caching over FUSE', () => {
  let mnt: string;
  let session: FuseSession;
  let resolver: StubResolver;
  let blobSize: number;

  before(async () => {
    const { blob, bytes } = await layerBlob([
      { name: 'etc/', type: 'directory' },
      { name: 'etc/os-release', type: 'file', content: Buffer.from('ID=test\n') },
    ]);
    blobSize = bytes.length;
    resolver = stubResolver(blob, bytes, { 'etc/os-release': 'ID=test\n' });
    mnt = await mkdtemp(join(tmpdir(), 'estargz-store-cache-'));
    const telemetry = testTelemetry();
    session = await FuseSession.mount(storeOperations(new StoreFs(resolver, { log: telemetry.log }), { telemetry }), { mountpoint: mnt, subtype: 'estargz-store-test' }, { readdirplus: true, onError: handlerErrorReporter(telemetry) });
  });
  after(async () => {
    await session?.close();
    await rm(mnt, { recursive: true, force: true });
  });

  /** Requests of each kind that reach the store while `f` runs. */
  async function counted(f: () => Promise<unknown>): Promise<Partial<Record<OpName, number>>> {
    const before = session.opCounts();
    await f();
    const after = session.opCounts();
    const out: Partial<Record<OpName, number>> = {};
    for (const [op, n] of Object.entries(after) as [OpName, number][]) if (n - (before[op] ?? 0) > 0) out[op] = n - (before[op] ?? 0);
    return out;
  }

  const layerDir = (ref: string, digest: string): string => join(mnt, refDirName(ref), digest);

  test('once looked up, a path through the reference and layer directories asks the store nothing', async () => {
    const file = join(layerDir(REF, DIGEST_A), 'diff', 'etc', 'os-release');
    assert.equal((await stat(file)).size, 8);
    const ops = await counted(async () => {
      for (let i = 0; i < 50; i++) assert.equal((await stat(file)).size, 8);
    });
    assert.equal(ops.LOOKUP ?? 0, 0, `no lookup on a warm path walk (got ${JSON.stringify(ops)})`);
    // The root's and reference directory's attributes are kept a second: at most one refresh each.
    assert.ok((ops.GETATTR ?? 0) <= 2, `no getattr per stat (got ${JSON.stringify(ops)})`);
  });

  test('a name not there in the root or a reference directory is asked again every time: a layer that resolves later is found', async () => {
    const absent = join(mnt, refDirName('registry.example/app/absent:v1').replace(/=+$/, '') + '!');
    const ops = await counted(async () => {
      for (let i = 0; i < 3; i++) await assert.rejects(stat(absent), { code: 'ENOENT' });
    });
    assert.equal(ops.LOOKUP, 3, 'each lookup of a name that is not there reaches the store');
    resolver.refuse.add(DIGEST_B);
    const layer = layerDir(REF, DIGEST_B);
    await assert.rejects(stat(layer), { code: 'ENOENT' });
    await assert.rejects(stat(layer), { code: 'ENOENT' });
    resolver.refuse.delete(DIGEST_B);
    assert.equal((await stat(join(layer, 'diff', 'etc', 'os-release'))).size, 8, 'the layer that resolves now is there at once');
  });

  test('blob and info have their true sizes right after a listing, without a lookup', async () => {
    const layer = layerDir(OTHER_REF, DIGEST_A);
    await stat(layer);
    const ops = await counted(async () => {
      assert.deepEqual((await readdir(layer)).sort(), ['blob', 'diff', 'info']);
      assert.equal((await stat(join(layer, 'blob'))).size, blobSize);
      const info = await readFile(join(layer, 'info'));
      assert.equal((await stat(join(layer, 'info'))).size, info.length);
      assert.ok(info.length > 0 && JSON.parse(info.toString()));
    });
    assert.equal(ops.LOOKUP ?? 0, 0, `blob and info came with the listing (got ${JSON.stringify(ops)})`);
  });

  test('a released layer leaves the listing and is looked up (so resolved) again on the next path walk; the root lists new references at once', async () => {
    const refDir = join(mnt, refDirName(REF));
    const layer = layerDir(REF, DIGEST_A);
    await stat(join(layer, 'diff'));
    assert.ok((await readdir(refDir)).includes(DIGEST_A));
    const again = await counted(async () => assert.ok((await readdir(refDir)).includes(DIGEST_A)));
    assert.equal(again.READDIRPLUS ?? 0, 0, 'an unchanged listing comes from the kernel\'s cache (so a change must reach it)');
    const rootBefore = await readdir(mnt);
    assert.ok(!rootBefore.includes(refDirName('registry.example/app/third:v3')));
    await assert.rejects(rmdir(layer), { code: 'ENOENT' });
    assert.ok(!(await readdir(refDir)).includes(DIGEST_A), 'a released layer is not listed');
    const resolutions = resolver.resolutions;
    const ops = await counted(() => stat(join(layer, 'diff')));
    assert.ok((ops.LOOKUP ?? 0) >= 1, `the walk through the released layer reaches the store (got ${JSON.stringify(ops)})`);
    assert.equal(resolver.resolutions, resolutions + 1, 'and resolves it again');
    assert.ok((await readdir(refDir)).includes(DIGEST_A), 'listed again');
    await stat(join(layerDir('registry.example/app/third:v3', DIGEST_A), 'diff'));
    assert.ok((await readdir(mnt)).includes(refDirName('registry.example/app/third:v3')), 'the root lists the new reference');
  });

  // The invalidations are written off the JS thread, and the lookup (or rmdir) that changed the listings is answered only once the kernel took them.
  test('50 times in a row: a new reference is listed at once in the root, its layer in the reference directory, and gone at once when released', async () => {
    for (let i = 0; i < 50; i++) {
      const ref = `registry.example/loop/n${i}:v1`;
      const refDir = join(mnt, refDirName(ref));
      const layer = layerDir(ref, DIGEST_B);
      assert.ok(!(await readdir(mnt)).includes(refDirName(ref)), 'the root listing is cached without it');
      await stat(join(layer, 'diff'));
      assert.ok((await readdir(mnt)).includes(refDirName(ref)), `round ${i}: the root lists the new reference at once`);
      assert.deepEqual(await readdir(refDir), [DIGEST_B], `round ${i}: the reference directory lists its layer at once`);
      await assert.rejects(rmdir(layer), { code: 'ENOENT' });
      assert.deepEqual(await readdir(refDir), [], `round ${i}: the released layer is gone from the listing at once`);
      assert.ok(!(await readdir(mnt)).includes(refDirName(ref)), `round ${i}: and so is its reference from the root`);
    }
  });
});
