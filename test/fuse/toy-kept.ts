/**
 * ToyFs as a kept server program: what a keeper (src/fuse/keeper.ts)
 * starts, restarts and replaces after a crash in the tests.
 *   node toy-kept.js <spec-json>
 * The /cycle nodes are its state: exported on restart, but never published
 * on their own, so a successor after a crash does not know the ones made
 * since it started (what the tests use for unknown node ids).
 */
import { existsSync, rmSync } from 'node:fs';
import { serveKept } from '../../src/fuse/keeper-server.js';
import { ToyFs, type ToyState, type ToyTreeSpec } from './toy-fs.js';

/**
 * failStartIfExists: a server started while this file exists fails (a broken upgrade).
 * killAfterReadIfExists: a server started while this file exists removes it
 * and SIGKILLs itself right after reading its first request that needs a
 * reply, before recording it in a journal slot (the addon's test hook).
 */
const spec = JSON.parse(process.argv[2] ?? '{}') as ToyTreeSpec & { failStartIfExists?: string; killAfterReadIfExists?: string };
void serveKept(() => {
  if (spec.failStartIfExists && existsSync(spec.failStartIfExists)) throw new Error('this version does not start');
  if (spec.killAfterReadIfExists && existsSync(spec.killAfterReadIfExists)) {
    rmSync(spec.killAfterReadIfExists);
    // Read by the addon when the session gets its journal (after this returns).
    process.env.ESTARGZ_FUSE_TEST_KILL_AFTER_READS = '1';
  }
  const toy = new ToyFs(spec);
  return {
    ops: toy,
    exportState: () => toy.exportState(),
    importState: (s) => toy.importState(s as ToyState),
  };
}).catch((err: unknown) => {
  process.stderr.write(`toy-kept: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
