// A request sent as soon as the previous answer to the same origin was read
// (a config right after its manifest, a TOC right after the footer) goes
// over the same kept-alive connection, not a new one: on a real network a
// new connection costs a round trip for its handshake, more with TLS.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Transport } from '../../src/registry/transport.js';

describe('transport: connection reuse', () => {
  let server: Server;
  let origin: string;
  let connections = 0;

  before(async () => {
    server = createServer((req, res) => {
      const size = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('bytes') ?? '10');
      // Answered a little later, as a registry would: the client is waiting when the answer comes.
      setTimeout(() => res.end(Buffer.alloc(size, 0x61)), 2);
    });
    server.on('connection', () => connections++);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  test('requests chained one right after the other use one connection', async () => {
    const transport = new Transport({ maxRetries: 0, minWaitMs: 0, maxWaitMs: 0 });
    try {
      connections = 0;
      const bodies: string[] = [];
      for (let i = 0; i < 6; i++) {
        // The next request is sent in the same turn as the body's end, as the resolver's chained reads are.
        bodies.push(await transport.send({ method: 'GET', url: `${origin}/blob?bytes=${1000 * (i + 1)}`, headers: {}, timeoutMs: 5000 }, (res) => res.body.text()));
      }
      assert.deepEqual(bodies.map((b) => b.length), [1000, 2000, 3000, 4000, 5000, 6000]);
      assert.equal(connections, 1);
    } finally {
      await transport.close();
    }
  });

  test('requests sent together still get a connection each', async () => {
    const transport = new Transport({ maxRetries: 0, minWaitMs: 0, maxWaitMs: 0 });
    try {
      connections = 0;
      const bodies = await Promise.all(Array.from({ length: 4 }, (_, i) => transport.send({ method: 'GET', url: `${origin}/blob?bytes=${i + 1}`, headers: {}, timeoutMs: 5000 }, (res) => res.body.text())));
      assert.deepEqual(bodies, ['a', 'aa', 'aaa', 'aaaa']);
      assert.equal(connections, 4);
    } finally {
      await transport.close();
    }
  });
});
