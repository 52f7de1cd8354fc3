import { NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK } from '../toc.js';
import type { LayerNode, PrefetchHint } from './types.js';

/**
 * What the layer asks to prefetch, from the landmark files at its root: the
 * converter puts the prioritized files first and a regular file
 * ".prefetch.landmark" right after them, so everything before its payload is
 * the prefetch range; ".no.prefetch.landmark" says no file was prioritized.
 */
export function prefetchHint(root: LayerNode): PrefetchHint {
  const children = root.children!;
  const landmark = children.get(PREFETCH_LANDMARK);
  if (landmark && landmark.type === 'reg') {
    return { kind: 'landmark', end: landmark.chunks[0]?.blobOffset ?? 0 };
  }
  if (children.has(NO_PREFETCH_LANDMARK)) return { kind: 'none', end: 0 };
  return { kind: 'default', end: 0 };
}
