/**
 * Open-time benchmark: how long openEstargz (tail read, footer, TOC member
 * inflate, TOC digest, JSON parse, layer index) takes for a layer with a large
 * TOC, through a FileSource and a BufferSource. The layer is generated in
 * memory with tar-stream and converted once with convertLayer. Prints markdown
 * tables and writes raw samples to bench/results/open-<timestamp>.json.
 *
 *   node dist/bench/open.js [--entries N] [--runs N] [--warmup N]
 */
import { collectPack, prng } from './lib/files.js';
import { convertTarToFile } from './lib/layer-input.js';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { gunzipSync } from 'node:zlib';
import tar, { type Header } from 'tar-stream';
import { parseFooter, MAX_FOOTER_SIZE } from '../src/estargz/footer.js';
import { buildLayerIndex } from '../src/estargz/layer-index.js';
import { openEstargz, DEFAULT_TAIL_BYTES } from '../src/estargz/open.js';
import { BufferSource, FileSource, type RangedSource } from '../src/estargz/source.js';
import { parseTocJson, sha256Digest, TOC_TAR_NAME } from '../src/estargz/toc.js';
import { describeMachine, loadNow, machineInfo, writeResult, writeTables } from './lib/machine.js';
import { MiB, formatSummary, summarize } from './lib/stats.js';
import { markdownTable } from './lib/table.js';

const USAGE = `usage: node dist/bench/open.js [options]
  --entries N  tar entries in the generated layer (default 20000)
  --runs N     timed opens per source (default 30)
  --warmup N   untimed opens per source before timing, after the first (default 3)
  --keep PATH  also save the converted blob there (to profile open on it)
  --no-write   print only: leave bench/results/open.md alone`;

const { values: args } = parseArgs({
  options: {
    entries: { type: 'string', default: '20000' },
    runs: { type: 'string', default: '30' },
    warmup: { type: 'string', default: '3' },
    keep: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const entries = Number(args.entries);
const runs = Number(args.runs);
const warmup = Number(args.warmup);
if (![entries, runs, warmup].every(Number.isInteger) || entries < 10 || runs < 1 || warmup < 0) {
  console.error(USAGE);
  process.exit(2);
}

const WORDS = ['import', 'def', 'return', 'self', 'value', 'class', 'from', 'None', 'True', 'for', 'in', 'if', 'else', 'data', 'path', 'name'];

/**
 * A layer shaped like a language package tree: about 1 directory per 19
 * entries, 2% symlinks, the rest files of 0–4 KiB of word-salad text (so
 * per-file gzip members have realistic sizes). Names are deep and long-ish,
 * as in site-packages, since TOC size grows with name length.
 */
async function generateLayer(total: number): Promise<{ tar: Buffer; dirs: number; files: number; symlinks: number }> {
  const rand = prng(20000);
  const pack = tar.pack();
  const output = collectPack(pack);
  const add = (header: Partial<Header> & Pick<Header, 'name'>, body?: Buffer): Promise<void> =>
    new Promise((resolve, reject) => pack.entry({ mtime: new Date(1_700_000_000_000), uid: 0, gid: 0, ...header }, body ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve())));

  const dirs = Math.max(2, Math.round(total / 20));
  const perDir = Math.ceil((total - dirs) / (dirs - 1));
  let count = 0;
  let files = 0;
  let symlinks = 0;
  const root = 'usr/lib/python3/site-packages';
  // The root's parents are implicit in the TOC, like a layer that adds one tree.
  await add({ name: `${root}/`, type: 'directory', mode: 0o755 });
  count++;
  let lastFile = '';
  for (let d = 1; d < dirs && count < total; d++) {
    const dir = `${root}/pkg${String(d % 97).padStart(2, '0')}/module_${String(d).padStart(4, '0')}`;
    // Directory entries only for the module folders; the pkgNN level stays implicit, as in many real layers.
    await add({ name: `${dir}/`, type: 'directory', mode: 0o755 });
    count++;
    for (let f = 0; f < perDir && count < total; f++) {
      const name = `${dir}/${WORDS[Math.floor(rand() * WORDS.length)]}_${String(f).padStart(3, '0')}.py`;
      if (lastFile && rand() < 0.02) {
        await add({ name, type: 'symlink', linkname: lastFile.split('/').pop()!, mode: 0o777 });
        symlinks++;
      } else {
        const size = Math.floor(rand() * 4096);
        const text: string[] = [];
        let len = 0;
        while (len < size) {
          const w = WORDS[Math.floor(rand() * WORDS.length)]!;
          text.push(w);
          len += w.length + 1;
        }
        await add({ name, type: 'file', mode: 0o644 }, Buffer.from(text.join(' ').slice(0, size)));
        files++;
        lastFile = name;
      }
      count++;
    }
  }
  pack.finalize();
  return { tar: await output.done(), dirs: count - files - symlinks, files, symlinks };
}

/** Wraps a source to count range reads: open should cost at most two. */
class CountingSource implements RangedSource {
  reads = 0;
  bytes = 0;
  constructor(private readonly inner: RangedSource) {}
  get size(): number {
    return this.inner.size;
  }
  read(offset: number, length: number): Promise<Buffer> {
    this.reads++;
    this.bytes += length;
    return this.inner.read(offset, length);
  }
}

/**
 * Times opens of each source, interleaved (alternating which goes first) so GC
 * debt and other load fall on both alike. The very first open in the process
 * pays for JIT warm-up and is returned separately.
 */
async function timeOpens(sources: Record<string, RangedSource>): Promise<{ coldMs: number; samplesMs: Record<string, number[]> }> {
  const names = Object.keys(sources);
  const once = async (name: string): Promise<number> => {
    const start = performance.now();
    await openEstargz(sources[name]!);
    return performance.now() - start;
  };
  const coldMs = await once(names[0]!);
  for (let i = 0; i < warmup; i++) for (const name of names) await once(name);
  const samplesMs: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let i = 0; i < runs; i++) {
    for (const name of i % 2 === 0 ? names : [...names].reverse()) samplesMs[name]!.push(await once(name));
  }
  return { coldMs, samplesMs };
}

/**
 * The same steps as openEstargz, called one at a time with synchronous inflate,
 * to show where open time goes. Approximate: openEstargz inflates with a
 * streaming gunzip on the thread pool and stops after the TOC entry.
 */
function phaseTimes(blob: Buffer): Record<string, number> {
  const t: Record<string, number> = {};
  let start = performance.now();
  const lap = (name: string): void => {
    const now = performance.now();
    t[name] = now - start;
    start = now;
  };
  const tail = blob.subarray(blob.length - Math.min(blob.length, Math.max(MAX_FOOTER_SIZE, DEFAULT_TAIL_BYTES)));
  const footer = parseFooter(tail, blob.length);
  lap('footer');
  const tarBytes = gunzipSync(blob.subarray(footer.tocOffset, blob.length - footer.footerSize));
  const name = tarBytes.subarray(0, 100).toString('latin1').replace(/\0.*$/s, '');
  if (name !== TOC_TAR_NAME) throw new Error(`TOC member starts with ${JSON.stringify(name)}`);
  const size = parseInt(tarBytes.subarray(124, 136).toString('latin1').replace(/\0.*$/s, '').trim(), 8);
  const json = tarBytes.subarray(512, 512 + size);
  lap('inflate TOC member');
  sha256Digest(json);
  lap('sha256 of TOC');
  const toc = parseTocJson(json);
  lap('parse TOC JSON');
  buildLayerIndex(toc, { tocOffset: footer.tocOffset });
  lap('build index');
  return t;
}

/** Heap an opened blob keeps alive (TOC objects + index), measured around forced GCs; null if GC cannot be forced. */
async function retainedHeapBytes(source: RangedSource): Promise<number | null> {
  let gc: (() => void) | undefined;
  try {
    // Lets the benchmark force GC without the caller passing --expose-gc.
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  } catch {
    return null;
  }
  gc();
  const before = process.memoryUsage().heapUsed;
  const blob = await openEstargz(source);
  gc();
  const after = process.memoryUsage().heapUsed;
  if (blob.index.nodeCount < 0) console.log('unreachable'); // keeps `blob` alive until after the measurement
  return after - before;
}

async function main(): Promise<void> {
  const machine = machineInfo();
  const dir = await mkdtemp(join(tmpdir(), 'estargz-bench-open-'));
  try {
    const layer = await generateLayer(entries);
    const blobPath = join(dir, 'layer.esgz');
    const converted = await convertTarToFile(layer.tar, blobPath, { tmpDir: dir });
    const blobBytes = await readFile(blobPath);
    if (args.keep) await copyFile(blobPath, args.keep);

    const file = await FileSource.open(blobPath);
    let times;
    let info;
    let reads;
    try {
      const counting = new CountingSource(file);
      info = await openEstargz(counting);
      reads = { count: counting.reads, bytes: counting.bytes };
      times = await timeOpens({ FileSource: file, BufferSource: new BufferSource(blobBytes) });
    } finally {
      await file.close();
    }
    const phases: Record<string, number[]> = {};
    for (let i = 0; i < Math.min(runs, 10); i++) {
      for (const [k, v] of Object.entries(phaseTimes(blobBytes))) (phases[k] ??= []).push(v);
    }
    const retained = await retainedHeapBytes(new BufferSource(blobBytes));

    const tocTypes: Record<string, number> = {};
    for (const e of info.toc.entries) tocTypes[e.type] = (tocTypes[e.type] ?? 0) + 1;
    const sums = Object.fromEntries(Object.entries(times.samplesMs).map(([k, v]) => [k, summarize(v)]));

    const lines: string[] = [];
    lines.push(`## Open time: ${info.toc.entries.length}-entry TOC (${runs} timed opens per source, interleaved, after ${warmup} warm-up)`, '');
    lines.push(`Machine: ${describeMachine(machine)}`, '');
    lines.push(markdownTable(['layer', 'value'], [
      ['tar entries (dirs / files / symlinks)', `${entries} (${layer.dirs} / ${layer.files} / ${layer.symlinks})`],
      ['TOC entries', String(info.toc.entries.length)],
      ['TOC JSON', `${(info.tocSize / MiB).toFixed(2)} MiB (${info.tocSize} B)`],
      ['TOC member (gzip)', `${((info.size - info.footer.footerSize - info.footer.tocOffset) / MiB).toFixed(2)} MiB`],
      ['blob', `${(info.size / MiB).toFixed(2)} MiB`],
      ['index nodes', String(info.index.nodeCount)],
      ['first open in the process (cold JIT)', `${times.coldMs.toFixed(1)} ms`],
      ['range reads per open', `${reads.count} (${(reads.bytes / MiB).toFixed(2)} MiB)`],
      ['heap kept by one opened blob', retained === null ? 'n/a' : `${(retained / MiB).toFixed(1)} MiB`],
    ]), '');
    lines.push(markdownTable(['source', 'open ms median (min–max)', 'TOC entries/ms'], Object.entries(sums).map(([k, v]) =>
      [k, formatSummary(v, 1), (info.toc.entries.length / v.median).toFixed(0)])), '');
    lines.push('Where the time goes (each step run alone, synchronous inflate; median of ' + `${Math.min(runs, 10)}):`, '');
    lines.push(markdownTable(['step', 'ms median (min–max)'], Object.entries(phases).map(([k, v]) => [k, formatSummary(summarize(v), 1)])));
    lines.push('', `Load average at the end (1/5/15 min): ${loadNow().join(' ')}; the run itself adds about 1.`);
    console.log(lines.join('\n'));

    const path = await writeResult('open', {
      benchmark: 'open',
      machine,
      settings: { entries, runs, warmup },
      layer: { tarBytes: layer.tar.length, dirs: layer.dirs, files: layer.files, symlinks: layer.symlinks, converted },
      toc: { entries: info.toc.entries.length, byType: tocTypes, jsonBytes: info.tocSize, memberBytes: info.size - info.footer.footerSize - info.footer.tocOffset, indexNodes: info.index.nodeCount },
      readsPerOpen: reads,
      retainedHeapBytes: retained,
      coldFirstOpenMs: times.coldMs,
      opens: Object.fromEntries(Object.entries(times.samplesMs).map(([k, v]) => [k, { summary: sums[k], samplesMs: v }])),
      phasesMs: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, { summary: summarize(v), samples: v }])),
      markdown: lines.join('\n'),
    });
    process.stderr.write(`wrote ${path}\n`);
    if (!args['no-write']) process.stderr.write(`wrote ${await writeTables('open', lines.join('\n'), path)}\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
