import type { TocEntryJson } from '../toc.js';
import type { LayerNode, TocRecord } from './types.js';

/**
 * The TOC entries as listed, in TOC order, minus those a later entry made
 * moot: one at the same path, or one below a directory that a later entry
 * replaced. Its users (the TOC listing, verification's entry count) must
 * see each path that exists once, as its last entry describes it.
 */
export class RecordList {
  private readonly list: TocRecord[] = [];
  private readonly byPath = new Map<string, TocRecord>();
  private readonly superseded = new Set<TocRecord>();

  add(path: string, entry: TocEntryJson, node: LayerNode): void {
    const record: TocRecord = { path, entry, node };
    this.byPath.set(path, record);
    this.list.push(record);
  }

  /** Drops the record at `path`, if any: the path was listed again, or it no longer exists. */
  supersede(path: string): void {
    const record = this.byPath.get(path);
    if (!record) return;
    this.superseded.add(record);
    this.byPath.delete(path);
  }

  /** The surviving records, in TOC order. */
  kept(): TocRecord[] {
    return this.superseded.size ? this.list.filter((r) => !this.superseded.has(r)) : this.list;
  }
}
