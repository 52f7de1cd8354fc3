import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { openEstargz } from '../../src/estargz/open.js';
import { BufferSource } from '../../src/estargz/source.js';
import { convertLayer } from '../../src/estargz/writer/convert.js';
import { DiffView } from '../../src/fs/diff-view.js';
import { WHITEOUT_BIT } from '../../src/fs/node-ids.js';
import { BadNameError, checkDigestDir, decodeRefDir, encodeRefDir } from '../../src/fs/names.js';
import { makeLayerTar, type SpecEntry } from '../../testkit/layer-tar.js';

async function viewOf(spec: SpecEntry[], prioritized: string[] = []): Promise<DiffView> {
  const parts: Buffer[] = [];
  await convertLayer(Readable.from([await makeLayerTar(spec)]), new Writable({ write(c: Buffer, _e, cb) { parts.push(c); cb(); } }), { prioritizedFiles: prioritized });
  const blob = await openEstargz(new BufferSource(Buffer.concat(parts)));
  return new DiffView(blob.index);
}

describe('overlay view of a layer', () => {
  test('whiteouts become 0:0 character devices unless the real name exists; opaque dirs get both xattrs', async () => {
    const view = await viewOf([
      { name: 'a/', type: 'directory' },
      { name: 'a/.wh.gone', type: 'file', mtime: 1234 },
      { name: 'a/.wh.kept', type: 'file' },
      { name: 'a/kept', type: 'file', content: Buffer.from('real') },
      { name: 'a/.wh..wh..opq', type: 'file' },
      { name: 'a/.wh.', type: 'file' },
      { name: 'b/', type: 'directory', xattrs: { 'user.x': '1' } },
      { name: 'b/c', type: 'file' },
    ]);
    const a = view.lookup('a')!;
    assert.equal(a.kind, 'node');
    assert.deepEqual([...view.list(a.kind === 'node' ? a.node : view.index.root).byName.keys()], ['gone', 'kept']);
    const gone = view.lookup('a/gone')!;
    assert.equal(gone.kind, 'whiteout');
    assert.equal(gone.kind === 'whiteout' && gone.node.mtime, 1234);
    assert.equal(view.lookup('a/kept')!.kind, 'node');
    assert.equal(view.lookup('a/.wh.gone'), undefined);
    assert.equal(view.lookup('a/.wh..wh..opq'), undefined);
    assert.deepEqual(Object.fromEntries([...view.xattrs(a)].map(([k, v]) => [k, v.toString()])), { 'trusted.overlay.opaque': 'y', 'user.overlay.opaque': 'y' });
    assert.deepEqual([...view.xattrs(view.lookup('b')!).keys()], ['user.x']);
    assert.equal(view.lookup('b/c/d'), undefined);
    assert.equal(view.lookup('nope'), undefined);
  });

  test('directories list in layer order, so a depth-first walk reads the files in blob order whatever order the builder sorted by', async () => {
    // Sorted by whole path, as some builders do: "git-man/" before "git/" ('-' < '/'), "a.txt" before "a/".
    const spec: SpecEntry[] = [
      { name: 'doc/', type: 'directory' },
      { name: 'doc/a.txt', type: 'file', content: Buffer.from('1') },
      { name: 'doc/a/', type: 'directory' },
      { name: 'doc/a/z', type: 'file', content: Buffer.from('2') },
      { name: 'doc/git-man/', type: 'directory' },
      { name: 'doc/git-man/copyright', type: 'file', content: Buffer.from('3') },
      { name: 'doc/git/', type: 'directory' },
      { name: 'doc/git/NEWS', type: 'file', content: Buffer.from('4') },
      { name: 'doc/git/copyright', type: 'file', content: Buffer.from('5') },
      { name: 'zz', type: 'file', content: Buffer.from('6') },
    ];
    const view = await viewOf(spec);
    assert.deepEqual(view.list(view.lookup('doc')!.node).names, ['a.txt', 'a', 'git-man', 'git']);
    const walked: string[] = [];
    const walk = (dir: string): void => {
      const entry = view.lookup(dir)!;
      for (const name of view.list(entry.node).names) {
        const path = dir === '' ? name : `${dir}/${name}`;
        const child = view.lookup(path)!;
        if (child.node.type === 'dir') walk(path);
        else walked.push(path);
      }
    };
    walk('');
    const blobOrder = [...view.index.byPath.values()].filter((n) => n.type === 'reg' && view.lookup(n.path)).sort((x, y) => x.chunks[0]!.blobOffset - y.chunks[0]!.blobOffset).map((n) => n.path);
    assert.deepEqual(walked, blobOrder);
    assert.deepEqual(walked, ['doc/a.txt', 'doc/a/z', 'doc/git-man/copyright', 'doc/git/NEWS', 'doc/git/copyright', 'zz']);
  });

  test('landmarks are hidden at the root only', async () => {
    const view = await viewOf([
      { name: 'x', type: 'file', content: Buffer.from('x') },
      { name: 'sub/', type: 'directory' },
      { name: 'sub/.prefetch.landmark', type: 'file', content: Buffer.from('not a landmark') },
    ], ['x']);
    // Layer order: the prioritized x comes first in the blob, so first in the listing.
    assert.deepEqual(view.list(view.index.root).names, ['x', 'sub']);
    assert.equal(view.lookup('.prefetch.landmark'), undefined);
    assert.equal(view.lookup('sub/.prefetch.landmark')!.kind, 'node');
  });

  test('node numbers (the low part of node ids): hardlinks share one; a whiteout has its own, from its .wh. entry, and is found again by it', async () => {
    const view = await viewOf([
      { name: 'f', type: 'file', content: Buffer.from('f') },
      { name: 'g', type: 'link', linkname: 'f' },
      { name: '.wh.w', type: 'file' },
    ]);
    const f = view.lookup('f')!;
    const g = view.lookup('g')!;
    const w = view.lookup('w')!;
    assert.equal(f.low, g.low);
    assert.notEqual(w.low, f.low);
    assert.ok(w.low >= WHITEOUT_BIT);
    assert.equal(w.low - WHITEOUT_BIT, view.index.byPath.get('.wh.w')!.ino);
    for (const e of [f, g, w]) assert.deepEqual(view.entryAt(e.low), e);
    assert.equal(view.entryAt(view.index.root.ino)!.node, view.index.root);
    assert.equal(view.entryAt(12345), undefined);
  });
});

describe('store directory names', () => {
  test('base64 (standard, padded) image references and sha256 digests', () => {
    const name = encodeRefDir('ghcr.io/stargz-containers/alpine:3.10.2-esgz');
    assert.equal(name, 'Z2hjci5pby9zdGFyZ3otY29udGFpbmVycy9hbHBpbmU6My4xMC4yLWVzZ3o=');
    assert.equal(decodeRefDir(name).repository, 'stargz-containers/alpine');
    for (const bad of ['not base64!', 'YWJj?', Buffer.from('UPPER/Case').toString('base64'), '']) assert.throws(() => decodeRefDir(bad), BadNameError, bad);
    assert.throws(() => checkDigestDir('sha256:abc'), BadNameError);
    assert.equal(checkDigestDir(`sha256:${'a'.repeat(64)}`), `sha256:${'a'.repeat(64)}`);
  });
});
