import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { finished } from 'node:stream/promises';
import { Command, InvalidArgumentError } from 'commander';
import type { FileSource } from '../estargz/source.js';
import type { ListedEntry } from '../estargz/listing.js';
import { DEFAULT_CHUNK_SIZE, DEFAULT_COMPRESSION_LEVEL } from '../estargz/writer/defaults.js';

// Each action imports what it uses: `convert` runs without the reader side (and its memory), `ls` without the writer.

function positiveInt(label: string, min = 1, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${label} must be an integer from ${min} to ${max}`);
    }
    return n;
  };
}

function list(value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

async function withSource<T>(path: string, fn: (source: FileSource) => Promise<T>): Promise<T> {
  const { FileSource } = await import('../estargz/source.js');
  const source = await FileSource.open(path);
  try {
    return await fn(source);
  } finally {
    await source.close();
  }
}

function formatLine(e: ListedEntry): string {
  const kind = { dir: 'd', reg: '-', symlink: 'l', hardlink: 'h', char: 'c', block: 'b', fifo: 'p' }[e.type];
  const size = e.type === 'char' || e.type === 'block' ? `${e.devmajor},${e.devminor}` : String(e.size);
  const target = e.linkname === null ? '' : ` -> ${e.linkname}`;
  return `${kind}${e.mode.toString(8).padStart(4, '0')} ${e.uid}:${e.gid} ${size.padStart(10)} ${new Date(e.mtime * 1000).toISOString()} ${e.path || '.'}${target}`;
}

export function layerCommand(): Command {
  const layer = new Command('layer').description('convert, verify and list eStargz layer blobs');

  layer
    .command('convert')
    .description('convert a layer tar (plain or gzip) to eStargz; prints {"digest","size","diffID","tocDigest","uncompressedSize"}')
    .argument('<in>', 'layer tar or tar.gz ("-" for standard input)')
    .argument('<out>', 'eStargz blob to write')
    .option('--chunk-size <bytes>', 'largest chunk of a file per gzip member', positiveInt('--chunk-size'), DEFAULT_CHUNK_SIZE)
    .option('--prioritized-files <a,b,...>', 'files to place first and prefetch', list, [])
    .option('--level <0-9>', 'gzip compression level', positiveInt('--level', 0, 9), DEFAULT_COMPRESSION_LEVEL)
    .action(async (input: string, out: string, opts: { chunkSize: number; prioritizedFiles: string[]; level: number }) => {
      const { convertLayer } = await import('../estargz/writer/convert.js');
      const { tuneHeapForConversion } = await import('../convert/heap-tuning.js');
      tuneHeapForConversion();
      const tmp = `${out}.partial-${process.pid}`;
      const stream = createWriteStream(tmp);
      try {
        const result = await convertLayer(input === '-' ? process.stdin : input, stream, {
          chunkSize: opts.chunkSize,
          prioritizedFiles: opts.prioritizedFiles,
          level: opts.level,
        });
        stream.end();
        await finished(stream);
        await rename(tmp, out);
        for (const name of result.missedPrioritized) process.stderr.write(`estargz-store: warning: prioritized file ${JSON.stringify(name)} is not in the layer\n`);
        const { digest, size, diffID, tocDigest, uncompressedSize } = result;
        process.stdout.write(JSON.stringify({ digest, size, diffID, tocDigest, uncompressedSize }) + '\n');
      } catch (err) {
        stream.destroy();
        await rm(tmp, { force: true });
        throw err;
      }
    });

  layer
    .command('verify')
    .description('check footer, TOC (and its digest) and every chunk of a blob')
    .argument('<blob>', 'eStargz blob')
    .option('--toc-digest <digest>', 'expected TOC digest (the containerd.io/snapshot/stargz/toc.digest annotation)')
    .action(async (blobPath: string, opts: { tocDigest?: string }) => {
      const { verifyBlob } = await import('../estargz/verify.js');
      const summary = await withSource(blobPath, (source) => verifyBlob(source, opts.tocDigest ? { tocDigest: opts.tocDigest } : {}));
      process.stdout.write(
        `ok: ${blobPath}: TOC ${summary.tocDigest}${opts.tocDigest ? ' (matches)' : ''}, ${summary.entries} entries, ` +
        `${summary.files} files, ${summary.chunks} chunks, ${summary.bytes} bytes verified\n`,
      );
    });

  layer
    .command('ls')
    .description("list the TOC's entries; with --json, an array sorted by path")
    .argument('<blob>', 'eStargz blob')
    .option('--json', 'print JSON')
    .option('--toc-digest <digest>', 'expected TOC digest')
    .action(async (blobPath: string, opts: { json?: boolean; tocDigest?: string }) => {
      const { openEstargz } = await import('../estargz/open.js');
      const { listEntries } = await import('../estargz/listing.js');
      const entries = await withSource(blobPath, async (source) => {
        const blob = await openEstargz(source, opts.tocDigest ? { tocDigest: opts.tocDigest } : {});
        return listEntries(blob, source);
      });
      if (opts.json) process.stdout.write(JSON.stringify(entries) + '\n');
      else process.stdout.write(entries.map(formatLine).join('\n') + (entries.length ? '\n' : ''));
    });

  return layer;
}
