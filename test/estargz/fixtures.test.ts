import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isEstargzError } from '../../src/estargz/errors.js';
import { hashFile, listEntries } from '../../src/estargz/listing.js';
import { openEstargz } from '../../src/estargz/open.js';
import { BufferSource } from '../../src/estargz/source.js';
import { verifyBlob } from '../../src/estargz/verify.js';
import { fixtureNames, loadFixture } from '../../testkit/fixtures.js';

const names = await fixtureNames();

describe('reference-made fixtures: good blobs', async () => {
  for (const name of names) {
    const { meta, blob, tree } = await loadFixture(name);
    if (meta.expectError) continue;
    test(`${name}: ls equals the expected tree, every chunk verifies`, async () => {
      assert.equal(blob.length, meta.size);
      const source = new BufferSource(blob);
      const opened = await openEstargz(source, { tocDigest: meta.tocDigest });
      assert.equal(opened.tocDigest, meta.tocDigest);
      assert.equal(opened.footer.tocOffset, meta.tocOffset);
      assert.equal(opened.toc.entries.length, meta.tocEntryCount);
      assert.deepEqual(await listEntries(opened, source), tree);
      const summary = await verifyBlob(source, { tocDigest: meta.tocDigest });
      assert.equal(summary.tocDigest, meta.tocDigest);
    });
  }

  test('chunked: chunk layout equals expectedChunks', async () => {
    const { meta, blob } = await loadFixture('chunked');
    const { index } = await openEstargz(new BufferSource(blob));
    for (const [path, chunks] of Object.entries(meta.expectedChunks!)) {
      const node = index.byPath.get(path)!;
      assert.deepEqual(
        node.chunks.map((c) => ({ chunkOffset: c.fileOffset, chunkSize: c.size, sha256: c.digest.slice(7) })),
        chunks,
        path,
      );
      for (const c of node.chunks) assert.ok(c.blobEnd > c.blobOffset && c.blobEnd <= meta.tocOffset);
    }
  });

  test('prefetch: landmark gives the prefetch range and sits after the prioritized entries', async () => {
    const { meta, blob } = await loadFixture('prefetch');
    const opened = await openEstargz(new BufferSource(blob));
    const landmark = opened.index.byPath.get('.prefetch.landmark')!;
    assert.deepEqual(opened.index.prefetch, { kind: 'landmark', end: landmark.chunks[0]!.blobOffset });
    const names = opened.toc.entries.map((e) => e.name.replace(/\/$/, '').replace(/^\.\//, ''));
    const before = names.slice(0, names.indexOf('.prefetch.landmark'));
    assert.deepEqual(before, meta.prefetch!.entriesBeforeLandmark);
  });

  test('prefetch-none and empty: .no.prefetch.landmark means no prefetch; empty layer has a 0755 root', async () => {
    for (const name of ['prefetch-none', 'empty']) {
      const { blob } = await loadFixture(name);
      const { index } = await openEstargz(new BufferSource(blob));
      assert.equal(index.prefetch.kind, 'none', name);
    }
    const { index } = await openEstargz(new BufferSource((await loadFixture('empty')).blob));
    assert.equal(index.root.type, 'dir');
    assert.equal(index.root.mode, 0o755);
    assert.deepEqual([...index.root.children!.keys()], ['.no.prefetch.landmark']);
  });

  test('links: hardlinks resolve to one node with a link count; symlinks stay verbatim', async () => {
    const { index } = await openEstargz(new BufferSource((await loadFixture('links')).blob));
    const orig = index.byPath.get('hl/orig.bin')!;
    for (const p of ['hl/same-dir-link', 'hl/second', 'hl/chain', 'other/dir/cross-dir-link']) assert.equal(index.byPath.get(p), orig, p);
    assert.equal(orig.nlink, 5);
    assert.equal(index.byPath.get('abs-link')!.linkName, '/etc/passwd');
  });

  test('special: owner names back-filled by uid and by gid (not the reference bug)', async () => {
    const { index } = await openEstargz(new BufferSource((await loadFixture('special')).blob));
    const alice2 = index.byPath.get('owners/alice-users-2');
    const bob = index.byPath.get('owners/bob-same-uid');
    assert.ok(alice2 && bob);
    assert.equal(alice2.groupName, 'users');
    assert.equal(bob.groupName, 'alice');
  });
});

describe('reference-made fixtures: corrupt blobs fail where their .json says', async () => {
  for (const name of names) {
    const { meta, blob } = await loadFixture(name);
    if (!meta.expectError) continue;
    const kind = meta.corruption!.kind;
    test(`${name} (${kind})`, async () => {
      const source = new BufferSource(blob);
      switch (kind) {
        case 'truncated':
        case 'plain-gzip':
          await assert.rejects(openEstargz(source), (err) => isEstargzError(err, 'NOT_ESTARGZ') && /not an eStargz blob/.test(err.message));
          break;
        case 'footer-wrong-toc-offset':
          await assert.rejects(openEstargz(source), (err) => isEstargzError(err, 'INVALID_TOC') && /TOC/.test(err.message));
          break;
        case 'toc-chunkdigest-altered': {
          await assert.rejects(openEstargz(source, { tocDigest: meta.tocDigest }), (err) =>
            isEstargzError(err, 'TOC_DIGEST_MISMATCH') && err.message.includes(meta.tocDigest) && err.message.includes(meta.corruption!.actualTocDigest!));
          // Without the trusted digest, the altered chunk digest still stops the bytes.
          const opened = await openEstargz(source);
          const file = meta.corruption!.file!;
          await assert.rejects(hashFile(source, opened.index.byPath.get(file)!, file), (err) => isEstargzError(err, 'CHUNK_DIGEST_MISMATCH'));
          break;
        }
        case 'payload-bitflip': {
          const opened = await openEstargz(source, { tocDigest: meta.tocDigest });
          const { file, chunkOffset } = meta.corruption!;
          const node = opened.index.byPath.get(file!)!;
          await assert.rejects(hashFile(source, node, file!), (err) =>
            isEstargzError(err, 'CHUNK_DIGEST_MISMATCH') && err.context.path === file && err.context.chunkOffset === chunkOffset
            && /expected sha256:[0-9a-f]{64}, got sha256:[0-9a-f]{64}/.test(err.message));
          // Every other file of the layer still reads and verifies.
          for (const [path, other] of opened.index.byPath) {
            if (other.type === 'reg' && other !== node) await hashFile(source, other, path);
          }
          break;
        }
        default:
          assert.fail(`fixture ${name}: unknown corruption kind ${kind}`);
      }
    });
  }
});
