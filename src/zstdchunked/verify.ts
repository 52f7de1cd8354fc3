import { createHash } from 'node:crypto';
import { cleanEntryName } from '../estargz/toc.js';
import type { RangedSource } from '../estargz/source.js';
import { ZstdChunkedError } from './errors.js';
import { readZstdFileChunks } from './file-chunks.js';
import { openZstdChunked, type ZstdOpenOptions } from './open.js';
import { rebuildTar } from './tar-rebuild.js';

export interface ZstdVerifySummary {
  tocDigest: string;
  diffID: string;
  files: number;
  chunks: number;
  /** Length of the rebuilt layer tar. */
  tarBytes: number;
}

/**
 * Checks a whole zstd:chunked layer the way the store serves it: open (the
 * trust chain up to the tar-split), every chunk of every file decoded and
 * verified, and the layer tar rebuilt from the tar-split and those verified
 * contents hashing to `diffID` (when given). The tree podman sees and the tar
 * it would export are then the same bytes the image's config names.
 */
export async function verifyZstdChunkedBlob(source: RangedSource, annotations: Readonly<Record<string, string>> | undefined, opts: ZstdOpenOptions & { diffID?: string } = {}): Promise<ZstdVerifySummary> {
  const blob = await openZstdChunked(source, annotations, opts);
  const hash = createHash('sha256');
  let files = 0;
  let chunks = 0;
  let tarBytes = 0;
  const contents = async function* (name: string): AsyncGenerator<Buffer> {
    const path = cleanEntryName(name);
    const node = blob.index.byPath.get(path);
    if (!node || node.type !== 'reg') {
      throw new ZstdChunkedError('INVALID_TARSPLIT', `the tar-split has contents for ${JSON.stringify(name)}, which the manifest does not list as a regular file`, { part: 'tar-split', path });
    }
    files++;
    for await (const { bytes } of readZstdFileChunks(source, node, path)) {
      chunks++;
      yield bytes;
    }
  };
  for await (const piece of rebuildTar(blob.tarSplit, blob.tarSplitPosition, contents)) {
    hash.update(piece);
    tarBytes += piece.length;
  }
  const diffID = 'sha256:' + hash.digest('hex');
  if (opts.diffID !== undefined && opts.diffID !== diffID) {
    throw new ZstdChunkedError('DIGEST_MISMATCH', `the rebuilt layer tar's sha256 is ${diffID}, the diff_id is ${opts.diffID}`, { part: 'blob', expected: opts.diffID, actual: diffID });
  }
  return { tocDigest: blob.tocDigest, diffID, files, chunks, tarBytes };
}
