import type { ChunkRef, Decoder } from '../src/estargz/chunk.js';

/**
 * The message format between the engine and the decode workers. A task owns
 * one ArrayBuffer (transferred, not copied) holding one or more gzip members;
 * each item is a member slice and the chunks to cut from it.
 */
export interface DecodeTask {
  decoder: Decoder;
  buffer: ArrayBuffer;
  items: DecodeItem[];
}

export interface DecodeItem {
  offset: number;
  length: number;
  refs: ChunkRef[];
}

export interface DecodeFailure {
  code: string;
  message: string;
}

/** One entry per ref, items in order: the verified plain bytes, or why not. */
export type DecodeOutput = ArrayBuffer | DecodeFailure;

export interface DecodeResult {
  outputs: DecodeOutput[];
}
