import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  MANIFEST_CHECKSUM_ANNOTATION,
  MANIFEST_POSITION_ANNOTATION,
  TARSPLIT_POSITION_ANNOTATION,
} from '../../src/zstdchunked/annotations.js';
import { FOOTER_MAGIC, SKIPPABLE_MAGIC } from '../../src/zstdchunked/footer.js';
import type { ManifestJson } from '../../src/zstdchunked/manifest.js';
import type { ZstdFixture } from './fixture.js';

/** The fixture's frames (README): data frames end at 1048941. */
const PAYLOAD_END = 1048941;
const MANIFEST = { offset: 1048949, length: 2424 };
const TARSPLIT = { offset: 1051381, length: 792 };

export function zstdCompress(data: Buffer): Buffer {
  return execFileSync('zstd', ['-q', '-c', '-3'], { input: data, maxBuffer: 64 << 20 });
}

function skippable(data: Buffer): Buffer {
  const h = Buffer.alloc(8);
  SKIPPABLE_MAGIC.copy(h);
  h.writeUInt32LE(data.length, 4);
  return Buffer.concat([h, data]);
}

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
  const manifest = zstdCompress(json);
  const tarSplit = (opts.tarSplit ?? ((t) => t))(Buffer.from(fx.blob.subarray(TARSPLIT.offset, TARSPLIT.offset + TARSPLIT.length)));
  const tarSplitPlain = execFileSync('zstd', ['-q', '-d', '-c'], { input: fx.blob.subarray(TARSPLIT.offset, TARSPLIT.offset + TARSPLIT.length) });
  const manifestOffset = payload.length + 8;
  const tarSplitOffset = manifestOffset + manifest.length + 8;
  const declared = opts.declaredManifestLength ?? json.length;
  const footer = Buffer.alloc(64);
  const tsDeclared = opts.declaredTarSplitLength ?? tarSplitPlain.length;
  const values = [manifestOffset, manifest.length, declared, 1, tarSplitOffset, tarSplit.length, tsDeclared];
  values.forEach((v, i) => footer.writeBigUInt64LE(BigInt(v), i * 8));
  FOOTER_MAGIC.copy(footer, 56);
  const blob = Buffer.concat([payload, skippable(manifest), skippable(tarSplit), skippable(footer)]);
  return {
    blob,
    annotations: {
      [MANIFEST_CHECKSUM_ANNOTATION]: 'sha256:' + createHash('sha256').update(manifest).digest('hex'),
      [MANIFEST_POSITION_ANNOTATION]: `${manifestOffset}:${manifest.length}:${declared}:1`,
      [TARSPLIT_POSITION_ANNOTATION]: `${tarSplitOffset}:${tarSplit.length}:${tsDeclared}`,
    },
  };
}
