import type { ChunkRef, Decoder } from '../src/estargz/chunk.js';

/** A chunk to decode, with its codec (ChunkRef.codec: absent means gzip, eStargz); `decoder` picks the gzip implementation. */
export type CodedChunkRef = ChunkRef;

/**
 * The message format between the engine and the decode workers. A task owns
 * one ArrayBuffer (transferred, not copied) holding one or more gzip members;
 * each item is a member slice and the chunks to cut from it.
 */
export interface DecodeTask {
  decoder: Decoder;
  /** Transferred when an ArrayBuffer; shared (read only on both sides) when a SharedArrayBuffer. */
  buffer: ArrayBuffer | SharedArrayBuffer;
  items: DecodeItem[];
  /** The layer the chunks belong to (for failures: a worker knows no more than its task says). */
  layer?: string;
  /** 'background': no reader waits for it, so it runs at a lower thread priority (absent: foreground). */
  priority?: 'foreground' | 'background';
}

export interface DecodeItem {
  offset: number;
  length: number;
  refs: CodedChunkRef[];
}

/** A chunk that failed, with where it is: the engine's error names all of it. */
export interface DecodeFailure {
  code: string;
  message: string;
  /** The file the chunk belongs to. */
  path: string;
  /** Offset of the chunk in its file. */
  chunkOffset: number;
  /** The compressed bytes of its gzip member in the blob, [offset, offset + length). */
  compressed: { offset: number; length: number };
  /** The task's layer, when it said. */
  layer?: string;
}

/** Where a verified chunk is in the result's buffers. */
export interface DecodeSlice {
  buffer: number;
  offset: number;
  length: number;
}

/**
 * A task's answer, per ref in order: where its verified bytes are, or why it
 * failed. Large chunks come back in the buffer zlib inflated them into;
 * small ones are copied back to back into one buffer, so that a task costs
 * few transfers and no per-chunk messages.
 */
export interface DecodeResult {
  buffers: ArrayBuffer[];
  results: (DecodeSlice | DecodeFailure)[];
  /** Time the worker spent on the task, for the utilization gauge. */
  busyMs: number;
}
