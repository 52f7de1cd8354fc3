import { parseArgs } from 'node:util';
import fc from 'fast-check';
import { caseArbitrary, createPoolEngine, fuzzTelemetry, loadBases, newStats, runCase, type FuzzCase } from '../test/fuzz/harness.js';

/**
 * Long fuzz campaigns: `npm run fuzz -- --cases N --seed S [--path P] [--verbose] [--no-background] [--no-shared-cache]`.
 * Runs the properties of test/fuzz/format.test.ts (see test/fuzz/harness.ts)
 * for N cases and prints a summary; on a finding, the shrunk case and the
 * seed and path that replay it (`--seed S --path P`).
 */
const { values } = parseArgs({
  options: {
    cases: { type: 'string', default: '1000' },
    seed: { type: 'string' },
    path: { type: 'string' },
    verbose: { type: 'boolean', default: false },
    /** Never run background fetch (to look past a known background-fetch finding). */
    'no-background': { type: 'boolean', default: false },
    /** Skip the engine whose cache already holds the genuine layer's chunks (to look past a known finding there). */
    'no-shared-cache': { type: 'boolean', default: false },
  },
});
const cases = Number(values.cases);
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
if (!Number.isSafeInteger(cases) || cases <= 0 || !Number.isSafeInteger(seed)) {
  console.error('usage: npm run fuzz -- --cases N --seed S [--path P] [--verbose]');
  process.exit(2);
}

const bases = await loadBases();
const poolEngine = await createPoolEngine(fuzzTelemetry(values.verbose));
const stats = newStats();
const started = performance.now();
// Unhandled rejections are findings of the case that caused them (runCase listens for them): never the end of this run.
process.on('unhandledRejection', () => {});
const result = await fc.check(
  fc.asyncProperty(caseArbitrary(bases.length, values['no-background'] ? { background: false } : {}), (c: FuzzCase) => runCase({ bases, poolEngine, stats, noSharedCache: values['no-shared-cache'] }, c)),
  { numRuns: cases, seed, ...(values.path !== undefined && { path: values.path }), endOnFailure: false },
);
await poolEngine.close();

const seconds = ((performance.now() - started) / 1000).toFixed(1);
const rejected = Object.values(stats.rejected).reduce((a, b) => a + b, 0);
console.log(`fuzz: seed ${seed}, ${result.numRuns} cases in ${seconds} s${result.failed ? ' (counts: the cases before the finding)' : ''} (bases: ${bases.map((b) => b.name).join(', ')})`);
console.log(`  rejected at open:      ${rejected} ${JSON.stringify(stats.rejected)}`);
console.log(`  opened:                ${stats.opened} (every read OK: ${stats.openedAllOk})`);
console.log(`  reads OK:              ${stats.readsOk}`);
console.log(`  read errors:           ${Object.values(stats.readErrors).reduce((a, b) => a + b, 0)} ${JSON.stringify(stats.readErrors)}`);
console.log(`  findings (crashes, hangs, short/padded/unverified bytes): ${result.failed ? 1 : 0}`);
if (result.failed) {
  console.log(`\nFINDING after ${result.numRuns} cases (${result.numShrinks} shrinks):`);
  console.log(`  case: ${fc.stringify(result.counterexample?.[0])}`);
  console.log(`  error: ${result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)}`);
  console.log(`  replay: npm run fuzz -- --cases 1 --seed ${result.seed} --path ${result.counterexamplePath}`);
  process.exitCode = 1;
}
