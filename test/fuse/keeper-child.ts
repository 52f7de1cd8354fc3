/**
 * A keeper for the toy filesystem in its own process, driven by the tests
 * over IPC (so a test can SIGKILL the keeper too):
 *   node --expose-gc keeper-child.js <mountpoint> <spec-json> [<keeper-options-json>]
 * Sends {ready, status}; answers {cmd: 'status' | 'usage' | 'restart' | 'restartMany' | 'stop'}.
 */
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Keeper, type KeeperOptions, type RestartResult } from '../../src/fuse/keeper.js';
import { testLog } from '../../testkit/telemetry.js';

export interface KeeperUsage {
  fds: number;
  rss: number;
  heapUsed: number;
}

export interface ManyRestarts {
  count: number;
  failed: number;
  ms: number;
  maxReadyMs: number;
  meanReadyMs: number;
  /** The keeper's fds and memory after the first `warmup` restarts and at the end. */
  before: KeeperUsage;
  after: KeeperUsage;
}

const ENTRY = fileURLToPath(new URL('./toy-kept.js', import.meta.url));

function usage(): KeeperUsage {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return { fds: readdirSync('/proc/self/fd').length, rss: m.rss, heapUsed: m.heapUsed };
}

async function main(): Promise<void> {
  const [mountpoint, specJson, optsJson] = process.argv.slice(2);
  if (!mountpoint || !specJson) throw new Error('usage: keeper-child MOUNTPOINT SPEC');
  const keeper = await Keeper.start({
    mount: { mountpoint, subtype: 'toy' },
    logger: testLog(),
    entry: ENTRY,
    args: [specJson],
    readyTimeoutMs: 15_000,
    drainTimeoutMs: 15_000,
    ...(JSON.parse(optsJson ?? '{}') as Partial<KeeperOptions>),
  });
  const send = (m: unknown): void => { process.send?.(m); };
  process.on('disconnect', () => { void keeper.stop().then(() => process.exit(0)); });
  process.on('message', (m: { cmd: string; n?: number; ms?: number; warmup?: number }) => {
    void (async () => {
      if (m.cmd === 'status') send({ status: keeper.status() });
      else if (m.cmd === 'usage') send({ usage: usage() });
      else if (m.cmd === 'restart') {
        await keeper.restart().then((r) => send({ restarted: r }), (err: Error) => send({ restartFailed: err.message }));
      } else if (m.cmd === 'restartMany') {
        const warmup = m.warmup ?? 20;
        const t0 = Date.now();
        let count = 0;
        let failed = 0;
        let sumReady = 0;
        let maxReady = 0;
        let before = usage();
        while (count < (m.n ?? 1000) && Date.now() - t0 < (m.ms ?? 60_000)) {
          const r: RestartResult | undefined = await keeper.restart().catch(() => undefined);
          if (!r) { failed++; continue; }
          count++;
          sumReady += r.readyMs;
          maxReady = Math.max(maxReady, r.readyMs);
          if (count === warmup) before = usage();
        }
        const many: ManyRestarts = { count, failed, ms: Date.now() - t0, maxReadyMs: maxReady, meanReadyMs: sumReady / Math.max(1, count), before, after: usage() };
        send({ many });
      } else if (m.cmd === 'stop') {
        await keeper.stop();
        send({ stopped: true });
        process.exit(0);
      }
    })();
  });
  send({ ready: true, status: keeper.status() });
}

main().catch((err: unknown) => {
  process.stderr.write(`keeper-child: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
