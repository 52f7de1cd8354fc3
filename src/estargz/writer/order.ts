import type { TarEntry } from '../tar/parser.js';
import { NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_TAR_NAME, cleanEntryName } from '../toc.js';

/** Marks where the converter writes the landmark file in the output order. */
export const LANDMARK = Symbol('landmark');
export type OrderedItem = TarEntry | typeof LANDMARK;

export interface Ordering {
  items: OrderedItem[];
  /** Which landmark the output carries. */
  landmark: typeof PREFETCH_LANDMARK | typeof NO_PREFETCH_LANDMARK;
  /** Prioritized names not found in the layer. */
  missed: string[];
}

function parentOf(name: string): string {
  const slash = name.lastIndexOf('/');
  return slash < 0 ? '' : name.slice(0, slash);
}

/**
 * Orders the layer's entries the way the reference converter does:
 * - a later entry with the same (normalized) name replaces the earlier one;
 *   existing landmarks and an old TOC entry are dropped;
 * - with prioritized files: each one, preceded by its parent directories and
 *   (for a hardlink) its target when not yet placed, then `.prefetch.landmark`,
 *   then the rest in input order;
 * - without: `.no.prefetch.landmark` first, then every entry in input order.
 */
export function orderEntries(entries: TarEntry[], prioritized: readonly string[]): Ordering {
  // Map preserves insertion order; delete + set moves a replaced name to its new position.
  const remaining = new Map<string, TarEntry>();
  for (const e of entries) {
    const name = cleanEntryName(e.header.name);
    if (name === PREFETCH_LANDMARK || name === NO_PREFETCH_LANDMARK || name === TOC_TAR_NAME) continue;
    remaining.delete(name);
    remaining.set(name, e);
  }

  if (prioritized.length === 0) {
    return { items: [LANDMARK, ...remaining.values()], landmark: NO_PREFETCH_LANDMARK, missed: [] };
  }

  const placed = new Map<string, TarEntry>();
  const missed: string[] = [];
  const move = (rawName: string, depth: number): boolean => {
    const name = cleanEntryName(rawName);
    if (depth > 4096) return false; // hardlink cycles in a hostile tar
    if (name === '') {
      const root = remaining.get('');
      if (root) {
        placed.set('', root);
        remaining.delete('');
      }
      return true;
    }
    if (!remaining.has(name) && !placed.has(name)) return false;
    // A parent the tar does not list is implicit; unlike the reference, that does not make the file "missing".
    move(parentOf(name), depth + 1);
    const entry = remaining.get(name);
    if (entry && entry.header.typeflag === '1' && !move(entry.header.linkname, depth + 1)) return false;
    if (entry) {
      placed.set(name, entry);
      remaining.delete(name);
    }
    return true;
  };
  for (const name of prioritized) {
    if (!move(name, 0)) missed.push(name);
  }
  return { items: [...placed.values(), LANDMARK, ...remaining.values()], landmark: PREFETCH_LANDMARK, missed };
}
