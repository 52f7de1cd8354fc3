/**
 * Allocation probe for a store process (bench only): loaded with
 * `node --import=<this file>` (bench/soak.ts --alloc-probe), it counts, on
 * the main thread, the bytes of the buffers that get an ArrayBuffer of
 * their own (what V8 counts as external memory and answers with garbage
 * collections), by where they come from:
 *
 *  - `socket`: data read from sockets (undici's response bodies; every read
 *    is a new buffer);
 *  - `worker`: ArrayBuffers arriving from worker threads (decode results,
 *    hashed disk-cache chunks);
 *  - `sab`: new SharedArrayBuffer;
 *  - `alloc:<site>`: Buffer.alloc/allocUnsafe/allocUnsafeSlow/from/concat of
 *    4 KiB and more (smaller ones come from Node's shared pool), by the
 *    first frame of our code that asked (`fs …`: inside a readFile of ours).
 *
 * It also counts the main thread's garbage collections (by kind) and the
 * JS heap bytes allocated (sum of the used heap grown between collections).
 * Every 500 ms it appends one line of cumulative counters, stamped with the
 * monotonic clock in µs (process.hrtime, as bench/lib/soak.ts stamps its
 * phases), to $ESTARGZ_ALLOC_PROBE_DIR/alloc-<pid>.jsonl.
 *
 * A measuring tool: it costs the probed process a stack trace per large
 * allocation, so timings taken with it on are not the store's.
 */
import { appendFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import v8 from 'node:v8';
import { isMainThread, MessagePort } from 'node:worker_threads';

/** Smaller Buffers come from Node's 8 KiB pool: no ArrayBuffer of their own. */
const OWN_MIN = 4096;

interface Counters {
  bytes: Record<string, number>;
  count: Record<string, number>;
  gc: Record<string, number>;
  heapAllocated: number;
}

function install(dir: string): void {
  const c: Counters = { bytes: {}, count: {}, gc: {}, heapAllocated: 0 };
  const add = (what: string, n: number): void => {
    c.bytes[what] = (c.bytes[what] ?? 0) + n;
    c.count[what] = (c.count[what] ?? 0) + 1;
  };
  /** The first stack frame in the store's own code (dist/src, dist/workers) or a dependency, as file:line. */
  const site = (): string => {
    const stack = new Error().stack?.split('\n').slice(3) ?? [];
    // Node's fs allocating for a readFile of ours: said so.
    const via = stack.some((l) => l.includes('node:internal/fs/')) ? 'fs ' : '';
    for (const line of stack) {
      const m = /(?:dist\/(?:src|workers)\/|node_modules\/)([^():]+):(\d+)/.exec(line);
      if (m && !line.includes('alloc-probe')) return `${via}${m[1]}:${m[2]}`;
    }
    return `${via}node`;
  };

  let nested = 0;
  const wrap = <K extends 'alloc' | 'allocUnsafe' | 'allocUnsafeSlow' | 'from' | 'concat'>(name: K): void => {
    const original = Buffer[name] as (...args: unknown[]) => Buffer;
    (Buffer as unknown as Record<string, unknown>)[name] = function (this: unknown, ...args: unknown[]): Buffer {
      // Buffer.concat calls Buffer.allocUnsafe: only the outermost call counts.
      nested++;
      let out: Buffer;
      try {
        out = original.apply(this, args);
      } finally {
        nested--;
      }
      if (nested === 0 && out.length >= OWN_MIN && out.buffer.byteLength === out.length && !(out.buffer instanceof SharedArrayBuffer)
        && !(name === 'from' && args[0] instanceof ArrayBuffer)) add(`alloc:${site()}`, out.length);
      return out;
    };
  };
  for (const name of ['alloc', 'allocUnsafe', 'allocUnsafeSlow', 'from', 'concat'] as const) wrap(name);

  const SAB = globalThis.SharedArrayBuffer;
  globalThis.SharedArrayBuffer = new Proxy(SAB, {
    construct(target, args: [number]) {
      add(`sab:${site()}`, Number(args[0]) || 0);
      return new target(...args);
    },
  });

  const push = Socket.prototype.push;
  Socket.prototype.push = function (this: Socket, chunk: unknown, ...rest: unknown[]): boolean {
    if (chunk instanceof Uint8Array && chunk.length >= OWN_MIN) add('socket', chunk.length);
    return (push as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  };


  /** Counts the ArrayBuffers a message carries (a few levels deep: piscina's answer wraps the task's result). */
  const countMessage = (value: unknown, depth = 0): void => {
    if (value instanceof ArrayBuffer) {
      if (value.byteLength >= OWN_MIN) add('worker', value.byteLength);
      return;
    }
    if (depth > 4 || value === null || typeof value !== 'object' || ArrayBuffer.isView(value)) {
      if (ArrayBuffer.isView(value) && value.buffer instanceof ArrayBuffer && value.byteLength >= OWN_MIN) add('worker', value.buffer.byteLength);
      return;
    }
    for (const v of Array.isArray(value) ? value : Object.values(value)) countMessage(v, depth + 1);
  };
  const wrapListener = (proto: { on: (...a: never[]) => unknown; addListener: (...a: never[]) => unknown }): void => {
    for (const method of ['on', 'addListener'] as const) {
      const original = proto[method] as (this: unknown, event: string, fn: (...a: unknown[]) => void) => unknown;
      (proto as Record<string, unknown>)[method] = function (this: unknown, event: string, fn: (...a: unknown[]) => void) {
        if (event !== 'message') return original.call(this, event, fn);
        const counted = function (this: unknown, ...a: unknown[]) {
          countMessage(a[0]);
          return fn.apply(this, a);
        };
        return original.call(this, event, counted);
      };
    }
  };
  // A Worker's own 'message' events come through its MessagePort too: counted there, once.
  wrapListener(MessagePort.prototype as never);

  // Collections and JS heap allocation, from V8's GC profiler, taken in 500 ms slices.
  let profiler = new v8.GCProfiler();
  profiler.start();
  let usedAfterLast = v8.getHeapStatistics().used_heap_size;
  const file = join(dir, `alloc-${process.pid}.jsonl`);
  const flush = (): void => {
    const stats = profiler.stop();
    profiler = new v8.GCProfiler();
    profiler.start();
    // The profiler's heap statistics are camelCase (@types/node says snake_case).
    type Stats = { usedHeapSize: number };
    for (const s of stats?.statistics ?? []) {
      c.gc[s.gcType] = (c.gc[s.gcType] ?? 0) + 1;
      c.heapAllocated += Math.max(0, (s.beforeGC.heapStatistics as unknown as Stats).usedHeapSize - usedAfterLast);
      usedAfterLast = (s.afterGC.heapStatistics as unknown as Stats).usedHeapSize;
    }
    const used = v8.getHeapStatistics().used_heap_size;
    const heapAllocated = c.heapAllocated + Math.max(0, used - usedAfterLast);
    const mem = process.memoryUsage();
    appendFileSync(file, JSON.stringify({ tUs: Number(process.hrtime.bigint() / 1000n), nowMs: performance.now(), bytes: c.bytes, count: c.count, gc: c.gc, heapAllocated, arrayBuffers: mem.arrayBuffers, external: mem.external, heapUsed: mem.heapUsed }) + '\n');
  };
  setInterval(flush, 500).unref();
  process.once('exit', flush);
}

const dir = process.env.ESTARGZ_ALLOC_PROBE_DIR;
if (isMainThread && dir) install(dir);
