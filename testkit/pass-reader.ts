// A reader loop in a child process (python, so that no FUSE call is made
// from the test process, whose own mount would deadlock it) that prints one
// JSON line per pass over the files; the restart and keeper tests share it.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface PassReader<P> {
  passes: P[];
  /** Resolves once `n` passes in all have completed; fails if the reader dies or `ms` pass first (a hanging read). */
  waitPasses(n: number, ms?: number): Promise<void>;
  /** Closes the reader's stdin (it ends after its current pass) and returns every pass. */
  stop(): Promise<P[]>;
}

/** Runs `python3 -c script ...args`; `stopTimeoutMs` bounds how long stop() waits before SIGKILL. */
export function startPassReader<P>(script: string, args: string[], stopTimeoutMs = 60_000): PassReader<P> {
  const child = spawn('python3', ['-c', script, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  const passes: P[] = [];
  const waiters: (() => void)[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    passes.push(JSON.parse(l) as P);
    for (const w of waiters.splice(0)) w();
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    passes,
    waitPasses: async (n, ms = 60_000) => {
      const deadline = Date.now() + ms;
      while (passes.length < n) {
        const left = deadline - Date.now();
        if (left <= 0 || child.exitCode !== null) throw new Error(`reader: ${passes.length} of ${n} passes after ${ms} ms (a read hanging?)`);
        await new Promise<void>((r) => { const t = setTimeout(r, Math.min(left, 1000)); waiters.push(() => { clearTimeout(t); r(); }); });
      }
    },
    stop: async () => {
      child.stdin.end();
      const t = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs);
      await exited;
      clearTimeout(t);
      return passes;
    },
  };
}
