/**
 * The disk cache's hashing thread (see sha256.ts): hashes the bytes it is
 * given and hands them back, transferred both ways so nothing is copied (or
 * reads them in shared memory, and hands back only the hash).
 */
import { createHash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import type { HashReply, HashRequest } from './sha256.js';
import { settleThreadNice } from '../../../workers/thread-priority.js';

// Not at the raised main thread's priority (see workers/thread-priority.ts).
settleThreadNice();

const port = parentPort;
if (!port) throw new Error('sha256-worker runs as a worker thread');

port.on('message', (req: HashRequest) => {
  const hex = createHash('sha256').update(new Uint8Array(req.bytes, req.offset ?? 0, req.length ?? req.bytes.byteLength)).digest('hex');
  if (req.bytes instanceof SharedArrayBuffer) {
    // Shared memory stays where it is: only the hash goes back.
    const reply: HashReply = { id: req.id, hex };
    port.postMessage(reply);
    return;
  }
  const reply: HashReply = { id: req.id, hex, bytes: req.bytes };
  port.postMessage(reply, [req.bytes]);
});
