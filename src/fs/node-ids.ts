/**
 * The store's FUSE node ids (which are also its st_ino numbers). They are a
 * pure function of what they name, so that a successor process taking over
 * the connection answers for the ids the kernel holds (issue 14):
 *
 *   id = slot · 2^32 + low          (always < 2^53: ids cross into JS as doubles)
 *
 * - slot 0 is the root alone (id 1);
 * - every other slot, 1 … 2^21 − 1, names one store directory: a reference
 *   directory (`<base64(ref)>`, low 0) or a layer directory
 *   (`<base64(ref)>/<digest>`). The slot is the first bits of
 *   sha256(key), probing to the next free slot on a collision; the
 *   table of taken slots is what a successor imports (exportNodeTable());
 * - inside a layer's slot, low is the node's number in the layer index
 *   (LayerNode.ino: TOC order, hardlinks share their target's node; the diff
 *   directory is the index root, 1), a whiteout's is WHITEOUT_BIT plus its
 *   `.wh.` entry's node, and the layer directory itself, `info` and `blob`
 *   take the top values.
 *
 * Keys are the directory names as looked up (the base64 text, not the decoded
 * reference): two names for one reference are two trees for the kernel, and a
 * directory must have one parent.
 */
import { createHash } from 'node:crypto';

export const SLOT_FACTOR = 2 ** 32;
export const SLOT_BITS = 21;
export const ROOT_ID = 1;

/** Low values in a layer's slot. Index nodes are numbered from 1 (the index root = diff). */
export const Low = {
  REF_DIR: 0,
  DIFF: 1,
  LAYER_DIR: SLOT_FACTOR - 1,
  INFO: SLOT_FACTOR - 2,
  BLOB: SLOT_FACTOR - 3,
} as const;
export const WHITEOUT_BIT = 2 ** 31;
/** Index node numbers must stay below this (the TOC limits keep them far below). */
export const MAX_NODE_INO = WHITEOUT_BIT - 1;

export const refKey = (refName: string): string => `ref ${refName}`;
export const layerKey = (refName: string, digest: string): string => `layer ${refName} ${digest}`;

export type SlotKey = { kind: 'ref'; refName: string } | { kind: 'layer'; refName: string; digest: string };

export function parseKey(key: string): SlotKey | undefined {
  const parts = key.split(' ');
  if (parts[0] === 'ref' && parts.length === 2) return { kind: 'ref', refName: parts[1]! };
  if (parts[0] === 'layer' && parts.length === 3) return { kind: 'layer', refName: parts[1]!, digest: parts[2]! };
  return undefined;
}

export const makeId = (slot: number, low: number): number => slot * SLOT_FACTOR + low;
export const slotOf = (id: number): number => Math.floor(id / SLOT_FACTOR);
export const lowOf = (id: number): number => id % SLOT_FACTOR;

/** What a successor needs to give every key the slot it had: version 1, [slot, key] pairs. */
export interface NodeTableJson {
  version: 1;
  slotBits: number;
  slots: [number, string][];
}

export class SlotTableFull extends Error {}

/** key ↔ slot, with probing on collision. */
export class NodeIdTable {
  private readonly byKey = new Map<string, number>();
  private readonly byslot = new Map<number, string>();
  private readonly slotCount: number;

  /** `slotBits` below 21 only for tests (collisions on purpose). */
  constructor(readonly slotBits = SLOT_BITS) {
    if (slotBits < 1 || slotBits > SLOT_BITS) throw new RangeError(`slotBits must be 1…${SLOT_BITS}`);
    this.slotCount = 2 ** slotBits;
  }

  /** The slot a key hashes to before probing (1 … 2^slotBits − 1). */
  homeSlot(key: string): number {
    const h = createHash('sha256').update(key).digest();
    return (h.readUIntBE(0, 6) % (this.slotCount - 1)) + 1;
  }

  /** The key's slot, taking one (home slot, else the next free) if it has none. */
  slotFor(key: string): number {
    const known = this.byKey.get(key);
    if (known !== undefined) return known;
    if (this.byslot.size >= this.slotCount - 1) throw new SlotTableFull(`all ${this.slotCount - 1} node-id slots are taken`);
    let slot = this.homeSlot(key);
    while (this.byslot.has(slot)) slot = slot + 1 >= this.slotCount ? 1 : slot + 1;
    this.byKey.set(key, slot);
    this.byslot.set(slot, key);
    return slot;
  }

  peek(key: string): number | undefined {
    return this.byKey.get(key);
  }

  keyAt(slot: number): string | undefined {
    return this.byslot.get(slot);
  }

  /** Frees a slot (only once the kernel holds no id in it). */
  free(slot: number): void {
    const key = this.byslot.get(slot);
    if (key === undefined) return;
    this.byslot.delete(slot);
    this.byKey.delete(key);
  }

  get size(): number {
    return this.byslot.size;
  }

  export(): NodeTableJson {
    return { version: 1, slotBits: this.slotBits, slots: [...this.byslot.entries()] };
  }

  /** Takes a predecessor's slots; they win over any taken here (import before serving). */
  import(table: NodeTableJson): void {
    if (table.version !== 1 || table.slotBits !== this.slotBits) throw new Error(`node table version ${table.version} with ${table.slotBits} slot bits cannot be imported (want version 1, ${this.slotBits})`);
    for (const [slot, key] of table.slots) {
      if (!Number.isInteger(slot) || slot < 1 || slot >= this.slotCount || typeof key !== 'string') throw new Error(`node table: bad slot ${JSON.stringify([slot, key])}`);
      const mine = this.byslot.get(slot);
      if (mine !== undefined && mine !== key) this.byKey.delete(mine);
      const old = this.byKey.get(key);
      if (old !== undefined && old !== slot) this.byslot.delete(old);
      this.byslot.set(slot, key);
      this.byKey.set(key, slot);
    }
  }
}
