import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { prepareSoakImage } from '../../bench/lib/soak-image.js';
import { phasesTable, runSoak } from '../../bench/lib/soak.js';
import { startRegistry, type Registry } from '../../testkit/registry.js';

const MiB = 1024 * 1024;

/**
 * The short soak of CI: the harness of `npm run soak` (bench/lib/soak.ts)
 * with 16 readers over 2 layers for ~20 s warm. A memory cache of 8 MiB
 * makes the warm reads go through the disk cache too, and the page cache
 * is dropped every 5 s so they reach the store. Event-loop delay is
 * reported, not asserted: timings depend on the machine.
 */
describe('soak, short', () => {
  let reg: Registry;
  before(async () => {
    reg = await startRegistry();
  });
  after(async () => {
    await reg?.stop();
  });

  test('16 readers over 2 layers, cold then warm: every byte right, no errors, store alive, fds flat', async (t) => {
    const lines: string[] = [];
    const log = (s: string): void => void lines.push(s);
    const image = await prepareSoakImage(reg.host, 2, 12 * MiB, log);
    const r = await runSoak(image, {
      readers: 16,
      warmSeconds: 20,
      warmUpSeconds: 6,
      coldMaxSeconds: 120,
      dropCachesEverySec: 5,
      storeConfig: `cache.memory_bytes = ${8 * MiB}\n`,
      storeLogLevel: 'warn',
      log,
    });
    t.diagnostic(`\n${phasesTable(r)}\n${lines.join('\n')}`);
    assert.equal(r.coldCompleted, true, 'every file was read once in the cold phase');
    for (const p of r.phases) {
      assert.equal(p.errors, 0, `${p.phase}: ${r.errorSamples.join('; ')}`);
      assert.equal(p.wrongBytes, 0, `${p.phase}: ${r.errorSamples.join('; ')}`);
      assert.ok(p.reads > 0, `${p.phase}: reads happened`);
    }
    const cold = r.phases.find((p) => p.phase === 'cold')!;
    assert.equal(cold.ops, r.layers.reduce((n, l) => n + l.files, 0), 'the cold pass read every file');
    assert.ok(r.storeAliveAtEnd, 'the store answered at the end');
    assert.equal(r.storeExitCode, 0, 'the store stopped cleanly');
    // Open fds after warm-up: a leak of one per read or per cache file would show as hundreds here.
    const warm = r.samples.filter((s) => s.phase === 'warm');
    const afterWarmUp = warm.filter((s) => s.t - warm[0]!.t >= 6);
    assert.ok(afterWarmUp.length >= 10, `enough warm samples (${afterWarmUp.length})`);
    const early = afterWarmUp.slice(0, 3).map((s) => s.fds);
    const late = afterWarmUp.slice(-3).map((s) => s.fds);
    assert.ok(Math.min(...late) - Math.min(...early) <= 8, `fds after warm-up: ${early.join(',')} → ${late.join(',')}`);
  });
});
