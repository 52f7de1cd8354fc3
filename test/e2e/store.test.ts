import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, link, lstat, mkdir, mkdtemp, open, readFile, readdir, readlink, rename, rm, rmdir, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startFaultProxy, type FaultProxy } from '../../testkit/fault-proxy.js';
import { loadFixture } from '../../testkit/fixtures.js';
import { pushTestImage, type TestImage } from '../../testkit/images.js';
import { randomBytes, type SpecEntry } from '../../testkit/layer-tar.js';
import { pushBlob, pushOneLayerImage, putManifest, registryFetch, sha256Digest, startRegistry, type Registry } from '../../testkit/registry.js';
import { mountAnswers } from '../../src/fs/mount.js';
import { isMounted, startStore, type RunningStore } from '../../testkit/store.js';
import { dumpTree, normalizeLinks, overlayView } from '../../testkit/tree-view.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const MiB = 1 << 20;

/** Every entry type, chunked files, whiteouts, an opaque dir, xattrs, hardlinks. */
function layerOne(): SpecEntry[] {
  return [
    { name: 'bin/', type: 'directory', mtime: 1600000000 },
    { name: 'bin/tool', type: 'file', mode: 0o755, content: randomBytes(9 * MiB + 17, 1) },
    { name: 'bin/link-to-tool', type: 'link', linkname: 'bin/tool' },
    { name: 'bin/sh', type: 'symlink', linkname: 'tool' },
    { name: 'etc/', type: 'directory', mode: 0o755 },
    { name: 'etc/os-release', type: 'file', content: Buffer.from('ID=test\nVERSION=1\n') },
    { name: 'etc/empty', type: 'file', content: Buffer.alloc(0) },
    { name: 'etc/secret', type: 'file', mode: 0o600, uid: 1000, gid: 1001, content: Buffer.from('s3cr3t') },
    { name: 'etc/attrs', type: 'file', content: Buffer.from('x'), xattrs: { 'user.one': 'first', 'user.two': 'second value' } },
    { name: 'dev/', type: 'directory' },
    { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
    { name: 'dev/loop7', type: 'block-device', devmajor: 7, devminor: 7, mode: 0o660, gid: 6 },
    { name: 'dev/pipe', type: 'fifo', mode: 0o644 },
    { name: 'modes/', type: 'directory' },
    { name: 'modes/suid', type: 'file', mode: 0o4755, content: Buffer.from('suid') },
    { name: 'modes/sgid', type: 'directory', mode: 0o2775 },
    { name: 'modes/sticky', type: 'directory', mode: 0o1777 },
    { name: 'data/', type: 'directory', xattrs: { 'user.dir': 'yes' } },
    { name: 'data/compressible.txt', type: 'file', content: Buffer.alloc(6 * MiB, 'all work and no play '), mtime: 1 },
    { name: 'data/small', type: 'file', content: Buffer.from('small') },
    { name: 'data/dangling', type: 'symlink', linkname: '../does/not/exist' },
    { name: 'old/', type: 'directory' },
    { name: 'old/keep', type: 'file', content: Buffer.from('kept') },
  ];
}

function layerTwo(): SpecEntry[] {
  return [
    { name: 'etc/', type: 'directory', mode: 0o755 },
    { name: 'etc/.wh.secret', type: 'file', mtime: 1700000123 },
    { name: 'etc/os-release', type: 'file', content: Buffer.from('ID=test\nVERSION=2\n') },
    { name: 'old/', type: 'directory' },
    { name: 'old/.wh..wh..opq', type: 'file' },
    { name: 'old/new', type: 'file', content: Buffer.from('new') },
    { name: '.wh.dev', type: 'file' },
  ];
}

describe('the store over FUSE', () => {
  let reg: Registry;
  let proxy: FaultProxy;
  let store: RunningStore;
  let image: TestImage;
  let esgzRef: string;
  let esgz: { layers: { digest: string; size: number; annotations: Record<string, string> }[] };
  let work: string;

  before(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.url);
    work = await mkdtemp(join(tmpdir(), 'estargz-e2e-'));
    image = await pushTestImage(reg.host, 'e2e/tree', 'gzip', { layers: [layerOne(), layerTwo()] });
    // Converted through the proxy's host, so the store reads through the proxy too.
    esgzRef = `${proxy.host}/e2e/tree:esgz`;
    const conv = await run(process.execPath, [CLI, 'image', 'convert', `${proxy.host}/e2e/tree:gzip`, esgzRef, '--chunk-size', String(2 * MiB), '--json']);
    assert.ok(JSON.parse(conv.stdout));
    esgz = await (await registryFetch(`${reg.url}/v2/e2e/tree/manifests/esgz`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json() as typeof esgz;
    store = await startStore([
      'background_fetch_idle_sec = 3600', // keep background fetch out of the request counts
      '[blob]', 'max_retries = 1', 'min_wait_msec = 5', 'max_wait_msec = 20',
    ].join('\n'));
  });
  after(async () => {
    const code = await store?.stop();
    assert.equal(code, 0, 'the store exits cleanly on SIGTERM');
    await proxy?.stop();
    await reg?.stop();
    await rm(work, { recursive: true, force: true });
  });

  test('root and store directories have real modes; unknown names and names that cannot be in the store are ENOENT', async () => {
    const st = await stat(store.mnt);
    assert.equal(st.mode & 0o7777, 0o555);
    const layer = store.layerDir(esgzRef, esgz.layers[0]!.digest);
    assert.equal((await stat(layer)).mode & 0o7777, 0o500);
    assert.deepEqual((await readdir(layer)).sort(), ['blob', 'diff', 'info']);
    await assert.rejects(stat(join(layer, 'nope')), { code: 'ENOENT' });
    await assert.rejects(stat(join(layer, 'use')), { code: 'ENOENT' });
    await assert.rejects(stat(join(store.mnt, 'not base64!')), { code: 'ENOENT' });
    await assert.rejects(stat(join(store.mnt, Buffer.from('Not/A Ref').toString('base64'))), { code: 'ENOENT' });
    await assert.rejects(stat(join(store.mnt, Buffer.from(esgzRef).toString('base64'), 'sha256:1234')), { code: 'ENOENT' });
    // Strict names: a reference with a trailing newline (or any control character or space) is not one.
    for (const bad of [`${esgzRef}\n`, ` ${esgzRef}`, `${esgzRef}\u0000`, `${esgzRef}\t`]) {
      await assert.rejects(stat(join(store.layerDir(bad, esgz.layers[0]!.digest), 'diff')), { code: 'ENOENT' }, JSON.stringify(bad));
    }
    // A store configured without ":ref" is asked for <mnt>/<digest>: not there, and said once in the log.
    await assert.rejects(stat(join(store.mnt, esgz.layers[0]!.digest)), { code: 'ENOENT' });
    await store.waitForLog(/must name the store with \\":ref\\"|must name the store with ":ref"/);
  });

  test('every write-like request anywhere in the tree answers EROFS', async () => {
    const refDir = join(store.mnt, Buffer.from(esgzRef).toString('base64'));
    const layer = store.layerDir(esgzRef, esgz.layers[0]!.digest);
    await stat(join(layer, 'diff'));
    const places = [store.mnt, refDir, layer, join(layer, 'diff'), join(layer, 'diff', 'etc')];
    for (const dir of places) {
      await assert.rejects(mkdir(join(dir, 'newdir')), { code: 'EROFS' }, `mkdir in ${dir}`);
      await assert.rejects(writeFile(join(dir, 'newfile'), 'x'), { code: 'EROFS' }, `create in ${dir}`);
      await assert.rejects(run('mknod', [join(dir, 'newfifo'), 'p']), (err: { stderr?: string }) => /Read-only file system/.test(err.stderr ?? ''), `mknod in ${dir}`);
      await assert.rejects(symlink('x', join(dir, 'newlink')), { code: 'EROFS' }, `symlink in ${dir}`);
    }
    await assert.rejects(rename(refDir, join(store.mnt, 'renamed')), { code: 'EROFS' }, 'rename of a reference directory');
    await assert.rejects(rename(layer, join(refDir, 'renamed')), { code: 'EROFS' }, 'rename of a layer directory');
    await assert.rejects(rename(join(layer, 'diff', 'etc', 'os-release'), join(layer, 'diff', 'etc', 'moved')), { code: 'EROFS' });
    await assert.rejects(chmod(join(layer, 'diff', 'etc', 'os-release'), 0o777), { code: 'EROFS' });
    await assert.rejects(chmod(layer, 0o777), { code: 'EROFS' });
    await assert.rejects(rmdir(refDir), { code: 'EROFS' }, 'rmdir of a reference directory');
    await assert.rejects(rmdir(join(layer, 'diff', 'etc')), { code: 'EROFS' });
    await assert.rejects(link(join(layer, 'diff', 'etc', 'os-release'), join(layer, 'diff', 'etc', 'hard')), { code: 'EROFS' });
  });

  test('diff equals tar -x of the same layer: content, type, mode, owner, mtime, links, devices, xattrs (overlay semantics applied)', async () => {
    for (const [i, layer] of esgz.layers.entries()) {
      const extracted = join(work, `layer${i}`);
      await run('mkdir', ['-p', extracted]);
      await writeFile(join(work, `layer${i}.tar`), image.layers[i]!.tar);
      await run('tar', ['--xattrs', '--xattrs-include=*', '--same-owner', '--numeric-owner', '-xpf', join(work, `layer${i}.tar`), '-C', extracted]);
      const expected = normalizeLinks(overlayView(await dumpTree(extracted)));
      const actual = normalizeLinks(await dumpTree(join(store.layerDir(esgzRef, layer.digest), 'diff')));
      assert.deepEqual(actual, expected, `layer ${i}`);
    }
  });

  test('info says what containers/storage needs; blob is the layer, and its sha256 is the layer digest', async () => {
    const layer = esgz.layers[1]!;
    const dir = store.layerDir(esgzRef, layer.digest);
    const config = await (await registryFetch(`${reg.url}/v2/e2e/tree/manifests/esgz`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json() as { config: { digest: string } };
    const cfg = await (await registryFetch(`${reg.url}/v2/e2e/tree/blobs/${config.config.digest}`)).json() as { rootfs: { diff_ids: string[] } };
    const infoText = await readFile(join(dir, 'info'), 'utf8');
    assert.ok(infoText.endsWith('}\n') && infoText.split('\n').length === 2);
    assert.deepEqual(JSON.parse(infoText), {
      'compressed-diff-digest': layer.digest,
      'compressed-size': layer.size,
      'diff-digest': cfg.rootfs.diff_ids[1],
      'diff-size': Number(layer.annotations['io.containers.estargz.uncompressed-size']),
      compression: 2,
    });
    assert.equal((await stat(join(dir, 'blob'))).size, layer.size);
    assert.equal(sha256Digest(await readFile(join(dir, 'blob'))), layer.digest);
    // The same layer through its TOC digest (podman ≥ 5.1).
    const toc = layer.annotations['containerd.io/snapshot/stargz/toc.digest']!;
    assert.deepEqual(JSON.parse(await readFile(join(store.layerDir(esgzRef, toc), 'info'), 'utf8')), {
      'toc-digest': toc,
      'diff-size': Number(layer.annotations['io.containers.estargz.uncompressed-size']),
      compression: 2,
      flags: { 'expected-layer-diffid': cfg.rootfs.diff_ids[1] },
    });
  });

  test('stat, readdir and readlink fetch no file data', async () => {
    const layer = esgz.layers[0]!;
    const dir = join(store.layerDir(esgzRef, layer.digest), 'diff');
    await stat(dir); // resolved (footer + TOC) before counting
    proxy.reset();
    await dumpTreeMetadata(dir);
    assert.equal(proxy.requests.filter((r) => r.path.includes('/blobs/')).length, 0);
  });

  test('writes are refused with EROFS; use answers ENOENT and rmdir releases with ENOENT', async () => {
    const dir = store.layerDir(esgzRef, esgz.layers[0]!.digest);
    await assert.rejects(writeFile(join(dir, 'diff', 'etc', 'new'), 'x'), { code: 'EROFS' });
    // Opening for writing is accepted by libfuse (the store answers no OPEN); the write itself is refused.
    const opened = await open(join(dir, 'diff', 'etc', 'os-release'), 'r+');
    try {
      await assert.rejects(opened.write('x', 0), { code: 'EROFS' });
    } finally {
      await opened.close();
    }
    await assert.rejects(open(join(dir, 'diff', 'etc', 'os-release'), 'w'), { code: 'EROFS' }); // O_TRUNC
    await assert.rejects(rm(join(dir, 'diff', 'etc', 'os-release')), { code: 'EROFS' });
    await assert.rejects(writeFile(join(dir, 'use'), ''), { code: 'ENOENT' });
    const refDir = join(store.mnt, Buffer.from(esgzRef).toString('base64'));
    assert.ok((await readdir(store.mnt)).includes(Buffer.from(esgzRef).toString('base64')), 'the root lists the reference');
    assert.ok((await readdir(refDir)).includes(esgz.layers[0]!.digest), 'the reference directory lists the resolved layer');
    await assert.rejects(rmdir(dir), { code: 'ENOENT' });
    // Released: no longer listed (the kernel's cached listing is not used), and it resolves again on the next lookup.
    assert.ok(!(await readdir(refDir)).includes(esgz.layers[0]!.digest), 'a released layer is not listed');
    assert.equal((await readFile(join(dir, 'diff', 'etc', 'os-release'), 'utf8')), 'ID=test\nVERSION=1\n');
    assert.ok((await readdir(refDir)).includes(esgz.layers[0]!.digest), 'resolved again, listed again');
  });

  test('a layer that is not eStargz is refused on lookup with EIO, quickly', async () => {
    const plain = store.layerDir(`${reg.host}/e2e/tree:gzip`, image.layers[0]!.digest);
    const started = Date.now();
    await assert.rejects(stat(join(plain, 'diff')), { code: 'EIO' });
    assert.ok(Date.now() - started < 5000);
    // A layer whose annotation claims a TOC but whose blob is plain gzip.
    const liar = await pushLyingImage(reg, image);
    await assert.rejects(stat(join(store.layerDir(liar.ref, liar.digest), 'diff')), { code: 'EIO' });
    await assert.rejects(stat(join(store.layerDir(esgzRef, `sha256:${'0'.repeat(64)}`), 'diff')), { code: 'EIO' });
    await store.waitForLog(/layer not resolved; containers\/storage falls back to a normal pull/);
  });

  test('a corrupted chunk fails the read of that file only, with EIO', async () => {
    const { meta, blob } = await loadFixture('corrupt-chunked-chunk');
    const ref = await pushFixtureImage(reg, 'e2e/corrupt', blob, meta.tocDigest, meta.diffID, meta.uncompressedSize);
    const diff = join(store.layerDir(ref.ref, ref.digest), 'diff');
    await assert.rejects(readFile(join(diff, 'big/random-10m.bin')), { code: 'EIO' });
    const good = (await loadFixture('chunked')).tree.find((e) => e.path === 'big/compressible-9m.txt')!;
    assert.equal(createHash('sha256').update(await readFile(join(diff, 'big/compressible-9m.txt'))).digest('hex'), good.sha256);
    await store.waitForLog(/failed verification/);
  });

  test('registry down: reads fail with EIO, and work again when it is back', async () => {
    // Content of its own, so that no chunk of it is cached yet.
    await pushTestImage(reg.host, 'e2e/down', 'gzip', { layers: [[{ name: 'data/', type: 'directory' }, { name: 'data/compressible.txt', type: 'file', content: randomBytes(6 * MiB, 99) }]] });
    const ref = `${proxy.host}/e2e/down:esgz`;
    const conv = JSON.parse((await run(process.execPath, [CLI, 'image', 'convert', `${proxy.host}/e2e/down:gzip`, ref, '--json'])).stdout) as { manifests: { layers: { digest: string }[] }[] };
    const file = join(store.layerDir(ref, conv.manifests[0]!.layers[0]!.digest), 'diff', 'data', 'compressible.txt');
    await stat(file);
    proxy.addFault({ path: '/blobs/', kind: 'status', status: 503, times: Infinity });
    await assert.rejects(readFile(file), { code: 'EIO' });
    proxy.clearFaults();
    assert.equal((await readFile(file)).length, 6 * MiB);
  });

  test('node ids are a function of the layer: another store process gives every file, directory and whiteout the same st_ino', async () => {
    const other = await startStore();
    try {
      const places = (mnt: string, digest: string): string[] => {
        const dir = join(mnt, Buffer.from(esgzRef).toString('base64'), digest);
        return [dir, join(dir, 'info'), join(dir, 'blob'), ...['', 'bin', 'bin/tool', 'bin/link-to-tool', 'bin/sh', 'etc/os-release', 'dev/null', 'etc/secret', 'old/new', 'dev'].map((p) => join(dir, 'diff', p))];
      };
      for (const layer of esgz.layers) {
        const here = await Promise.all(places(store.mnt, layer.digest).map(async (p) => (await lstat(p).catch(() => undefined))?.ino));
        const there = await Promise.all(places(other.mnt, layer.digest).map(async (p) => (await lstat(p).catch(() => undefined))?.ino));
        assert.ok(here.filter((i) => i !== undefined).length >= 8, `most places exist in layer ${layer.digest}`);
        assert.deepEqual(there, here, `st_ino through two processes, layer ${layer.digest}`);
        assert.ok(here.every((i) => i === undefined || (i > 0 && i < 2 ** 53)));
      }
      const tool = join(store.layerDir(esgzRef, esgz.layers[0]!.digest), 'diff', 'bin');
      assert.equal((await stat(join(tool, 'tool'))).ino, (await stat(join(tool, 'link-to-tool'))).ino, 'hardlinks share one');
    } finally {
      await other.stop();
    }
  });

  test('SIGTERM unmounts', async () => {
    const other = await startStore();
    assert.equal(await isMounted(other.mnt), true);
    const mnt = other.mnt;
    assert.equal(await other.stop(), 0);
    assert.equal(await isMounted(mnt), false);
  });

  test('a stale mount left by a killed store is cleaned at start; a live one is refused', async () => {
    const first = await startStore();
    const live = await run(process.execPath, [CLI, 'mount', '--root', join(work, 'r2'), first.mnt]).then(() => 'started', (e: { stderr: string }) => e.stderr);
    assert.match(live, /already mounted .* answering: another store is serving it/);
    // The keeper killed: its store process exits with it, and the connection ends with the last of them.
    const { pid } = await first.status();
    first.proc.kill('SIGKILL');
    await new Promise((r) => first.proc.once('exit', r));
    for (let i = 0; i < 200 && pid !== undefined && (() => { try { process.kill(pid, 0); return true; } catch { return false; } })(); i++) await new Promise((r) => setTimeout(r, 10));
    await assert.rejects(stat(join(first.mnt, 'x')), { code: 'ENOTCONN' });
    // A new store on the killed one's mountpoint cleans the stale mount and serves it.
    const again = spawn(process.execPath, [CLI, 'mount', '--root', join(work, 'r3'), first.mnt], { stdio: 'ignore' });
    for (let i = 0; i < 200 && !(await mountAnswers(first.mnt)); i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(await mountAnswers(first.mnt), true);
    again.kill('SIGTERM');
    await new Promise((r) => again.once('exit', r));
    assert.equal(await isMounted(first.mnt), false);
    await first.stop(); // already gone: this removes its temporary directory
  });
});


async function dumpTreeMetadata(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const p = join(dir, name);
    const st = await lstat(p);
    if (st.isDirectory()) await dumpTreeMetadata(p);
    if (st.isSymbolicLink()) await readlink(p);
  }
}

/** An image whose only layer carries a TOC digest annotation but is plain gzip. */
async function pushLyingImage(reg: Registry, image: TestImage): Promise<{ ref: string; digest: string }> {
  const layer = image.layers[0]!;
  await pushOneLayerImage(reg.url, 'e2e/liar', 'v1', { blob: layer.gz, diffID: layer.diffID, annotations: { 'containerd.io/snapshot/stargz/toc.digest': `sha256:${'a'.repeat(64)}` } });
  return { ref: `${reg.host}/e2e/liar:v1`, digest: layer.digest };
}

/** A one-layer image around a fixture blob. */
async function pushFixtureImage(reg: Registry, repo: string, blob: Buffer, tocDigest: string, diffID: string, usize: number): Promise<{ ref: string; digest: string }> {
  const digest = await pushBlob(reg.url, repo, blob);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diffID] } }));
  const configDigest = await pushBlob(reg.url, repo, config);
  await putManifest(reg.url, repo, 'v1', JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: blob.length, annotations: { 'containerd.io/snapshot/stargz/toc.digest': tocDigest, 'io.containers.estargz.uncompressed-size': String(usize) } }],
  }));
  return { ref: `${reg.host}/${repo}:v1`, digest };
}
