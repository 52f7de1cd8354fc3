import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RemoteBlob } from '../../src/registry/blob.js';
import { RegistryClient, type RepoRef } from '../../src/registry/client.js';
import { startFaultProxy, type FaultProxy } from '../../testkit/fault-proxy.js';
import { randomBytes } from '../../testkit/layer-tar.js';
import { pushBlob as seedBlob, startRegistry, type Registry } from '../../testkit/registry.js';
import { testLog } from '../../testkit/telemetry.js';

const BLOB = randomBytes(1_000_000, 7);
const NO_CREDS = { name: 'none', lookup: async () => undefined };
const slice = (offset: number, length: number): Buffer => BLOB.subarray(offset, offset + length);

describe('RemoteBlob: ranged bodies in pooled memory', () => {
  let registry: Registry;
  let proxy: FaultProxy;
  let digest: string;
  let client: RegistryClient;
  let blob: RemoteBlob;
  const repo = (): RepoRef => ({ registry: proxy.host, repository: 'test/pool' });

  before(async () => {
    registry = await startRegistry();
    digest = await seedBlob(registry.url, 'test/pool', BLOB);
    proxy = await startFaultProxy(registry.url);
    client = new RegistryClient({ log: testLog(), credentials: NO_CREDS, retry: { maxRetries: 3, minWaitMs: 5, maxWaitMs: 200 } });
    blob = await RemoteBlob.open(client, repo(), digest, { expectedSize: BLOB.length });
  });
  after(async () => {
    await client.close();
    await proxy.stop();
    await registry.stop();
  });

  test('memory its reader let go takes the next response, and holds that response\'s bytes', async () => {
    client.bodyPool.clear();
    const [a] = await blob.readOwned([{ offset: 0, length: 100_000 }]);
    assert.deepEqual(a!.data, slice(0, 100_000));
    assert.ok(a!.release, 'the caller alone holds it: it says when it is done');
    const memory = a!.data.buffer;
    a!.release!();
    const [b] = await blob.readOwned([{ offset: 500_000, length: 100_000 }]);
    assert.equal(b!.data.buffer, memory, 'the same memory');
    assert.deepEqual(b!.data, slice(500_000, 100_000), 'every byte is the new response\'s');
    b!.release!();
  });

  test('a body held by anyone is not reused: one range of a multi-range answer released, the other not', async () => {
    client.bodyPool.clear();
    const ranges = [{ offset: 10_000, length: 70_000 }, { offset: 700_000, length: 80_000 }];
    const [x, y] = await blob.readOwned(ranges);
    assert.deepEqual([x!.data, y!.data], ranges.map((r) => slice(r.offset, r.length)));
    assert.equal(x!.data.buffer, y!.data.buffer, 'one multipart body');
    x!.release!();
    assert.equal(client.bodyPool.idleBytes, 0, 'y still reads it');
    const [z] = await blob.readOwned(ranges.slice(0, 1));
    assert.notEqual(z!.data.buffer, x!.data.buffer);
    assert.deepEqual(y!.data, slice(700_000, 80_000), 'y untouched');
    y!.release!();
    assert.ok(client.bodyPool.idleBytes > 0);
    z!.release!();
  });

  test('a range joined in flight by another reader, or read with readRanges, is never reused', async () => {
    client.bodyPool.clear();
    proxy.addFault({ path: `/blobs/${digest}`, method: 'GET', kind: 'delay', ms: 100 });
    const [first, second] = await Promise.all([
      blob.readOwned([{ offset: 200_000, length: 100_000 }]),
      blob.readOwned([{ offset: 200_000, length: 100_000 }]),
    ]);
    assert.equal(first![0]!.data.buffer, second![0]!.data.buffer, 'fetched once, shared');
    assert.equal(first![0]!.release, undefined);
    assert.equal(second![0]!.release, undefined);
    proxy.reset();
    const plain = await blob.read(300_000, 100_000);
    assert.deepEqual(plain, slice(300_000, 100_000));
    assert.equal(client.bodyPool.idleBytes, 0, 'nothing went back to the pool');
    const [next] = await blob.readOwned([{ offset: 0, length: 100_000 }]);
    for (const used of [first![0]!.data.buffer, plain.buffer]) assert.notEqual(next!.data.buffer, used);
    assert.deepEqual(first![0]!.data, slice(200_000, 100_000), 'the shared bytes are as they came');
    assert.deepEqual(plain, slice(300_000, 100_000));
  });

  test('a body cut short is refused and its memory goes back to the pool: the retry reads into it, and is right', async () => {
    client.bodyPool.clear();
    const allocated = client.bodyPool.allocatedBytes;
    const acquired = client.bodyPool.acquired;
    const fault = proxy.addFault({ path: `/blobs/${digest}`, method: 'GET', kind: 'reset-mid-body', afterBytes: 5000 });
    const [r] = await blob.readOwned([{ offset: 100_000, length: 150_000 }]);
    assert.equal(fault.hits, 1);
    assert.deepEqual(r!.data, slice(100_000, 150_000));
    assert.equal(client.bodyPool.acquired - acquired, 2, 'the cut answer and the retry');
    assert.equal(client.bodyPool.allocatedBytes - allocated, r!.data.buffer.byteLength, 'one allocation for both');
    proxy.reset();
    r!.release!();
  });
});
