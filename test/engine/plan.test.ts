import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RangeSet, cutRequests, groupRequests, planSpans, type Span } from '../../src/engine/plan.js';

const m = (offset: number, end: number) => ({ offset, end });

test('planSpans: members closer than the gap share a span; farther ones do not', () => {
  const spans = planSpans([m(0, 100), m(150, 200), m(1000, 1100)], { mergeGapBytes: 50, maxSpanBytes: 1 << 20 });
  assert.deepEqual(spans.map((s) => [s.offset, s.end, s.members.length]), [[0, 200, 2], [1000, 1100, 1]]);
});

test('planSpans: any order, duplicates once, a gap of exactly mergeGapBytes merges', () => {
  const spans = planSpans([m(300, 400), m(0, 100), m(0, 100), m(150, 250)], { mergeGapBytes: 50, maxSpanBytes: 1 << 20 });
  assert.deepEqual(spans.map((s) => [s.offset, s.end]), [[0, 400]]);
  assert.deepEqual(spans[0]!.members, [m(0, 100), m(150, 250), m(300, 400)]);
});

test('planSpans: a span stops growing at maxSpanBytes, but one member larger than that is a span of its own', () => {
  const spans = planSpans([m(0, 60), m(60, 120), m(120, 180), m(180, 500)], { mergeGapBytes: 0, maxSpanBytes: 128 });
  assert.deepEqual(spans.map((s) => [s.offset, s.end]), [[0, 120], [120, 180], [180, 500]]);
  assert.deepEqual(planSpans([], { mergeGapBytes: 10, maxSpanBytes: 10 }), []);
});

test('groupRequests: bounded in ranges and in bytes, order kept', () => {
  const spans: Span[] = [0, 1, 2, 3, 4].map((i) => ({ offset: i * 1000, end: i * 1000 + 100, members: [m(i * 1000, i * 1000 + 100)] }));
  assert.deepEqual(groupRequests(spans, { maxRanges: 2, maxRequestBytes: 1 << 20 }).map((r) => r.map((s) => s.offset)), [[0, 1000], [2000, 3000], [4000]]);
  assert.deepEqual(groupRequests(spans, { maxRanges: 64, maxRequestBytes: 250 }).map((r) => r.length), [2, 2, 1]);
  // A span larger than a request's bytes still goes, alone.
  const big: Span = { offset: 0, end: 1000, members: [m(0, 1000)] };
  assert.deepEqual(groupRequests([big, spans[1]!], { maxRanges: 64, maxRequestBytes: 500 }).map((r) => r.length), [1, 1]);
  assert.deepEqual(groupRequests([], { maxRanges: 1, maxRequestBytes: 1 }), []);
});

test('cutRequests: a request over the bound goes as pieces in blob order, cut between members only, gaps inside a span kept', () => {
  // One span of four members (a 10-byte gap merged between the second and third), then a span of its own.
  const span: Span = { offset: 0, end: 410, members: [m(0, 100), m(100, 200), m(210, 300), m(300, 410)] };
  const other: Span = { offset: 1000, end: 1050, members: [m(1000, 1050)] };
  const pieces = cutRequests([[span, other]], 220);
  assert.deepEqual(pieces.map((p) => p.map((s) => [s.offset, s.end])), [[[0, 200]], [[210, 410]], [[1000, 1050]]]);
  assert.deepEqual(pieces[1]![0]!.members, [m(210, 300), m(300, 410)]);
  // Every member once, in order; no piece over the bound but one whose single member is larger.
  assert.deepEqual(pieces.flat().flatMap((s) => s.members), [...span.members, ...other.members]);
  assert.deepEqual(cutRequests([[{ offset: 0, end: 500, members: [m(0, 500)] }]], 100).map((p) => p[0]!.end), [500]);
  // A request within the bound is kept as it is (the same objects).
  const small = [[other]];
  assert.equal(cutRequests(small, 1 << 20)[0], small[0]);
  assert.deepEqual(cutRequests([], 10), []);
});

test('RangeSet: counts distinct bytes, merging overlaps and neighbours; add returns the new bytes', () => {
  const s = new RangeSet();
  assert.equal(s.add(10, 20), 10);
  assert.equal(s.add(30, 40), 10);
  assert.equal(s.add(15, 35), 10, 'only [20, 30) is new');
  assert.equal(s.bytes, 30);
  assert.equal(s.add(0, 10), 10, 'touching: merged');
  assert.equal(s.add(5, 5), 0);
  assert.equal(s.add(9, 3), 0, 'an empty or inverted range adds nothing');
  assert.equal(s.add(100, 110), 10);
  assert.equal(s.add(0, 200), 150);
  assert.equal(s.bytes, 200);
});
