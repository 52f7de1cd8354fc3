import { Command, InvalidArgumentError } from 'commander';
import { convertImage, type ProgressEvent } from '../convert/image-convert.js';
import { tuneHeapForConversion } from '../convert/heap-tuning.js';
import { createProgress, type ProgressMode, type ProgressReporter } from './progress.js';
import { DEFAULT_CHUNK_SIZE } from '../estargz/writer/defaults.js';
import { RegistryClient } from '../registry/client.js';
import type { ResolverConfig } from '../registry/hosts.js';
import { parsePlatform, type Platform } from '../registry/media-types.js';
import { parseReference } from '../registry/reference.js';

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function positiveInt(label: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < 1 || !Number.isSafeInteger(n)) throw new InvalidArgumentError(`${label} must be a positive integer`);
    return n;
  };
}

function platformArg(value: string): Platform {
  try {
    return parsePlatform(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** `--insecure HOST` is shorthand for a mirror entry that is the host itself over plain HTTP. */
function resolverFor(insecure: string[]): ResolverConfig {
  return { host: Object.fromEntries(insecure.map((h) => [h, { mirrors: [{ host: h, insecure: true }] }])) };
}

function progressMode(value: string): ProgressMode {
  if (!['auto', 'tty', 'json', 'none'].includes(value)) throw new InvalidArgumentError('--progress must be auto, tty, json or none');
  return value as ProgressMode;
}

/** Feeds convertImage's per-layer events to a progress reporter (bars on a terminal, JSON lines otherwise). */
export function layerProgress(reporter: ProgressReporter): (e: ProgressEvent) => void {
  const started = new Set<string>();
  return (e) => {
    const id = `${e.platform}/${e.layer}`;
    const { platform: _p, layer: _l, layers: _n, digest: _d, ...item } = e;
    if (!started.has(id)) {
      started.add(id);
      reporter.start(id, `${e.platform} ${e.layer}/${e.layers} ${e.digest.slice(7, 19)}`, item);
    }
    if (e.stage === 'done') reporter.done(id, item);
    else reporter.update(id, item);
  };
}

export function imageCommand(): Command {
  const image = new Command('image').description('work with images in registries');
  image
    .command('convert')
    .description('convert an image to eStargz and push it (layers, annotations, diff_ids, manifest)')
    .argument('<src>', 'source image reference')
    .argument('<dst>', 'destination image reference')
    .option('--prioritized-files <a,b,...>', 'files to place first in every layer (prefetched)', (v: string) => v.split(',').filter(Boolean), [])
    .option('--chunk-size <bytes>', 'largest chunk of a file per gzip member', positiveInt('--chunk-size'), DEFAULT_CHUNK_SIZE)
    .option('--platform <os/arch[/variant]>', 'platform to convert from an index (default: this machine)', platformArg)
    .option('--all-platforms', 'convert every platform of an index and push an index')
    .option('--insecure <host>', 'talk plain HTTP to this registry (repeatable; localhost and 127.0.0.0/8 always are)', collect, [])
    .option('--concurrency <n>', 'layers converted at once', positiveInt('--concurrency'), 2)
    .option('--json', 'print the result as JSON')
    .option('--progress <mode>', 'per-layer progress on stderr: bars on a terminal, JSON lines otherwise (auto), tty, json or none', progressMode, 'auto')
    .action(async (srcArg: string, dstArg: string, opts: {
      prioritizedFiles: string[]; chunkSize: number; platform?: Platform; allPlatforms?: boolean; insecure: string[]; concurrency: number; json?: boolean;
      progress: ProgressMode;
    }) => {
      if (opts.platform && opts.allPlatforms) throw new InvalidArgumentError('--platform and --all-platforms exclude each other');
      const src = parseReference(srcArg);
      const dst = parseReference(dstArg);
      tuneHeapForConversion();
      const client = new RegistryClient({ resolver: resolverFor(opts.insecure) });
      const reporter = createProgress(process.stderr, opts.progress);
      const onProgress = layerProgress(reporter);
      try {
        const result = await convertImage(client, src, dst, {
          prioritizedFiles: opts.prioritizedFiles,
          chunkSize: opts.chunkSize,
          concurrency: opts.concurrency,
          ...(opts.platform && { platform: opts.platform }),
          ...(opts.allPlatforms && { allPlatforms: true }),
          onProgress,
        });
        reporter.close();
        if (opts.json) {
          process.stdout.write(JSON.stringify(result) + '\n');
        } else {
          for (const m of result.manifests) {
            for (const l of m.layers) process.stdout.write(`${m.platform} ${l.source} -> ${l.digest} toc ${l.tocDigest}${l.converted ? '' : ' (already eStargz)'}\n`);
          }
          process.stdout.write(`pushed ${result.destination}@${result.digest}\n`);
        }
      } finally {
        await client.close();
      }
    });
  return image;
}
