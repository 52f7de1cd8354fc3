import { execFileSync } from 'node:child_process';
import type { ManifestJson } from '../../src/zstdchunked/manifest.js';
import { layerTail, zstdFrame } from '../../testkit/zstd-chunked-writer.js';
import type { ZstdFixture } from './fixture.js';

/** The fixture's frames (README): data frames end at 1048941. */
const PAYLOAD_END = 1048941;
const MANIFEST = { offset: 1048949, length: 2424 };
const TARSPLIT = { offset: 1051381, length: 792 };

export interface Remade {
  blob: Buffer;
  annotations: Record<string, string>;
}

export interface RemakeOptions {
  /** Changes the parsed manifest before it is written again. */
  manifest?: (m: ManifestJson) => void;
  /** Replaces the manifest JSON bytes (after `manifest`). */
  manifestJson?: (json: Buffer) => Buffer;
  /** Declared uncompressed manifest length (footer and annotation alike); default: the real one. */
  declaredManifestLength?: number;
  /** Declared uncompressed tar-split length (footer and annotation alike); default: the real one. */
  declaredTarSplitLength?: number;
  /** Changes the compressed tar-split bytes. */
  tarSplit?: (ts: Buffer) => Buffer;
  /** Changes the data frames. */
  payload?: (p: Buffer) => Buffer;
}

/**
 * Writes the fixture's layer again as c/storage would, from its data frames,
 * a (changed) manifest and tar-split: the frames at the end, the footer and
 * the annotations all consistent with each other, so that each test's fault
 * is the only one.
 */
export function remake(fx: ZstdFixture, opts: RemakeOptions = {}): Remade {
  const payload: Buffer = (opts.payload ?? ((p: Buffer): Buffer => p))(Buffer.from(fx.blob.subarray(0, PAYLOAD_END)));
  const original = Buffer.from(execFileSync('zstd', ['-q', '-d', '-c'], { input: fx.blob.subarray(MANIFEST.offset, MANIFEST.offset + MANIFEST.length) }));
  const parsed = JSON.parse(original.toString('utf8')) as ManifestJson;
  opts.manifest?.(parsed);
  let json: Buffer = opts.manifest ? Buffer.from(JSON.stringify(parsed)) : original;
  if (opts.manifestJson) json = opts.manifestJson(json);
  const manifest = zstdFrame(json);
  const tarSplit = (opts.tarSplit ?? ((t) => t))(Buffer.from(fx.blob.subarray(TARSPLIT.offset, TARSPLIT.offset + TARSPLIT.length)));
  const tarSplitPlain = execFileSync('zstd', ['-q', '-d', '-c'], { input: fx.blob.subarray(TARSPLIT.offset, TARSPLIT.offset + TARSPLIT.length) });
  const { tail, annotations } = layerTail(
    payload.length,
    { z: manifest, length: opts.declaredManifestLength ?? json.length },
    { z: tarSplit, length: opts.declaredTarSplitLength ?? tarSplitPlain.length },
  );
  return { blob: Buffer.concat([payload, tail]), annotations };
}
