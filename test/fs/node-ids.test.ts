import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { FsAnswer } from '../../src/fs/errno.js';
import { encodeRefDir } from '../../src/fs/names.js';
import { Low, NodeIdTable, ROOT_ID, SlotTableFull, WHITEOUT_BIT, layerKey, lowOf, makeId, refKey, slotOf } from '../../src/fs/node-ids.js';
import { StoreFs } from '../../src/fs/store-fs.js';
import type { Entry } from '../../src/fuse/types.js';
import type { SpecEntry } from '../../testkit/layer-tar.js';
import { layerBlob, stubResolver } from './stub-layer.js';
import { testLog } from '../../testkit/telemetry.js';

/** A read's answer as one Buffer (file reads come as the chunks' pieces). */
function joined(data: Uint8Array | readonly Uint8Array[]): Buffer {
  return Array.isArray(data) ? Buffer.concat(data as readonly Uint8Array[]) : Buffer.from(data as Uint8Array);
}

const ESTALE = -116;
const ENOENT = -2;
const EROFS = -30;

async function errnoOf(f: () => unknown): Promise<number | undefined> {
  try {
    await f();
    return undefined;
  } catch (err) {
    return err instanceof FsAnswer ? err.errno : NaN;
  }
}

const SPEC: SpecEntry[] = [
  { name: 'bin/', type: 'directory' },
  { name: 'bin/tool', type: 'file', mode: 0o755, content: Buffer.from('#!/bin/sh\necho tool\n') },
  { name: 'bin/hard', type: 'link', linkname: 'bin/tool' },
  { name: 'etc/', type: 'directory' },
  { name: 'etc/.wh.gone', type: 'file' },
  { name: 'etc/os-release', type: 'file', content: Buffer.from('ID=test\n') },
];

const CONTENTS = { 'etc/os-release': 'ID=test\n', 'bin/tool': '#!/bin/sh\necho tool\n' };

const REF = 'registry.example/app/image:v1';
const DIGEST_A = `sha256:${'a'.repeat(64)}`;
const DIGEST_B = `sha256:${'b'.repeat(64)}`;

/** Looks a path up from the root, name by name; returns every entry on the way. */
async function walk(fs: StoreFs, ...names: string[]): Promise<Entry[]> {
  const out: Entry[] = [];
  let parent = ROOT_ID;
  for (const name of names) {
    const e = await fs.lookup(parent, name);
    assert.ok(e && e.nodeid !== 0, `${names.join('/')}: ${name} exists`);
    out.push(e);
    parent = e.nodeid;
  }
  return out;
}

describe('node ids', () => {
  test('an id is slot · 2^32 + low, below 2^53, and splits back', () => {
    const max = makeId(2 ** 21 - 1, Low.LAYER_DIR);
    assert.ok(max < 2 ** 53);
    assert.equal(slotOf(max), 2 ** 21 - 1);
    assert.equal(lowOf(max), Low.LAYER_DIR);
    assert.equal(slotOf(makeId(7, WHITEOUT_BIT + 5)), 7);
    assert.equal(lowOf(makeId(7, WHITEOUT_BIT + 5)), WHITEOUT_BIT + 5);
  });

  test('a key\'s slot is a pure function of the key: the same in every table, whatever came before', () => {
    const keys = Array.from({ length: 50 }, (_, i) => layerKey(encodeRefDir(`r/x:${i}`), `sha256:${createHash('sha256').update(String(i)).digest('hex')}`));
    const a = new NodeIdTable();
    const b = new NodeIdTable();
    for (const k of keys) a.slotFor(k);
    for (const k of [...keys].reverse()) b.slotFor(k);
    for (const k of keys) assert.equal(a.slotFor(k), b.slotFor(k));
    for (const k of keys) assert.equal(a.peek(k), a.homeSlot(k), 'no collision among 50 keys in 2^21 slots');
  });

  test('collisions are probed to the next free slot; a successor importing the table gives every key its slot, whatever order it meets them in', () => {
    const t = new NodeIdTable(3); // 7 slots: collisions for certain
    const keys = Array.from({ length: 7 }, (_, i) => refKey(`k${i}`));
    const slots = keys.map((k) => t.slotFor(k));
    assert.equal(new Set(slots).size, 7, 'distinct slots');
    assert.ok(slots.every((s) => s >= 1 && s <= 7));
    assert.ok(keys.some((k, i) => t.homeSlot(k) !== slots[i]), 'some key was probed past its home slot');
    assert.throws(() => t.slotFor(refKey('one more')), SlotTableFull);
    const successor = new NodeIdTable(3);
    successor.import(JSON.parse(JSON.stringify(t.export())));
    for (const [i, k] of [...keys.entries()].reverse()) assert.equal(successor.slotFor(k), slots[i]);
    // A freed slot is taken again by the next key that wants it.
    t.free(slots[0]!);
    assert.equal(t.keyAt(slots[0]!), undefined);
    assert.equal(t.slotFor(refKey('new')), slots[0]);
    assert.throws(() => successor.import({ version: 1, slotBits: 21, slots: [] }), /cannot be imported/);
  });
});

describe('the store tree by node id', () => {
  test('two processes give the same ids to the same names; hardlinks share one; st_ino is the node id', async () => {
    const { blob, bytes } = await layerBlob(SPEC);
    const one = new StoreFs(stubResolver(blob, bytes, CONTENTS), { log: testLog() });
    const two = new StoreFs(stubResolver(blob, bytes, CONTENTS), { log: testLog() });
    const ref = encodeRefDir(REF);
    // Another layer first in the second process: ids do not depend on the order layers are met in.
    await walk(two, ref, DIGEST_B, 'diff', 'etc');
    for (const path of [['diff', 'bin', 'tool'], ['diff', 'bin', 'hard'], ['diff', 'etc', 'gone'], ['info'], ['blob']]) {
      const a = await walk(one, ref, DIGEST_A, ...path);
      const b = await walk(two, ref, DIGEST_A, ...path);
      assert.deepEqual(a.map((e) => e.nodeid), b.map((e) => e.nodeid), path.join('/'));
      for (const e of a) assert.equal(e.attr.ino, e.nodeid);
    }
    const [, , , , tool] = await walk(one, ref, DIGEST_A, 'diff', 'bin', 'tool');
    const [, , , , hard] = await walk(one, ref, DIGEST_A, 'diff', 'bin', 'hard');
    assert.equal(tool!.nodeid, hard!.nodeid);
    const [refDir, layerDir, diff] = await walk(one, ref, DIGEST_A, 'diff');
    assert.equal(lowOf(refDir!.nodeid), Low.REF_DIR);
    assert.equal(lowOf(layerDir!.nodeid), Low.LAYER_DIR);
    assert.equal(lowOf(diff!.nodeid), Low.DIFF);
    assert.equal(slotOf(diff!.nodeid), slotOf(layerDir!.nodeid));
    assert.equal(lowOf(tool!.nodeid), blob.index.byPath.get('bin/tool')!.ino, 'the low part is the node\'s number in the layer index');
    const gone = (await walk(one, ref, DIGEST_A, 'diff', 'etc', 'gone')).at(-1)!;
    assert.equal(gone.attr.mode, 0o020000, 'a whiteout is a 0:0 character device');
    assert.equal(lowOf(gone.nodeid), WHITEOUT_BIT + blob.index.byPath.get('etc/.wh.gone')!.ino);
  });

  test('an id the process never gave out answers ESTALE; a name that is not there, ENOENT (or a negative entry in a layer)', async () => {
    const { blob, bytes } = await layerBlob(SPEC);
    const fs = new StoreFs(stubResolver(blob, bytes, CONTENTS), { log: testLog() });
    const ref = encodeRefDir(REF);
    const [, , diff] = await walk(fs, ref, DIGEST_A, 'diff');
    assert.equal(await errnoOf(() => fs.getattr(makeId(12345, 1))), ESTALE);
    assert.equal(await errnoOf(() => fs.lookup(makeId(12345, 1), 'x')), ESTALE);
    assert.equal(await errnoOf(() => fs.read(makeId(99, 0), 0, 10)), ESTALE);
    assert.equal(await errnoOf(() => fs.getattr(makeId(slotOf(diff!.nodeid), 999_999))), ESTALE, 'a node number the layer does not have');
    assert.equal(await fs.lookup(ROOT_ID, 'not base64!'), null);
    assert.equal(await fs.lookup(makeId(slotOf((await walk(fs, ref))[0]!.nodeid), Low.REF_DIR), 'sha256:1234'), null);
    assert.equal(await fs.lookup(makeId(slotOf(diff!.nodeid), Low.LAYER_DIR), 'use'), null);
    const missing = await fs.lookup(diff!.nodeid, 'nope');
    assert.equal(missing?.nodeid, 0, 'a negative entry: the layer never changes');
    assert.ok((missing?.entryTimeout ?? 0) > 0);
  });

  test('a successor that imports the table answers for ids it never looked up, resolving their layer again', async () => {
    const { blob, bytes } = await layerBlob(SPEC);
    const first = new StoreFs(stubResolver(blob, bytes, CONTENTS), { log: testLog(), slotBits: 2 }); // 3 slots: a reference and two layers collide
    const ref = encodeRefDir(REF);
    const a = await walk(first, ref, DIGEST_A, 'diff', 'bin', 'tool');
    const b = await walk(first, ref, DIGEST_B, 'diff', 'etc', 'os-release');
    const resolver = stubResolver(blob, bytes, CONTENTS);
    const successor = new StoreFs(resolver, { log: testLog(), slotBits: 2 });
    successor.importNodeTable(JSON.parse(JSON.stringify(first.exportNodeTable())));
    const shape = (x: Entry['attr']) => ({ ino: x.ino, mode: x.mode, size: x.size, nlink: x.nlink }); // the store's own directories carry this process's mtime
    for (const e of [...a, ...b]) assert.deepEqual(shape((await successor.getattr(e.nodeid)).attr), shape(e.attr));
    assert.equal(resolver.resolutions, 2, 'each layer resolved once, on its first id');
    assert.equal(joined(await successor.read(b.at(-1)!.nodeid, 0, 4096)).toString(), 'ID=test\n');
    // Met in the other order, the names still get the predecessor's ids.
    assert.deepEqual((await walk(successor, ref, DIGEST_B, 'diff')).map((e) => e.nodeid), b.slice(0, 3).map((e) => e.nodeid));
  });

  test('use and rmdir answer ENOENT; every other create, mkdir, unlink or rmdir is EROFS; a released layer answers again', async () => {
    const { blob, bytes } = await layerBlob(SPEC);
    const resolver = stubResolver(blob, bytes, CONTENTS);
    const fs = new StoreFs(resolver, { log: testLog() });
    const ref = encodeRefDir(REF);
    const [refDir, layerDir, diff] = await walk(fs, ref, DIGEST_A, 'diff');
    assert.equal(await errnoOf(() => fs.create(layerDir!.nodeid, 'use')), ENOENT);
    assert.equal(await errnoOf(() => fs.create(layerDir!.nodeid, 'other')), EROFS);
    assert.equal(await errnoOf(() => fs.create(diff!.nodeid, 'use')), EROFS);
    assert.equal(await errnoOf(() => fs.rmdir(ROOT_ID, ref)), EROFS);
    assert.equal(await errnoOf(() => fs.rmdir(refDir!.nodeid, 'not-a-digest')), EROFS);
    assert.equal(await errnoOf(() => fs.mkdir()), EROFS);
    assert.equal(await errnoOf(() => fs.rmdir(refDir!.nodeid, DIGEST_A)), ENOENT);
    assert.equal(resolver.released, 1);
    const before = resolver.resolutions;
    assert.equal((await fs.getattr(diff!.nodeid)).attr.ino, diff!.nodeid, 'the released layer\'s ids still answer');
    assert.equal(resolver.resolutions, before + 1, 'by resolving it again');
  });

  test('reads are exactly what was asked, short only at the end; reference directories leave the table once forgotten', async () => {
    const { blob, bytes } = await layerBlob(SPEC);
    const fs = new StoreFs(stubResolver(blob, bytes, CONTENTS), { log: testLog() });
    const ref = encodeRefDir(REF);
    const entries = await walk(fs, ref, DIGEST_A, 'diff', 'bin', 'tool');
    const tool = entries.at(-1)!;
    assert.equal(joined(await fs.read(tool.nodeid, 3, 4)).toString(), 'bin/');
    assert.equal(joined(await fs.read(tool.nodeid, 10, 4096)).toString(), 'echo tool\n');
    assert.equal((await fs.read(tool.nodeid, 100, 10)).length, 0);
    const info = (await walk(fs, ref, DIGEST_A, 'info')).at(-1)!;
    assert.equal(info.attr.size, (await fs.read(info.nodeid, 0, 1 << 20)).length, 'info has its size at all times');
    const blobEntry = (await walk(fs, ref, DIGEST_A, 'blob')).at(-1)!;
    assert.equal(blobEntry.attr.size, bytes.length);
    const refId = entries[0]!.nodeid;
    const lookups = 3; // this test's three walks each looked the reference directory up
    assert.equal(fs.exportNodeTable().slots.filter(([, k]) => k === refKey(ref)).length, 1);
    fs.forget(refId, lookups - 1);
    assert.equal(fs.exportNodeTable().slots.filter(([, k]) => k === refKey(ref)).length, 1, 'still held');
    fs.forget(refId, 1);
    assert.equal(fs.exportNodeTable().slots.filter(([, k]) => k === refKey(ref)).length, 0, 'forgotten: freed');
    assert.ok(fs.exportNodeTable().slots.some(([, k]) => k === layerKey(ref, DIGEST_A)), 'layer slots stay');
    // A successor knows a reference directory's lookups only if told (the session's lookupRefs); else it keeps the slot.
    await walk(fs, ref);
    const held = (t: StoreFs): boolean => t.exportNodeTable().slots.some(([, k]) => k === refKey(ref));
    const blind = new StoreFs(stubResolver(blob, bytes, CONTENTS), { log: testLog() });
    blind.importNodeTable(fs.exportNodeTable());
    blind.forget(refId, 1);
    assert.ok(held(blind), 'lookups unknown: kept');
    const told = new StoreFs(stubResolver(blob, bytes, CONTENTS), { log: testLog() });
    told.importNodeTable(fs.exportNodeTable(), new Map([[refId, 2]]));
    await walk(told, ref);
    told.forget(refId, 2);
    assert.ok(held(told), 'one lookup still held');
    told.forget(refId, 1);
    assert.ok(!held(told), 'all forgotten: freed');
  });
  test('the table is published on every change; a merge while serving keeps what is served and adds the predecessor\'s ids', async () => {
    const { blob, bytes } = await layerBlob(SPEC);
    const ref = encodeRefDir(REF);
    let changes = 0;
    const old = new StoreFs(stubResolver(blob, bytes, CONTENTS), { log: testLog(), onStateChange: () => { changes++; } });
    const a = await walk(old, ref, DIGEST_A, 'diff', 'bin', 'tool');
    assert.equal(changes, 3, 'a reference and a layer directory: two new slots; a layer served');
    await walk(old, ref, DIGEST_A, 'diff', 'etc');
    assert.equal(changes, 3, 'nothing new');
    assert.deepEqual(old.servedLayerKeys(), [layerKey(ref, DIGEST_A)]);
    // A restart: the new process starts from the old one's snapshot and serves layer B; then the old one's final table is merged in.
    const resolver = stubResolver(blob, bytes, CONTENTS);
    const next = new StoreFs(resolver, { log: testLog(), onStateChange: () => { changes++; } });
    next.mergeNodeTable(JSON.parse(JSON.stringify(old.exportNodeTable())));
    const b = await walk(next, ref, DIGEST_B, 'diff', 'etc', 'os-release');
    const resolutions = resolver.resolutions;
    const before = changes;
    next.mergeNodeTable(JSON.parse(JSON.stringify(old.exportNodeTable())));
    assert.equal(changes, before + 1, 'a merge publishes');
    assert.equal(joined(await next.read(b.at(-1)!.nodeid, 0, 64)).toString(), 'ID=test\n');
    assert.equal(resolver.resolutions, resolutions, 'layer B stayed served through the merge');
    assert.equal(joined(await next.read(a.at(-1)!.nodeid, 0, 64)).toString(), '#!/bin/sh\necho tool\n', 'the predecessor\'s ids answer');
    // The predecessor's served layers are resolved again without a request; a released one is no longer listed.
    const third = new StoreFs(stubResolver(blob, bytes, CONTENTS), { log: testLog() });
    third.mergeNodeTable(next.exportNodeTable());
    await third.resolveAgain(next.servedLayerKeys());
    assert.deepEqual(third.servedLayerKeys().sort(), [layerKey(ref, DIGEST_A), layerKey(ref, DIGEST_B)].sort());
    await errnoOf(() => third.rmdir(a[0]!.nodeid, DIGEST_B));
    assert.deepEqual(third.servedLayerKeys(), [layerKey(ref, DIGEST_A)]);
    // Reference directories taken over are kept (their lookups were counted elsewhere).
    next.forget(a[0]!.nodeid, 100);
    assert.ok(next.exportNodeTable().slots.some(([, k]) => k === refKey(ref)));
  });
});
