import { access, readFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { makeLayerTar, type SpecEntry } from './layer-tar.js';
import { pushBlob, putManifest, sha256Digest, type Credentials } from './registry.js';

/** Pushed with the test helpers' own small client, so the client under test is not used to set up its input. */
export interface TestImage {
  ref: string;
  manifestDigest: string;
  manifestSize: number;
  layers: { tar: Buffer; gz: Buffer; digest: string; diffID: string }[];
}

const BUSYBOX = '/bin/busybox';

/** A runnable layer: busybox-static with a few applet links. */
export async function busyboxLayer(): Promise<SpecEntry[]> {
  try {
    await access(BUSYBOX);
  } catch {
    throw new Error(`${BUSYBOX} is missing: install the Debian package busybox-static (scripts/install-system-deps.sh)`);
  }
  const applets = ['sh', 'echo', 'cat', 'ls', 'sha256sum', 'wc', 'true'];
  return [
    { name: 'bin/', type: 'directory' },
    { name: 'bin/busybox', type: 'file', mode: 0o755, content: await readFile(BUSYBOX) },
    ...applets.map((a): SpecEntry => ({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox' })),
    { name: 'etc/', type: 'directory' },
    { name: 'etc/hello', type: 'file', content: Buffer.from('hello from the test image\n') },
  ];
}

export interface ImageSpec {
  layers: SpecEntry[][];
  /** Media types: Docker v2 schema 2 (default) or OCI. */
  oci?: boolean;
  architecture?: string;
}

/** Builds an image of plain gzip layers and pushes it under `host/repo:tag`. */
export async function pushTestImage(host: string, repo: string, tag: string, spec: ImageSpec, creds?: Credentials): Promise<TestImage> {
  const base = `http://${host}`;
  const layers = [];
  for (const entries of spec.layers) {
    const tar = await makeLayerTar(entries);
    const gz = gzipSync(tar);
    const digest = await pushBlob(base, repo, gz, creds);
    layers.push({ tar, gz, digest, diffID: sha256Digest(tar) });
  }
  const config = Buffer.from(JSON.stringify({
    architecture: spec.architecture ?? 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffID) },
    history: layers.map(() => ({ created_by: 'test' })),
  }));
  const configDigest = await pushBlob(base, repo, config, creds);
  const oci = spec.oci === true;
  const manifest = {
    schemaVersion: 2,
    mediaType: oci ? 'application/vnd.oci.image.manifest.v1+json' : 'application/vnd.docker.distribution.manifest.v2+json',
    config: { mediaType: oci ? 'application/vnd.oci.image.config.v1+json' : 'application/vnd.docker.container.image.v1+json', digest: configDigest, size: config.length },
    layers: layers.map((l) => ({ mediaType: oci ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: l.digest, size: l.gz.length })),
  };
  const bytes = JSON.stringify(manifest);
  const manifestDigest = await putManifest(base, repo, tag, bytes, manifest.mediaType, creds);
  return { ref: `${host}/${repo}:${tag}`, manifestDigest, manifestSize: Buffer.byteLength(bytes), layers };
}

/** Pushes an OCI index over already pushed manifests. */
export async function pushTestIndex(host: string, repo: string, tag: string, entries: { digest: string; size: number; architecture: string }[], creds?: Credentials): Promise<string> {
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: entries.map((e) => ({
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      digest: e.digest,
      size: e.size,
      platform: { os: 'linux', architecture: e.architecture },
    })),
  };
  return putManifest(`http://${host}`, repo, tag, JSON.stringify(index), index.mediaType, creds);
}
