import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { SingleRangeHosts } from '../../src/registry/range-mode.js';

test('a host that fumbled a multi-range request gets single ranges for a while, then is tried again', async () => {
  const hosts = new SingleRangeHosts(50);
  assert.equal(hosts.has('r.example:5000'), false);
  hosts.add('r.example:5000');
  assert.equal(hosts.has('r.example:5000'), true);
  assert.equal(hosts.has('other.example'), false);
  await sleep(70);
  assert.equal(hosts.has('r.example:5000'), false);
});
