/**
 * The soak's readers, in a process of their own (forked by bench/lib/soak.ts
 * with UV_THREADPOOL_SIZE ≥ the reader count, so that 64 readers really have
 * 64 reads in flight, not libuv's default 4). Each reader is an async loop
 * with async fs; every byte read is compared with the file's source bytes,
 * made again here from the same seeds (bench/lib/soak-image.ts).
 *
 * Parent → child: init, cold (every file read whole once, shared shuffled
 * queue), warm (random files, whole or a random range, until stop), stop.
 * Child → parent: ready, stats (cumulative counters, every second),
 * cold-done, stopped.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { prng } from './files.js';
import { layerContent, type SoakFile, type SoakLayerSpec } from './soak-image.js';

export interface ReaderInit {
  type: 'init';
  readers: number;
  seed: number;
  layers: { diffDir: string; spec: SoakLayerSpec }[];
}

export type ToReaders = ReaderInit | { type: 'cold' } | { type: 'warm' } | { type: 'stop' };

/** Upper bounds (ms) of the read-latency buckets; the last bucket is everything above. */
export const LATENCY_BOUNDS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/** Cumulative since the child started. */
export interface ReaderStats {
  /** pread calls answered. */
  reads: number;
  bytes: number;
  /** Files or ranges read through (one open each). */
  ops: number;
  errors: number;
  /** Bytes that differed from the source. */
  wrongBytes: number;
  /** pread latency histogram (LATENCY_BOUNDS_MS, one more bucket for above). */
  latency: number[];
  /** Longest pread since the previous stats message, ms. */
  maxLatencyMs: number;
  /** The first errors and mismatches, for the report. */
  samples: string[];
}

export type FromReaders =
  | { type: 'ready'; contentSeconds: number }
  | { type: 'stats'; stats: ReaderStats }
  | { type: 'cold-done'; stats: ReaderStats }
  | { type: 'stopped'; stats: ReaderStats };

/** A whole-file read goes in preads of this size (cat's); a range read is one pread of up to RANGE_MAX. */
const WHOLE_READ = 128 << 10;
const RANGE_MIN = 4 << 10;
const RANGE_MAX = 1 << 20;
const MAX_SAMPLES = 20;

interface Target {
  path: string;
  file: SoakFile;
  content: Buffer;
}

function run(): void {
  const send = (m: FromReaders): void => void process.send!(m);
  const stats: ReaderStats = { reads: 0, bytes: 0, ops: 0, errors: 0, wrongBytes: 0, latency: LATENCY_BOUNDS_MS.map(() => 0).concat(0), maxLatencyMs: 0, samples: [] };
  const note = (s: string): void => void (stats.samples.length < MAX_SAMPLES && stats.samples.push(s));
  let targets: Target[] = [];
  let readers = 0;
  let rnd = Math.random;
  let mode: 'idle' | 'cold' | 'warm' | 'stop' = 'idle';
  let coldQueue: Target[] = [];
  let coldActive = false;
  let running: Promise<void>[] = [];

  const pread = async (fh: Awaited<ReturnType<typeof open>>, buf: Buffer, t: Target, pos: number, len: number): Promise<number> => {
    const started = performance.now();
    const { bytesRead } = await fh.read(buf, 0, len, pos);
    const ms = performance.now() - started;
    let b = LATENCY_BOUNDS_MS.findIndex((x) => ms <= x);
    if (b < 0) b = LATENCY_BOUNDS_MS.length;
    stats.latency[b]!++;
    stats.maxLatencyMs = Math.max(stats.maxLatencyMs, ms);
    stats.reads++;
    stats.bytes += bytesRead;
    const want = Math.min(len, t.file.size - pos);
    if (bytesRead !== want && bytesRead === 0) throw new Error(`${t.path}: 0 bytes at ${pos} of ${t.file.size}`);
    const src = t.content.subarray(t.file.offset + pos, t.file.offset + pos + bytesRead);
    if (!src.equals(buf.subarray(0, bytesRead))) {
      let wrong = 0;
      for (let i = 0; i < bytesRead; i++) if (buf[i] !== src[i]) wrong++;
      stats.wrongBytes += wrong;
      note(`${t.path}: ${wrong} wrong bytes in [${pos}, ${pos + bytesRead})`);
    }
    return bytesRead;
  };

  /** Reads [pos, end) of the file in preads of at most `step`. */
  const readSpan = async (t: Target, buf: Buffer, pos: number, end: number, step: number): Promise<void> => {
    const fh = await open(t.path, 'r');
    try {
      while (pos < end) pos += await pread(fh, buf, t, pos, Math.min(step, end - pos));
      if (end === t.file.size) {
        const { bytesRead } = await fh.read(buf, 0, 1, end);
        if (bytesRead !== 0) throw new Error(`${t.path}: more than its ${t.file.size} bytes`);
      }
    } finally {
      await fh.close();
    }
  };

  const reader = async (): Promise<void> => {
    const buf = Buffer.allocUnsafe(RANGE_MAX);
    for (;;) {
      let t: Target | undefined;
      let whole = true;
      if (mode === 'cold') t = coldQueue.pop();
      else if (mode === 'warm') {
        t = targets[Math.floor(rnd() * targets.length)]!;
        whole = rnd() < 0.5;
      }
      if (!t) return;
      try {
        if (whole) await readSpan(t, buf, 0, t.file.size, WHOLE_READ);
        else {
          const len = Math.min(t.file.size, Math.floor(Math.exp(Math.log(RANGE_MIN) + rnd() * (Math.log(RANGE_MAX) - Math.log(RANGE_MIN)))));
          const pos = Math.floor(rnd() * (t.file.size - len + 1));
          await readSpan(t, buf, pos, pos + len, RANGE_MAX);
        }
        stats.ops++;
      } catch (err) {
        stats.errors++;
        note(`${t.path}: ${(err as Error).message}`);
      }
    }
  };

  const start = (): void => {
    running = Array.from({ length: readers }, reader);
  };

  const ticker = setInterval(() => {
    send({ type: 'stats', stats: { ...stats, latency: [...stats.latency], samples: [...stats.samples] } });
    stats.maxLatencyMs = 0;
  }, 1000);

  process.on('message', (m: ToReaders) => {
    if (m.type === 'init') {
      const started = performance.now();
      readers = m.readers;
      rnd = prng(m.seed);
      targets = m.layers.flatMap((l) => {
        const content = layerContent(l.spec);
        return l.spec.files.map((file) => ({ path: join(l.diffDir, file.path), file, content }));
      });
      send({ type: 'ready', contentSeconds: (performance.now() - started) / 1000 });
    } else if (m.type === 'cold') {
      coldQueue = [...targets];
      for (let i = coldQueue.length - 1; i > 0; i--) {
        const j = Math.floor(rnd() * (i + 1));
        [coldQueue[i], coldQueue[j]] = [coldQueue[j]!, coldQueue[i]!];
      }
      mode = 'cold';
      coldActive = true;
      start();
      void Promise.all(running).then(() => {
        coldActive = false;
        if (mode === 'cold') send({ type: 'cold-done', stats: { ...stats, samples: [...stats.samples] } });
      });
    } else if (m.type === 'warm') {
      // A cold pass cut short by the parent goes on as the warm phase with the same readers.
      mode = 'warm';
      stats.maxLatencyMs = 0; // the warm phase's longest read starts here
      if (!coldActive) start();
    } else if (m.type === 'stop') {
      mode = 'stop';
      void Promise.all(running).then(() => {
        clearInterval(ticker);
        send({ type: 'stopped', stats: { ...stats, samples: [...stats.samples] } });
        process.disconnect();
      });
    }
  });
}

if (process.send) run();
