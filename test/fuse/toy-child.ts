/**
 * Serves ToyFs on the new binding in its own process (so the test process
 * never blocks on its own mount). Started by the tests with an IPC channel:
 *   node toy-child.js mount <mountpoint> <spec-json>
 *   node toy-child.js adopt <mountpoint> <spec-json> <negotiated-json>   (the connection is fd 3)
 * Sends {ready, pid, negotiated} once serving; answers {cmd: 'stats' | 'close' | 'handoff'}.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { FuseSession } from '../../src/fuse/session.js';
import type { Negotiated } from '../../src/fuse/types.js';
import { ToyFs, type ToyTreeSpec } from './toy-fs.js';

export interface ChildStats {
  toy: ReturnType<ToyFs['stats']>;
  sessionOps: Record<string, number>;
  /** Node ids the session believes the kernel holds, and their total references. */
  refNodes: number;
  refTotal: number;
  fds: number;
  heapUsed: number;
  rss: number;
  /** Firings of a 5 ms interval timer since the child started: the loop kept turning. */
  ticks: number;
  busyPollScore: number;
  refusedReplies: number;
  /** Errors the session reported through onError. */
  handlerErrors: number;
}

async function main(): Promise<void> {
  const [mode, mountpoint, specJson, negotiatedJson] = process.argv.slice(2);
  if (!mountpoint || !specJson) throw new Error('usage: toy-child mount|adopt MOUNTPOINT SPEC [NEGOTIATED]');
  const spec = JSON.parse(specJson) as ToyTreeSpec;
  const toy = new ToyFs(spec);
  const busyPollUs = spec.busyPollUs ?? 0;
  let handlerErrors = 0;
  const onError = (): void => { handlerErrors++; };
  const session = mode === 'adopt'
    ? FuseSession.adopt(3, toy, JSON.parse(negotiatedJson!) as Negotiated, { mountpoint, busyPollUs, onError })
    : await FuseSession.mount(toy, { mountpoint, subtype: 'toy' }, { busyPollUs, onError });
  let ticks = 0;
  setInterval(() => { ticks++; }, 5).unref();
  const send = (m: unknown): void => { process.send?.(m); };
  // Unmounted from outside (ENODEV): nothing left to serve. (0: closed or handed on by us.)
  void session.ended.then((errno) => { if (errno) setImmediate(() => process.exit(0)); });
  process.on('message', (m: { cmd: string }) => {
    void (async () => {
      if (m.cmd === 'stats') {
        (globalThis as { gc?: () => void }).gc?.();
        let refTotal = 0;
        for (const n of session.lookupRefs.values()) refTotal += n;
        const stats: ChildStats = {
          toy: toy.stats(),
          sessionOps: session.opCounts() as Record<string, number>,
          refNodes: session.lookupRefs.size,
          refTotal,
          fds: readdirSync('/proc/self/fd').length,
          heapUsed: process.memoryUsage().heapUsed,
          rss: process.memoryUsage().rss,
          ticks,
          busyPollScore: session.busyPollScore,
          refusedReplies: session.refusedReplies,
          handlerErrors,
        };
        send({ stats });
      } else if (m.cmd === 'close') {
        await session.close();
        send({ closed: true });
        process.exit(0);
      } else if (m.cmd === 'handoff') {
        // Stop reading, start a successor on the same (still mounted) connection as its fd 3, then leave.
        const { fd, negotiated } = session.detach();
        const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'adopt', mountpoint, specJson, JSON.stringify(negotiated)], {
          stdio: ['ignore', 'inherit', 'inherit', fd, 'ipc'],
          detached: true,
        });
        child.once('message', (r: { pid: number }) => {
          child.disconnect();
          child.unref();
          send({ successor: r.pid });
          process.exit(0);
        });
      }
    })();
  });
  send({ ready: true, pid: process.pid, negotiated: session.negotiated });
}

main().catch((err: unknown) => {
  process.stderr.write(`toy-child: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
