// How the S3 driver cuts an upload's stored pieces into the parts of the committed object: S3
// refuses a part under 5 MiB anywhere but last, and over 5 GiB anywhere. Backend: embedded only.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { composition } from '../../src/storage/s3.js';

const MiB = 1024 * 1024;

/** The pieces' bytes, in order, as (key, offset) pairs covered by the plan — checks nothing is lost or repeated. */
function covered(plan: ReturnType<typeof composition>): string[] {
  return plan.flat().flatMap((range) => [`${range.key}:${range.start}-${range.end}`]);
}

describe('composition of an S3 upload', () => {
  const cases: [string, number[]][] = [
    ['chunks of 16 MiB', Array(8).fill(16 * MiB)],
    ['small chunks only', [3, 100, 2 * MiB, 1]],
    ['small, large, empty, just over the minimum, small', [3, 6 * MiB, 100, 0, 5 * MiB + 1, 2 * MiB, 4 * MiB]],
    ['a piece over 5 GiB', [12 * 1024 * MiB]],
    ['pieces of 4 MiB', Array(10).fill(4 * MiB)],
  ];
  for (const [name, sizes] of cases) {
    it(`keeps every part but the last within S3's limits, and every byte once, in order: ${name}`, () => {
      const pieces = sizes.map((size, i) => ({ key: `p${i}`, size }));
      const plan = composition(pieces);
      const lengths = plan.map((part) => part.reduce((sum, range) => sum + range.end - range.start + 1, 0));
      lengths.slice(0, -1).forEach((length, i) => assert.ok(length >= 5 * MiB, `part ${i + 1} is ${length} bytes`));
      lengths.forEach((length, i) => assert.ok(length <= 5 * 1024 * MiB && length > 0, `part ${i + 1} is ${length} bytes`));
      // Consecutive ranges, each piece from 0 to its end, pieces in order.
      const expected: string[] = [];
      let previous: { key: string; end: number } | undefined;
      for (const range of plan.flat()) {
        if (previous && previous.key === range.key) assert.equal(range.start, previous.end + 1);
        else assert.equal(range.start, 0, `${range.key} starts at 0`);
        previous = range;
        expected.push(`${range.key}:${range.start}-${range.end}`);
      }
      assert.deepEqual(covered(plan), expected);
      assert.equal(lengths.reduce((a, b) => a + b, 0), sizes.reduce((a, b) => a + b, 0));
      const order = [...new Set(plan.flat().map((range) => range.key))];
      assert.deepEqual(order, pieces.filter((piece) => piece.size > 0).map((piece) => piece.key));
    });
  }

  it('copies large chunks inside the store, one part each, and gathers only short runs', () => {
    const plan = composition(Array.from({ length: 64 }, (_, i) => ({ key: `p${i}`, size: 16 * MiB })));
    assert.equal(plan.length, 64);
    assert.ok(plan.every((part) => part.length === 1));
  });
});
