/**
 * Bounds a TOC must keep. They are far above what real layers use, and keep
 * a hostile TOC (one whose digest the manifest vouches for: its author wrote
 * both) from costing unbounded memory, or naming what no filesystem can hold.
 */
export interface TocLimits {
  /** TOC entries, chunk entries included; every chunk of a file is one. */
  maxEntries: number;
  /** UTF-8 bytes of a normalized path (PATH_MAX). */
  maxPathBytes: number;
  /** UTF-8 bytes of one path component (NAME_MAX). */
  maxComponentBytes: number;
  /** Components of a path. */
  maxDepth: number;
  /** Extended attributes of one entry. */
  maxXattrs: number;
  /** UTF-8 bytes of an xattr name (XATTR_NAME_MAX). */
  maxXattrNameBytes: number;
  /** Bytes of an xattr value (XATTR_SIZE_MAX). */
  maxXattrValueBytes: number;
  /** Uncompressed bytes of one chunk: it is decoded into one buffer, and cached whole. */
  maxChunkBytes: number;
}

export const DEFAULT_TOC_LIMITS: Readonly<TocLimits> = {
  maxEntries: 1 << 22,
  maxPathBytes: 4096,
  maxComponentBytes: 255,
  maxDepth: 1024,
  maxXattrs: 1024,
  maxXattrNameBytes: 255,
  maxXattrValueBytes: 64 << 10,
  maxChunkBytes: 1 << 30,
};
