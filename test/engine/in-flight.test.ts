import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InFlight } from '../../src/util/in-flight.js';

/** A promise and its settlers. */
function later<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

test('share: a second caller gets the pending promise; the entry goes once it settles', async () => {
  const f = new InFlight<string, number>();
  let starts = 0;
  const work = later<number>();
  const a = f.share('k', () => { starts++; return work.promise; });
  const b = f.share('k', () => { starts++; return Promise.resolve(-1); });
  assert.equal(a, b);
  assert.equal(starts, 1);
  assert.equal(f.has('k'), true);
  work.resolve(7);
  assert.equal(await b, 7);
  assert.equal(f.has('k'), false);
  assert.equal(f.size, 0);
  assert.equal(await f.share('k', () => { starts++; return Promise.resolve(8); }), 8, 'a settled key starts afresh');
  assert.equal(starts, 2);
});

test('a rejection reaches the callers, and the bookkeeping leaves no unhandled rejection', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown): void => void unhandled.push(err);
  process.on('unhandledRejection', onUnhandled);
  try {
    const f = new InFlight<string, number>();
    const d = f.defer('k');
    const joined = f.join('k')!;
    d.reject(new Error('boom'));
    await assert.rejects(joined, /boom/);
    await assert.rejects(d.promise, /boom/);
    assert.equal(f.has('k'), false);
    // A deferred nobody awaits: its rejection is handled by the entry's clean-up.
    f.defer('dropped').reject(new Error('nobody listens'));
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(unhandled, []);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});

test('shared says whether anyone joined before the work settled', async () => {
  const f = new InFlight<string, string>();
  const alone = f.defer('a');
  alone.resolve('x');
  await alone.promise;
  assert.equal(alone.shared, false);
  const joinedOnce = f.defer('b');
  void f.join('b');
  joinedOnce.resolve('y');
  await joinedOnce.promise;
  assert.equal(joinedOnce.shared, true);
  assert.equal(f.join('b'), undefined, 'no one joins a settled entry');
});

test('a newer entry for the same key is not removed when an older one settles', async () => {
  const f = new InFlight<string, number>();
  const old = later<number>();
  f.track('k', old.promise);
  const newer = later<number>();
  f.track('k', newer.promise);
  old.resolve(1);
  await old.promise;
  await new Promise((r) => setImmediate(r));
  assert.equal(f.join('k'), newer.promise);
  newer.resolve(2);
  assert.deepEqual(await Promise.all(f.pending()), [2]);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(f.pending(), []);
});
