import { DIGEST_PATTERN, type TocEntryJson } from '../toc.js';
import { checkCount, checkString } from './fields.js';
import { invalid, invalidEntry } from './invalid.js';
import type { TocLimits } from './limits.js';
import type { Chunk, LayerNode } from './types.js';

interface OpenFile {
  node: LayerNode;
  path: string;
  /** Bytes of the file the chunks so far cover, from 0. */
  covered: number;
}

/**
 * Attaches chunks to regular files. A file's first chunk is on its own entry,
 * the rest on the "chunk" entries that follow it; together they must tile
 * [0, size) in order, without gap or overlap, each inside the blob's payload,
 * at most maxChunkBytes, and with a chunk digest. Also collects every chunk
 * with its file's path in TOC order, for the member-end pass (plain arrays:
 * hashing a key per chunk was a quarter of the index build of a large TOC).
 */
export class ChunkTiler {
  readonly chunks: Chunk[] = [];
  /** The path of each chunk in `chunks`, at the same index. */
  readonly paths: string[] = [];
  private open: OpenFile | null = null;

  constructor(private readonly tocOffset: number, private readonly limits: TocLimits) {}

  /** Starts a regular file whose attributes are set: its own entry holds the first chunk, if it has bytes. */
  startFile(node: LayerNode, path: string, entry: TocEntryJson): void {
    this.endFile();
    this.open = { node, path, covered: 0 };
    if (node.size > 0) this.add(entry, this.open);
  }

  /** A "chunk" entry: the next chunk of the file just started. Its name, when given, must be that file's. */
  addChunkEntry(entry: TocEntryJson, path: string): void {
    const open = this.open;
    if (!open) throw invalid(`TOC entry ${JSON.stringify(entry.name)}: "chunk" entry does not follow a regular file`, path);
    // Writers repeat the file's name on its chunk entries: another name means the list is mixed up.
    if (path !== '' && path !== open.path) throw invalidEntry(path, `"chunk" entry follows the regular file ${JSON.stringify(open.path)}`);
    this.add(entry, open);
  }

  /** Ends the current file, if any: its chunks must cover all of it. Called at every non-chunk entry and at the end of the TOC. */
  endFile(): void {
    const open = this.open;
    if (open && open.covered !== open.node.size) throw invalidEntry(open.path, `chunks cover ${open.covered} of ${open.node.size} bytes`);
    this.open = null;
  }

  private add(entry: TocEntryJson, file: OpenFile): void {
    const { node, path } = file;
    const chunkOffset = checkCount(entry, 'chunkOffset', path);
    const chunkSizeField = checkCount(entry, 'chunkSize', path);
    if (chunkOffset !== file.covered) {
      throw invalidEntry(path, `chunk at file offset ${chunkOffset} does not follow the previous chunk, which ends at ${file.covered} (overlapping or missing chunks)`);
    }
    // chunkSize 0 (or absent): to the end of the file.
    const size = chunkSizeField === 0 ? node.size - chunkOffset : chunkSizeField;
    if (size <= 0 || chunkOffset + size > node.size) {
      throw invalidEntry(path, `chunk [${chunkOffset}, ${chunkOffset + size}) is outside the file of ${node.size} bytes`);
    }
    if (size > this.limits.maxChunkBytes) {
      throw invalidEntry(path, `chunk at file offset ${chunkOffset} is ${size} bytes, over the limit of ${this.limits.maxChunkBytes}`);
    }
    const offset = checkCount(entry, 'offset', path);
    const innerOffset = checkCount(entry, 'innerOffset', path);
    if (offset >= this.tocOffset) {
      throw invalidEntry(path, `chunk offset ${offset} is outside the blob's payload (TOC at ${this.tocOffset})`);
    }
    let digest = checkString(entry, 'chunkDigest', path);
    if (digest === '' && node.chunks.length === 0 && size === node.size && node.digest) {
      // An unchunked file whose TOC gives only the whole-file digest: the same bytes.
      digest = node.digest;
    }
    // The whole-file digest was checked already: most files are one chunk with the same digest.
    if (digest !== node.digest && !DIGEST_PATTERN.test(digest)) {
      throw invalidEntry(path, `chunk at file offset ${chunkOffset} has no valid chunkDigest (${JSON.stringify(digest)})`);
    }
    const chunk: Chunk = { fileOffset: chunkOffset, size, blobOffset: offset, blobEnd: 0, innerOffset, digest };
    node.chunks.push(chunk);
    this.chunks.push(chunk);
    this.paths.push(path);
    file.covered += size;
  }
}
