import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { HostScheduler, laneOf, type Lane } from '../../src/engine/host-scheduler.js';

/** A request that finishes when the test says so. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => { open = r; });
  return { promise, open };
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('HostScheduler: one queue per registry host, readers first', () => {
  test('lanes of the fetch operations', () => {
    assert.equal(laneOf('on_demand'), 'foreground');
    assert.equal(laneOf('blob'), 'foreground');
    assert.equal(laneOf('prefetch'), 'prefetch');
    assert.equal(laneOf('background'), 'background');
  });

  test('waiting requests start by priority (reader, prefetch, background), each lane in arrival order', async () => {
    const s = new HostScheduler({ maxRequests: 2, reservedForeground: 0 });
    const started: string[] = [];
    const gates = new Map<string, ReturnType<typeof gate>>();
    const req = (name: string, lane: Lane): Promise<void> => s.run(lane, 1000, () => {
      started.push(name);
      const g = gate();
      gates.set(name, g);
      return g.promise;
    });
    const all = [req('r1', 'foreground'), req('r2', 'foreground')];
    await turn();
    all.push(req('b1', 'background'), req('p1', 'prefetch'), req('b2', 'background'), req('r3', 'foreground'), req('p2', 'prefetch'));
    await turn();
    assert.deepEqual(started, ['r1', 'r2']);
    for (const next of ['r1', 'r2', 'r3', 'p1', 'p2', 'b1']) {
      gates.get(next)!.open();
      await turn();
      await turn();
    }
    assert.deepEqual(started, ['r1', 'r2', 'r3', 'p1', 'p2', 'b1', 'b2']);
    for (const g of gates.values()) g.open();
    await Promise.all(all);
    assert.deepEqual(s.inFlight(), { foreground: 0, prefetch: 0, background: 0 });
  });

  test('background never takes the slots kept for readers: a read arriving during a background fetch starts at once', async () => {
    const s = new HostScheduler({ maxRequests: 4, reservedForeground: 1 });
    const gates: ReturnType<typeof gate>[] = [];
    const bg = Array.from({ length: 6 }, () => s.run('background', 8 << 20, () => {
      const g = gate();
      gates.push(g);
      return g.promise;
    }));
    await turn();
    assert.ok(s.inFlight().background <= 3 && s.inFlight().background >= 1, `${s.inFlight().background} background in flight`);
    let readStarted = false;
    const read = s.run('foreground', 4096, async () => { readStarted = true; });
    await turn();
    assert.equal(readStarted, true, 'the read did not wait for a background range');
    await read;
    while (gates.length) {
      gates.shift()!.open();
      await turn();
      await turn();
    }
    await Promise.all(bg);
  });

  test('a waiting request whose signal aborts leaves the queue', async () => {
    const s = new HostScheduler({ maxRequests: 1, reservedForeground: 0 });
    const g = gate();
    const first = s.run('foreground', 1, () => g.promise);
    const ac = new AbortController();
    const waiting = s.run('background', 1, async () => assert.fail('must not run'), ac.signal);
    ac.abort(new Error('closed'));
    await assert.rejects(waiting, /closed/);
    g.open();
    await first;
    assert.deepEqual(s.inFlight(), { foreground: 0, prefetch: 0, background: 0 });
  });

  test('background ranges in flight follow bandwidth × round trip, within the slots background may take', async () => {
    const s = new HostScheduler({ maxRequests: 16, reservedForeground: 2 });
    assert.equal(s.backgroundSlots(), 2, 'no measurement yet');
    // A 50 ms round trip (small requests) and 8 MiB in 50 + 80 ms: ~100 MB/s, ~5 MB in flight per round trip.
    const wait = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
    await s.run('foreground', 1000, () => wait(50));
    await s.run('foreground', 1000, () => wait(50));
    await s.run('background', 1 << 20, () => wait(60));
    const slots = s.backgroundSlots();
    assert.ok(slots >= 2 && slots <= 14, `${slots}`);
  });

  test('pieces: no cut before the host delivered a MiB; then pieces of ~100 ms of its throughput (at least 512 KiB), three or more in flight', async () => {
    const s = new HostScheduler({ maxRequests: 16, reservedForeground: 2 });
    const wait = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
    assert.deepEqual(s.pieces(), { bytes: Infinity, window: 1 });
    await s.run('foreground', 1000, () => wait(20));
    assert.equal(s.pieces().bytes, Infinity, 'a small answer is mostly a round trip');
    // Two requests in flight together: 4 MiB over ~200 ms of busy time is ~20 KiB/ms, whatever each took alone.
    await Promise.all([s.run('foreground', 2 << 20, () => wait(200)), s.run('background', 2 << 20, () => wait(200))]);
    const cut = s.pieces();
    const perMs = (4 << 20) / 200;
    assert.ok(cut.bytes >= 512 << 10 && Math.abs(cut.bytes - perMs * 100) < perMs * 30, `${cut.bytes}`);
    assert.ok(cut.window >= 3, `${cut.window}`);
    // A slow link: pieces no smaller than 512 KiB.
    const slow = new HostScheduler({ maxRequests: 16, reservedForeground: 2 });
    await slow.run('foreground', 1 << 20, () => wait(400));
    assert.equal(slow.pieces().bytes, 512 << 10);
  });
});
