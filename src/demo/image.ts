import { execFile as execFileCb } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, copyFile, mkdir, readdir, realpath, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import type { RegistryClient } from '../registry/client.js';
import { MediaType } from '../registry/media-types.js';
import { pushBlob, pushManifest } from '../registry/push.js';

const execFile = promisify(execFileCb);

/** Programs the demo image carries, with the shared libraries they need (found with ldd). */
const PROGRAMS = ['/bin/sh', '/bin/cat', '/bin/ls', '/usr/bin/wc', '/usr/bin/head'];
const DATA_BYTES = 24 << 20;

function sha256(b: Buffer): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

/** Shared objects a program loads, as absolute paths (the loader included). */
async function librariesOf(program: string): Promise<string[]> {
  const { stdout } = await execFile('ldd', [program]).catch(() => ({ stdout: '' }));
  const libs: string[] = [];
  for (const line of stdout.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]!);
  }
  return libs;
}

/** Copies `path` (following symlinks) to the same path under `root`. */
async function copyIn(root: string, path: string): Promise<void> {
  const target = join(root, path);
  await mkdir(dirname(target), { recursive: true });
  await copyFile(await realpath(path), target);
}

/** A plain tar of `dir` (sorted, owned by root), gzip-compressed. */
async function tarGz(dir: string): Promise<{ tar: Buffer; gz: Buffer }> {
  const names = (await readdir(dir)).sort();
  const { stdout } = await execFile('tar', ['--create', '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--format=gnu', '-C', dir, ...names],
    { encoding: 'buffer', maxBuffer: 256 << 20 });
  return { tar: stdout, gz: gzipSync(stdout) };
}

export interface DemoImage {
  ref: string;
  layers: { digest: string; size: number }[];
}

/**
 * Builds a small runnable image from this machine's files, no base image
 * needed: layer 1 holds /bin/sh and a few coreutils with their shared
 * libraries (found with ldd), layer 2 a greeting and 24 MiB of data that a
 * container run never reads (which is what lazy pulling saves). Pushes it to
 * `repo` on the registry `host` as a plain gzip image.
 */
export async function buildDemoImage(client: RegistryClient, host: string, repo: string, work: string): Promise<DemoImage> {
  const rootfs = join(work, 'rootfs');
  const data = join(work, 'data');
  const programs = [];
  for (const p of PROGRAMS) {
    // A program this machine lacks is left out; /bin/sh is the one the demo needs.
    if (await access(p).then(() => true, () => false)) programs.push(p);
  }
  if (!programs.includes('/bin/sh')) throw new Error('the demo image needs /bin/sh on this machine');
  const files = new Set<string>();
  for (const p of programs) {
    files.add(p);
    for (const lib of await librariesOf(p)) files.add(lib);
  }
  for (const f of files) await copyIn(rootfs, f);
  await mkdir(join(data, 'etc'), { recursive: true });
  await mkdir(join(data, 'data'), { recursive: true });
  await writeFile(join(data, 'etc', 'demo-hello'), 'hello from a lazily pulled eStargz image\n');
  // Deterministic and barely compressible, so the layer's size is close to the data's.
  const big = Buffer.alloc(DATA_BYTES);
  for (let i = 0, x = 2463534242; i < big.length; i += 4) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    big.writeUInt32LE(x >>> 0, i);
  }
  await writeFile(join(data, 'data', 'unread.bin'), big);

  const repoRef = { registry: host, repository: repo };
  const layers = [];
  const diffIDs = [];
  for (const dir of [rootfs, data]) {
    const { tar, gz } = await tarGz(dir);
    const digest = sha256(gz);
    await pushBlob(client, repoRef, digest, { bytes: gz });
    layers.push({ mediaType: MediaType.ociLayerGzip, digest, size: gz.length });
    diffIDs.push(sha256(tar));
  }
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  const config = Buffer.from(JSON.stringify({
    architecture: arch,
    os: 'linux',
    config: { Env: ['PATH=/bin:/usr/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: diffIDs },
  }));
  const configDigest = sha256(config);
  await pushBlob(client, repoRef, configDigest, { bytes: config });
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: configDigest, size: config.length },
    layers,
  }));
  await pushManifest(client, repoRef, 'gzip', manifest, MediaType.ociManifest);
  return { ref: `${host}/${repo}:gzip`, layers: layers.map(({ digest, size }) => ({ digest, size })) };
}
