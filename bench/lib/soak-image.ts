/**
 * The soak's image: `layers` layers of generated files of mixed sizes (many
 * small ones, some of a few MiB, and large multi-chunk ones), half of them
 * compressible and half not, so decoding does real inflate work. Content is
 * a pure function of (layer, file) seeds: the reader process makes the same
 * bytes again to check every read without receiving hundreds of MB.
 */
import type { SpecEntry } from '../../testkit/layer-tar.js';
import { pushTestImage } from '../../testkit/images.js';
import { convertImage } from './e2e-images.js';
import { prng } from './files.js';
import { MiB } from './stats.js';

export interface SoakFile {
  /** Path inside the layer (`l1/d03/f0042.bin`). */
  path: string;
  size: number;
  /** Where its bytes sit in the layer's content buffer (8-aligned). */
  offset: number;
  seed: number;
  compressible: boolean;
}

export interface SoakLayerSpec {
  index: number;
  files: SoakFile[];
  /** Length of the layer's content buffer (files back to back, 8-aligned, plus padding). */
  contentBytes: number;
}

export interface SoakLayer extends SoakLayerSpec {
  /** eStargz layer digest (the store's `<digest>` directory). */
  digest: string;
  esgzBytes: number;
  fileBytes: number;
}

export interface SoakImage {
  /** eStargz image reference (the store's `<base64(ref)>` directory). */
  ref: string;
  layers: SoakLayer[];
  /** Seconds to generate, push and convert. */
  prepareSeconds: number;
}

const KiB = 1024;

/**
 * The files of layer `index` (1-based) for about `layerBytes` of content: 50%
 * in large files of 4.5–16 MiB (2–4 chunks of the converter's 4 MiB), 20% in
 * files of 256 KiB–4 MiB, 30% in small files of 256 B–256 KiB (log-uniform,
 * ~38 KiB on average).
 */
export function layerSpec(index: number, layerBytes: number): SoakLayerSpec {
  const rnd = prng(0x50a4 + index * 7919);
  const sizes: number[] = [];
  const fill = (budget: number, pick: () => number): void => {
    for (let used = 0; used < budget;) {
      const s = Math.min(pick(), Math.max(1, Math.floor(budget - used)));
      sizes.push(s);
      used += s;
    }
  };
  const uniform = (lo: number, hi: number) => () => Math.floor(lo + rnd() * (hi - lo));
  const logUniform = (lo: number, hi: number) => () => Math.floor(Math.exp(Math.log(lo) + rnd() * (Math.log(hi) - Math.log(lo))));
  fill(layerBytes * 0.5, uniform(4.5 * MiB, 16 * MiB));
  fill(layerBytes * 0.2, uniform(256 * KiB, 4 * MiB));
  fill(layerBytes * 0.3, logUniform(256, 256 * KiB));
  // Shuffled, so that large and small files share directories and blob neighbourhoods.
  for (let i = sizes.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [sizes[i], sizes[j]] = [sizes[j]!, sizes[i]!];
  }
  const dirs = Math.max(1, Math.min(16, Math.ceil(sizes.length / 48)));
  let offset = 0;
  const files = sizes.map((size, i): SoakFile => {
    const f = {
      path: `l${index}/d${String(i % dirs).padStart(2, '0')}/f${String(i).padStart(4, '0')}.bin`,
      size,
      offset,
      seed: (index * 1_000_003 + i * 7_919 + 1) >>> 0,
      compressible: i % 2 === 0,
    };
    offset += Math.ceil(size / 8) * 8;
    return f;
  });
  return { index, files, contentBytes: offset + 8 };
}

/**
 * Writes a file's bytes into `out` at `file.offset`: xorshift32 words, and for
 * compressible files every byte folded into 16 letters (gzip gets it to
 * about half). `out` must start 4-aligned (allocUnsafeSlow's do).
 */
export function fillFile(out: Buffer, file: SoakFile): void {
  const words = new Uint32Array(out.buffer, out.byteOffset + file.offset, Math.ceil(file.size / 4));
  let x = file.seed || 1;
  const fold = file.compressible;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    words[i] = fold ? ((x & 0x0f0f0f0f) | 0x40404040) >>> 0 : x;
  }
}

/** Every file's bytes of a layer, back to back at their offsets. */
export function layerContent(spec: SoakLayerSpec): Buffer {
  const buf = Buffer.allocUnsafeSlow(spec.contentBytes);
  for (const f of spec.files) fillFile(buf, f);
  return buf;
}

function layerTarSpec(spec: SoakLayerSpec, content: Buffer): SpecEntry[] {
  const entries: SpecEntry[] = [{ name: `l${spec.index}/`, type: 'directory' }];
  const dirs = new Set<string>();
  for (const f of spec.files) {
    const dir = f.path.slice(0, f.path.lastIndexOf('/') + 1);
    if (!dirs.has(dir)) {
      dirs.add(dir);
      entries.push({ name: dir, type: 'directory' });
    }
    entries.push({ name: f.path, type: 'file', mode: 0o644, content: content.subarray(f.offset, f.offset + f.size) });
  }
  return entries;
}

/**
 * Builds the layers, pushes them as a plain gzip image with the test
 * helpers' client, and converts it to eStargz with our `image convert` (as a
 * user would). Returns the eStargz reference and each layer's digest.
 */
export async function prepareSoakImage(host: string, layers: number, layerBytes: number, log: (s: string) => void): Promise<SoakImage> {
  const started = performance.now();
  const specs = Array.from({ length: layers }, (_, i) => layerSpec(i + 1, layerBytes));
  const tars: SpecEntry[][] = specs.map((s) => layerTarSpec(s, layerContent(s)));
  log(`pushing ${layers} gzip layers of ~${(layerBytes / MiB).toFixed(0)} MiB (${specs.map((s) => s.files.length).join(' + ')} files) …`);
  const repo = `soak/${layers}x${Math.round(layerBytes / MiB)}m`;
  const gz = await pushTestImage(host, repo, 'gzip', { layers: tars });
  log('converting to eStargz with image convert …');
  const conv = await convertImage(gz.ref, `${host}/${repo}:esgz`);
  const out: SoakLayer[] = specs.map((s, i) => ({
    ...s,
    digest: conv.layers[i]!.digest,
    esgzBytes: conv.layers[i]!.size,
    fileBytes: s.files.reduce((n, f) => n + f.size, 0),
  }));
  return { ref: `${host}/${repo}:esgz`, layers: out, prepareSeconds: (performance.now() - started) / 1000 };
}
