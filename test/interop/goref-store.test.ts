// The Go reference store the benchmarks measure beside ours
// (bench/goref/src/gorefstore: our main around containerd/stargz-snapshotter's
// `store` package v0.12.0, Debian source package, built by bench/lib/goref.ts):
// it builds, mounts in front of a real Distribution registry, and serves an
// image our `image convert` made: diff/ files with the right bytes, blob with
// the layer's digest, info with the layer's facts; its registry traffic
// carries its own user agent; SIGTERM unmounts it.
//
// Needs `go`, golang-github-containerd-stargz-snapshotter-dev, docker-registry
// and FUSE (root). It fails (it does not skip) when they are missing.

import assert from 'node:assert/strict';
import { execFile as execFileCb } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { buildGoref, GOREF_USER_AGENT, gorefConfig, startGorefStore, type GorefStore } from '../../bench/lib/goref.js';
import { pushTestImage } from '../../testkit/images.js';
import { randomBytes, type SpecEntry } from '../../testkit/layer-tar.js';
import { registryFetch, sha256Digest, startRegistry, type Registry } from '../../testkit/registry.js';
import { isMounted } from '../../testkit/store.js';

const execFile = promisify(execFileCb);
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const MiB = 1 << 20;

const HELLO = Buffer.from('hello from the Go reference store test\n');
// Several 1 MiB chunks (converted with --chunk-size 1 MiB), so a read spans chunk boundaries.
const BIG = randomBytes(3 * MiB + 4321, 7);

function layerOne(): SpecEntry[] {
  return [
    { name: 'etc/', type: 'directory', mode: 0o755 },
    { name: 'etc/hello', type: 'file', mode: 0o644, content: HELLO },
    { name: 'usr/', type: 'directory', mode: 0o755 },
    { name: 'usr/lib/', type: 'directory', mode: 0o755 },
    { name: 'usr/lib/big.bin', type: 'file', mode: 0o644, content: BIG },
    { name: 'usr/lib/big.link', type: 'symlink', linkname: 'big.bin' },
  ];
}

function layerTwo(): SpecEntry[] {
  return [{ name: 'srv/', type: 'directory', mode: 0o755 }, { name: 'srv/data.txt', type: 'file', content: Buffer.from('second layer\n') }];
}

interface Manifest {
  config: { digest: string };
  layers: { digest: string; size: number; annotations?: Record<string, string> }[];
}

let work = '';
let reg: Registry;
let store: GorefStore;
let ref = '';
let manifest: Manifest;
let diffIDs: string[] = [];

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'goref-store-test-'));
  const built = await buildGoref(); // the benchmarks' cache: built once, reused by them and by later runs
  if ('error' in built) throw new Error(built.error);
  reg = await startRegistry();
  const gz = await pushTestImage(reg.host, 'goref/img', 'gzip', { layers: [layerOne(), layerTwo()] });
  ref = `${reg.host}/goref/img:esgz`;
  await execFile(process.execPath, [CLI, 'image', 'convert', gz.ref, ref, '--chunk-size', String(MiB), '--json']);
  const res = await registryFetch(`${reg.url}/v2/goref/img/manifests/esgz`, {
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' },
  });
  manifest = (await res.json()) as Manifest;
  // The converted image's config: eStargz diff IDs differ from the gzip ones (the TOC is part of the tar stream).
  const config = (await (await registryFetch(`${reg.url}/v2/goref/img/blobs/${manifest.config.digest}`)).json()) as { rootfs: { diff_ids: string[] } };
  diffIDs = config.rootfs.diff_ids;
  store = await startGorefStore({ bin: built.path, config: gorefConfig([reg.host]), logLevel: 'debug' });
});

after(async () => {
  await store?.stop();
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

test('the converted image carries what the Go store needs: a TOC digest annotation on every layer', () => {
  assert.equal(manifest.layers.length, 2);
  for (const l of manifest.layers) assert.match(l.annotations?.['containerd.io/snapshot/stargz/toc.digest'] ?? '', /^sha256:[0-9a-f]{64}$/);
});

test('diff/ serves the files with the right bytes, through a symlink too', async () => {
  const l1 = store.layerDir(ref, manifest.layers[0]!.digest);
  assert.deepEqual(await readFile(join(l1, 'diff', 'etc', 'hello')), HELLO);
  const big = await readFile(join(l1, 'diff', 'usr', 'lib', 'big.bin'));
  assert.equal(big.length, BIG.length);
  assert.equal(sha256Digest(big), sha256Digest(BIG));
  assert.deepEqual(await readFile(join(l1, 'diff', 'usr', 'lib', 'big.link')), big);
  assert.deepEqual((await readdir(join(l1, 'diff', 'usr', 'lib'))).sort(), ['big.bin', 'big.link']);
  const l2 = store.layerDir(ref, manifest.layers[1]!.digest);
  assert.equal(await readFile(join(l2, 'diff', 'srv', 'data.txt'), 'utf8'), 'second layer\n');
});

test('blob is the compressed layer (its sha256 is the layer digest) and info names the layer', async () => {
  const l = manifest.layers[0]!;
  const dir = store.layerDir(ref, l.digest);
  assert.equal((await stat(join(dir, 'blob'))).size, l.size);
  const blob = await readFile(join(dir, 'blob'));
  assert.equal(`sha256:${createHash('sha256').update(blob).digest('hex')}`, l.digest);
  const info = JSON.parse(await readFile(join(dir, 'info'), 'utf8')) as Record<string, unknown>;
  assert.equal(info['compressed-diff-digest'], l.digest);
  assert.equal(info['compressed-size'], l.size);
  assert.equal(info['diff-digest'], diffIDs[0]);
});

test('its registry requests carry its own user agent (the benchmarks count its traffic by it)', async () => {
  const lines = (await reg.logLines()).filter((x) => x.includes('response completed') && x.includes('/v2/goref/img/'));
  const byGo = lines.filter((x) => x.includes(`useragent=${GOREF_USER_AGENT}`) || x.includes(`useragent="${GOREF_USER_AGENT}`));
  assert.ok(byGo.some((x) => x.includes(manifest.layers[0]!.digest)), 'the Go store fetched layer 1 ranges under its user agent');
});

test('SIGTERM unmounts it and it exits 0', async () => {
  const mnt = store.mnt;
  assert.equal(await isMounted(mnt), true);
  assert.equal(await store.stop(), 0);
  assert.equal(await isMounted(mnt), false);
});
