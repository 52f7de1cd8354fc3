import { serializeToc, type TocEntryJson } from '../toc.js';

const HEAD = '{\n\t"version": 1,\n\t"entries": [\n';
const TAIL = '\n\t]\n}';
const PIECE_CHARS = 64 << 10;

/** One entry as it appears inside the whole document: two tabs deeper than on its own. */
function entryText(e: TocEntryJson): string {
  return '\t\t' + JSON.stringify(e, null, '\t').replaceAll('\n', '\n\t\t');
}

/**
 * The TOC JSON, byte for byte what serializeToc makes (tab indent), produced
 * in pieces of about 64 KiB: the whole document of a layer with many files
 * runs to megabytes, and is never held at once. `size` walks the entries
 * once more to know the length first (the tar header needs it).
 */
export function tocJson(entries: readonly TocEntryJson[]): { size: number; pieces: () => Generator<Buffer> } {
  if (entries.length === 0) {
    const whole = serializeToc({ version: 1, entries: [] });
    return { size: whole.length, pieces: function* () { yield whole; } };
  }
  let size = Buffer.byteLength(HEAD) + Buffer.byteLength(TAIL) + 2 * (entries.length - 1);
  for (const e of entries) size += Buffer.byteLength(entryText(e));
  function* pieces(): Generator<Buffer> {
    let text = HEAD;
    for (let i = 0; i < entries.length; i++) {
      text += (i ? ',\n' : '') + entryText(entries[i]!);
      if (text.length >= PIECE_CHARS) {
        yield Buffer.from(text);
        text = '';
      }
    }
    yield Buffer.from(text + TAIL);
  }
  return { size, pieces };
}
