import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { trafficMetrics } from '../../src/metrics/traffic.js';
import { RemoteBlob } from '../../src/registry/blob.js';
import { RegistryClient } from '../../src/registry/client.js';
import { fetchManifest } from '../../src/registry/manifest.js';
import type { RangeSplitReport, RegistryTraffic, RequestReport, RetryReport } from '../../src/registry/traffic.js';
import { startFaultProxy, type FaultProxy } from '../../testkit/fault-proxy.js';
import { pushTestImage } from '../../testkit/images.js';
import { randomBytes } from '../../testkit/layer-tar.js';
import { pushBlob, startRegistry, type Registry } from '../../testkit/registry.js';
import { testLog, testTelemetry } from '../../testkit/telemetry.js';

/** The metrics the traffic hook feeds in this file. */
const telemetry = testTelemetry();

const BLOB = randomBytes(300_000, 16);

/** A hook that keeps every report, and passes each on to the metrics hook too. */
function recorder(): RegistryTraffic & { requests: RequestReport[]; retries: RetryReport[]; splits: RangeSplitReport[] } {
  const toMetrics = trafficMetrics(telemetry.metrics);
  const rec = {
    requests: [] as RequestReport[],
    retries: [] as RetryReport[],
    splits: [] as RangeSplitReport[],
    request(r: RequestReport) { rec.requests.push(r); toMetrics.request(r); },
    retry(r: RetryReport) { rec.retries.push(r); toMetrics.retry(r); },
    rangeSplit(r: RangeSplitReport) { rec.splits.push(r); toMetrics.rangeSplit(r); },
  };
  return rec;
}

/** The value of one series of the process's metrics (0 when absent). */
async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const m = telemetry.metrics.registry.getSingleMetric(`estargz_store_${name}`);
  const data = await m!.get();
  const v = data.values.find((x) => Object.entries(labels).every(([k, want]) => String((x.labels as Record<string, unknown>)[k]) === want) && !('metricName' in x && String(x.metricName).endsWith('_bucket')));
  return v?.value ?? 0;
}

describe('registry traffic: each request, retry and range split reported once, through the client\'s hook', () => {
  let reg: Registry;
  let proxy: FaultProxy;
  let digest: string;
  const repoOf = (host: string) => ({ registry: host, repository: 'traffic/blob' });

  before(async () => {
    reg = await startRegistry();
    digest = await pushBlob(reg.url, 'traffic/blob', BLOB);
    proxy = await startFaultProxy(reg.url, { seed: 16 });
  });
  after(async () => {
    await proxy.stop();
    await reg.stop();
  });

  const client = (traffic: RegistryTraffic) => new RegistryClient({ log: testLog(), retry: { maxRetries: 3, minWaitMs: 5, maxWaitMs: 100 }, credentials: { name: 'none', lookup: async () => undefined }, traffic });

  test('a range read: one request, its bytes and its operation; counted once in the metrics', async () => {
    const hook = recorder();
    const c = client(hook);
    try {
      const blob = await RemoteBlob.open(c, repoOf(proxy.host), digest, { expectedSize: BLOB.length });
      const before = await metric('registry_requests_total', { operation: 'on_demand' });
      const bytesBefore = await metric('registry_bytes_total', { operation: 'on_demand' });
      proxy.reset();
      assert.deepEqual(await blob.read(1000, 5000, undefined, 'on_demand'), BLOB.subarray(1000, 6000));
      assert.equal(proxy.requests.length, 1);
      assert.equal(hook.requests.length, 1);
      assert.deepEqual({ ...hook.requests[0]!, seconds: 0 }, { operation: 'on_demand', method: 'GET', status: 206, bytes: 5000, seconds: 0 });
      assert.deepEqual(hook.retries, []);
      assert.deepEqual(hook.splits, []);
      assert.equal(await metric('registry_requests_total', { operation: 'on_demand' }), before + 1);
      assert.equal(await metric('registry_bytes_total', { operation: 'on_demand' }), bytesBefore + 5000);
      // The same range asked twice at once is one request.
      proxy.reset();
      const [a, b] = await Promise.all([blob.read(0, 10, undefined, 'on_demand'), blob.read(0, 10, undefined, 'prefetch')]);
      assert.deepEqual(a, b);
      assert.equal(proxy.requests.length, 1);
      assert.equal(hook.requests.length, 2);
    } finally {
      await c.close();
    }
  });

  test('a retry after a 503: two requests, one retry with its reason', async () => {
    const hook = recorder();
    const c = client(hook);
    try {
      const blob = await RemoteBlob.open(c, repoOf(proxy.host), digest, { expectedSize: BLOB.length });
      const before = await metric('registry_retries_total', { operation: 'background', reason: 'status' });
      const f = proxy.addFault({ path: `/blobs/${digest}`, method: 'GET', kind: 'status', status: 503, times: 1 });
      assert.deepEqual(await blob.read(0, 100, undefined, 'background'), BLOB.subarray(0, 100));
      assert.equal(f.hits, 1);
      assert.deepEqual(hook.requests.map((r) => r.status), [503, 206]);
      assert.deepEqual(hook.retries, [{ operation: 'background', reason: 'status' }]);
      assert.equal(await metric('registry_retries_total', { operation: 'background', reason: 'status' }), before + 1);
    } finally {
      proxy.clearFaults();
      await c.close();
    }
  });

  test('a range split: a registry that refuses multi-range requests', async () => {
    const hook = recorder();
    const c = client(hook);
    try {
      const blob = await RemoteBlob.open(c, repoOf(proxy.host), digest, { expectedSize: BLOB.length });
      const before = await metric('registry_range_splits_total', { operation: 'prefetch', reason: 'refused' });
      proxy.addFault({ kind: 'no-multirange', times: Infinity });
      const ranges = [{ offset: 0, length: 10 }, { offset: 200_000, length: 10 }];
      assert.deepEqual(await blob.readRanges(ranges, undefined, 'prefetch'), ranges.map((r) => BLOB.subarray(r.offset, r.offset + r.length)));
      assert.deepEqual(hook.splits, [{ operation: 'prefetch', reason: 'refused', ranges: 2, requests: 2 }]);
      // The 400 is reported when its handling (the two single ranges) is over.
      assert.deepEqual(hook.requests.map((r) => r.status).sort(), [206, 206, 400]);
      assert.deepEqual(hook.retries, []);
      assert.equal(await metric('registry_range_splits_total', { operation: 'prefetch', reason: 'refused' }), before + 1);
      // The host is now in single-range mode: the next scattered read is a split of that kind.
      await blob.readRanges([{ offset: 5, length: 5 }, { offset: 250_000, length: 5 }], undefined, 'prefetch');
      assert.deepEqual(hook.splits.at(-1), { operation: 'prefetch', reason: 'single_range_mode', ranges: 2, requests: 2 });
    } finally {
      proxy.clearFaults();
      await c.close();
    }
  });

  test('manifests are labelled; unlabelled requests are reported but not counted in the metrics', async () => {
    await pushTestImage(reg.host, 'traffic/image', 'v1', { layers: [[{ name: 'f', type: 'file', content: Buffer.from('x') }]] });
    const hook = recorder();
    const c = client(hook);
    try {
      const before = await metric('registry_requests_total', { operation: 'manifest' });
      await fetchManifest(c, { registry: reg.host, repository: 'traffic/image' }, 'v1');
      assert.deepEqual(hook.requests.map((r) => r.operation), ['manifest']);
      assert.equal(await metric('registry_requests_total', { operation: 'manifest' }), before + 1);
      const blob = await RemoteBlob.open(c, repoOf(reg.host), digest);
      await blob.read(0, 1);
      assert.deepEqual(hook.requests.slice(1).map((r) => [r.operation, r.method]), [[undefined, 'HEAD'], [undefined, 'GET']]);
      assert.equal(await metric('registry_requests_total', { operation: 'manifest' }), before + 1);
    } finally {
      await c.close();
    }
  });
});
