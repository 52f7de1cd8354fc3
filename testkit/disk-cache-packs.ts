import { createHash } from 'node:crypto';
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { scanPack } from '../src/engine/cache/pack-format.js';

/** A chunk in the disk cache's packs, as the pack itself says (its index is not read). */
export interface CachedRecord {
  hex: string;
  /** The pack file's path. */
  pack: string;
  /** Where the chunk's bytes start in the pack. */
  offset: number;
  length: number;
}

const packsOf = (cacheDir: string): string => join(cacheDir, 'packs');

/** Every record of every pack under `cacheDir`, pack by pack in name order. */
export async function cacheRecords(cacheDir: string): Promise<CachedRecord[]> {
  const out: CachedRecord[] = [];
  const names = (await readdir(packsOf(cacheDir)).catch(() => [] as string[])).filter((n) => n.endsWith('.pack')).sort();
  for (const name of names) {
    const path = join(packsOf(cacheDir), name);
    const fh = await open(path, 'r').catch(() => undefined); // evicted since readdir
    if (!fh) continue;
    try {
      const { records } = await scanPack(fh, (await fh.stat()).size);
      for (const r of records) out.push({ ...r, pack: path });
    } finally {
      await fh.close();
    }
  }
  return out;
}

/** The record's bytes as they are in the pack. */
export async function recordBytes(r: CachedRecord): Promise<Buffer> {
  const fh = await open(r.pack, 'r');
  try {
    const bytes = Buffer.alloc(r.length);
    await fh.read(bytes, 0, r.length, r.offset);
    return bytes;
  } finally {
    await fh.close();
  }
}

/** Whether the record's bytes hash to its digest. */
export async function recordIsWhole(r: CachedRecord): Promise<boolean> {
  return createHash('sha256').update(await recordBytes(r)).digest('hex') === r.hex;
}

/** Flips one bit of a byte in the middle of the record's bytes, in place. */
export async function flipRecordByte(r: CachedRecord): Promise<void> {
  const fh = await open(r.pack, 'r+');
  try {
    const at = r.offset + (r.length >> 1);
    const byte = Buffer.alloc(1);
    await fh.read(byte, 0, 1, at);
    byte[0]! ^= 0x80;
    await fh.write(byte, 0, 1, at);
  } finally {
    await fh.close();
  }
}

/** Bytes of every file under the cache's packs directory (packs and their indexes). */
export async function packBytesOnDisk(cacheDir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(packsOf(cacheDir)).catch(() => [] as string[])) total += (await stat(join(packsOf(cacheDir), name))).size;
  return total;
}
