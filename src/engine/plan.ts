/** A compressed byte range of the blob: [offset, end). */
export interface BlobRange {
  offset: number;
  end: number;
}

/** Contiguous bytes to fetch, covering one or more gzip members. */
export interface Span extends BlobRange {
  members: BlobRange[];
}

export interface PlanOptions {
  /** Members closer than this are fetched as one range (the gap is cheaper than another range). */
  mergeGapBytes: number;
  /** A span never grows past this (unless one member is bigger). */
  maxSpanBytes: number;
}

/** Merges member ranges (any order, duplicates allowed) into spans. */
export function planSpans(members: readonly BlobRange[], opts: PlanOptions): Span[] {
  const sorted = [...new Map(members.map((m) => [m.offset, m])).values()].sort((a, b) => a.offset - b.offset);
  const spans: Span[] = [];
  for (const m of sorted) {
    const last = spans.at(-1);
    if (last && m.offset <= last.end + opts.mergeGapBytes && Math.max(m.end, last.end) - last.offset <= opts.maxSpanBytes) {
      last.end = Math.max(last.end, m.end);
      last.members.push(m);
    } else {
      spans.push({ offset: m.offset, end: m.end, members: [m] });
    }
  }
  return spans;
}

export interface RequestOptions {
  /** Ranges per multi-range request. */
  maxRanges: number;
  /** Bytes per request. */
  maxRequestBytes: number;
}

/** Groups spans into requests: scattered spans share a multi-range request, within bounds. */
export function groupRequests(spans: readonly Span[], opts: RequestOptions): Span[][] {
  const requests: Span[][] = [];
  let current: Span[] = [];
  let bytes = 0;
  for (const s of spans) {
    const len = s.end - s.offset;
    if (current.length > 0 && (current.length >= opts.maxRanges || bytes + len > opts.maxRequestBytes)) {
      requests.push(current);
      current = [];
      bytes = 0;
    }
    current.push(s);
    bytes += len;
  }
  if (current.length) requests.push(current);
  return requests;
}

/**
 * Cuts requests larger than `maxBytes` into pieces of at most that many
 * bytes (or one member, when a member is larger), in blob order. Cuts fall
 * between members only: a member decodes whole or not at all.
 */
export function cutRequests(requests: readonly Span[][], maxBytes: number): Span[][] {
  const out: Span[][] = [];
  for (const request of requests) {
    if (request.reduce((n, s) => n + s.end - s.offset, 0) <= maxBytes) {
      out.push(request);
      continue;
    }
    let piece: Span[] = [];
    let bytes = 0;
    for (const span of request) {
      // The piece's span cut from this one (members of one span stay one range, their gaps included).
      let current: Span | undefined;
      for (const m of span.members) {
        const grows = current ? Math.max(0, m.end - current.end) : m.end - m.offset;
        if (piece.length > 0 && bytes + grows > maxBytes) {
          out.push(piece);
          piece = [];
          bytes = 0;
          current = undefined;
        }
        if (current) {
          current.end = Math.max(current.end, m.end);
          current.members.push(m);
          bytes += grows;
        } else {
          current = { offset: m.offset, end: m.end, members: [m] };
          piece.push(current);
          bytes += m.end - m.offset;
        }
      }
    }
    if (piece.length) out.push(piece);
  }
  return out;
}

/** A set of byte ranges, merged: how much of the blob has been fetched. */
export class RangeSet {
  private ranges: BlobRange[] = [];
  private total = 0;

  add(offset: number, end: number): number {
    if (end <= offset) return 0;
    const before = this.total;
    const out: BlobRange[] = [];
    let cur = { offset, end };
    let placed = false;
    for (const r of this.ranges) {
      if (r.end < cur.offset) out.push(r);
      else if (r.offset > cur.end) {
        if (!placed) { out.push(cur); placed = true; }
        out.push(r);
      } else {
        cur = { offset: Math.min(cur.offset, r.offset), end: Math.max(cur.end, r.end) };
      }
    }
    if (!placed) out.push(cur);
    this.ranges = out;
    this.total = out.reduce((n, r) => n + r.end - r.offset, 0);
    return this.total - before;
  }

  get bytes(): number {
    return this.total;
  }
}
