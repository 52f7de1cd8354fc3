import { ZstdChunkedError } from './errors.js';
import { tarSplitEntries, type TarSplitPosition } from './tar-split.js';

/**
 * A file's verified contents, in order, for the rebuild. `name` is the tar
 * entry's name as the tar-split gives it (the manifest's entry name).
 */
export type FileContents = (name: string, size: number) => AsyncIterable<Uint8Array>;

/**
 * Rebuilds the layer's uncompressed tar from the (validated) tar-split and
 * each file's contents, streaming: the whole-layer check hashes what this
 * yields against the diff_id. Memory holds one tar-split piece and whatever
 * one `contents` piece is.
 */
export async function* rebuildTar(compressed: Uint8Array, pos: TarSplitPosition, contents: FileContents): AsyncGenerator<Uint8Array> {
  for await (const entry of tarSplitEntries(compressed, pos)) {
    if (entry.type === 'segment') {
      if (entry.payload.length) yield entry.payload;
      continue;
    }
    if (entry.size === 0) continue;
    let got = 0;
    for await (const piece of contents(entry.name, entry.size)) {
      got += piece.length;
      if (got > entry.size) break;
      yield piece;
    }
    if (got !== entry.size) {
      throw new ZstdChunkedError('FILE_MISMATCH', `the contents of ${JSON.stringify(entry.name)} came back as ${got > entry.size ? 'more than' : got} bytes, the tar-split says ${entry.size}`,
        { part: 'blob', path: entry.name });
    }
  }
}
