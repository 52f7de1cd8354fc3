// Steps the podman 5 end-to-end tests (test/e2e/podman5.test.ts) share, and
// the zstd:chunked flow.
//
// zstdChunkedFlow() is the whole zstd:chunked flow with its lazy-pull
// assertions.

import assert from 'node:assert/strict';
import { execFile as execFileCb } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { CHROOT, type Podman5, type StorageLayer } from './podman5.js';
import type { Registry } from './registry.js';
import type { RunningStore } from './store.js';

const execFile = promisify(execFileCb);

export const MANIFEST_ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';
export const TOC_ANNOTATION = 'containerd.io/snapshot/stargz/toc.digest';
export const ZSTD_CHUNKED_ANNOTATION = 'io.github.containers.zstd-chunked.manifest-checksum';

export interface ManifestLayer {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** What the flows need from the suite. */
export interface Podman5Suite {
  reg: Registry;
  store: RunningStore;
  podman: Podman5;
  /** The python test image as plain gzip layers (`host/repo:tag`). */
  gzipRef: string;
}

export interface BlobGet {
  digest: string;
  agent: string;
  status: number;
  bytes: number;
}

/** Blob GETs in Distribution's access log since line `from`: digest, user agent, status, bytes written. */
export async function blobGets(reg: Registry, from: number): Promise<BlobGet[]> {
  const out: BlobGet[] = [];
  for (const line of (await reg.logLines()).slice(from)) {
    if (!line.includes('response completed') || !/http\.request\.method=GET/.test(line)) continue;
    const uri = /http\.request\.uri="([^"]+)"/.exec(line)?.[1] ?? '';
    const digest = /\/blobs\/(sha256:[0-9a-f]{64})/.exec(uri)?.[1];
    if (!digest) continue;
    const agent = /http\.request\.useragent="([^"]*)"/.exec(line)?.[1] ?? /http\.request\.useragent=(\S+)/.exec(line)?.[1] ?? '';
    out.push({
      digest,
      agent,
      status: Number(/http\.response\.status=(\d+)/.exec(line)?.[1] ?? 0),
      bytes: Number(/http\.response\.written=(\d+)/.exec(line)?.[1] ?? 0),
    });
  }
  return out;
}

/**
 * GETs of the given layer blobs made by podman 5 itself (not by the store):
 * its User-Agent is `containers/<c/image version> (github.com/containers/image)`.
 */
export function podmanLayerGets(gets: BlobGet[], layers: ManifestLayer[], podman: Podman5): BlobGet[] {
  const digests = new Set(layers.map((l) => l.digest));
  return gets.filter((g) => digests.has(g.digest) && isPodman(g, podman));
}

function isPodman(g: BlobGet, podman: Podman5): boolean {
  return g.agent.split(' ')[0] === podman.chroot.userAgent;
}

/**
 * No layer blob GET by podman, and at least one blob GET by podman (the image
 * config, which podman always reads itself): the second part shows that the
 * first is not empty merely because podman's requests went unrecognised.
 */
export function assertNoPodmanLayerGets(gets: BlobGet[], layers: ManifestLayer[], podman: Podman5, what: string): void {
  assert.ok(gets.some((g) => isPodman(g, podman)), `no blob GET by ${podman.chroot.userAgent} in the registry log at all`);
  assert.deepEqual(podmanLayerGets(gets, layers, podman), [], `podman fetched ${what} layer blobs itself`);
}

export async function manifestLayers(reg: Registry, repo: string, tag: string, headers: Record<string, string> = {}): Promise<ManifestLayer[]> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: MANIFEST_ACCEPT, ...headers } });
  assert.equal(res.status, 200, `GET manifest ${repo}:${tag}`);
  return ((await res.json()) as { layers: ManifestLayer[] }).layers;
}

/** The store's JSON log lines since character `from`, parsed. */
export function storeLogSince(store: RunningStore, from: number): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of store.logs().slice(from).split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a line cut in the middle by the mark
    }
  }
  return out;
}

/**
 * The store's log since `from` once `done` holds for it, or after `ms`
 * (the caller's assertions then say what is missing). The store logs
 * asynchronously, so a line may arrive a moment after the podman command that
 * caused it has returned.
 */
export async function storeLogUntil(store: RunningStore, from: number, done: (lines: Record<string, unknown>[]) => boolean, ms = 5000): Promise<Record<string, unknown>[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const lines = storeLogSince(store, from);
    if (done(lines) || Date.now() > deadline) return lines;
    await sleep(20);
  }
}

/**
 * Every storage layer of `ref` is served by the store from the directory
 * `<store>/<base64 ref>/<key>`, and the keys are exactly `keys` (the TOC
 * digests for eStargz, the manifest checksums for zstd:chunked).
 */
export function assertServedByStore(layers: StorageLayer[], ref: string, keys: string[]): void {
  assert.equal(layers.length, keys.length, `${ref}: ${layers.length} storage layers, ${keys.length} manifest layers`);
  const prefix = `${CHROOT.store}/${Buffer.from(ref).toString('base64')}/`;
  for (const l of layers) {
    assert.ok(l.additionalLayer !== undefined, `layer ${l.id} of ${ref} is not served by the store (podman pulled it)`);
    assert.ok(l.additionalLayer.startsWith(prefix), `layer ${l.id}: store directory ${l.additionalLayer} is not under ${prefix}`);
  }
  assert.deepEqual(layers.map((l) => l.additionalLayer!.slice(prefix.length)).sort(), [...keys].sort());
}

/** `podman save`: the sha256 of every saved layer equals the image config's diff_ids. */
export async function assertSaveMatchesDiffIds(podman: Podman5, ref: string, name: string): Promise<void> {
  const inChroot = `/var/tmp/${name}.tar`;
  const tarball = podman.hostPath(inChroot);
  const dir = podman.hostPath(`/var/tmp/${name}`);
  try {
    await podman.run(['save', '--format', 'docker-archive', '-o', inChroot, ref]);
    await mkdir(dir, { recursive: true });
    await execFile('tar', ['-xf', tarball, '-C', dir]);
    const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as { Config: string; Layers: string[] }[];
    const config = JSON.parse(await readFile(join(dir, manifest[0]!.Config), 'utf8')) as { rootfs: { diff_ids: string[] } };
    const digests = await Promise.all(manifest[0]!.Layers.map(async (l) => 'sha256:' + createHash('sha256').update(await readFile(join(dir, l))).digest('hex')));
    assert.equal(digests.length, config.rootfs.diff_ids.length);
    assert.deepEqual(digests, config.rootfs.diff_ids);
  } finally {
    await rm(tarball, { force: true });
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * `podman push` of `src` to `repo:tag` of the same registry; then the source
 * is removed, and the pushed image pulls back and runs `cat /etc/hello`.
 */
export async function assertPushPullsBack(s: Podman5Suite, src: string, repo: string, tag: string, hello: string): Promise<void> {
  const pushed = `${s.reg.host}/${repo}:${tag}`;
  await s.podman.run(['push', '-q', src, `docker://${pushed}`]);
  const layers = await manifestLayers(s.reg, repo, tag);
  assert.ok(layers.length > 0);
  await s.podman.run(['rmi', '-f', src]);
  await s.podman.run(['pull', '-q', pushed]);
  const out = await s.podman.run(['run', '--rm', pushed, 'cat', '/etc/hello']);
  assert.equal(out.stdout, hello);
  await s.podman.run(['rmi', '-f', pushed]);
}

export const PYTHON_ONE_LINER = 'import json,email,http.client,sqlite3,sys; print("python", sys.version_info[0], json.dumps({"ok": True}))';
export const PYTHON_OUTPUT = 'python 3 {"ok": true}\n';
export const PYTHON_HELLO = 'hello from the python test image\n';

export interface ZstdObservations {
  /** Layer blob GETs podman made itself during the pull of the zstd:chunked image. */
  podmanLayerGets: BlobGet[];
  /** Storage layers of that image served by the store. */
  servedByStore: number;
  layers: number;
}

/**
 * podman 5 writes zstd:chunked itself: a normal pull of the gzip image, then
 * `podman push --compression-format zstd:chunked --force-compression` to
 * p5/zstd:python; every pushed layer carries the zstd:chunked manifest
 * checksum. Then, with no local image left, a pull through the store (c/image
 * looks each layer up as `<base64 ref>/<manifest checksum>/`), a run, a save
 * and a push of the pulled image. podman must fetch no layer blob and every
 * layer must be served by the store, keyed by manifest checksum.
 */
export async function zstdChunkedFlow(s: Podman5Suite): Promise<ZstdObservations> {
  const { reg, store, podman } = s;
  const zstdRef = `${reg.host}/p5/zstd:python`;
  await podman.run(['rmi', '-a', '-f']);
  await podman.run(['pull', '-q', s.gzipRef]);
  await podman.run(['push', '-q', '--compression-format', 'zstd:chunked', '--force-compression', s.gzipRef, `docker://${zstdRef}`], { timeoutMs: 300_000 });
  const layers = await manifestLayers(reg, 'p5/zstd', 'python');
  const checksums = layers.map((l) => l.annotations?.[ZSTD_CHUNKED_ANNOTATION]);
  assert.ok(checksums.every((c) => c?.startsWith('sha256:')), `a pushed layer has no ${ZSTD_CHUNKED_ANNOTATION}: ${JSON.stringify(layers)}`);
  assert.ok(layers.every((l) => l.mediaType.endsWith('+zstd')), `pushed media types: ${layers.map((l) => l.mediaType).join(', ')}`);
  await podman.run(['rmi', '-a', '-f']);

  const regMark = (await reg.logLines()).length;
  const storeMark = store.logs().length;
  await podman.run(['pull', '-q', zstdRef]);
  // podman asked the store about each layer by its manifest checksum
  const asked = (lines: Record<string, unknown>[]) => checksums.filter((c) => lines.some((l) => l['digest'] === c));
  const storeLog = await storeLogUntil(store, storeMark, (lines) => asked(lines).length === checksums.length);
  assert.deepEqual(asked(storeLog), checksums, 'the store was not asked about every layer by its manifest checksum');
  const allGets = await blobGets(reg, regMark);
  const gets = podmanLayerGets(allGets, layers, podman);
  const storage = await podman.imageLayers(zstdRef);
  const observed: ZstdObservations = { podmanLayerGets: gets, servedByStore: storage.filter((l) => l.additionalLayer !== undefined).length, layers: storage.length };
  assertNoPodmanLayerGets(allGets, layers, podman, 'zstd:chunked');
  assertServedByStore(storage, zstdRef, checksums as string[]);

  const py = await podman.run(['run', '--rm', zstdRef, 'python3', '-c', PYTHON_ONE_LINER]);
  assert.equal(py.stdout, PYTHON_OUTPUT);
  await assertSaveMatchesDiffIds(podman, zstdRef, 'zstd-save');
  await assertPushPullsBack(s, zstdRef, 'p5/zstd-pushed', 'python', PYTHON_HELLO);
  return observed;
}
