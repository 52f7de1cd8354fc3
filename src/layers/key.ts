import { referenceText, type ImageReference } from './names.js';

/**
 * What names a served layer: the image reference and the directory's digest
 * (layer or TOC digest). `toString` is the map key; it is never split back
 * apart, the parts are kept.
 */
export class LayerKey {
  /** The reference's canonical text, computed once. */
  readonly refText: string;
  private readonly text: string;

  constructor(readonly ref: ImageReference, readonly digest: string, refText?: string) {
    this.refText = refText ?? referenceText(ref);
    this.text = `${this.refText}|${digest}`;
  }

  toString(): string {
    return this.text;
  }

  /** Whether the layer is in that repository (credentials arrive per repository). */
  inRepository(registry: string, repository: string): boolean {
    return this.ref.registry === registry && this.ref.repository === repository;
  }
}
