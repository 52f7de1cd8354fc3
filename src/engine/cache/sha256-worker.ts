/**
 * The disk cache's hashing thread (see sha256.ts): hashes the bytes it is
 * given and hands them back, transferred both ways so nothing is copied.
 */
import { createHash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import type { HashReply, HashRequest } from './sha256.js';

const port = parentPort;
if (!port) throw new Error('sha256-worker runs as a worker thread');

port.on('message', (req: HashRequest) => {
  const hex = createHash('sha256').update(new Uint8Array(req.bytes)).digest('hex');
  const reply: HashReply = { id: req.id, hex, bytes: req.bytes };
  port.postMessage(reply, [req.bytes]);
});
