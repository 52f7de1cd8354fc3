// The resolver's footer and TOC reads are registry traffic like any other:
// labelled, reported through the client's traffic hook and counted in the
// metrics by that hook alone (not a second time by the resolver).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_CONFIG, engineOptions } from '../../src/daemon/config.js';
import { Engine } from '../../src/engine/engine.js';
import { LayerKey } from '../../src/layers/key.js';
import { DEFAULT_RESOLVER, LayerResolver } from '../../src/layers/resolver.js';
import { trafficMetrics } from '../../src/metrics/traffic.js';
import { RegistryClient } from '../../src/registry/client.js';
import { parseReference } from '../../src/registry/reference.js';
import type { RequestReport } from '../../src/registry/traffic.js';
import { loadFixture } from '../../testkit/fixtures.js';
import { pushOneLayerImage, startRegistry, type Registry } from '../../testkit/registry.js';
import { testLog, testTelemetry } from '../../testkit/telemetry.js';

/** One logger and metrics for every store part this file builds, so the tests can read the counters back. */
const telemetry = testTelemetry();

/** The value of one series of the process's metrics (0 when absent). */
async function metric(name: string, operation: string): Promise<number> {
  const data = await telemetry.metrics.registry.getSingleMetric(`estargz_store_${name}`)!.get();
  return data.values.find((v) => v.labels.operation === operation && !String((v as { metricName?: string }).metricName ?? '').endsWith('_bucket'))?.value ?? 0;
}

describe('resolver traffic', () => {
  let reg: Registry;
  let ref: string;
  let digest: string;

  before(async () => {
    reg = await startRegistry();
    const { meta, blob } = await loadFixture('basic');
    digest = await pushOneLayerImage(reg.url, 'traffic/estargz', 'v1', { blob, diffID: meta.diffID, annotations: { 'containerd.io/snapshot/stargz/toc.digest': meta.tocDigest } });
    ref = `${reg.host}/traffic/estargz:v1`;
  });
  after(async () => {
    await reg.stop();
  });

  test('footer and TOC reads are labelled, reported through the hook, and counted once', async () => {
    const requests: RequestReport[] = [];
    const toMetrics = trafficMetrics(telemetry.metrics);
    const client = new RegistryClient({ log: testLog(),
      retry: { maxRetries: 2, minWaitMs: 5, maxWaitMs: 100 },
      credentials: { name: 'none', lookup: async () => undefined },
      traffic: { ...toMetrics, request: (r) => { requests.push(r); toMetrics.request(r); } },
    });
    const engine = await Engine.create(engineOptions(DEFAULT_CONFIG, { fetch: { noPrefetch: true, noBackgroundFetch: true } }), telemetry);
    try {
      const before = { footer: await metric('registry_requests_total', 'footer'), toc: await metric('registry_requests_total', 'toc'), footerBytes: await metric('registry_bytes_total', 'footer'), tocBytes: await metric('registry_bytes_total', 'toc') };
      const opened = await new LayerResolver(client, engine, testLog(), DEFAULT_RESOLVER).open(new LayerKey(parseReference(ref), digest));
      await opened.handle.close();
      const blobReads = requests.filter((r) => r.operation === 'footer' || r.operation === 'toc');
      assert.ok(blobReads.some((r) => r.operation === 'footer'), `operations: ${requests.map((r) => r.operation).join(', ')}`);
      assert.ok(blobReads.every((r) => r.method === 'GET' && r.status === 206 && r.bytes > 0));
      // Every GET of the layer blob while resolving is one of them: no unlabelled (uncounted) read.
      assert.deepEqual(requests.filter((r) => r.method === 'GET' && r.operation === undefined), []);
      const count = (op: string) => blobReads.filter((r) => r.operation === op).length;
      const bytes = (op: string) => blobReads.filter((r) => r.operation === op).reduce((n, r) => n + r.bytes, 0);
      assert.equal(await metric('registry_requests_total', 'footer'), before.footer + count('footer'));
      assert.equal(await metric('registry_requests_total', 'toc'), before.toc + count('toc'));
      assert.equal(await metric('registry_bytes_total', 'footer'), before.footerBytes + bytes('footer'));
      assert.equal(await metric('registry_bytes_total', 'toc'), before.tocBytes + bytes('toc'));
    } finally {
      await engine.close();
      await client.close();
    }
  });
});
