import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { DecodePool, type Priority } from '../../src/engine/decode-pool.js';
import { BACKGROUND_NICE } from '../../workers/thread-priority.js';
import { testTelemetry } from '../../testkit/telemetry.js';

/** Nice value of every thread of this process, by thread id (Linux /proc). */
function niceByThread(): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    // The fields after the command name "(…)" start with the state (field 3); nice is field 19.
    const fields = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ').at(-1)!.split(' ');
    out.set(Number(tid), Number(fields[16]));
  }
  return out;
}

/** One real decode task at `priority`. */
async function decodeOne(pool: DecodePool, priority: Priority): Promise<void> {
  const plain = randomBytes(8 << 10);
  const member = gzipSync(plain);
  const digest = `sha256:${createHash('sha256').update(plain).digest('hex')}`;
  const [out] = await pool.run(new Uint8Array(member).buffer, [{ offset: 0, length: member.length, refs: [{ path: 'f', fileOffset: 0, innerOffset: 0, size: plain.length, blobOffset: 0, digest }] }], priority);
  assert.deepEqual(out, plain);
}

// The store runs as root (FUSE, containers/storage): a thread may then go back up after a background task.
test('a decode worker runs background tasks BACKGROUND_NICE below the main thread and foreground ones at its priority; the main thread is untouched', async () => {
  assert.equal(process.getuid?.(), 0, 'this test needs root, as the store does');
  const before = niceByThread();
  const mainNice = before.get(process.pid)!;
  const pool = new DecodePool(testTelemetry(), { threads: 1 });
  try {
    const worker = (): [number, number][] => [...niceByThread()].filter(([tid]) => !before.has(tid));
    await decodeOne(pool, 'background');
    assert.ok(worker().some(([, nice]) => nice === Math.min(19, mainNice + BACKGROUND_NICE)), `after a background task, a new thread at nice ${mainNice + BACKGROUND_NICE}: ${JSON.stringify(worker())}`);
    await decodeOne(pool, 'foreground');
    assert.ok(worker().every(([, nice]) => nice === mainNice), `after a foreground task, every new thread at nice ${mainNice}: ${JSON.stringify(worker())}`);
    assert.equal(niceByThread().get(process.pid), mainNice);
  } finally {
    await pool.close();
  }
});

// The store raises its main thread (config main_thread_nice); threads started after it inherit that, and the workers go back to the process's value.
test('with the main thread raised (setMainThreadNice), decode workers still run foreground tasks at the process\'s nice and background ones BACKGROUND_NICE below it', async () => {
  assert.equal(process.getuid?.(), 0, 'this test needs root, as the store does');
  // In a child process: the test runner's own main thread stays as it is.
  const script = `
    import { readdirSync, readFileSync } from 'node:fs';
    import { createHash } from 'node:crypto';
    import { gzipSync } from 'node:zlib';
    import { setMainThreadNice } from ${JSON.stringify(new URL('../../src/daemon/main-thread-priority.js', import.meta.url).href)};
    import { DecodePool } from ${JSON.stringify(new URL('../../src/engine/decode-pool.js', import.meta.url).href)};
    import { testTelemetry } from ${JSON.stringify(new URL('../../testkit/telemetry.js', import.meta.url).href)};
    const nice = () => Object.fromEntries(readdirSync('/proc/self/task').map((t) => [t, Number(readFileSync('/proc/self/task/' + t + '/stat', 'utf8').split(') ').at(-1).split(' ')[16])]));
    const before = nice();
    setMainThreadNice(-5, testTelemetry().log);
    // No inline decodes: every task goes to the worker.
    const pool = new DecodePool(testTelemetry(), { threads: 1, inlineMaxBytes: 0 });
    const plain = Buffer.alloc(8192, 7);
    const member = gzipSync(plain);
    const digest = 'sha256:' + createHash('sha256').update(plain).digest('hex');
    const one = (priority) => pool.run(new Uint8Array(member).buffer, [{ offset: 0, length: member.length, refs: [{ path: 'f', fileOffset: 0, innerOffset: 0, size: plain.length, blobOffset: 0, digest }] }], priority);
    await one('foreground');
    const fg = nice();
    await one('background');
    const bg = nice();
    await pool.close();
    const fresh = (m) => Object.entries(m).filter(([t]) => !(t in before)).map(([, n]) => n);
    console.log(JSON.stringify({ base: before[process.pid], main: fg[process.pid], fg: fresh(fg), bg: fresh(bg) }));
  `;
  const { execFile } = await import('node:child_process');
  const out = await new Promise<string>((resolve, reject) => execFile(process.execPath, ['--input-type=module', '-e', script], (err, stdout, stderr) => (err ? reject(new Error(stderr || err.message)) : resolve(stdout))));
  const r = JSON.parse(out) as { base: number; main: number; fg: number[]; bg: number[] };
  assert.equal(r.main, -5, 'the main thread raised');
  assert.ok(r.fg.length > 0 && r.fg.every((n) => n === r.base), `after a foreground task every new thread at the process's nice ${r.base}: ${JSON.stringify(r.fg)}`);
  assert.ok(r.bg.includes(Math.min(19, r.base + BACKGROUND_NICE)), `after a background task, the worker at ${r.base + BACKGROUND_NICE}: ${JSON.stringify(r.bg)}`);
});
