/**
 * A test layer (eStargz, built in memory) and a resolver that serves every
 * digest as that layer: what StoreFs needs without a registry. It counts
 * resolutions and releases, lists what is resolved (as the layer manager's
 * status does), and refuses the digests in `refuse` (ENOENT) while they are
 * there.
 */
import { Readable, Writable } from 'node:stream';
import { estargzContent } from '../../src/engine/layer.js';
import { openEstargz, type EstargzBlob } from '../../src/estargz/open.js';
import { BufferSource } from '../../src/estargz/source.js';
import { convertLayer } from '../../src/estargz/writer/convert.js';
import { FsAnswer } from '../../src/fs/errno.js';
import type { LayerKey } from '../../src/layers/key.js';
import type { LayerManager } from '../../src/layers/manager.js';
import { referenceText } from '../../src/layers/names.js';
import type { ResolvedLayer } from '../../src/layers/resolver.js';
import type { LayerStatus } from '../../src/layers/status.js';
import { makeLayerTar, type SpecEntry } from '../../testkit/layer-tar.js';

export async function layerBlob(spec: SpecEntry[]): Promise<{ blob: EstargzBlob; bytes: Buffer }> {
  const parts: Buffer[] = [];
  await convertLayer(Readable.from([await makeLayerTar(spec)]), new Writable({ write(c: Buffer, _e, cb) { parts.push(c); cb(); } }), {});
  const bytes = Buffer.concat(parts);
  return { blob: await openEstargz(new BufferSource(bytes)), bytes };
}

export type StubResolver = LayerManager & { resolutions: number; released: number; refuse: Set<string> };

/** `contents`: file path in the layer → its bytes (files not named read as zeros). */
export function stubResolver(blob: EstargzBlob, bytes: Buffer, contents: Record<string, string> = {}): StubResolver {
  const served = new Map<string, LayerStatus>();
  const stub = {
    resolutions: 0,
    released: 0,
    refuse: new Set<string>(),
    resolve: async ({ ref, digest }: LayerKey): Promise<ResolvedLayer> => {
      stub.resolutions++;
      if (stub.refuse.has(digest)) throw new FsAnswer(-2);
      served.set(`${referenceText(ref)} ${digest}`, { ref: referenceText(ref), digest, state: 'lazy', uses: 0 });
      const content = (node: { path: string; size: number }): Buffer => Buffer.from(contents[node.path] ?? Buffer.alloc(node.size));
      return {
        ref, refString: 'r', dirDigest: digest, keyedBy: 'layer', descriptor: { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: bytes.length },
        tocDigest: undefined, diffID: `sha256:${'d'.repeat(64)}`, uncompressedSize: 1000, format: 'estargz', content: estargzContent(blob), blobSize: bytes.length,
        layer: {
          // In two pieces when it can be, as the engine gives a read spanning two chunks.
          readFileParts: async (node: { path: string; size: number }, offset: number, length: number) => {
            const bytes = content(node).subarray(offset, Math.min(node.size, offset + length));
            return bytes.length > 1 ? [bytes.subarray(0, 1), bytes.subarray(1)] : bytes.length ? [bytes] : [];
          },
          readBlobParts: async (offset: number, length: number) => {
            const all = bytes.subarray(offset, offset + length);
            return all.length > 1 ? [all.subarray(0, 1), all.subarray(1)] : all.length ? [all] : [];
          },
        },
      } as unknown as ResolvedLayer;
    },
    status: () => [...served.values()],
    use: () => {},
    release: async ({ ref, digest }: LayerKey) => {
      stub.released++;
      served.delete(`${referenceText(ref)} ${digest}`);
      return true;
    },
  };
  return stub as unknown as StubResolver;
}
