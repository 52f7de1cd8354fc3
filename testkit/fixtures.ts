import { readFile } from 'node:fs/promises';
import type { ListedEntry } from '../src/estargz/listing.js';

/** Reference-made eStargz fixtures, copied into the project (see test/fixtures/estargz/README.md). */
export const FIXTURE_DIR = new URL('../../test/fixtures/estargz/', import.meta.url);

export interface PatchOp {
  op: 'xor' | 'truncate' | 'write' | 'append';
  offset?: number;
  mask?: number;
  length?: number;
  base64?: string;
}

export interface FixtureMeta {
  name: string;
  blobFile: string | null;
  digest: string;
  size: number;
  tocDigest: string;
  diffID: string;
  uncompressedSize: number;
  chunkSize: number;
  prioritized: string[];
  expectError: string | null;
  tocOffset: number;
  tocEntryCount?: number;
  landmark?: string;
  prefetch?: { entriesBeforeLandmark: string[] };
  expectedChunks?: Record<string, { chunkOffset: number; chunkSize: number; sha256: string }[]>;
  corruption?: { kind: string; file?: string; chunkOffset?: number; chunkSize?: number; actualTocDigest?: string };
  patch?: { base: string; ops: PatchOp[] };
}

/** One entry of a fixture's expected tree: the shape `layer ls --json` prints. */
export type TreeEntry = ListedEntry;

export const TREE_KEYS: (keyof TreeEntry)[] = ['path', 'type', 'mode', 'uid', 'gid', 'size', 'mtime', 'linkname', 'devmajor', 'devminor', 'xattrs', 'sha256'];

export async function fixtureNames(): Promise<string[]> {
  const index = JSON.parse(await readFile(new URL('index.json', FIXTURE_DIR), 'utf8')) as { fixtures: { name: string }[] };
  return index.fixtures.map((f) => f.name);
}

export async function loadFixture(name: string): Promise<{ meta: FixtureMeta; blob: Buffer; tree: TreeEntry[] }> {
  const meta = JSON.parse(await readFile(new URL(`${name}.json`, FIXTURE_DIR), 'utf8')) as FixtureMeta;
  let blob: Buffer;
  if (meta.blobFile) {
    blob = await readFile(new URL(meta.blobFile, FIXTURE_DIR));
  } else {
    blob = await readFile(new URL(meta.patch!.base, FIXTURE_DIR));
    for (const op of meta.patch!.ops) blob = applyPatch(blob, op);
  }
  const rawTree = JSON.parse(await readFile(new URL(`${name}.tree.json`, FIXTURE_DIR), 'utf8')) as Record<string, unknown>[];
  const tree = rawTree.map((e) => Object.fromEntries(TREE_KEYS.map((k) => [k, e[k]])) as unknown as TreeEntry);
  return { meta, blob, tree };
}

function applyPatch(b: Buffer, op: PatchOp): Buffer {
  switch (op.op) {
    case 'xor': b[op.offset!] = b[op.offset!]! ^ op.mask!; return b;
    case 'truncate': return b.subarray(0, op.length);
    case 'write': Buffer.from(op.base64!, 'base64').copy(b, op.offset); return b;
    case 'append': return Buffer.concat([b, Buffer.from(op.base64!, 'base64')]);
  }
}
