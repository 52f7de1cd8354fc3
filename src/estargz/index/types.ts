import type { ChunkCodec } from '../chunk.js';
import type { TocEntryJson } from '../toc.js';

export type NodeType = 'dir' | 'reg' | 'symlink' | 'char' | 'block' | 'fifo';

/** One chunk of a regular file: where its bytes are in the file and in the blob. */
export interface Chunk {
  /** Offset of the chunk inside its file. */
  fileOffset: number;
  /** Uncompressed length of the chunk. */
  size: number;
  /** Compressed range of the gzip member holding the chunk: [blobOffset, blobEnd). */
  blobOffset: number;
  blobEnd: number;
  /** Uncompressed bytes to skip inside that member before the chunk starts. */
  innerOffset: number;
  /** sha256 of the chunk's uncompressed bytes. */
  digest: string;
  /** Absent: gzip (eStargz); zstd:chunked chunks say 'zstd' or 'zeros'. */
  codec?: ChunkCodec;
}

/** An inode of the layer: hardlinks are several paths for one node. */
export interface LayerNode {
  ino: number;
  /** The first path this node was defined at (normalized, "" for the root). */
  path: string;
  type: NodeType;
  /** Permission bits including suid/sgid/sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  userName: string;
  groupName: string;
  size: number;
  /** Unix seconds. */
  mtime: number;
  /** Symlink target, verbatim. */
  linkName: string;
  devMajor: number;
  devMinor: number;
  xattrs: ReadonlyMap<string, Buffer>;
  /** sha256 of the whole file (regular files). */
  digest: string | undefined;
  chunks: Chunk[];
  /** Names pointing at this node (files), or 2 + subdirectories (dirs). */
  nlink: number;
  /** Directory entries in layer order (see finaliseTree); null for non-dirs. */
  children: Map<string, LayerNode> | null;
  /** True for a parent directory the TOC does not list. */
  implicit: boolean;
}

/** A TOC entry as listed (not a chunk), after name normalization. */
export interface TocRecord {
  path: string;
  entry: TocEntryJson;
  /** The node the path resolves to (a hardlink's target node for hardlinks). */
  node: LayerNode;
}

export interface PrefetchHint {
  /** 'landmark': prefetch [0, end); 'none': the blob asks for no prefetch; 'default': no landmark, use the config. */
  kind: 'landmark' | 'none' | 'default';
  end: number;
}

export interface LayerIndex {
  root: LayerNode;
  /** Every path (hardlinks included) → node. */
  byPath: Map<string, LayerNode>;
  /** TOC entries in TOC order, duplicates removed (the later one wins). */
  records: TocRecord[];
  prefetch: PrefetchHint;
  /** Sum of the sizes of all distinct regular files. */
  totalFileBytes: number;
  nodeCount: number;
}
