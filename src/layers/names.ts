import { formatReference, parseReference, type ImageReference } from '../registry/reference.js';

/**
 * Store names ↔ references: what the FUSE tree needs of image references,
 * so that it never reaches into the registry room itself.
 */
export type { ImageReference };

/** Parses an image reference as containers/storage writes it into a store name; throws on a malformed one. */
export function parseStoreReference(text: string): ImageReference {
  return parseReference(text);
}

/** The canonical text of a reference (the one `status` and log lines show). */
export function referenceText(ref: ImageReference): string {
  return formatReference(ref);
}
