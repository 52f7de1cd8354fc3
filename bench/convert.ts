/**
 * Converter benchmark: our `layer convert` against the reference tool
 * (esgzref build → estargz.Build) on the same layer tar, same chunk size,
 * gzip level 9. Each tool runs as a child process, interleaved, and we take
 * wall time, CPU time and peak RSS of every run. Prints markdown tables and
 * writes every raw sample to bench/results/convert-<timestamp>.json.
 *
 *   node dist/bench/convert.js [--runs N] [--chunk-size BYTES] [--input TAR]... [--no-small] [--esgzref BIN]
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openEstargz } from '../src/estargz/open.js';
import { FileSource } from '../src/estargz/source.js';
import { buildEsgzref } from './lib/esgzref.js';
import { benchCacheDir, ensureLayerInput, givenInput, warmPageCache, type LayerInput, type LayerInputSpec } from './lib/layer-input.js';
import { describeMachine, loadNow, machineInfo, writeResult, writeTables } from './lib/machine.js';
import { runMeasured, runQuiet, type ProcSample } from './lib/proc.js';
import { MiB, formatSummary, summarize, type Summary } from './lib/stats.js';
import { markdownTable } from './lib/table.js';

const USAGE = `usage: node dist/bench/convert.js [options]
  --runs N            runs of each tool per input (default 5)
  --chunk-size BYTES  chunk size for both tools (default 4194304)
  --input TAR         convert this tar instead of the generated inputs (repeatable)
  --no-small          skip the generated small-files input
  --esgzref BIN       use this reference binary instead of building test/interop/go/src/esgzref
  --no-write          print only: leave bench/results/convert.md alone`;

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    'chunk-size': { type: 'string', default: String(4 << 20) },
    input: { type: 'string', multiple: true },
    'no-small': { type: 'boolean', default: false },
    esgzref: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const runs = Number(args.runs);
const chunkSize = Number(args['chunk-size']);
if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(chunkSize) || chunkSize < 1) {
  console.error(USAGE);
  process.exit(2);
}
const LEVEL = 9; // the reference's default (gzip.BestCompression), and ours

/**
 * The generated inputs. Budgets are bytes of file content per root, taken in
 * name order, so the size does not depend on how much is installed.
 * `usr-mix`: executables, shared libraries (some over the chunk size) and data
 * files, like an application layer. `small-files`: headers and docs, where
 * per-entry costs (one gzip member per file, TOC entries) dominate.
 */
const GENERATED: LayerInputSpec[] = [
  {
    name: 'usr-mix',
    roots: [
      { dir: '/usr/bin', budgetBytes: 60 * MiB },
      { dir: '/usr/lib/x86_64-linux-gnu', budgetBytes: 60 * MiB },
      { dir: '/usr/share', budgetBytes: 50 * MiB },
    ],
  },
  {
    name: 'small-files',
    roots: [
      { dir: '/usr/include', budgetBytes: 24 * MiB, maxFileBytes: 64 << 10 },
      { dir: '/usr/share/doc', budgetBytes: 8 * MiB, maxFileBytes: 64 << 10 },
    ],
  },
];

type ToolName = 'ours' | 'ref';

interface ConvertOutput {
  digest: string;
  size: number;
  diffID: string;
  tocDigest: string;
  uncompressedSize: number;
}

interface Sample extends ProcSample {
  tool: ToolName;
  round: number;
  result: ConvertOutput;
}

interface Check {
  tool: ToolName;
  what: string;
  ok: boolean;
  detail: string;
  wallMs: number;
}

interface InputStats {
  tocEntries: number;
  byType: Record<string, number>;
  /** Regular files bigger than the chunk size (split into several gzip members). */
  chunkedFiles: number;
}

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function commandFor(tool: ToolName, ref: string | null, input: string, out: string): [string, string[]] {
  if (tool === 'ours') {
    return [process.execPath, [cli, 'layer', 'convert', input, out, '--chunk-size', String(chunkSize), '--level', String(LEVEL)]];
  }
  return [ref!, ['build', input, out, '-chunk', String(chunkSize)]];
}

function parseOutput(tool: ToolName, stdout: string): ConvertOutput {
  const line = stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as ConvertOutput;
  } catch {
    throw new Error(`${tool}: expected one JSON line on stdout, got ${JSON.stringify(stdout.slice(0, 200))}`);
  }
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const start = performance.now();
  const value = await fn();
  return [value, performance.now() - start];
}

/** The once-per-tool output checks: the blob inflates to the size the tool reported, and ours verifies chunk by chunk. */
async function checkOutput(tool: ToolName, blob: string, result: ConvertOutput): Promise<Check[]> {
  const checks: Check[] = [];
  // gunzip(1) is a third implementation: it reads the blob as the plain multi-member gzip every eStargz must be.
  const [count, gunzipMs] = await timed(() => runQuiet('sh', ['-c', 'gunzip -c "$1" | wc -c', 'sh', blob]));
  const n = Number(count.trim());
  checks.push({ tool, what: 'gunzip -c | wc -c', ok: n === result.uncompressedSize, detail: `${n} bytes, reported ${result.uncompressedSize}`, wallMs: gunzipMs });
  // Our verifier on both blobs: on the reference's it is also a cheap interop check.
  try {
    const [out, ms] = await timed(() => runQuiet(process.execPath, [cli, 'layer', 'verify', blob, '--toc-digest', result.tocDigest]));
    checks.push({ tool, what: 'layer verify', ok: true, detail: out.trim(), wallMs: ms });
  } catch (err) {
    checks.push({ tool, what: 'layer verify', ok: false, detail: (err as Error).message, wallMs: 0 });
  }
  return checks;
}

async function inputStats(blob: string): Promise<InputStats> {
  const source = await FileSource.open(blob);
  try {
    const { toc } = await openEstargz(source);
    const byType: Record<string, number> = {};
    let chunkedFiles = 0;
    for (const e of toc.entries) {
      byType[e.type] = (byType[e.type] ?? 0) + 1;
      if (e.type === 'reg' && (e.size ?? 0) > chunkSize) chunkedFiles++;
    }
    return { tocEntries: toc.entries.length, byType, chunkedFiles };
  } finally {
    await source.close();
  }
}

interface InputResult {
  input: LayerInput;
  stats: InputStats | null;
  samples: Sample[];
  checks: Check[];
}

async function benchInput(input: LayerInput, ref: string | null): Promise<InputResult> {
  const outDir = join(benchCacheDir(), 'out');
  await mkdir(outDir, { recursive: true });
  await warmPageCache(input.path);
  const tools: ToolName[] = ref ? ['ours', 'ref'] : ['ours'];
  const samples: Sample[] = [];
  const checks: Check[] = [];
  let stats: InputStats | null = null;
  for (let round = 0; round < runs; round++) {
    // ABBA order: a drift over the run (page cache, other load) does not favour whichever tool always goes first.
    const order = round % 2 === 0 ? tools : [...tools].reverse();
    for (const tool of order) {
      const out = join(outDir, `${input.name}.${tool}.esgz`);
      await rm(out, { force: true });
      const [cmd, cmdArgs] = commandFor(tool, ref, input.path, out);
      const sample = await runMeasured(cmd, cmdArgs);
      const result = parseOutput(tool, sample.stdout);
      samples.push({ ...sample, tool, round, result });
      process.stderr.write(`  ${input.name} round ${round + 1}/${runs} ${tool}: ${(sample.wallMs / 1000).toFixed(2)} s, ` +
        `${(sample.peakRssBytes / MiB).toFixed(0)} MiB peak RSS, blob ${(result.size / MiB).toFixed(1)} MiB\n`);
      if (round === 0) {
        const c = await checkOutput(tool, out, result);
        for (const check of c) process.stderr.write(`    check ${tool} ${check.what}: ${check.ok ? 'ok' : 'FAIL'} (${check.detail})\n`);
        checks.push(...c);
        if (tool === 'ours') stats = await inputStats(out);
      }
      await rm(out, { force: true });
    }
  }
  return { input, stats, samples, checks };
}

interface ToolSummary {
  wallS: Summary;
  mibPerS: number;
  cpuS: Summary | null;
  peakRssMiB: Summary;
  blobBytes: number;
  /** Distinct blob digests over the runs: 1 means the tool's output is reproducible. */
  distinctDigests: number;
}

function summarizeTool(r: InputResult, tool: ToolName): ToolSummary | null {
  const s = r.samples.filter((x) => x.tool === tool);
  if (s.length === 0) return null;
  const wallS = summarize(s.map((x) => x.wallMs / 1000));
  const cpu = s.every((x) => x.userS !== null && x.sysS !== null) ? summarize(s.map((x) => x.userS! + x.sysS!)) : null;
  return {
    wallS,
    mibPerS: r.input.bytes / MiB / wallS.median,
    cpuS: cpu,
    peakRssMiB: summarize(s.map((x) => x.peakRssBytes / MiB)),
    blobBytes: s[0]!.result.size,
    distinctDigests: new Set(s.map((x) => x.result.digest)).size,
  };
}

function ratio(a: number, b: number): string {
  return `${(a / b).toFixed(2)}×`;
}

async function main(): Promise<void> {
  const machine = machineInfo();
  let ref: string | null = null;
  let refError: string | null = null;
  if (args.esgzref) ref = args.esgzref;
  else {
    const built = await buildEsgzref();
    if ('path' in built) ref = built.path;
    else refError = built.error;
  }
  if (!ref) process.stderr.write(`WARNING: no reference tool (${refError}); measuring ours only\n`);

  const inputs: LayerInput[] = [];
  if (args.input?.length) {
    for (const p of args.input) inputs.push(await givenInput(p));
  } else {
    for (const spec of GENERATED) {
      if (spec.name === 'small-files' && args['no-small']) continue;
      const input = await ensureLayerInput(spec);
      process.stderr.write(`input ${input.name}: ${input.path} (${(input.bytes / MiB).toFixed(1)} MiB${input.cached ? ', cached' : ''})\n`);
      inputs.push(input);
    }
  }

  const results: InputResult[] = [];
  for (const input of inputs) results.push(await benchInput(input, ref));

  // Tables.
  const inputRows = results.map((r) => {
    const t = r.stats?.byType ?? {};
    return [r.input.name, (r.input.bytes / MiB).toFixed(1), String(r.stats?.tocEntries ?? '?'), String(t.reg ?? 0), String(t.dir ?? 0),
      String((t.symlink ?? 0) + (t.hardlink ?? 0)), String(r.stats?.chunkedFiles ?? '?'), String(t.chunk ?? 0)];
  });
  const toolRows: string[][] = [];
  const ratioRows: string[][] = [];
  for (const r of results) {
    const ours = summarizeTool(r, 'ours');
    const theirs = summarizeTool(r, 'ref');
    for (const [tool, s] of [['ours', ours], ['ref', theirs]] as const) {
      if (!s) continue;
      toolRows.push([r.input.name, tool, formatSummary(s.wallS, 2), s.mibPerS.toFixed(1), s.cpuS ? s.cpuS.median.toFixed(1) : 'n/a',
        formatSummary(s.peakRssMiB, 0), (s.blobBytes / MiB).toFixed(1), `${((s.blobBytes / r.input.bytes) * 100).toFixed(1)}%`,
        s.distinctDigests === 1 ? 'yes' : `no (${s.distinctDigests} digests)`]);
    }
    if (ours && theirs) {
      ratioRows.push([r.input.name, ratio(ours.wallS.median, theirs.wallS.median),
        ours.cpuS && theirs.cpuS ? ratio(ours.cpuS.median, theirs.cpuS.median) : 'n/a',
        ratio(ours.peakRssMiB.median, theirs.peakRssMiB.median), ratio(ours.blobBytes, theirs.blobBytes)]);
    }
  }
  const failed = results.flatMap((r) => r.checks.filter((c) => !c.ok).map((c) => `${r.input.name} ${c.tool} ${c.what}: ${c.detail}`));
  const refGunzip = results.map((r) => r.checks.find((c) => c.tool === 'ref' && c.what.startsWith('gunzip')))
    .filter((c): c is Check => c !== undefined).map((c) => (c.wallMs / 1000).toFixed(1));

  const out: string[] = [];
  out.push(`## Converter: ours vs reference (chunk ${chunkSize} B, gzip level ${LEVEL}, ${runs} runs each, interleaved)`, '');
  out.push(`Machine: ${describeMachine(machine)}`, '');
  out.push(markdownTable(['input', 'tar MiB', 'TOC entries', 'files', 'dirs', 'links', `files > chunk`, 'chunk entries'], inputRows), '');
  out.push(markdownTable(['input', 'tool', 'wall s median (min–max)', 'input MiB/s', 'CPU s (user+sys)', 'peak RSS MiB median (min–max)', 'blob MiB', 'blob/tar', 'same blob every run'], toolRows), '');
  if (ratioRows.length) out.push(markdownTable(['input', 'wall ours/ref', 'CPU ours/ref', 'peak RSS ours/ref', 'blob size ours/ref'], ratioRows), '');
  if (ref) {
    out.push(`Reference wall times include esgzref's own re-read of its output after estargz.Build (gunzip + sha256 of the ` +
      `whole blob, to report uncompressedSize); for scale, \`gunzip -c | wc -c\` of its blob took ${refGunzip.join(' / ')} s.`, '');
  }
  out.push(failed.length ? `Output checks FAILED:\n${failed.map((f) => `- ${f}`).join('\n')}` :
    `Output checks: ${ref ? 'both blobs gunzip' : 'the blob gunzips'} to the reported uncompressedSize and pass \`layer verify --toc-digest\`.`);
  out.push('', `Load average at the end (1/5/15 min): ${loadNow().join(' ')}; the run itself adds up to 2.`);
  console.log(out.join('\n'));

  const path = await writeResult('convert', {
    benchmark: 'convert',
    machine,
    settings: { runs, chunkSize, level: LEVEL, order: 'ABBA interleaved', ref: ref ?? null, refError },
    inputs: results.map((r) => ({
      ...r.input,
      stats: r.stats,
      summary: { ours: summarizeTool(r, 'ours'), ref: summarizeTool(r, 'ref') },
      checks: r.checks,
      samples: r.samples.map(({ stdout: _o, stderr: _e, ...s }) => s),
    })),
    markdown: out.join('\n'),
  });
  process.stderr.write(`wrote ${path}\n`);
  if (!args['no-write']) process.stderr.write(`wrote ${await writeTables('convert', out.join('\n'), path)}\n`);
  if (failed.length) process.exitCode = 1;
}

await main();
