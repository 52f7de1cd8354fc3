import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { DecodePool } from '../../src/engine/decode-pool.js';
import { WORKER_NICE } from '../../workers/thread-priority.js';

/** Nice value of every thread of this process, by thread id (Linux /proc). */
function niceByThread(): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    // Fields after the command name "(…)": state is field 3, nice field 19.
    const fields = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ').at(-1)!.split(' ');
    out.set(Number(tid), Number(fields[16]));
  }
  return out;
}

test('decode workers run below the main thread\'s priority; the main thread keeps its own', async () => {
  const before = niceByThread();
  const mainNice = before.get(process.pid)!;
  const pool = new DecodePool({ threads: 2 });
  try {
    const plain = randomBytes(8 << 10);
    const member = gzipSync(plain);
    const buffer = new Uint8Array(member).buffer;
    const digest = `sha256:${createHash('sha256').update(plain).digest('hex')}`;
    // A task proves a worker has loaded its module (and set its priority).
    const [out] = await pool.run(buffer, [{ offset: 0, length: member.length, refs: [{ path: 'f', fileOffset: 0, innerOffset: 0, size: plain.length, blobOffset: 0, digest }] }], 'foreground');
    assert.deepEqual(out, plain);
    const after = niceByThread();
    assert.equal(after.get(process.pid), mainNice, 'the main thread is untouched');
    const want = Math.min(19, mainNice + WORKER_NICE);
    const lowered = [...after].filter(([tid, nice]) => !before.has(tid) && nice === want);
    assert.ok(lowered.length >= 1, `a new thread at nice ${want}: ${JSON.stringify([...after])}`);
  } finally {
    await pool.close();
  }
});
