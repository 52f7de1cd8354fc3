import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { TOC_DIGEST_ANNOTATION } from '../../src/estargz/toc.js';
import { BufferSource } from '../../src/estargz/source.js';
import { MANIFEST_CHECKSUM_ANNOTATION } from '../../src/zstdchunked/annotations.js';
import { openZstdChunked } from '../../src/zstdchunked/open.js';
import { makeLayerTar, randomBytes, type SpecEntry } from '../../testkit/layer-tar.js';
import { pushBlob, putManifest, sha256Digest, startRegistry, type Registry } from '../../testkit/registry.js';
import { startStore, type RunningStore } from '../../testkit/store.js';
import { dumpTree, normalizeLinks, overlayView } from '../../testkit/tree-view.js';
import { FIXTURE_DIR } from '../zstdchunked/fixture.js';
import { writeZstdChunked } from '../../testkit/zstd-chunked-writer.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const MiB = 1 << 20;
const ZSTD_LAYER = 'application/vnd.oci.image.layer.v1.tar+zstd';

/** Every entry type, several chunks, zeros runs, xattrs, hardlinks, devices. */
function layerOne(): SpecEntry[] {
  return [
    { name: 'bin/', type: 'directory', mtime: 1600000000 },
    { name: 'bin/tool', type: 'file', mode: 0o755, content: randomBytes(3 * MiB + 17, 21) },
    { name: 'bin/link-to-tool', type: 'link', linkname: 'bin/tool' },
    { name: 'bin/sh', type: 'symlink', linkname: 'tool' },
    { name: 'etc/', type: 'directory', mode: 0o755 },
    { name: 'etc/os-release', type: 'file', content: Buffer.from('ID=zstd\nVERSION=1\n') },
    { name: 'etc/empty', type: 'file', content: Buffer.alloc(0) },
    { name: 'etc/secret', type: 'file', mode: 0o600, uid: 1000, gid: 1001, content: Buffer.from('s3cr3t') },
    { name: 'etc/attrs', type: 'file', content: Buffer.from('x'), xattrs: { 'user.one': 'first', 'user.two': 'second value' } },
    { name: 'dev/', type: 'directory' },
    { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
    { name: 'dev/loop7', type: 'block-device', devmajor: 7, devminor: 7, mode: 0o660, gid: 6 },
    { name: 'dev/pipe', type: 'fifo', mode: 0o644 },
    { name: 'modes/', type: 'directory' },
    { name: 'modes/suid', type: 'file', mode: 0o4755, content: Buffer.from('suid') },
    { name: 'modes/sticky', type: 'directory', mode: 0o1777 },
    { name: 'data/', type: 'directory', xattrs: { 'user.dir': 'yes' } },
    { name: 'data/holey', type: 'file', content: Buffer.concat([randomBytes(300_000, 22), Buffer.alloc(200_000), randomBytes(1000, 23)]) },
    { name: 'data/compressible.txt', type: 'file', content: Buffer.alloc(2 * MiB, 'all work and no play '), mtime: 1 },
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
    { name: 'etc/os-release', type: 'file', content: Buffer.from('ID=zstd\nVERSION=2\n') },
    { name: 'old/', type: 'directory' },
    { name: 'old/.wh..wh..opq', type: 'file' },
    { name: 'old/new', type: 'file', content: Buffer.from('new') },
    { name: '.wh.dev', type: 'file' },
  ];
}

interface ZLayer {
  blob: Buffer;
  digest: string;
  annotations: Record<string, string>;
  diffID: string;
  tarSize: number;
  mediaType?: string;
}

async function zLayer(entries: SpecEntry[], chunkSize = 256 << 10): Promise<ZLayer> {
  const tar = await makeLayerTar(entries);
  const { blob, annotations } = await writeZstdChunked(tar, { chunkSize });
  return { blob, digest: sha256Digest(blob), annotations, diffID: sha256Digest(tar), tarSize: tar.length };
}

/** Pushes an OCI image of the given zstd layers (blobs, config, manifest) with the test helpers' own client; returns its reference. */
async function pushZstdImage(reg: Registry, repo: string, tag: string, layers: ZLayer[]): Promise<string> {
  for (const l of layers) await pushBlob(reg.url, repo, l.blob);
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffID) },
  }));
  const configDigest = await pushBlob(reg.url, repo, config);
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType ?? ZSTD_LAYER, digest: l.digest, size: l.blob.length, annotations: l.annotations })),
  };
  await putManifest(reg.url, repo, tag, JSON.stringify(manifest), manifest.mediaType);
  return `${reg.host}/${repo}:${tag}`;
}

/** Pushes podman 5.4's image (test/fixtures/zstd-chunked/tiny-oci) byte for byte. */
async function pushFixture(reg: Registry, repo: string, tag: string): Promise<{ ref: string; layer: ZLayer }> {
  const blobs = new URL('tiny-oci/blobs/sha256/', FIXTURE_DIR);
  const index = JSON.parse(await readFile(new URL('tiny-oci/index.json', FIXTURE_DIR), 'utf8')) as { manifests: { digest: string }[] };
  const manifestBytes = await readFile(new URL(index.manifests[0]!.digest.slice(7), blobs));
  const manifest = JSON.parse(manifestBytes.toString()) as { mediaType: string; config: { digest: string }; layers: { digest: string; annotations: Record<string, string> }[] };
  const configBytes = await readFile(new URL(manifest.config.digest.slice(7), blobs));
  const blob = await readFile(new URL(manifest.layers[0]!.digest.slice(7), blobs));
  await pushBlob(reg.url, repo, configBytes);
  await pushBlob(reg.url, repo, blob);
  await putManifest(reg.url, repo, tag, manifestBytes, manifest.mediaType);
  const z = await openZstdChunked(new BufferSource(blob), manifest.layers[0]!.annotations);
  const diffID = (JSON.parse(configBytes.toString()) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids[0]!;
  return { ref: `${reg.host}/${repo}:${tag}`, layer: { blob, digest: manifest.layers[0]!.digest, annotations: manifest.layers[0]!.annotations, diffID, tarSize: z.tarSize } };
}

describe('zstd:chunked layers through the store', () => {
  let reg: Registry;
  let store: RunningStore;
  let work: string;
  let tiny: { ref: string; layer: ZLayer };
  let treeRef: string;
  let tree: ZLayer[];

  before(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), 'zstd-e2e-'));
    tiny = await pushFixture(reg, 'e2e/zstd', 'tiny');
    tree = [await zLayer(layerOne()), await zLayer(layerTwo())];
    treeRef = await pushZstdImage(reg, 'e2e/zstd', 'tree', tree);
    store = await startStore([
      'background_fetch_idle_sec = 1',
      'background_fetch_retry_sec = 1',
      '[blob]', 'max_retries = 1', 'min_wait_msec = 5', 'max_wait_msec = 20',
    ].join('\n'));
  });
  after(async () => {
    const code = await store?.stop();
    assert.equal(code, 0, 'the store exits cleanly on SIGTERM');
    await reg?.stop();
    await rm(work, { recursive: true, force: true });
  });

  async function extracted(name: string, blob: Buffer): Promise<string> {
    const file = join(work, `${name}.zst`);
    const dir = join(work, name);
    await writeFile(file, blob);
    await mkdir(dir, { recursive: true });
    await run('sh', ['-c', 'zstd -dc "$1" | tar --xattrs --xattrs-include=* --same-owner --numeric-owner -xpf - -C "$2"', 'sh', file, dir]);
    return dir;
  }

  async function status(): Promise<{ ref: string; digest: string; state: string; reason?: string }[]> {
    const { stdout } = await run(process.execPath, [CLI, 'status', '--root', store.root, '--json']);
    return (JSON.parse(stdout) as { layers: { ref: string; digest: string; state: string; reason?: string }[] }).layers;
  }

  test("podman 5.4's layer, looked up by its manifest checksum (as podman ≥ 5.1 does) and by its digest: diff is `zstd -dc blob | tar -x`", async () => {
    const expected = normalizeLinks(overlayView(await dumpTree(await extracted('tiny', tiny.layer.blob))));
    for (const key of [tiny.layer.annotations[MANIFEST_CHECKSUM_ANNOTATION]!, tiny.layer.digest]) {
      assert.deepEqual(normalizeLinks(await dumpTree(join(store.layerDir(tiny.ref, key), 'diff'))), expected, key);
    }
  });

  test('every entry type, hardlinks, xattrs, devices, whiteouts and an opaque directory: diff is `zstd -dc blob | tar -x` with overlay semantics', async () => {
    for (const [i, layer] of tree.entries()) {
      const expected = normalizeLinks(overlayView(await dumpTree(await extracted(`tree${i}`, layer.blob))));
      const actual = normalizeLinks(await dumpTree(join(store.layerDir(treeRef, layer.annotations[MANIFEST_CHECKSUM_ANNOTATION]!), 'diff')));
      assert.ok(expected.length >= (i === 0 ? 20 : 5), `layer ${i} has its entries`);
      assert.deepEqual(actual, expected, `layer ${i}`);
    }
  });

  test('info: compression 4 (zstd), the manifest checksum as toc-digest, the tar size from the tar-split; blob is the layer', async () => {
    for (const [ref, layer] of [[tiny.ref, tiny.layer], [treeRef, tree[0]!]] as const) {
      const checksum = layer.annotations[MANIFEST_CHECKSUM_ANNOTATION]!;
      const byToc = store.layerDir(ref, checksum);
      const text = await readFile(join(byToc, 'info'), 'utf8');
      assert.ok(text.endsWith('}\n') && text.split('\n').length === 2);
      assert.deepEqual(JSON.parse(text), {
        'toc-digest': checksum,
        'diff-size': layer.tarSize,
        compression: 4,
        flags: { 'expected-layer-diffid': layer.diffID },
      });
      assert.deepEqual(JSON.parse(await readFile(join(store.layerDir(ref, layer.digest), 'info'), 'utf8')), {
        'compressed-diff-digest': layer.digest,
        'compressed-size': layer.blob.length,
        'diff-digest': layer.diffID,
        'diff-size': layer.tarSize,
        compression: 4,
      });
      assert.equal((await stat(join(byToc, 'blob'))).size, layer.blob.length);
      const served = await readFile(join(byToc, 'blob'));
      assert.equal(sha256Digest(served), layer.digest);
      assert.ok(served.equals(layer.blob));
    }
  });

  test('a damaged chunk fails the read of that file only, with EIO; the daemon stays up', async () => {
    const good = await zLayer([
      { name: 'big/', type: 'directory' },
      { name: 'big/random', type: 'file', content: randomBytes(2 * MiB, 31) },
      { name: 'big/other', type: 'file', content: randomBytes(600_000, 32) },
      { name: 'small', type: 'file', content: Buffer.from('fine\n') },
    ], 128 << 10);
    const z = await openZstdChunked(new BufferSource(good.blob), good.annotations);
    const victim = z.index.byPath.get('big/random')!.chunks[3]!;
    const blob = Buffer.from(good.blob);
    for (let i = victim.blobOffset + 8; i < victim.blobEnd - 4; i += 97) blob[i]! ^= 0xff;
    const bad: ZLayer = { ...good, blob, digest: sha256Digest(blob) };
    const ref = await pushZstdImage(reg, 'e2e/zstd-damaged', 'v1', [bad]);
    const diff = join(store.layerDir(ref, bad.annotations[MANIFEST_CHECKSUM_ANNOTATION]!), 'diff');
    await assert.rejects(readFile(join(diff, 'big/random')), { code: 'EIO' });
    assert.equal(sha256Digest(await readFile(join(diff, 'big/other'))), sha256Digest(randomBytes(600_000, 32)));
    assert.equal(await readFile(join(diff, 'small'), 'utf8'), 'fine\n');
    await store.waitForLog(/big\/random.*failed verification|chunk failed verification on every attempt/);
    assert.equal(store.proc.exitCode, null, 'the daemon is alive');
  });

  test('a wrong manifest checksum, a layer claiming both formats, plain zstd: refused on lookup, quickly, with a log line naming layer and fault', async () => {
    const base = await zLayer([{ name: 'f', type: 'file', content: Buffer.from('f') }]);
    const wrongSum = `sha256:${'7'.repeat(64)}`;
    const wrong: ZLayer = { ...base, annotations: { ...base.annotations, [MANIFEST_CHECKSUM_ANNOTATION]: wrongSum } };
    const wrongRef = await pushZstdImage(reg, 'e2e/zstd-wrong', 'v1', [wrong]);
    for (const key of [wrongSum, wrong.digest]) {
      const started = Date.now();
      await assert.rejects(stat(join(store.layerDir(wrongRef, key), 'diff')), { code: 'EIO' }, key);
      assert.ok(Date.now() - started < 5000);
    }
    await store.waitForLog(new RegExp(`layer ${wrong.digest} of [^"]*zstd-wrong:v1 refused: zstd:chunked manifest: [^"]*${wrongSum.slice(7)}`));

    const both: ZLayer = { ...base, annotations: { ...base.annotations, [TOC_DIGEST_ANNOTATION]: `sha256:${'8'.repeat(64)}` } };
    const bothRef = await pushZstdImage(reg, 'e2e/zstd-both', 'v1', [both]);
    await assert.rejects(stat(join(store.layerDir(bothRef, both.annotations[MANIFEST_CHECKSUM_ANNOTATION]!), 'diff')), { code: 'EIO' });
    await store.waitForLog(/zstd-both:v1 refused: zstd:chunked annotations: the layer has both/);

    const plain: ZLayer = { ...base, annotations: {} };
    const plainRef = await pushZstdImage(reg, 'e2e/zstd-plain', 'v1', [plain]);
    await assert.rejects(stat(join(store.layerDir(plainRef, plain.digest), 'diff')), { code: 'EIO' });
    await store.waitForLog(/zstd-plain:v1 is a zstd layer without the io.github.containers.zstd-chunked.manifest-checksum annotation/);
    assert.equal(store.proc.exitCode, null, 'the daemon is alive');
  });

  test('background fetch completes: blob digest and the diff_id of the rebuilt tar verified (status says complete)', async () => {
    const wanted = [tiny.layer.annotations[MANIFEST_CHECKSUM_ANNOTATION]!, ...tree.map((l) => l.annotations[MANIFEST_CHECKSUM_ANNOTATION]!)];
    for (const [i, key] of wanted.entries()) await stat(join(store.layerDir(i === 0 ? tiny.ref : treeRef, key), 'diff'));
    const deadline = Date.now() + 60_000;
    let states: { digest: string; state: string; reason?: string }[] = [];
    while (Date.now() < deadline) {
      states = (await status()).filter((s) => wanted.includes(s.digest));
      if (states.length === wanted.length && states.every((s) => s.state === 'complete')) break;
      await sleep(200);
    }
    assert.deepEqual(states.map((s) => s.state), wanted.map(() => 'complete'), JSON.stringify(states));
    await store.waitForLog(/layer complete: blob digest and diffID verified/);
  });
});
