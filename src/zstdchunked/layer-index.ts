import { isEstargzError } from '../estargz/errors.js';
import {
  buildLayerIndexYielding,
  DEFAULT_TOC_LIMITS,
  type Chunk,
  type LayerIndex,
  type TocLimits,
} from '../estargz/layer-index.js';
import { cleanEntryName, DIGEST_PATTERN, TOC_ENTRY_TYPES, type TocEntryJson } from '../estargz/toc.js';
import { ZstdChunkedError } from './errors.js';
import type { ManifestEntry, ManifestJson } from './manifest.js';

import type { ChunkCodec } from '../estargz/chunk.js';

export type { ChunkCodec };

/**
 * A chunk of the format-neutral index: the eStargz Chunk (file offset, size,
 * compressed range, digest) plus its codec. For zstd:chunked, [blobOffset,
 * blobEnd) is exactly the chunk's own zstd frame and innerOffset is 0; a
 * 'zeros' chunk's range is its frame too, but its bytes are known without it.
 */
export interface CodedChunk extends Chunk {
  codec: ChunkCodec;
}

/** A zstd:chunked index: an eStargz LayerIndex whose chunks carry their codec. */
export type ZstdLayerIndex = LayerIndex;

export interface ZstdIndexOptions {
  /** Where the data frames end (the manifest frame's header): every chunk frame lies before it. */
  payloadEnd: number;
  limits?: Partial<TocLimits>;
}

/**
 * Most bytes a zstd frame can decode to per compressed byte: a block holds at
 * most 128 KiB and costs at least 3 bytes of header (an RLE block, 4 bytes in
 * all). A chunk that claims more than its frame's length × this lies about its
 * size or its offsets. (The decoder's hard bound is what keeps memory safe;
 * this refuses the lie at open instead of at the first read.)
 */
export const ZSTD_MAX_RATIO = Math.ceil((128 << 10) / 3);

/**
 * buildLayerIndex (the eStargz room's) lays out the tree: names confined to
 * the layer, implicit parents, hardlinks, limits, xattrs, chunk tiling of
 * each file. Its view of where a chunk's compressed bytes end is gzip's (a
 * member ends where the next starts, with deflate's ratio); zstd:chunked
 * gives each chunk a frame of its own with tar headers between files. So
 * the builder sees synthetic offsets, one slot of this size per chunk (room
 * for any chunk it allows, at any deflate ratio), and the real frames are put
 * in afterwards, from the manifest, and checked here.
 */
const SLOT = 1 << 30;

interface Frame {
  path: string;
  fileOffset: number;
  /** Uncompressed size of the chunk, once the index knows it. */
  size: number;
  offset: number;
  end: number;
  codec: ChunkCodec;
}

function invalid(message: string, path?: string, blobOffset?: number): ZstdChunkedError {
  return new ZstdChunkedError('INVALID_MANIFEST', message, {
    part: 'manifest', ...(path === undefined ? {} : { path }), ...(blobOffset === undefined ? {} : { blobOffset }),
  });
}

function count(e: ManifestEntry, key: keyof ManifestEntry): number {
  const v = e[key];
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw invalid(`entry ${JSON.stringify(e.name)}: "${key}" is ${JSON.stringify(v)}, expected a non-negative integer`, e.name);
  }
  return v;
}

/**
 * Builds the format-neutral index of a zstd:chunked layer from its (verified)
 * manifest, refusing entries of unknown types or chunk types, duplicate
 * names, files whose frames are missing, out of order, overlapping another's
 * or outside the data frames, and chunks that cannot fit their frame.
 */
export async function buildZstdChunkedIndex(manifest: ManifestJson, opts: ZstdIndexOptions): Promise<ZstdLayerIndex> {
  const limits: TocLimits = { ...DEFAULT_TOC_LIMITS, ...opts.limits };
  if (limits.maxChunkBytes > SLOT) throw new RangeError(`maxChunkBytes over ${SLOT} is not supported for zstd:chunked`);
  const entries = manifest.entries;
  if (entries.length > limits.maxEntries) {
    throw new ZstdChunkedError('LIMIT', `the manifest has ${entries.length} entries, over the limit of ${limits.maxEntries}`, { part: 'manifest' });
  }

  const frames: Frame[] = [];
  const translated: TocEntryJson[] = [];
  const originalOf = new Map<object, ManifestEntry>();
  const seen = new Set<string>();
  // The regular file whose chunk entries may follow, with the offsets of its frames so far.
  let file: { entry: ManifestEntry; path: string; first: number; covered: number } | null = null;

  const closeFile = (): void => {
    if (!file) return;
    const { entry, path, first } = file;
    const end = count(entry, 'endOffset');
    const last = frames[frames.length - 1]!;
    if (end <= last.offset) {
      throw invalid(`entry ${JSON.stringify(path)}: endOffset ${end} does not follow its last frame at ${last.offset}`, path, last.offset);
    }
    last.end = end;
    for (let i = first; i < frames.length - 1; i++) frames[i]!.end = frames[i + 1]!.offset;
    file = null;
  };

  const addFrame = (e: ManifestEntry, path: string, fileOffset: number): number => {
    const offset = count(e, 'offset');
    const chunkType = e.chunkType ?? '';
    if (chunkType !== '' && chunkType !== 'zeros') throw invalid(`entry ${JSON.stringify(path)}: unknown chunkType ${JSON.stringify(chunkType)}`, path, offset);
    const prev = frames.length > file!.first ? frames[frames.length - 1]! : null;
    if (prev && offset <= prev.offset) {
      throw invalid(`entry ${JSON.stringify(path)}: chunk at file offset ${fileOffset} starts at blob offset ${offset}, not after the previous chunk's frame at ${prev.offset}`, path, offset);
    }
    if (offset === 0) throw invalid(`entry ${JSON.stringify(path)}: chunk at file offset ${fileOffset} has no blob offset`, path);
    frames.push({ path, fileOffset, size: 0, offset, end: 0, codec: chunkType === 'zeros' ? 'zeros' : 'zstd' });
    return (frames.length - 1) * SLOT;
  };

  for (const e of entries) {
    if (typeof e.name !== 'string') throw invalid(`an entry has no "name": ${JSON.stringify(e).slice(0, 200)}`);
    if (typeof e.type !== 'string' || !TOC_ENTRY_TYPES.has(e.type)) throw invalid(`entry ${JSON.stringify(e.name)}: unknown type ${JSON.stringify(e.type)}`, e.name);
    const path = cleanEntryName(e.name);
    const copy: TocEntryJson = { ...(e as unknown as TocEntryJson) };
    delete copy.offset;
    delete copy.innerOffset;
    if (e.type === 'chunk') {
      if (!file || path !== file.path) throw invalid(`entry ${JSON.stringify(e.name)}: "chunk" entry does not follow its regular file`, e.name);
      copy.offset = addFrame(e, path, count(e, 'chunkOffset'));
    } else {
      closeFile();
      if (seen.has(path)) throw invalid(`entry ${JSON.stringify(e.name)}: the path is listed twice`, e.name);
      seen.add(path);
      if (e.type === 'reg' && count(e, 'size') > 0) {
        const digest = e.digest;
        if (typeof digest !== 'string' || !DIGEST_PATTERN.test(digest)) {
          throw invalid(`entry ${JSON.stringify(e.name)}: digest ${JSON.stringify(digest)} is not a sha256 digest`, e.name);
        }
        if (count(e, 'chunkOffset') !== 0) throw invalid(`entry ${JSON.stringify(e.name)}: first chunk at file offset ${e.chunkOffset}, not 0`, e.name);
        file = { entry: e, path, first: frames.length, covered: 0 };
        copy.offset = addFrame(e, path, 0);
      }
    }
    originalOf.set(copy, e);
    translated.push(copy);
  }
  closeFile();

  let index: LayerIndex;
  try {
    // In slices with event-loop turns between them, as for eStargz (see buildLayerIndexYielding).
    index = await buildLayerIndexYielding({ version: 1, entries: translated }, { tocOffset: (frames.length + 1) * SLOT, limits });
  } catch (err) {
    if (!isEstargzError(err)) throw err;
    const message = err.message.replace(/^TOC /, '');
    throw new ZstdChunkedError(err.code === 'LIMIT' ? 'LIMIT' : 'INVALID_MANIFEST', message, { part: 'manifest', ...(err.context.path === undefined ? {} : { path: err.context.path }) }, { cause: err });
  }

  // The real frames, in place of the slots.
  const seenNodes = new Set<object>();
  for (const node of index.byPath.values()) {
    if (node.type !== 'reg' || seenNodes.has(node)) continue;
    seenNodes.add(node);
    for (const chunk of node.chunks) {
      const frame = frames[chunk.blobOffset / SLOT]!;
      const coded = chunk as CodedChunk;
      coded.blobOffset = frame.offset;
      coded.blobEnd = frame.end;
      coded.innerOffset = 0;
      coded.codec = frame.codec;
      frame.size = chunk.size;
    }
  }
  for (const record of index.records) record.entry = originalOf.get(record.entry) as unknown as TocEntryJson;
  // zstd:chunked has no prefetch landmark: a file of that name is only a file.
  index.prefetch = { kind: 'default', end: 0 };

  checkFrames(frames, opts.payloadEnd);
  return index;
}

/** Frames lie inside the data frames, never overlap, and can hold their chunk. */
function checkFrames(frames: readonly Frame[], payloadEnd: number): void {
  const sorted = [...frames].sort((a, b) => a.offset - b.offset);
  for (let i = 0; i < sorted.length; i++) {
    const f = sorted[i]!;
    if (f.end > payloadEnd) {
      throw invalid(`entry ${JSON.stringify(f.path)}: chunk at file offset ${f.fileOffset} has frame [${f.offset}, ${f.end}), past the end of the data frames at ${payloadEnd}`, f.path, f.offset);
    }
    const next = sorted[i + 1];
    if (next && next.offset < f.end) {
      throw invalid(`entry ${JSON.stringify(next.path)}: chunk at file offset ${next.fileOffset} has frame [${next.offset}, ${next.end}), overlapping the frame [${f.offset}, ${f.end}) of ${JSON.stringify(f.path)}`, next.path, next.offset);
    }
    if (f.size > (f.end - f.offset) * ZSTD_MAX_RATIO) {
      throw invalid(`entry ${JSON.stringify(f.path)}: chunk at file offset ${f.fileOffset} is ${f.size} bytes, more than its frame of ${f.end - f.offset} bytes can hold`, f.path, f.offset);
    }
  }
}
