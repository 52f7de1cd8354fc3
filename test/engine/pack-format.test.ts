import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { decodeIndex, encodeIndex, parseRecordHeader, RECORD_HEADER_BYTES, recordHeader, scanPack, type PackRecord } from '../../src/engine/cache/pack-format.js';

const hexOf = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('disk cache pack format', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  test('a record header carries the length and digest, and nothing else parses as one', () => {
    const bytes = randomBytes(1234);
    const header = recordHeader(hexOf(bytes), bytes.length);
    assert.equal(header.length, RECORD_HEADER_BYTES);
    assert.deepEqual(parseRecordHeader(header), { hex: hexOf(bytes), length: 1234 });
    const wrongMagic = Buffer.from(header);
    wrongMagic[0] = 0;
    assert.equal(parseRecordHeader(wrongMagic), undefined);
    const wrongVersion = Buffer.from(header);
    wrongVersion[4] = 9;
    assert.equal(parseRecordHeader(wrongVersion), undefined);
    assert.equal(parseRecordHeader(header.subarray(0, 40)), undefined);
    assert.throws(() => recordHeader(hexOf(bytes), -1), RangeError);
    assert.throws(() => recordHeader(hexOf(bytes), 2 ** 48), RangeError);
  });

  test('an index round-trips; a flipped, cut or lying index is refused', () => {
    const records: PackRecord[] = [
      { hex: hexOf(Buffer.from('a')), offset: 48, length: 1 },
      { hex: hexOf(Buffer.from('bc')), offset: 97, length: 2 },
    ];
    const encoded = encodeIndex(records, 99);
    assert.deepEqual(decodeIndex(encoded), { records, packBytes: 99 });
    for (let i = 0; i < encoded.length; i += 7) {
      const flipped = Buffer.from(encoded);
      flipped[i]! ^= 0x01;
      assert.equal(decodeIndex(flipped), undefined, `byte ${i} flipped`);
    }
    assert.equal(decodeIndex(encoded.subarray(0, encoded.length - 1)), undefined);
    assert.equal(decodeIndex(Buffer.alloc(0)), undefined);
    // Well formed, checksummed, but a record past the pack's end, or inside the first header: refused.
    assert.equal(decodeIndex(encodeIndex(records, 98)), undefined);
    assert.equal(decodeIndex(encodeIndex([{ ...records[0]!, offset: 10 }], 99)), undefined);
    assert.deepEqual(decodeIndex(encodeIndex([], 0)), { records: [], packBytes: 0 });
  });

  test('a scan finds every whole record and stops at one cut short or at garbage', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'estargz-pack-format-'));
    dirs.push(dir);
    const chunks = [randomBytes(100), randomBytes(0), randomBytes(5000)];
    const parts: Buffer[] = [];
    for (const c of chunks) parts.push(recordHeader(hexOf(c), c.length), c);
    const whole = Buffer.concat(parts);
    const path = join(dir, 'p.pack');
    const scan = async (bytes: Buffer): Promise<{ records: PackRecord[]; validBytes: number }> => {
      await writeFile(path, bytes);
      const fh = await open(path, 'r');
      try {
        return await scanPack(fh, bytes.length);
      } finally {
        await fh.close();
      }
    };
    const all = await scan(whole);
    assert.deepEqual(all.records.map((r) => [r.hex, r.offset, r.length]), [
      [hexOf(chunks[0]!), 48, 100],
      [hexOf(chunks[1]!), 196, 0],
      [hexOf(chunks[2]!), 244, 5000],
    ]);
    assert.equal(all.validBytes, whole.length);
    const cut = await scan(whole.subarray(0, whole.length - 1));
    assert.equal(cut.records.length, 2);
    assert.equal(cut.validBytes, 244 - RECORD_HEADER_BYTES);
    const garbage = await scan(Buffer.concat([whole.subarray(0, 148), randomBytes(200)]));
    assert.equal(garbage.records.length, 1);
  });
});
