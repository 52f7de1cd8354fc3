// The layer manager with a fake opener: one resolution per key however many
// lookups wait on it, use counts and release, failure memory (expiry,
// forgetFailures, retention in status), the status listing, and every
// failure leaving as a LayerError that keeps the key and the original code.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, mock, test } from 'node:test';
import { LayerError } from '../../src/layers/errors.js';
import { LayerKey } from '../../src/layers/key.js';
import { LayerManager, type LayerHandle, type LayerOpener, type OpenedLayer } from '../../src/layers/manager.js';
import { parseStoreReference } from '../../src/layers/names.js';
import type { ResolvedLayer } from '../../src/layers/resolver.js';
import { RegistryError } from '../../src/registry/errors.js';

const REF = parseStoreReference('reg.example:5000/team/app:1');
const OTHER = parseStoreReference('reg.example:5000/other/app:1');
const A = `sha256:${'a'.repeat(64)}`;
const B = `sha256:${'b'.repeat(64)}`;

interface FakeOpener extends LayerOpener {
  /** Keys opened so far, in order (their text). */
  opened: string[];
  /** Handles made so far, in order. */
  handles: (LayerHandle & { closed: number })[];
  /** The next opens fail with this (until set back to undefined). */
  failWith: unknown;
  /** The next opens wait for `release()`. */
  hold(): void;
  release(): void;
}

function fakeOpener(): FakeOpener {
  const waiting: (() => void)[] = [];
  let held = false;
  const opener: FakeOpener = {
    opened: [],
    handles: [],
    failWith: undefined,
    hold: () => { held = true; },
    release: () => { held = false; for (const w of waiting.splice(0)) w(); },
    open: async (key: LayerKey): Promise<OpenedLayer> => {
      opener.opened.push(key.toString());
      if (held) await new Promise<void>((resolve) => waiting.push(resolve));
      if (opener.failWith !== undefined) throw opener.failWith;
      const handle = {
        size: 1000, state: 'lazy' as const, fetchedBytes: 250, failureReason: undefined, closed: 0,
        close: async () => { handle.closed++; },
      };
      opener.handles.push(handle);
      const layer = { ref: key.ref, refString: key.refText, dirDigest: key.digest, keyedBy: 'layer', blobSize: 1000 } as unknown as ResolvedLayer;
      return { layer, handle };
    },
  };
  return opener;
}

const unauthorized = (): RegistryError => new RegistryError('UNAUTHORIZED', 'registry refused GET manifest (401 Unauthorized)', 401);

describe('layer manager', () => {
  beforeEach(() => mock.timers.enable({ apis: ['Date'], now: 1_000_000 }));
  afterEach(() => mock.timers.reset());

  test('concurrent lookups of one key share one resolution; another digest is another', async () => {
    const o = fakeOpener();
    const m = new LayerManager(o, { failureTtlMs: 5000 });
    o.hold();
    // Distinct LayerKey objects with equal parts: the key's text is what counts.
    const lookups = Array.from({ length: 20 }, () => m.resolve(new LayerKey(REF, A)));
    const other = m.resolve(new LayerKey(REF, B));
    assert.deepEqual(m.status().map((l) => l.state), ['resolving', 'resolving']);
    o.release();
    const layers = await Promise.all(lookups);
    assert.equal(new Set(layers).size, 1, 'every lookup gets the same layer');
    assert.equal((await other).dirDigest, B);
    assert.deepEqual(o.opened, [`reg.example:5000/team/app:1|${A}`, `reg.example:5000/team/app:1|${B}`]);
    await m.resolve(new LayerKey(REF, A));
    assert.equal(o.opened.length, 2, 'a served layer is not opened again');
    await m.close();
    assert.deepEqual(o.handles.map((h) => h.closed), [1, 1]);
  });

  test('use counts: released at the last user, closed once, opened again at the next lookup', async () => {
    const o = fakeOpener();
    const m = new LayerManager(o, { failureTtlMs: 5000 });
    const key = new LayerKey(REF, A);
    await m.resolve(key);
    m.use(key);
    m.use(new LayerKey(REF, A));
    assert.equal(m.status()[0]!.uses, 2);
    assert.equal(await m.release(key), false, 'one user left');
    assert.equal(o.handles[0]!.closed, 0);
    assert.equal(await m.release(key), true);
    assert.equal(o.handles[0]!.closed, 1);
    assert.deepEqual(m.status(), []);
    assert.equal(await m.release(key), false, 'an unknown layer is not released');
    m.use(key); // not served: nothing to count
    await m.resolve(key);
    assert.equal(o.opened.length, 2);
    assert.equal(m.status()[0]!.uses, 0);
    assert.equal(await m.release(key), true, 'a layer nobody said it uses goes at its first release');
    await m.close();
  });

  test('a failure is answered from memory until failureTtlMs has passed', async () => {
    const o = fakeOpener();
    const m = new LayerManager(o, { failureTtlMs: 5000 });
    const key = new LayerKey(REF, A);
    o.failWith = unauthorized();
    await assert.rejects(m.resolve(key), LayerError);
    mock.timers.tick(5000);
    await assert.rejects(m.resolve(key), LayerError);
    assert.equal(o.opened.length, 1, 'within the TTL the failure is remembered');
    mock.timers.tick(1);
    o.failWith = undefined;
    assert.equal((await m.resolve(key)).dirDigest, A, 'after the TTL the layer is opened again');
    assert.equal(o.opened.length, 2);
    assert.equal(m.status()[0]!.state, 'lazy');
    await m.close();
  });

  test('forgetFailures: only that repository, failed or still resolving, is tried again', async () => {
    const o = fakeOpener();
    const m = new LayerManager(o, { failureTtlMs: 60_000 });
    o.failWith = unauthorized();
    await assert.rejects(m.resolve(new LayerKey(REF, A)), LayerError);
    await assert.rejects(m.resolve(new LayerKey(OTHER, A)), LayerError);
    o.hold();
    const inFlight = m.resolve(new LayerKey(REF, B));
    assert.equal(m.forgetFailures(REF.registry, REF.repository), 2, 'the failure and the resolution in flight');
    assert.equal(m.forgetFailures('elsewhere.example', REF.repository), 0);
    o.release();
    await assert.rejects(inFlight, LayerError);
    const asked = o.opened.length;
    await assert.rejects(m.resolve(new LayerKey(REF, A)), LayerError);
    await assert.rejects(m.resolve(new LayerKey(REF, B)), LayerError);
    await assert.rejects(m.resolve(new LayerKey(OTHER, A)), LayerError);
    assert.equal(o.opened.length, asked + 2, 'REF\'s two layers asked again, OTHER\'s answered from memory');
    await assert.rejects(m.resolve(new LayerKey(REF, A)), LayerError);
    assert.equal(o.opened.length, asked + 2, 'the fresh failure is remembered again');
    await m.close();
  });

  test('failed layers leave status after the retention time, served ones stay', async () => {
    const o = fakeOpener();
    const m = new LayerManager(o, { failureTtlMs: 5000 });
    o.failWith = unauthorized();
    await assert.rejects(m.resolve(new LayerKey(REF, A)), LayerError);
    o.failWith = undefined;
    await m.resolve(new LayerKey(REF, B));
    mock.timers.tick(LayerManager.FAILURE_RETENTION_MS + 1);
    await m.resolve(new LayerKey(REF, B)); // any lookup prunes
    assert.deepEqual(m.status().map((l) => l.digest), [B]);
    await m.close();
  });

  test('status lists the key\'s parts as given, never parsed back from the map key', async () => {
    const o = fakeOpener();
    const m = new LayerManager(o, { failureTtlMs: 5000 });
    const hub = parseStoreReference('alpine');
    await m.resolve(new LayerKey(hub, A));
    o.failWith = unauthorized();
    await assert.rejects(m.resolve(new LayerKey(REF, B)), LayerError);
    o.hold();
    void m.resolve(new LayerKey(OTHER, A)).catch(() => {});
    assert.deepEqual(m.status(), [
      { ref: 'docker.io/library/alpine', digest: A, keyedBy: 'layer', state: 'lazy', size: 1000, uses: 0, fetchedBytes: 250, fetchedPercent: 25 },
      { ref: 'reg.example:5000/team/app:1', digest: B, state: 'failed', reason: 'registry refused GET manifest (401 Unauthorized)', uses: 0 },
      { ref: 'reg.example:5000/other/app:1', digest: A, state: 'resolving', uses: 0 },
    ]);
    o.release();
    await m.close();
  });

  test('a registry 401 leaves as a LayerError with its code, the reference and the digest', async () => {
    const o = fakeOpener();
    const m = new LayerManager(o, { failureTtlMs: 5000 });
    const cause = unauthorized();
    o.failWith = cause;
    const err = await m.resolve(new LayerKey(REF, A)).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof LayerError);
    assert.equal(err.code, 'UNAUTHORIZED');
    assert.equal(err.source, 'registry');
    assert.equal(err.stage, 'resolution');
    assert.equal(err.ref, 'reg.example:5000/team/app:1');
    assert.equal(err.digest, A);
    assert.equal(err.cause, cause);
    assert.match(err.message, /401 Unauthorized/);
    // Answered from memory: the same error again.
    assert.equal(await m.resolve(new LayerKey(REF, A)).then(() => undefined, (e: unknown) => e), err);
    await m.close();
  });
});
