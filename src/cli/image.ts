import { Command, InvalidArgumentError } from 'commander';
import { convertImage, type ImageConvertResult, type ProgressEvent } from '../convert/image-convert.js';
import { tuneHeapForConversion } from '../convert/heap-tuning.js';
import { createProgress, type ProgressMode, type ProgressReporter } from './progress.js';
import { DEFAULT_CHUNK_SIZE } from '../estargz/writer/defaults.js';
import { createLogger } from '../log/logger.js';
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

function seconds(label: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+(\.\d+)?$/.test(value) || !(n > 0)) throw new InvalidArgumentError(`${label} must be a positive number of seconds`);
    return n;
  };
}

function cmdArg(value: string): string[] {
  if (!value.trimStart().startsWith('[')) return [value];
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (err) {
    throw new InvalidArgumentError(`--cmd: not a JSON array: ${(err as Error).message}`);
  }
  if (!Array.isArray(parsed) || parsed.length === 0 || !parsed.every((a) => typeof a === 'string')) throw new InvalidArgumentError('--cmd must be a non-empty JSON array of strings');
  return parsed as string[];
}

/** Per layer of each converted manifest, the prioritized names it was asked for. */
type Requested = (manifest: number, layer: number) => readonly string[];

/**
 * Prioritized names no layer had: each name is looked for in the layers it
 * was asked of (every layer, or its section's), and is missing when all of
 * those that were converted lack it (a layer copied as it is cannot tell).
 */
export function missingPrioritized(result: ImageConvertResult, requested: Requested): string[] {
  const asked = new Map<string, { converted: number; missed: number }>();
  result.manifests.forEach((m, mi) => m.layers.forEach((l, li) => {
    if (!l.converted) return;
    const missed = new Set(l.missedPrioritized);
    for (const name of requested(mi, li)) {
      const a = asked.get(name) ?? { converted: 0, missed: 0 };
      a.converted++;
      if (missed.has(name)) a.missed++;
      asked.set(name, a);
    }
  }));
  return [...asked].filter(([, a]) => a.converted > 0 && a.missed === a.converted).map(([name]) => name);
}

function warn(line: string): void {
  process.stderr.write(`estargz-store: warning: ${line}\n`);
}

function printConverted(result: ImageConvertResult): void {
  for (const m of result.manifests) {
    for (const l of m.layers) process.stdout.write(`${m.platform} ${l.source} -> ${l.digest} toc ${l.tocDigest}${l.converted ? '' : ' (already eStargz)'}\n`);
  }
  process.stdout.write(`pushed ${result.destination}@${result.digest}\n`);
}

export function imageCommand(): Command {
  const image = new Command('image').description('work with images in registries');
  image
    .command('convert')
    .description('convert an image to eStargz and push it (layers, annotations, diff_ids, manifest)')
    .argument('<src>', 'source image reference')
    .argument('<dst>', 'destination image reference')
    .option('--prioritized-files <a,b,...|@FILE>', 'files to place first in every layer (prefetched); @FILE: a list file, as image optimize --record-only writes (per layer)')
    .option('--chunk-size <bytes>', 'largest chunk of a file per gzip member', positiveInt('--chunk-size'), DEFAULT_CHUNK_SIZE)
    .option('--platform <os/arch[/variant]>', 'platform to convert from an index (default: this machine)', platformArg)
    .option('--all-platforms', 'convert every platform of an index and push an index')
    .option('--insecure <host>', 'talk plain HTTP to this registry (repeatable; localhost and 127.0.0.0/8 always are)', collect, [])
    .option('--concurrency <n>', 'layers converted at once', positiveInt('--concurrency'), 2)
    .option('--json', 'print the result as JSON')
    .option('--progress <mode>', 'per-layer progress on stderr: bars on a terminal, JSON lines otherwise (auto), tty, json or none', progressMode, 'auto')
    .action(async (srcArg: string, dstArg: string, opts: {
      prioritizedFiles?: string; chunkSize: number; platform?: Platform; allPlatforms?: boolean; insecure: string[]; concurrency: number; json?: boolean;
      progress: ProgressMode;
    }) => {
      if (opts.platform && opts.allPlatforms) throw new InvalidArgumentError('--platform and --all-platforms exclude each other');
      const src = parseReference(srcArg);
      const dst = parseReference(dstArg);
      const arg = opts.prioritizedFiles ?? '';
      const { filesForLayer, readList } = await import('../optimize/list-file.js');
      const list = arg.startsWith('@') ? await readList(arg.slice(1)) : { all: arg.split(',').filter(Boolean), layers: new Map<number, { paths: string[] }>() };
      if (list.layers.size > 0 && opts.allPlatforms) throw new InvalidArgumentError(`${arg.slice(1)} lists files per layer: it fits one image, not --all-platforms`);
      const where = arg.slice(1);
      const perLayer = list.layers.size > 0 ? (layer: { index: number; digest: string; count: number }) => filesForLayer(list, layer, where) : undefined;
      tuneHeapForConversion();
      const client = new RegistryClient({ log: createLogger(process.env.ESTARGZ_LOG_LEVEL), resolver: resolverFor(opts.insecure) });
      const reporter = createProgress(process.stderr, opts.progress);
      const onProgress = layerProgress(reporter);
      try {
        const result = await convertImage(client, src, dst, {
          prioritizedFiles: list.all,
          ...(perLayer && { prioritizedFilesByLayer: perLayer }),
          chunkSize: opts.chunkSize,
          concurrency: opts.concurrency,
          ...(opts.platform && { platform: opts.platform }),
          ...(opts.allPlatforms && { allPlatforms: true }),
          onProgress,
        });
        reporter.close();
        const requested: Requested = (_m, li) => [...(list.layers.get(li)?.paths ?? []), ...list.all];
        const missing = missingPrioritized(result, requested);
        if (missing.length > 0) warn(`prioritized file(s) not in the image: ${missing.map((n) => JSON.stringify(n)).join(', ')}`);
        if (opts.json) process.stdout.write(JSON.stringify({ ...result, missingPrioritized: missing }) + '\n');
        else printConverted(result);
      } finally {
        await client.close();
      }
    });
  image
    .command('optimize')
    .description('run the image\'s workload with podman on a store of its own, record the files it reads, and convert SRC to eStargz '
      + 'with those files first in each layer (prefetched on start); as root, needs podman')
    .argument('<src>', 'source image reference')
    .argument('<dst>', 'destination image reference (a temporary eStargz image is pushed by digest to its repository)')
    .argument('[cmd...]', 'the workload, after "--": replaces the image\'s command (its entrypoint stays), as arguments after the image to podman run do')
    .option('--cmd <json>', 'the workload as a JSON array (["/bin/sh","-c","…"]) or a single program: the same as the arguments after "--"', cmdArg)
    .option('--env <KEY=VALUE>', 'environment of the workload (repeatable; podman run --env)', collect, [])
    .option('--mount <spec>', 'a mount for the workload (repeatable; podman run --mount)', collect, [])
    .option('--network <mode>', 'the workload\'s network (podman run --network)', 'none')
    .option('--timeout <seconds>', 'stop the workload after this long and use what it read until then', seconds('--timeout'), 60)
    .option('--record-only <file>', 'write the recorded list to FILE (for image convert --prioritized-files @FILE) instead of converting')
    .option('--chunk-size <bytes>', 'largest chunk of a file per gzip member', positiveInt('--chunk-size'), DEFAULT_CHUNK_SIZE)
    .option('--platform <os/arch[/variant]>', 'platform to run and convert from an index (default: this machine)', platformArg)
    .option('--insecure <host>', 'talk plain HTTP to this registry (repeatable; localhost and 127.0.0.0/8 always are)', collect, [])
    .option('--concurrency <n>', 'layers converted at once', positiveInt('--concurrency'), 2)
    .option('--json', 'print the result as JSON')
    .option('--progress <mode>', 'per-layer progress of the final conversion on stderr: auto, tty, json or none', progressMode, 'auto')
    .action(async (srcArg: string, dstArg: string, args: string[], opts: {
      cmd?: string[]; env: string[]; mount: string[]; network: string; timeout: number; recordOnly?: string;
      chunkSize: number; platform?: Platform; insecure: string[]; concurrency: number; json?: boolean; progress: ProgressMode;
    }) => {
      if (opts.cmd && args.length > 0) throw new InvalidArgumentError('--cmd and a command after "--" exclude each other');
      const cmd = opts.cmd ?? (args.length > 0 ? args : undefined);
      const src = parseReference(srcArg);
      const dst = parseReference(dstArg);
      const { optimizeImage } = await import('../optimize/optimize.js');
      const { createTelemetry } = await import('../metrics/telemetry.js');
      // The store runs inside this command: its routine logs would drown the command's own lines.
      const telemetry = createTelemetry(createLogger(process.env.ESTARGZ_LOG_LEVEL, 'warn'));
      tuneHeapForConversion();
      const resolver = resolverFor(opts.insecure);
      const client = new RegistryClient({ log: telemetry.log, resolver });
      const reporter = createProgress(process.stderr, opts.progress);
      try {
        const result = await optimizeImage(client, src, dst, {
          ...(cmd && { cmd }),
          env: opts.env,
          mounts: opts.mount,
          network: opts.network,
          timeoutMs: opts.timeout * 1000,
          ...(opts.recordOnly && { recordOnly: opts.recordOnly }),
          resolver,
          insecure: opts.insecure,
          telemetry,
          convert: {
            chunkSize: opts.chunkSize,
            concurrency: opts.concurrency,
            ...(opts.platform && { platform: opts.platform }),
            onProgress: layerProgress(reporter),
          },
          print: (line) => process.stderr.write(`estargz-store: ${line}\n`),
          warn,
          workloadOutput: process.stderr,
        });
        reporter.close();
        if (opts.json) {
          process.stdout.write(JSON.stringify(result) + '\n');
          return;
        }
        for (const l of result.recorded) process.stdout.write(`layer ${l.layer} ${l.digest}: ${l.paths.length} file(s) first\n`);
        if (result.listFile) process.stdout.write(`wrote ${result.listFile}\n`);
        if (result.converted) printConverted(result.converted);
      } finally {
        await client.close();
      }
    });
  return image;
}
