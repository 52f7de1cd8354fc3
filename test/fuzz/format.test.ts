import { after, before, test } from 'node:test';
import fc from 'fast-check';
import type { Engine } from '../../src/engine/engine.js';
import { caseArbitrary, createPoolEngine, fuzzParams, loadBases, newStats, runCase, type Base, type FuzzStats } from './harness.js';

/**
 * Fuzzes the format and the engine with mutated real eStargz blobs (see
 * harness.ts for what a case is and what the property forbids). A fixed seed
 * and a few hundred cases here; FUZZ_CASES / FUZZ_SEED override them, and
 * `npm run fuzz -- --cases N --seed S` runs long campaigns.
 */
const { cases, seed } = fuzzParams({ cases: 300, seed: 20240611 });

let bases: Base[];
let poolEngine: Engine;
const stats: FuzzStats = newStats();

before(async () => {
  bases = await loadBases();
  poolEngine = await createPoolEngine();
});
after(async () => {
  await poolEngine.close();
});

test(`mutated eStargz blobs: open refuses them or every read is verified (${cases} cases, seed ${seed})`, { timeout: 10 * 60_000 }, async () => {
  await fc.assert(
    fc.asyncProperty(caseArbitrary(bases.length), (c) => runCase({ bases, poolEngine, stats }, c)),
    { numRuns: cases, seed, endOnFailure: true },
  );
  // The campaign must reach reads, not only open's refusals.
  if (stats.opened < cases / 5 || stats.readsOk === 0) throw new Error(`too few cases got past open: ${JSON.stringify(stats)}`);
  console.log(`fuzz: ${JSON.stringify(stats)}`);
});
