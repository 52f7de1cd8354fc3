/**
 * Unit tests of each step of the layer index build (src/estargz/index/), on
 * hand-made TOC entry lists: no blob, no gzip. Each describe block is one
 * step: its module called directly, then the behaviour it gives
 * buildLayerIndex as a whole.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isEstargzError } from '../../src/estargz/errors.js';
import { ChunkTiler } from '../../src/estargz/index/chunk-tiler.js';
import { checkEntry, checkEntryList } from '../../src/estargz/index/entries.js';
import { checkModtime, decodeXattrs } from '../../src/estargz/index/fields.js';
import { finaliseTree } from '../../src/estargz/index/finalise.js';
import { linkHardlink } from '../../src/estargz/index/hardlinks.js';
import { DEFAULT_TOC_LIMITS, type TocLimits } from '../../src/estargz/index/limits.js';
import { DEFLATE_MAX_RATIO, setMemberEnds } from '../../src/estargz/index/member-ends.js';
import { layerPath, splitPath } from '../../src/estargz/index/names.js';
import { applyAttributes, placeNode } from '../../src/estargz/index/nodes.js';
import { OwnerNames } from '../../src/estargz/index/owners.js';
import { prefetchHint } from '../../src/estargz/index/prefetch-hint.js';
import { RecordList } from '../../src/estargz/index/records.js';
import { LayerTree } from '../../src/estargz/index/tree.js';
import type { Chunk, LayerIndex, LayerNode } from '../../src/estargz/index/types.js';
import { buildLayerIndex, buildLayerIndexYielding } from '../../src/estargz/layer-index.js';
import type { TocEntryJson } from '../../src/estargz/toc.js';

const digest = (c: string): string => `sha256:${c.repeat(64)}`;
const A = digest('a');
const B = digest('b');
const C = digest('c');
const TOC_OFFSET = 1000;
const limits = (over: Partial<TocLimits> = {}): TocLimits => ({ ...DEFAULT_TOC_LIMITS, ...over });

/** Entries as a TOC would list them; loosely typed, since the index must refuse what a hostile TOC holds. */
type RawEntry = Record<string, unknown>;

function build(entries: RawEntry[], over: Partial<TocLimits> = {}): LayerIndex {
  return buildLayerIndex({ version: 1, entries: entries as unknown as TocEntryJson[] }, { tocOffset: TOC_OFFSET, limits: over });
}

/** Asserts that `fn` throws INVALID_TOC matching `pattern`, and naming `path` when given. */
function throwsInvalid(fn: () => unknown, pattern: RegExp, path?: string): void {
  assert.throws(fn, (err) => {
    assert.ok(isEstargzError(err, 'INVALID_TOC'), `expected INVALID_TOC, got ${String(err)}`);
    assert.match(err.message, pattern);
    if (path !== undefined) assert.equal(err.context.path, path);
    return true;
  });
}

const rejects = (entries: RawEntry[], pattern: RegExp, path?: string, over?: Partial<TocLimits>): void =>
  throwsInvalid(() => build(entries, over), pattern, path);

/** A regular file in one chunk at blob offset `offset`. */
const file = (name: string, size: number, offset: number, extra: RawEntry = {}): RawEntry =>
  ({ name, type: 'reg', size, offset, digest: A, chunkDigest: A, ...extra });

const entry = (fields: RawEntry): TocEntryJson => fields as unknown as TocEntryJson;

const chunkSpans = (node: LayerNode): number[][] => node.chunks.map((c) => [c.fileOffset, c.size, c.blobOffset, c.blobEnd, c.innerOffset]);

describe('step: validate the entry list and each entry', () => {
  test('checkEntryList: an array within maxEntries', () => {
    const list = [{ name: 'a', type: 'dir' }];
    assert.equal(checkEntryList({ version: 1, entries: list as TocEntryJson[] }, limits()), list);
    throwsInvalid(() => checkEntryList({ version: 1, entries: {} as unknown as TocEntryJson[] }, limits()), /"entries" is not an array/);
    throwsInvalid(() => checkEntryList({ version: 1, entries: [...list, ...list] as TocEntryJson[] }, limits({ maxEntries: 1 })), /2 entries, over the limit of 1/);
  });

  test('checkEntry: an object with a string name and a known type', () => {
    assert.deepEqual(checkEntry({ name: 'x', type: 'fifo', extra: 1 }), { name: 'x', type: 'fifo', extra: 1 });
    for (const raw of [null, 3, 'x']) throwsInvalid(() => checkEntry(raw), /TOC entry is not an object/);
    throwsInvalid(() => checkEntry({ type: 'reg', size: 1 }), /TOC entry has no "name": \{"type":"reg","size":1\}/);
    throwsInvalid(() => checkEntry({ name: 'x', type: 'socket' }), /"x": unknown type "socket"/, 'x');
    throwsInvalid(() => checkEntry({ name: 'x' }), /"x": unknown type undefined/, 'x');
  });

  test('typed fields: counts, ids, strings, modtime and xattrs name the entry and key', () => {
    rejects([{ name: 'f', type: 'reg', size: -1 }], /"f": "size" is -1, expected a non-negative integer/, 'f');
    rejects([{ name: 'd', type: 'dir', mode: 1.5 }], /"d": "mode" is 1.5/, 'd');
    rejects([{ name: 'd', type: 'dir', uid: 2 ** 32 }], /"d": "uid" is 4294967296, over the 32-bit limit/);
    rejects([{ name: 'c', type: 'char', devMajor: 2 ** 33 }], /"c": "devMajor" is 8589934592/);
    rejects([{ name: 's', type: 'symlink', linkName: 7 }], /"s": "linkName" is not a string/);
    assert.equal(checkModtime(entry({ name: 'x', type: 'dir', modtime: '2100-01-01T00:00:00Z' }), 'x'), 4102444800);
    assert.equal(checkModtime(entry({ name: 'x', type: 'dir' }), 'x'), 0);
    throwsInvalid(() => checkModtime(entry({ name: 'x', type: 'dir', modtime: 'yesterday' }), 'x'), /modtime "yesterday" is not an RFC 3339 time/);
    const xattrs = decodeXattrs(entry({ name: 'x', type: 'dir', xattrs: { 'user.k': Buffer.from([0, 255]).toString('base64') } }), 'x', limits());
    assert.deepEqual([...xattrs], [['user.k', Buffer.from([0, 255])]]);
    assert.equal(decodeXattrs(entry({ name: 'x', type: 'dir', xattrs: {} }), 'x', limits()).size, 0);
    throwsInvalid(() => decodeXattrs(entry({ name: 'x', type: 'dir', xattrs: ['a'] }), 'x', limits()), /"xattrs" is not an object/);
    throwsInvalid(() => decodeXattrs(entry({ name: 'x', type: 'dir', xattrs: { a: 'AA==', b: 'AA==' } }), 'x', limits({ maxXattrs: 1 })), /2 xattrs, over the limit of 1/);
    throwsInvalid(() => decodeXattrs(entry({ name: 'x', type: 'dir', xattrs: { 'a\0b': 'AA==' } }), 'x', limits()), /has a NUL byte/);
    throwsInvalid(() => decodeXattrs(entry({ name: 'x', type: 'dir', xattrs: { a: 1 } }), 'x', limits()), /xattr "a" is not a base64 string/);
  });

  test('the first bad entry in TOC order is the one reported', () => {
    rejects([{ name: 'a', type: 'dir', uid: -1 }, { name: 'b', type: 'socket' }], /"a": "uid" is -1/);
    rejects([{ name: 'b', type: 'socket' }, { name: 'a', type: 'dir', uid: -1 }], /"b": unknown type/);
  });
});

describe('step: normalise names', () => {
  test('layerPath cleans a name the way Go path.Clean does, inside the layer', () => {
    const cases: [string, string][] = [['a', 'a'], ['./a/b/', 'a/b'], ['/a//b', 'a/b'], ['a/../b', 'b'], ['./', ''], ['', ''], ['/', ''], ['a/./b/../c', 'a/c']];
    for (const [name, path] of cases) assert.equal(layerPath(name, 'name', name, limits()), path, name);
  });

  test('a name that climbs above the root or holds a NUL is refused, naming the entry and which name it is', () => {
    for (const name of ['..', '../x', 'a/../../x', '/a/../../b']) {
      throwsInvalid(() => layerPath(name, 'name', name, limits()), new RegExp(`${JSON.stringify(name).replace(/\./g, '\\.')}: name climbs above the layer root`), name);
    }
    throwsInvalid(() => layerPath('a\0b', 'hardlink target', 'l', limits()), /"l": hardlink target contains a NUL byte/, 'l');
  });

  test('length, component and depth limits, in UTF-8 bytes', () => {
    throwsInvalid(() => layerPath('a/'.repeat(5), 'name', 'x', limits({ maxPathBytes: 8 })), /name is over 8 bytes/);
    assert.equal(layerPath('abcd/efg', 'name', 'x', limits({ maxPathBytes: 8 })), 'abcd/efg');
    throwsInvalid(() => layerPath('d/éé', 'name', 'x', limits({ maxComponentBytes: 3 })), /"d\/éé": name has a component over 3 bytes/, 'd/éé');
    assert.equal(layerPath('d/abc', 'name', 'x', limits({ maxComponentBytes: 3 })), 'd/abc');
    throwsInvalid(() => layerPath('a/b/c', 'name', 'x', limits({ maxDepth: 2 })), /name is 3 levels deep, over the limit of 2/);
    assert.equal(layerPath('a/b/../c', 'name', 'x', limits({ maxDepth: 2 })), 'a/c');
  });

  test('plain names (the common case, taken in one pass) normalise exactly as the general rules do; names near the rules are left to them', () => {
    const cases: [string, string][] = [
      ['usr/lib/', 'usr/lib'], ['usr/bin/x', 'usr/bin/x'], ['a', 'a'], ['a/', 'a'], ['.a/..b/b.', '.a/..b/b.'], ['a/.hidden', 'a/.hidden'],
      ['a//', 'a'], ['a/./b', 'a/b'], ['a/../b', 'b'], ['./a', 'a'], ['/a', 'a'], ['.', ''], ['a/.', 'a'], ['a/..', ''], ['é/x', 'é/x'],
    ];
    for (const [name, path] of cases) assert.equal(layerPath(name, 'name', name, limits()), path, name);
    // Limits at their edge, in bytes, with and without a trailing slash.
    assert.equal(layerPath('abc/def/', 'name', 'x', limits({ maxPathBytes: 7, maxComponentBytes: 3, maxDepth: 2 })), 'abc/def');
    throwsInvalid(() => layerPath('abcd/', 'name', 'x', limits({ maxComponentBytes: 3 })), /component over 3 bytes/);
    throwsInvalid(() => layerPath('a/b/c/', 'name', 'x', limits({ maxDepth: 2 })), /3 levels deep/);
    throwsInvalid(() => layerPath('a/\0/', 'name', 'x', limits()), /contains a NUL byte/);
  });

  test('splitPath: parent and last component', () => {
    assert.deepEqual(splitPath('a'), { parent: '', name: 'a' });
    assert.deepEqual(splitPath('a/b/c'), { parent: 'a/b', name: 'c' });
  });

  test('buildLayerIndex keys nodes and records by the normalised path', () => {
    const index = build([{ name: './etc//', type: 'dir' }, file('/etc/../etc/passwd', 4, 0)]);
    assert.deepEqual([...index.byPath.keys()], ['', 'etc', 'etc/passwd']);
    assert.deepEqual(index.records.map((r) => r.path), ['etc', 'etc/passwd']);
    assert.equal(index.records[1]!.entry.name, '/etc/../etc/passwd');
    rejects([{ name: 'a/'.repeat(4), type: 'dir' }], /4 levels deep, over the limit of 3/, undefined, { maxDepth: 3 });
  });
});

describe('step: create parent directories (LayerTree)', () => {
  test('ensureDir creates every missing parent as an implicit 0755 directory, parents first', () => {
    const tree = new LayerTree();
    const dir = tree.ensureDir('a/b/c');
    assert.deepEqual([...tree.byPath.keys()], ['', 'a', 'a/b', 'a/b/c']);
    assert.deepEqual([tree.root.ino, tree.byPath.get('a')!.ino, tree.byPath.get('a/b')!.ino, dir.ino], [1, 2, 3, 4]);
    assert.equal(dir.implicit, true);
    assert.equal(dir.mode, 0o755);
    assert.equal(tree.ensureDir('a/b'), tree.byPath.get('a/b'));
    assert.equal(tree.root.children!.get('a'), tree.byPath.get('a'));
  });

  test('a path used as a directory must be one', () => {
    const tree = new LayerTree();
    tree.place('f', tree.newNode('f', 'reg', false));
    throwsInvalid(() => tree.ensureDir('f/g'), /"f" is used as a directory but is a reg/, 'f');
    rejects([{ name: 's', type: 'symlink', linkName: 'd' }, { name: 's/x', type: 'dir' }], /"s" is used as a directory but is a symlink/, 's');
  });

  test('place: a later node at a path replaces the earlier one and forgets what was below it', () => {
    const forgotten: string[] = [];
    const tree = new LayerTree((path) => forgotten.push(path));
    tree.place('d/sub/f', tree.newNode('d/sub/f', 'reg', false));
    const file = tree.newNode('d', 'reg', false);
    tree.place('d', file);
    assert.deepEqual(forgotten, ['d/sub/f', 'd/sub', 'd']);
    assert.deepEqual([...tree.byPath.keys()], ['', 'd']);
    assert.equal(tree.root.children!.get('d'), file);
  });

  test('build: a file deep in the tree gets its parents, after its own inode number; an explicit entry later keeps the children', () => {
    const index = build([file('a/b/f', 4, 0), { name: 'a/', type: 'dir', mode: 0o40700, uid: 3 }]);
    const a = index.byPath.get('a')!;
    assert.deepEqual(['a/b/f', 'a', 'a/b'].map((p) => index.byPath.get(p)!.ino), [2, 3, 4]);
    assert.equal(a.implicit, false);
    assert.equal(a.mode, 0o700);
    assert.equal(a.uid, 3);
    assert.equal(index.byPath.get('a/b')!.implicit, true);
    assert.deepEqual([...a.children!.keys()], ['b']);
    // Implicit parents are nodes, not records.
    assert.deepEqual(index.records.map((r) => r.path), ['a/b/f', 'a']);
  });

  test('build: the root is a directory, and its entry sets its attributes', () => {
    const index = build([{ name: './', type: 'dir', mode: 0o700 }]);
    assert.equal(index.root.mode, 0o700);
    assert.equal(index.root.implicit, false);
    rejects([file('/', 0, 0)], /TOC entry "\/" for the root directory is a reg/, '');
    rejects([{ name: '.', type: 'symlink', linkName: 'x' }], /"\." for the root directory is a symlink/);
  });
});

describe('step: later entries replace earlier ones (RecordList)', () => {
  test('RecordList keeps TOC order and drops superseded records', () => {
    const tree = new LayerTree();
    const records = new RecordList();
    const e = entry({ name: 'x', type: 'dir' });
    for (const path of ['a', 'b', 'c']) records.add(path, e, tree.root);
    assert.equal(records.kept().length, 3);
    records.supersede('b');
    records.supersede('nope');
    records.add('b', e, tree.root);
    assert.deepEqual(records.kept().map((r) => r.path), ['a', 'c', 'b']);
  });

  test('build: a path listed twice is the later entry; a replaced directory takes its subtree with it', () => {
    const index = build([
      { name: 'd', type: 'dir' },
      file('d/f', 4, 0),
      { name: 'x', type: 'symlink', linkName: 'one' },
      { name: 'x', type: 'symlink', linkName: 'two' },
      file('d', 4, 10),
    ]);
    assert.equal(index.byPath.get('x')!.linkName, 'two');
    assert.equal(index.byPath.get('d')!.type, 'reg');
    assert.equal(index.byPath.has('d/f'), false);
    assert.deepEqual(index.records.map((r) => [r.path, r.entry.type]), [['x', 'symlink'], ['d', 'reg']]);
    assert.equal(index.nodeCount, 3);
  });

  test('build: a directory listed twice stays one node with its children', () => {
    const index = build([{ name: 'd', type: 'dir', mode: 0o700 }, file('d/f', 4, 0), { name: 'd', type: 'dir', mode: 0o711 }]);
    const d = index.byPath.get('d')!;
    assert.equal(d.mode, 0o711);
    assert.deepEqual([...d.children!.keys()], ['f']);
    assert.deepEqual(index.records.map((r) => r.path), ['d/f', 'd']);
  });
});

describe('step: node attributes (placeNode, applyAttributes, OwnerNames)', () => {
  test('placeNode makes a new node, or reuses a directory for a directory entry', () => {
    const tree = new LayerTree();
    const dir = tree.ensureDir('d');
    assert.equal(placeNode(tree, entry({ name: 'd', type: 'dir' }), 'd'), dir);
    assert.equal(dir.implicit, false);
    const fifo = placeNode(tree, entry({ name: 'd', type: 'fifo' }), 'd');
    assert.notEqual(fifo, dir);
    assert.equal(tree.byPath.get('d'), fifo);
    assert.equal(placeNode(tree, entry({ name: '/', type: 'dir' }), ''), tree.root);
  });

  test('applyAttributes: permission bits only, type-specific fields per type', () => {
    const tree = new LayerTree();
    const owner = { uid: 1, gid: 2, userName: 'u', groupName: 'g' };
    const reg = tree.newNode('f', 'reg', false);
    applyAttributes(reg, entry({ name: 'f', type: 'reg', mode: 0o104755, size: 9, digest: A, linkName: 'ignored', devMajor: 4 }), 'f', owner, 77, limits());
    assert.deepEqual([reg.mode, reg.uid, reg.gid, reg.userName, reg.groupName, reg.mtime, reg.size, reg.digest, reg.linkName, reg.devMajor], [0o4755, 1, 2, 'u', 'g', 77, 9, A, '', 0]);
    const dev = tree.newNode('c', 'block', false);
    applyAttributes(dev, entry({ name: 'c', type: 'block', devMajor: 8, devMinor: 1, size: 5 }), 'c', owner, 0, limits());
    assert.deepEqual([dev.devMajor, dev.devMinor, dev.size], [8, 1, 0]);
    const link = tree.newNode('s', 'symlink', false);
    applyAttributes(link, entry({ name: 's', type: 'symlink', linkName: '../../etc/shadow' }), 's', owner, 0, limits());
    assert.equal(link.linkName, '../../etc/shadow');
    throwsInvalid(() => applyAttributes(tree.newNode('f', 'reg', false), entry({ name: 'f', type: 'reg', digest: 'md5:x' }), 'f', owner, 0, limits()), /"f": digest "md5:x" is not a sha256 digest/);
  });

  test('OwnerNames back-fills a name from the last entry that gave it for the same id', () => {
    const owners = new OwnerNames();
    assert.deepEqual(owners.resolve(entry({ name: 'a', type: 'dir', uid: 5, userName: 'five', gid: 6, groupName: 'six' }), 'a'), { uid: 5, gid: 6, userName: 'five', groupName: 'six' });
    assert.deepEqual(owners.resolve(entry({ name: 'b', type: 'dir', uid: 5, gid: 6 }), 'b'), { uid: 5, gid: 6, userName: 'five', groupName: 'six' });
    assert.deepEqual(owners.resolve(entry({ name: 'c', type: 'dir', gid: 5 }), 'c'), { uid: 0, gid: 5, userName: '', groupName: '' });
    owners.resolve(entry({ name: 'd', type: 'dir', uid: 5, userName: 'renamed' }), 'd');
    assert.equal(owners.resolve(entry({ name: 'e', type: 'dir', uid: 5 }), 'e').userName, 'renamed');
  });

  test('build: a hardlink entry gives names to later entries too', () => {
    const index = build([file('f', 4, 0), { name: 'l', type: 'hardlink', linkName: 'f', uid: 9, userName: 'nine' }, { name: 'd', type: 'dir', uid: 9 }]);
    assert.equal(index.byPath.get('d')!.userName, 'nine');
    assert.equal(index.byPath.get('f')!.uid, 0);
  });
});

describe('step: resolve hardlinks', () => {
  test('linkHardlink places the target node at the link path and counts the link', () => {
    const tree = new LayerTree();
    const f = tree.newNode('f', 'reg', false);
    tree.place('f', f);
    assert.equal(linkHardlink(tree, entry({ name: 'd/l', type: 'hardlink', linkName: './f' }), 'd/l', limits()), f);
    assert.equal(tree.byPath.get('d/l'), f);
    assert.equal(f.nlink, 2);
    assert.equal(tree.byPath.get('d')!.implicit, true);
  });

  test('build: links share the node, its chunks and inode; the file counts once', () => {
    const index = build([file('f', 4, 0), { name: 'l', type: 'hardlink', linkName: 'f' }]);
    const f = index.byPath.get('f')!;
    assert.equal(index.byPath.get('l'), f);
    assert.equal(f.nlink, 2);
    assert.equal(f.path, 'f');
    assert.deepEqual(index.records.map((r) => [r.path, r.node.ino]), [['f', f.ino], ['l', f.ino]]);
    assert.equal(index.nodeCount, 2);
    assert.equal(index.totalFileBytes, 4);
  });

  test('build: a chain of links (a link to a link) resolves to the first file', () => {
    const index = build([
      file('f', 4, 0),
      { name: 'l1', type: 'hardlink', linkName: 'f' },
      { name: 'l2', type: 'hardlink', linkName: 'l1' },
      { name: 'l3', type: 'hardlink', linkName: '/l2' },
    ]);
    const f = index.byPath.get('f')!;
    for (const p of ['l1', 'l2', 'l3']) assert.equal(index.byPath.get(p), f, p);
    assert.equal(f.nlink, 4);
    assert.equal(index.nodeCount, 2);
  });

  test('build: a link to a later entry, a missing target, the root, itself or a directory is refused', () => {
    rejects([{ name: 'l', type: 'hardlink', linkName: 'f' }, file('f', 4, 0)], /"l": hardlink target "f" is not an earlier entry/, 'l');
    rejects([{ name: 'l', type: 'hardlink', linkName: 'nope' }], /"l": hardlink target "nope" is not an earlier entry/, 'l');
    rejects([{ name: 'l', type: 'hardlink', linkName: './' }], /"l": hardlink target "\.\/" is not an earlier entry/, 'l');
    rejects([file('f', 4, 0), { name: './f', type: 'hardlink', linkName: 'f' }], /"f": hardlink to itself/, 'f');
    rejects([{ name: 'd', type: 'dir' }, { name: 'l', type: 'hardlink', linkName: 'd/' }], /"l": hardlink to directory "d"/, 'l');
    rejects([file('f', 4, 0), { name: 'l', type: 'hardlink', linkName: '../f' }], /"l": hardlink target climbs above the layer root/, 'l');
    rejects([file('f', 4, 0), { name: './', type: 'hardlink', linkName: 'f' }], /TOC entry for the root directory is a hardlink/, '');
  });

  test('build: a link listed again for the file it already names adds no link', () => {
    const again = build([file('f', 4, 0), { name: 'g', type: 'hardlink', linkName: 'f' }, { name: 'g', type: 'hardlink', linkName: 'f' }]);
    assert.equal(again.byPath.get('f')!.nlink, 2);
    const back = build([file('f', 4, 0), { name: 'g', type: 'hardlink', linkName: 'f' }, { name: 'f', type: 'hardlink', linkName: 'g' }]);
    assert.equal(back.byPath.get('f')!.nlink, 2);
    assert.equal(back.byPath.get('f'), back.byPath.get('g'));
  });

  test('build: replacing one name of a linked file takes one from its link count', () => {
    const index = build([file('f', 4, 0), { name: 'l', type: 'hardlink', linkName: 'f' }, { name: 'l', type: 'fifo' }]);
    const f = index.byPath.get('f')!;
    assert.equal(f.nlink, 1);
    assert.equal(index.byPath.get('l')!.type, 'fifo');
    assert.deepEqual(index.records.map((r) => r.path), ['f', 'l']);
    assert.equal(index.records[1]!.entry.type, 'fifo');
  });
});

describe('step: whiteouts and opaque markers stay ordinary entries', () => {
  test('the index keeps .wh. entries as the files they are, and deletes nothing for them (the overlay view reads them)', () => {
    const index = build([
      { name: 'a', type: 'dir' },
      file('a/x', 4, 0),
      { name: 'a/.wh.x', type: 'reg' },
      { name: 'a/.wh..wh..opq', type: 'reg' },
      { name: '.wh.gone', type: 'char', devMajor: 0, devMinor: 0 },
    ]);
    assert.deepEqual([...index.byPath.get('a')!.children!.keys()], ['x', '.wh.x', '.wh..wh..opq']);
    assert.equal(index.byPath.get('a/x')!.size, 4);
    assert.equal(index.byPath.get('a/.wh.x')!.type, 'reg');
    assert.equal(index.byPath.get('.wh.gone')!.type, 'char');
    assert.deepEqual(index.records.map((r) => r.path), ['a', 'a/x', 'a/.wh.x', 'a/.wh..wh..opq', '.wh.gone']);
  });
});

describe('step: attach chunks to files (ChunkTiler)', () => {
  const regNode = (size: number, fileDigest: string | null = A): LayerNode => {
    const node = new LayerTree().newNode('f', 'reg', false);
    node.size = size;
    node.digest = fileDigest ?? undefined;
    return node;
  };
  const tiler = (over: Partial<TocLimits> = {}): ChunkTiler => new ChunkTiler(TOC_OFFSET, limits(over));
  const first = (fields: RawEntry = {}): TocEntryJson => entry({ name: 'f', type: 'reg', offset: 0, chunkDigest: A, ...fields });
  const next = (fields: RawEntry): TocEntryJson => entry({ name: 'f', type: 'chunk', chunkDigest: B, ...fields });

  test('chunks tile the file in order; chunkSize 0 runs to the end; every chunk is collected with its path', () => {
    const t = tiler();
    const node = regNode(10);
    t.startFile(node, 'f', first({ chunkSize: 4 }));
    t.addChunkEntry(next({ offset: 10, chunkOffset: 4, chunkSize: 4 }), 'f');
    t.addChunkEntry(next({ offset: 20, chunkOffset: 8, chunkDigest: C }), '');
    t.endFile();
    assert.deepEqual(node.chunks.map((c) => [c.fileOffset, c.size, c.blobOffset, c.digest]), [[0, 4, 0, A], [4, 4, 10, B], [8, 2, 20, C]]);
    assert.deepEqual(t.chunks, node.chunks);
    assert.deepEqual(t.paths, ['f', 'f', 'f']);
  });

  test('an empty file has no chunk; a file of one chunk may give only the whole-file digest', () => {
    const t = tiler();
    const empty = regNode(0);
    t.startFile(empty, 'e', first());
    const whole = regNode(5);
    t.startFile(whole, 'f', first({ chunkDigest: undefined }));
    t.endFile();
    assert.deepEqual(empty.chunks, []);
    assert.equal(whole.chunks[0]!.digest, A);
    throwsInvalid(() => tiler().startFile(regNode(5, null), 'f', first({ chunkDigest: undefined })), /"f": chunk at file offset 0 has no valid chunkDigest \(""\)/, 'f');
    throwsInvalid(() => tiler().startFile(regNode(5), 'f', first({ chunkSize: 2, chunkDigest: undefined })), /no valid chunkDigest/);
  });

  test('gaps, overlaps, chunks outside the file and a short cover are refused', () => {
    const started = (size: number, fields: RawEntry): ChunkTiler => {
      const t = tiler();
      t.startFile(regNode(size), 'f', first(fields));
      return t;
    };
    throwsInvalid(() => started(8, { chunkSize: 4 }).addChunkEntry(next({ offset: 10, chunkOffset: 2 }), 'f'), /"f": chunk at file offset 2 does not follow the previous chunk, which ends at 4 \(overlapping or missing chunks\)/, 'f');
    throwsInvalid(() => started(8, { chunkSize: 4 }).addChunkEntry(next({ offset: 10, chunkOffset: 6 }), 'f'), /chunk at file offset 6 does not follow the previous chunk/);
    throwsInvalid(() => started(8, { chunkOffset: 4 }), /chunk at file offset 4 does not follow the previous chunk, which ends at 0/);
    throwsInvalid(() => started(8, { chunkSize: 4 }).addChunkEntry(next({ offset: 10, chunkOffset: 4, chunkSize: 5 }), 'f'), /"f": chunk \[4, 9\) is outside the file of 8 bytes/);
    throwsInvalid(() => started(8, { chunkSize: 9 }), /chunk \[0, 9\) is outside the file of 8 bytes/);
    throwsInvalid(() => started(8, { chunkSize: 4 }).endFile(), /"f": chunks cover 4 of 8 bytes/, 'f');
  });

  test('a chunk lies in the payload, within maxChunkBytes', () => {
    throwsInvalid(() => tiler().startFile(regNode(4), 'f', first({ offset: TOC_OFFSET })), /"f": chunk offset 1000 is outside the blob's payload \(TOC at 1000\)/);
    throwsInvalid(() => tiler({ maxChunkBytes: 3 }).startFile(regNode(4), 'f', first()), /"f": chunk at file offset 0 is 4 bytes, over the limit of 3/);
    assert.doesNotThrow(() => tiler({ maxChunkBytes: 4 }).startFile(regNode(4), 'f', first()));
  });

  test('a chunk entry follows its regular file, under its name or none', () => {
    throwsInvalid(() => tiler().addChunkEntry(next({ name: 'g', offset: 0 }), 'g'), /"g": "chunk" entry does not follow a regular file/, 'g');
    const t = tiler();
    t.startFile(regNode(8), 'f', first({ chunkSize: 4 }));
    throwsInvalid(() => t.addChunkEntry(next({ name: 'g', offset: 10, chunkOffset: 4 }), 'g'), /"g": "chunk" entry follows the regular file "f"/, 'g');
  });

  test('build: a non-chunk entry ends the file; a chunk after a directory is refused', () => {
    rejects([file('f', 8, 0, { chunkSize: 4 }), { name: 'd', type: 'dir' }, { name: 'f', type: 'chunk', offset: 10, chunkOffset: 4, chunkDigest: B }], /"f": chunks cover 4 of 8 bytes/, 'f');
    rejects([{ name: 'd', type: 'dir' }, { name: 'd', type: 'chunk', offset: 0, chunkSize: 4, chunkDigest: A }], /"chunk" entry does not follow a regular file/);
    rejects([file('f', 8, 0, { chunkSize: 4 })], /"f": chunks cover 4 of 8 bytes/);
    const index = build([file('f', 8, 0, { chunkSize: 4 }), { name: './f', type: 'chunk', offset: 10, chunkOffset: 4, chunkDigest: B }]);
    assert.deepEqual(chunkSpans(index.byPath.get('f')!), [[0, 4, 0, 10, 0], [4, 4, 10, TOC_OFFSET, 0]]);
  });
});

describe('step: where each member ends (setMemberEnds)', () => {
  const chunk = (blobOffset: number, size: number, innerOffset = 0): Chunk => ({ fileOffset: 0, size, blobOffset, blobEnd: 0, innerOffset, digest: A });

  test('a member ends where the next one starts, the last at the TOC; chunks of one member share its end', () => {
    const chunks = [chunk(0, 4), chunk(10, 3), chunk(10, 5, 3), chunk(30, 2)];
    setMemberEnds(chunks, ['a', 'b', 'c', 'd'], 100);
    assert.deepEqual(chunks.map((c) => c.blobEnd), [10, 30, 30, 100]);
  });

  test('chunks listed out of blob order get the same ends', () => {
    const chunks = [chunk(30, 2), chunk(10, 5, 3), chunk(0, 4), chunk(10, 3)];
    setMemberEnds(chunks, ['d', 'c', 'a', 'b'], 100);
    assert.deepEqual(chunks.map((c) => c.blobEnd), [100, 30, 10, 30]);
  });

  test('two chunks at one place are refused naming the later entry; overlapping plain ranges naming both', () => {
    throwsInvalid(() => setMemberEnds([chunk(0, 4), chunk(10, 4), chunk(0, 4)], ['a', 'b', 'c'], 100), /"c": chunk at blob offset 0 \(inner offset 0\) duplicates another chunk's offset/, 'c');
    throwsInvalid(() => setMemberEnds([chunk(0, 4), chunk(0, 4, 3)], ['a', 'b'], 100), /"a": chunk at blob offset 0, inner range \[0, 4\), overlaps the chunk of "b" at inner offset 3/, 'a');
    assert.doesNotThrow(() => setMemberEnds([chunk(0, 4), chunk(0, 4, 4)], ['a', 'b'], 100));
  });

  test('a chunk cannot need more plain bytes than its member can inflate to', () => {
    assert.doesNotThrow(() => setMemberEnds([chunk(0, 10 * DEFLATE_MAX_RATIO)], ['a'], 10));
    throwsInvalid(() => setMemberEnds([chunk(0, 10 * DEFLATE_MAX_RATIO + 1)], ['a'], 10), /"a": chunk at file offset 0 needs 10321 plain bytes \(inner offset 0 \+ size 10321\) from a member of 10 bytes at blob offset 0/, 'a');
    throwsInvalid(() => setMemberEnds([chunk(0, 1, 10 * DEFLATE_MAX_RATIO)], ['a'], 10), /needs 10321 plain bytes \(inner offset 10320 \+ size 1\)/);
  });

  test('build: two files in one member, and a duplicate offset across files', () => {
    const index = build([file('a', 4, 0), file('b', 6, 0, { innerOffset: 4 }), file('c', 1, 50)]);
    assert.deepEqual(chunkSpans(index.byPath.get('b')!), [[0, 6, 0, 50, 4]]);
    assert.deepEqual(chunkSpans(index.byPath.get('c')!), [[0, 1, 50, TOC_OFFSET, 0]]);
    rejects([file('a', 4, 0), file('b', 4, 0)], /"b": chunk at blob offset 0 \(inner offset 0\) duplicates another chunk's offset/, 'b');
  });
});

describe('step: finalise sizes, children and counts', () => {
  test('finaliseTree keeps children in layer order, sets directory link counts, counts linked files once', () => {
    const tree = new LayerTree();
    const names = ['b', '\u{1F600}', 'é', 'Z', 'a'];
    for (const name of names) tree.place(name, tree.newNode(name, 'reg', false));
    tree.ensureDir('sub/inner');
    const f = tree.byPath.get('a')!;
    f.size = 7;
    f.nlink = 2;
    tree.place('sub/link', f);
    const totals = finaliseTree(tree.byPath);
    // The order the entries came in (a walk of the tree then follows the blob), not name order.
    assert.deepEqual([...tree.root.children!.keys()], [...names, 'sub']);
    assert.deepEqual([...tree.byPath.get('sub')!.children!.keys()], ['inner', 'link']);
    assert.equal(tree.root.nlink, 3);
    assert.equal(tree.byPath.get('sub')!.nlink, 3);
    assert.equal(tree.byPath.get('sub/inner')!.nlink, 2);
    // The root, five files, two directories: the second name of "a" is not another node.
    assert.deepEqual(totals, { nodeCount: 8, totalFileBytes: 7 });
  });

  test('build: an empty list is a layer of one directory; sizes add up over distinct files', () => {
    const empty = build([]);
    assert.equal(empty.nodeCount, 1);
    assert.equal(empty.root.nlink, 2);
    assert.deepEqual(empty.records, []);
    const index = build([file('z', 4, 0), { name: 'd', type: 'dir' }, file('a', 6, 10), { name: 'h', type: 'hardlink', linkName: 'a' }]);
    assert.deepEqual([...index.root.children!.keys()], ['z', 'd', 'a', 'h']);
    assert.equal(index.totalFileBytes, 10);
    assert.equal(index.nodeCount, 4);
    assert.equal(index.root.nlink, 3);
  });

  test('prefetchHint: the landmark file ends the prefetch range; the no-prefetch landmark, or none', () => {
    const hint = (entries: RawEntry[]) => prefetchHint(build(entries).root);
    assert.deepEqual(hint([file('x', 4, 0), file('.prefetch.landmark', 1, 40)]), { kind: 'landmark', end: 40 });
    assert.deepEqual(hint([{ name: '.prefetch.landmark', type: 'reg', size: 0 }]), { kind: 'landmark', end: 0 });
    assert.deepEqual(hint([file('.no.prefetch.landmark', 1, 0)]), { kind: 'none', end: 0 });
    assert.deepEqual(hint([{ name: '.prefetch.landmark', type: 'dir' }]), { kind: 'default', end: 0 });
    assert.deepEqual(hint([file('sub/.prefetch.landmark', 1, 0)]), { kind: 'default', end: 0 });
    assert.deepEqual(build([file('x', 4, 0), file('.prefetch.landmark', 1, 40)]).prefetch, { kind: 'landmark', end: 40 });
  });
});

describe('buildLayerIndexYielding: the same index in slices, with event-loop turns between them', () => {
  /** 3,000 files in 30 directories, each in one member of 100 blob bytes (TOC_OFFSET is past them all). */
  const many = (): RawEntry[] => Array.from({ length: 3000 }, (_, i) => file(`d${i % 30}/f${i}`, 10, i * 100));
  const toc = (entries: RawEntry[]) => ({ version: 1, entries: entries as unknown as TocEntryJson[] });
  const opts = { tocOffset: 3000 * 100 };

  test('gives what buildLayerIndex gives, and lets the loop turn while it works', async () => {
    const entries = many();
    const whole = buildLayerIndex(toc(entries), opts);
    let turned = false;
    setImmediate(() => { turned = true; });
    // sliceMs 0: a turn after every 256 entries, whatever the clock says.
    const sliced = await buildLayerIndexYielding(toc(entries), { ...opts, sliceMs: 0 });
    assert.ok(turned, 'an immediate queued before the build ran before it finished');
    assert.deepEqual([...sliced.byPath.keys()], [...whole.byPath.keys()]);
    assert.equal(sliced.nodeCount, whole.nodeCount);
    assert.equal(sliced.totalFileBytes, whole.totalFileBytes);
    assert.deepEqual(chunkSpans(sliced.byPath.get('d7/f2497')!), chunkSpans(whole.byPath.get('d7/f2497')!));
    assert.equal(sliced.records.length, whole.records.length);
  });

  test('refuses a bad TOC with the same first error', async () => {
    const entries = many();
    entries[2600] = file('../escape', 10, 2600 * 100);
    entries[2900] = file('d1/late', -1, 2900 * 100);
    let first: unknown;
    try { buildLayerIndex(toc(entries), opts); } catch (err) { first = err; }
    assert.ok(isEstargzError(first, 'INVALID_TOC'));
    await assert.rejects(buildLayerIndexYielding(toc(entries), { ...opts, sliceMs: 0 }), (err) => {
      assert.ok(isEstargzError(err, 'INVALID_TOC'));
      assert.equal(err.message, (first as Error).message);
      return true;
    });
  });
});
