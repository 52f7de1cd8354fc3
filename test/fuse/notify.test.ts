/**
 * Cache invalidations (Notifier) over a real FUSE mount, with one the kernel
 * really holds up: an INVAL_INODE of a file's pages waits on the page lock of
 * a READ in flight, so it is taken only once that READ is answered. Written
 * on the JS thread, it could never be (the thread that must answer the READ
 * would wait in write(2)); written from the thread pool, the session answers
 * requests meanwhile, and other invalidations are not stuck behind it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { fuseError } from '../../src/fuse/protocol.js';
import { FuseSession } from '../../src/fuse/session.js';
import type { Entry, FuseOperations } from '../../src/fuse/types.js';
import { patternBytes, S_IFDIR, S_IFREG } from './toy-fs.js';

const run = promisify(execFile);
const { ENOENT, ENOTCONN } = constants.errno;
const ROOT = 1;
const HELD = 2; // its READs wait until the test lets them go
const OTHER = 3; // never cached: every stat reaches the session
const HELD_SIZE = 8192;

/** Two files; READs of `held` wait while `holding`, and all go once `release()` is called. */
function heldFs() {
  const held: (() => void)[] = [];
  const arrived: (() => void)[] = [];
  const state = { holding: true, reads: 0 };
  const entry = (id: number): Entry => id === HELD
    ? { nodeid: HELD, attr: { ino: HELD, mode: S_IFREG | 0o444, size: HELD_SIZE }, entryTimeout: 3600, attrTimeout: 3600 }
    : { nodeid: OTHER, attr: { ino: OTHER, mode: S_IFREG | 0o444, size: 1 }, entryTimeout: 0, attrTimeout: 0 };
  const ops: FuseOperations = {
    lookup: (parent, name) => (parent === ROOT && name === 'held' ? entry(HELD) : parent === ROOT && name === 'other' ? entry(OTHER) : null),
    getattr: (id) => (id === ROOT ? { attr: { ino: ROOT, mode: S_IFDIR | 0o555, nlink: 2 } } : { attr: entry(id).attr, attrTimeout: entry(id).attrTimeout }),
    read: (id, offset, size) => {
      if (id !== HELD) throw fuseError('ENOENT');
      state.reads++;
      for (const a of arrived.splice(0)) a();
      const bytes = patternBytes(offset, Math.max(0, Math.min(size, HELD_SIZE - offset)));
      if (!state.holding) return bytes;
      return new Promise<Uint8Array>((resolve) => held.push(() => resolve(bytes)));
    },
  };
  return {
    ops,
    state,
    /** Resolves once a READ (after the `n`th) arrived. */
    readArrived: (n: number): Promise<void> => (state.reads > n ? Promise.resolve() : new Promise((r) => arrived.push(r))),
    release: (): void => {
      state.holding = false;
      for (const h of held.splice(0)) h();
    },
  };
}

describe('cache invalidations while the kernel holds one up', () => {
  let mnt: string;
  let session: FuseSession;
  let fs: ReturnType<typeof heldFs>;

  before(async () => {
    fs = heldFs();
    mnt = await mkdtemp(join(tmpdir(), 'estargz-notify-'));
    session = await FuseSession.mount(fs.ops, { mountpoint: mnt, subtype: 'estargz-notify-test' });
  });
  after(async () => {
    await session?.close();
    await rm(mnt, { recursive: true, force: true });
  });

  test('an INVAL_INODE waiting on a READ in flight: requests are answered meanwhile, INVAL_ENTRY is not stuck behind it, and it is taken once the READ is answered', async () => {
    // Another process reads the file: the kernel locks the page, sends the READ, and the page stays locked until it is answered.
    const reader = run('dd', [`if=${join(mnt, 'held')}`, 'bs=4096', 'count=1', 'status=none'], { encoding: 'buffer' });
    await fs.readArrived(0);

    let taken: number | undefined;
    const inval = session.notifier.invalInode(HELD, 0, 0).then((errno) => { taken = errno; return errno; });
    // Asked again while the first is queued or held: nothing more is written for the same node and range.
    const queued = session.notifier.invalInode(ROOT, -1, 0);
    assert.equal(session.notifier.invalInode(ROOT, -1, 0), queued, 'a second INVAL_INODE of the same node and range joins the queued one');

    // The JS thread answers requests while the kernel holds the invalidation up.
    const before = session.opCounts();
    for (let i = 0; i < 5; i++) assert.equal((await stat(join(mnt, 'other'))).size, 1);
    const after = session.opCounts();
    const answered = (after.LOOKUP ?? 0) + (after.GETATTR ?? 0) - (before.LOOKUP ?? 0) - (before.GETATTR ?? 0);
    assert.ok(answered >= 5, `each stat of an uncached file reached the session (${answered} requests)`);
    // An INVAL_ENTRY goes out on its own: it does not queue behind the held INVAL_INODE.
    assert.equal(await session.notifier.invalEntry(ROOT, 'other'), 0);
    assert.equal(taken, undefined, 'the INVAL_INODE is still held up by the READ in flight');

    fs.release();
    assert.equal(await inval, 0, 'taken once the READ is answered');
    assert.equal(await queued, 0, 'and the one queued behind it then');
    const { stdout } = await reader;
    assert.ok(stdout.equals(patternBytes(0, 4096)), 'the reader got its bytes');

    // With no READ in flight it is taken at once, and the pages are gone from the kernel's cache: the next read asks again.
    // (The reader above may have read the page again itself, if the held invalidation dropped it before the reader woke.)
    assert.equal(await session.notifier.invalInode(HELD, 0, 0), 0);
    const reads = fs.state.reads;
    const { stdout: reread } = await run('dd', [`if=${join(mnt, 'held')}`, 'bs=4096', 'count=1', 'status=none'], { encoding: 'buffer' });
    assert.ok(reread.equals(patternBytes(0, 4096)));
    assert.ok(fs.state.reads > reads, 'the dropped pages were read again');
  });

  test('an inode the kernel does not hold answers ENOENT; after close, ENOTCONN without writing', async () => {
    assert.equal(await session.notifier.invalInode(999_999, 0, 0), ENOENT);
    assert.equal(await session.notifier.invalInode(ROOT, -1, 0), 0, 'attributes only');
    await session.close();
    assert.equal(await session.notifier.invalInode(ROOT, 0, 0), ENOTCONN);
    assert.equal(await session.notifier.invalEntry(ROOT, 'other'), ENOTCONN);
  });
});
