import { TOC_ENTRY_TYPES, type TocEntryJson, type TocJson } from '../toc.js';
import { invalid } from './invalid.js';
import type { TocLimits } from './limits.js';

/*
 * The shape checks every later step relies on: the entry list is an array of
 * bounded length, and each entry is an object with a string name and a known
 * type. Each entry is checked as the build reaches it, so that the first bad
 * entry in TOC order is the one reported.
 */

/** The TOC's entries, refused when they are not a list or more than the limit allows. */
export function checkEntryList(toc: TocJson, limits: TocLimits): readonly unknown[] {
  if (!Array.isArray(toc.entries)) throw invalid('TOC "entries" is not an array');
  if (toc.entries.length > limits.maxEntries) throw invalid(`TOC has ${toc.entries.length} entries, over the limit of ${limits.maxEntries}`);
  return toc.entries;
}

/** One raw entry as a TocEntryJson whose `name` is a string and whose `type` is one the format defines. */
export function checkEntry(raw: unknown): TocEntryJson {
  if (typeof raw !== 'object' || raw === null) throw invalid('TOC entry is not an object');
  const entry = raw as TocEntryJson;
  if (typeof entry.name !== 'string') throw invalid(`TOC entry has no "name": ${JSON.stringify(entry).slice(0, 200)}`);
  if (typeof entry.type !== 'string' || !TOC_ENTRY_TYPES.has(entry.type)) {
    throw invalid(`TOC entry ${JSON.stringify(entry.name)}: unknown type ${JSON.stringify(entry.type)}`, entry.name);
  }
  return entry;
}
