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

/**
 * A task's answer: every verified chunk back to back in one transferred
 * ArrayBuffer (one transfer per task, not per chunk), and per ref, in order,
 * its length there or why it failed.
 */
export interface DecodeResult {
  buffer: ArrayBuffer;
  results: (number | DecodeFailure)[];
  /** Time the worker spent on the task, for the utilization gauge. */
  busyMs: number;
}
