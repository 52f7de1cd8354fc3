import type { TocEntryJson } from '../toc.js';
import { checkId, checkString } from './fields.js';
import type { LayerNode } from './types.js';

/** The ownership fields of a node, as one entry gives them after back-filling. */
export type Owner = Pick<LayerNode, 'uid' | 'gid' | 'userName' | 'groupName'>;

/**
 * Back-fills user and group names. Writers give a uid's name only on the
 * first entry (or when it changes) to keep the TOC small; a reader must
 * remember the last name seen for each id, across every entry kind
 * (hardlinks too), and apply it to later entries that leave it out.
 */
export class OwnerNames {
  private readonly users = new Map<number, string>();
  private readonly groups = new Map<number, string>();

  /** The entry's ids and names, names back-filled from earlier entries. */
  resolve(entry: TocEntryJson, path: string): Owner {
    const uid = checkId(entry, 'uid', path);
    const gid = checkId(entry, 'gid', path);
    return {
      uid,
      gid,
      userName: remember(this.users, uid, checkString(entry, 'userName', path)),
      groupName: remember(this.groups, gid, checkString(entry, 'groupName', path)),
    };
  }
}

function remember(names: Map<number, string>, id: number, given: string): string {
  if (!given) return names.get(id) ?? '';
  names.set(id, given);
  return given;
}
