/**
 * Benchmark images for the end-to-end, WAN and podman benchmarks: built
 * from this machine's files, pushed as plain gzip to a local registry with
 * the test helpers' own small client, then converted to eStargz with our
 * `image convert` CLI (as a user would).
 *
 *  - `python`: the test image of testkit/python-image.ts (layer 1:
 *    busybox and the shared libraries python needs; layer 2: python3.11 and
 *    its standard library).
 *  - `bookworm-like`: a bigger image shaped like the published reference
 *    image (Debian bookworm minbase + python3): layer 1 is ~120 MB and
 *    ~6,000 entries of /etc and /usr (binaries, libraries, docs, zoneinfo,
 *    perl, locales), layer 2 is the same python layer as above.
 *  - `python-zstd`: the python image's two layer tars again, written as
 *    zstd:chunked (testkit/zstd-chunked-writer.ts, laid out as podman 5's
 *    `push --compression-format zstd:chunked` writes them) and pushed as an
 *    OCI image with podman's layer annotations; the store looks its layers
 *    up by manifest checksum, as podman ≥ 5.1 does.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import tar from 'tar-stream';
import { makeLayerTar } from '../../testkit/layer-tar.js';
import { pythonImageLayers } from '../../testkit/python-image.js';
import { pushBlob, putManifest } from '../../testkit/registry.js';
import { writeZstdChunked, ZSTD_LAYER_MEDIA_TYPE } from '../../testkit/zstd-chunked-writer.js';
import { ensureLayerInput } from './layer-input.js';
import { MiB } from './stats.js';

const run = promisify(execFile);
const gzip = promisify(gzipCb);
export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export type ImageName = 'python' | 'bookworm-like' | 'python-zstd';
export const IMAGE_NAMES: readonly ImageName[] = ['python', 'bookworm-like', 'python-zstd'];

/** How an image's layers are served lazily. */
export type LazyFormat = 'estargz' | 'zstd:chunked';

/** What a layer holds, from its tar. */
export interface LayerFacts {
  /** 1-based, as in the tables. */
  index: number;
  tarBytes: number;
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  /** Sum of regular-file sizes (hardlinks counted once). */
  fileBytes: number;
  largest: { path: string; size: number };
  /** Regular files, relative paths. */
  filePaths: string[];
  /** The plain gzip layer (what a normal pull fetches). */
  gz: { digest: string; size: number };
  /** The eStargz layer our converter produced (eStargz images only). */
  esgz?: { digest: string; size: number };
  /** The zstd:chunked layer (zstd:chunked images only): its manifest checksum is the store's lookup key. */
  zstd?: { digest: string; size: number; manifestChecksum: string; frames: number };
  /**
   * The blob the store serves lazily (the eStargz or the zstd:chunked one),
   * and `key`: the digest the store is asked for it by (`<ref>/<key>/`):
   * the layer digest for eStargz, the manifest checksum for zstd:chunked.
   * Absent in results from before zstd:chunked was measured (read them with lazyOf).
   */
  lazy: { format: LazyFormat; digest: string; size: number; key: string };
  diffID: string;
}

/** A layer's lazily served blob, also for results written before `lazy` existed (eStargz then). */
export function lazyOf(l: Omit<LayerFacts, 'lazy'> & { lazy?: LayerFacts['lazy'] }): LayerFacts['lazy'] {
  if (l.lazy) return l.lazy;
  return { format: 'estargz', digest: l.esgz!.digest, size: l.esgz!.size, key: l.esgz!.digest };
}

/**
 * The blob a full pull of the layer fetches, and the command that
 * decompresses it: the gzip layer for the eStargz images (what podman pulls
 * without the store), the zstd:chunked blob itself for the zstd image.
 */
export function fullPullBlob(img: BenchImage, l: LayerFacts): { digest: string; size: number; decompress: 'gunzip' | 'zstd -dc' } {
  return img.format === 'zstd:chunked' ? { digest: l.zstd!.digest, size: l.zstd!.size, decompress: 'zstd -dc' } : { digest: l.gz.digest, size: l.gz.size, decompress: 'gunzip' };
}

export interface BenchImage {
  name: ImageName;
  /** Repository on the registry. */
  repo: string;
  description: string;
  layers: LayerFacts[];
  /** The tars themselves, for baselines (extracted trees). */
  tars: Buffer[];
  /** Seconds `image convert` took (eStargz), or writing the zstd:chunked layers took. */
  convertSeconds: number;
  /** How the store serves the layers (absent in older results: eStargz). */
  format?: LazyFormat;
  /** The tag of the lazily served image on the registry: `esgz` or `zstd`. */
  lazyTag?: string;
}

export function gzipRef(host: string, img: BenchImage): string {
  return `${host}/${img.repo}:gzip`;
}

export function esgzRef(host: string, img: BenchImage, tag = 'esgz'): string {
  return `${host}/${img.repo}:${tag}`;
}

/** The reference the store resolves the image's lazily served layers under. */
export function lazyRef(host: string, img: BenchImage): string {
  return `${host}/${img.repo}:${img.lazyTag ?? 'esgz'}`;
}

/** A minbase-like layer: Debian bookworm's is ~117 MB and ~6,600 entries, mostly binaries, libraries and /usr/share data. */
const BOOKWORM_BASE = {
  name: 'e2e-bookworm-base',
  roots: [
    { dir: '/etc', budgetBytes: 4 * MiB },
    { dir: '/usr/bin', budgetBytes: 25 * MiB },
    { dir: '/usr/sbin', budgetBytes: 6 * MiB },
    { dir: '/usr/lib/x86_64-linux-gnu', budgetBytes: 55 * MiB },
    { dir: '/usr/share/doc', budgetBytes: 10 * MiB, maxFileBytes: 256 << 10 },
    { dir: '/usr/share/zoneinfo', budgetBytes: 5 * MiB },
    { dir: '/usr/share/perl', budgetBytes: 12 * MiB },
    { dir: '/usr/share/locale', budgetBytes: 6 * MiB },
    { dir: '/usr/share/i18n', budgetBytes: 8 * MiB },
  ],
};

async function listTar(buf: Buffer): Promise<Omit<LayerFacts, 'index' | 'gz' | 'esgz' | 'zstd' | 'lazy' | 'diffID'>> {
  const facts = { tarBytes: buf.length, entries: 0, files: 0, dirs: 0, symlinks: 0, fileBytes: 0, largest: { path: '', size: -1 }, filePaths: [] as string[] };
  const ex = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('finish', resolve);
    ex.on('error', reject);
  });
  ex.on('entry', (h, stream, next) => {
    const name = h.name.replace(/^\.?\/+/, '').replace(/\/+$/, '');
    if (name !== '' && name !== '.') {
      facts.entries++;
      if (h.type === 'file' || h.type === 'contiguous-file') {
        facts.files++;
        facts.fileBytes += h.size ?? 0;
        facts.filePaths.push(name);
        if ((h.size ?? 0) > facts.largest.size) facts.largest = { path: name, size: h.size ?? 0 };
      } else if (h.type === 'directory') facts.dirs++;
      else if (h.type === 'symlink') facts.symlinks++;
    }
    stream.on('end', () => next());
    stream.resume();
  });
  ex.end(buf);
  await done;
  return facts;
}

function sha256(b: Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

/** A layer blob as it goes into a manifest. */
interface PushLayer {
  blob: Buffer;
  mediaType: string;
  annotations?: Record<string, string>;
}

/** The two manifest flavours the benchmark images are pushed as. */
const MANIFEST_KINDS = {
  docker: { manifest: 'application/vnd.docker.distribution.manifest.v2+json', config: 'application/vnd.docker.container.image.v1+json' },
  oci: { manifest: 'application/vnd.oci.image.manifest.v1+json', config: 'application/vnd.oci.image.config.v1+json' },
} as const;

/** Pushes the layer blobs (each distinct one once), a config whose diff_ids are the tars', and the manifest as `tag`. */
async function pushImage(host: string, repo: string, tag: string, kind: keyof typeof MANIFEST_KINDS, tars: Buffer[], layers: PushLayer[]): Promise<void> {
  const base = `http://${host}`;
  const types = MANIFEST_KINDS[kind];
  const digests = layers.map((l) => sha256(l.blob));
  const pushed = new Set<string>();
  for (const [i, l] of layers.entries()) {
    if (pushed.has(digests[i]!)) continue;
    await pushBlob(base, repo, l.blob);
    pushed.add(digests[i]!);
  }
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/usr/local/bin:/usr/bin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: tars.map(sha256) },
    history: tars.map(() => ({ created_by: 'estargz-store bench' })),
  }));
  const configDigest = await pushBlob(base, repo, config);
  const manifest = {
    schemaVersion: 2,
    mediaType: types.manifest,
    config: { mediaType: types.config, digest: configDigest, size: config.length },
    layers: layers.map((l, i) => ({ mediaType: l.mediaType, digest: digests[i]!, size: l.blob.length, ...(l.annotations ? { annotations: l.annotations } : {}) })),
  };
  await putManifest(base, repo, tag, JSON.stringify(manifest), manifest.mediaType);
}

/** `image convert SRC DST --json`: the converted layers' digests and sizes. */
export async function convertImage(src: string, dst: string, prioritized: string[] = [], chunkSize?: number): Promise<{ layers: { digest: string; size: number }[]; seconds: number }> {
  const started = performance.now();
  const args = [CLI, 'image', 'convert', src, dst, '--json', ...(prioritized.length ? ['--prioritized-files', prioritized.join(',')] : []), ...(chunkSize ? ['--chunk-size', String(chunkSize)] : [])];
  const { stdout } = await run(process.execPath, args, { maxBuffer: 64 << 20, env: { ...process.env, ESTARGZ_LOG_LEVEL: 'warn' } });
  const seconds = (performance.now() - started) / 1000;
  const result = JSON.parse(stdout) as { manifests: { layers: { digest: string; size: number }[] }[] };
  return { layers: result.manifests[0]!.layers.map((l) => ({ digest: l.digest, size: l.size })), seconds };
}

export interface PrepareOptions {
  /** image convert --chunk-size (eStargz). */
  chunkSize?: number;
  /** Chunk size of the zstd:chunked writer (default 64 KiB, about c/storage's average). */
  zstdChunkSize?: number;
}

/**
 * Builds, pushes and converts the images on the registry at `host`: the
 * eStargz ones as gzip (tag `gzip`) converted with `image convert` (tag
 * `esgz`); the zstd:chunked one written by the benchmark's writer (tag `zstd`).
 */
export async function prepareImages(host: string, names: readonly ImageName[], log: (s: string) => void, opts: PrepareOptions = {}): Promise<BenchImage[]> {
  log('building the python image layers from this machine\'s python3.11 …');
  const pySpec = await pythonImageLayers();
  const pyTars = [await makeLayerTar(pySpec[0]!), await makeLayerTar(pySpec[1]!)];
  const gzCache = new Map<Buffer, Buffer>();
  const gz = async (b: Buffer): Promise<Buffer> => {
    let g = gzCache.get(b);
    if (!g) {
      g = await gzip(b);
      gzCache.set(b, g);
    }
    return g;
  };
  const out: BenchImage[] = [];
  for (const name of names) {
    let tars: Buffer[];
    let description: string;
    if (name === 'python') {
      tars = pyTars;
      description = 'test image (testkit/python-image.ts): layer 1 busybox + shared libraries, layer 2 python3.11 + stdlib';
    } else if (name === 'python-zstd') {
      tars = pyTars;
      description = `the python image's layers as zstd:chunked (testkit/zstd-chunked-writer.ts: podman 5's layout, zstd -3, ${((opts.zstdChunkSize ?? 64 << 10) >> 10)} KiB chunks), looked up by manifest checksum`;
    } else {
      log('building the bookworm-like base layer from /etc and /usr (cached in $TMPDIR/estargz-bench) …');
      const input = await ensureLayerInput(BOOKWORM_BASE);
      tars = [await readFile(input.path), pyTars[1]!];
      description = 'layer 1 ~120 MB of /etc and /usr (minbase-like), layer 2 the python layer';
    }
    const gzs = await Promise.all(tars.map(gz));
    const repo = `bench/${name}`;
    const layers: LayerFacts[] = [];
    if (name === 'python-zstd') {
      log(`writing ${name} (zstd:chunked) …`);
      const started = performance.now();
      const zs = [];
      for (const t of tars) zs.push(await writeZstdChunked(t, { readBack: true, ...(opts.zstdChunkSize ? { chunkSize: opts.zstdChunkSize } : {}) }));
      const seconds = (performance.now() - started) / 1000;
      log(`pushing ${name} (zstd:chunked, ${zs.map((z) => (z.blob.length / MiB).toFixed(1)).join(' + ')} MiB, ${zs.map((z) => z.frames).join(' + ')} frames) …`);
      await pushImage(host, repo, 'zstd', 'oci', tars, zs.map((z) => ({ blob: z.blob, mediaType: ZSTD_LAYER_MEDIA_TYPE, annotations: z.annotations })));
      for (const [i, t] of tars.entries()) {
        const z = zs[i]!;
        layers.push({
          index: i + 1,
          ...(await listTar(t)),
          gz: { digest: sha256(gzs[i]!), size: gzs[i]!.length },
          zstd: { digest: z.digest, size: z.blob.length, manifestChecksum: z.manifestChecksum, frames: z.frames },
          lazy: { format: 'zstd:chunked', digest: z.digest, size: z.blob.length, key: z.manifestChecksum },
          diffID: sha256(t),
        });
      }
      out.push({ name, repo, description, layers, tars, convertSeconds: seconds, format: 'zstd:chunked', lazyTag: 'zstd' });
      continue;
    }
    log(`pushing ${name} (gzip, ${gzs.map((g) => (g.length / MiB).toFixed(1)).join(' + ')} MiB) …`);
    await pushImage(host, repo, 'gzip', 'docker', tars, gzs.map((blob) => ({ blob, mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip' })));
    log(`converting ${name} to eStargz with image convert …`);
    const conv = await convertImage(`${host}/${repo}:gzip`, `${host}/${repo}:esgz`, [], opts.chunkSize);
    for (const [i, t] of tars.entries()) {
      const facts = await listTar(t);
      const esgz = conv.layers[i]!;
      layers.push({
        index: i + 1,
        ...facts,
        gz: { digest: sha256(gzs[i]!), size: gzs[i]!.length },
        esgz,
        lazy: { format: 'estargz', digest: esgz.digest, size: esgz.size, key: esgz.digest },
        diffID: sha256(t),
      });
    }
    out.push({ name, repo, description, layers, tars, convertSeconds: conv.seconds, format: 'estargz', lazyTag: 'esgz' });
  }
  return out;
}

/** A small regular file of layer `l` for W1: etc/os-release, else etc/hello, else etc/debian_version, else the smallest file under etc/. */
export function smallFileOf(l: LayerFacts, sizes?: Map<string, number>): string {
  for (const p of ['etc/os-release', 'etc/hello', 'etc/debian_version', 'etc/hostname']) if (l.filePaths.includes(p)) return p;
  const etc = l.filePaths.filter((p) => p.startsWith('etc/'));
  if (sizes) etc.sort((a, b) => (sizes.get(a) ?? 0) - (sizes.get(b) ?? 0));
  return etc[0] ?? l.filePaths[0]!;
}
