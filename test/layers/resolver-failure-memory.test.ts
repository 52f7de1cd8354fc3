// The resolver's failure memory: a failed lookup is answered from memory for
// failureTtlMs, except for a repository whose credentials just arrived
// (forgetFailures), where the next lookup asks the registry again, also when
// the failure was still in flight as the credentials arrived.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Engine } from '../../src/engine/engine.js';
import { LayerError } from '../../src/layers/errors.js';
import { LayerKey } from '../../src/layers/key.js';
import { LayerManager } from '../../src/layers/manager.js';
import { DEFAULT_RESOLVER, LayerResolver } from '../../src/layers/resolver.js';
import type { RegistryClient } from '../../src/registry/client.js';
import { RegistryError } from '../../src/registry/errors.js';
import { parseReference } from '../../src/registry/reference.js';
import { testLog } from '../../testkit/telemetry.js';

const DIGEST = `sha256:${'1'.repeat(64)}`;

interface RefusingClient {
  client: RegistryClient;
  /** Requests made so far. */
  calls(): number;
  /** Requests made from now on wait for `release`. */
  hold(): void;
  release(): void;
}

/** A registry client whose every request fails with 401 (held ones when released). */
function refusingClient(): RefusingClient {
  let calls = 0;
  let held = false;
  const waiting: (() => void)[] = [];
  const refused = (): RegistryError => new RegistryError('UNAUTHORIZED', 'registry refused GET manifest (401 Unauthorized, no credentials were found)', 401);
  const client = {
    call: (): Promise<never> => {
      calls++;
      if (!held) return Promise.reject(refused());
      return new Promise((_, reject) => waiting.push(() => reject(refused())));
    },
  };
  return {
    client: client as unknown as RegistryClient,
    calls: () => calls,
    hold: () => { held = true; },
    release: () => { held = false; for (const w of waiting.splice(0)) w(); },
  };
}

function resolver(client: RegistryClient): LayerManager {
  // A long TTL: "from memory" must not depend on how fast the test runs.
  return new LayerManager(new LayerResolver(client, {} as Engine, testLog(), DEFAULT_RESOLVER), { failureTtlMs: 60_000 });
}

describe('resolver failure memory', () => {
  const ref = parseReference('reg.example:5000/private/app:1');
  const other = parseReference('reg.example:5000/other/app:1');

  test('a failure is answered from memory; credentials for another repository change nothing', async () => {
    const c = refusingClient();
    const r = resolver(c.client);
    await assert.rejects(r.resolve(new LayerKey(ref, DIGEST)), LayerError);
    const asked = c.calls();
    await assert.rejects(r.resolve(new LayerKey(ref, DIGEST)), LayerError);
    assert.equal(c.calls(), asked, 'the second lookup should not reach the registry');
    assert.equal(r.forgetFailures(other.registry, other.repository), 0);
    assert.equal(r.forgetFailures('other.example', ref.repository), 0);
    await assert.rejects(r.resolve(new LayerKey(ref, DIGEST)), LayerError);
    assert.equal(c.calls(), asked);
    await r.close();
  });

  test('after forgetFailures the next lookup asks the registry again, once; then the new failure is remembered', async () => {
    const c = refusingClient();
    const r = resolver(c.client);
    await assert.rejects(r.resolve(new LayerKey(ref, DIGEST)), LayerError);
    const asked = c.calls();
    assert.equal(r.forgetFailures(ref.registry, ref.repository), 1);
    await assert.rejects(r.resolve(new LayerKey(ref, DIGEST)), LayerError);
    assert.equal(c.calls(), 2 * asked);
    await assert.rejects(r.resolve(new LayerKey(ref, DIGEST)), LayerError);
    assert.equal(c.calls(), 2 * asked, 'the fresh failure is remembered again');
    assert.deepEqual(r.status().map((l) => l.state), ['failed']);
    await r.close();
  });

  test('a resolution in flight when credentials arrive is not remembered when it fails', async () => {
    const c = refusingClient();
    const r = resolver(c.client);
    c.hold();
    const inFlight = r.resolve(new LayerKey(ref, DIGEST));
    assert.equal(r.forgetFailures(ref.registry, ref.repository), 1);
    c.release();
    await assert.rejects(inFlight, LayerError);
    const asked = c.calls();
    await assert.rejects(r.resolve(new LayerKey(ref, DIGEST)), LayerError);
    assert.ok(c.calls() > asked, 'the lookup after the in-flight failure should ask the registry again');
    await r.close();
  });
});
