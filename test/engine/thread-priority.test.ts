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
