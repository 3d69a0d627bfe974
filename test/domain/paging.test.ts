/**
 * Paging: offset pages and their arithmetic, keyset cursors that decode only in the
 * form this server issues them (anything else is INVALID_CURSOR), and the choice
 * between the two modes that a request makes.
 */
import { Type } from '@sinclair/typebox';
import fc from 'fast-check';
import t from 'tap';
import { ValidationError } from '../../src/domain/errors.ts';
import {
  cursorPage,
  decodeCursor,
  encodeCursor,
  fetchPage,
  invalidCursor,
  type OffsetQuery,
  offsetOf,
  offsetPage,
  PER_PAGE_DEFAULT,
  pageBody,
} from '../../src/domain/paging.ts';

const Key = Type.Tuple([Type.String(), Type.Integer({ minimum: 1 })]);

function refusal(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  return undefined;
}

const INVALID = { constructor: ValidationError, code: 'INVALID_CURSOR', errors: [{ path: '/cursor' }] };

t.test('offset pages: the offset of a page and the number of pages', async (t) => {
  t.equal(offsetOf({ page: 1, per_page: 20 }), 0);
  t.equal(offsetOf({ page: 3, per_page: 20 }), 40);
  t.same(offsetPage(['a'], 41, { page: 3, per_page: 20 }), {
    items: ['a'],
    total: 41,
    page: 3,
    per_page: 20,
    pages: 3,
  });
  t.equal(offsetPage([], 40, { page: 1, per_page: 20 }).pages, 2, 'a full last page adds none');
  t.equal(offsetPage([], 0, { page: 1, per_page: 20 }).pages, 0, 'nothing: no pages');
});

t.test('a cursor decodes back to the key it was made from', async (t) => {
  const cursor = encodeCursor(['2027-01-01T00:00:00.000Z', 42]);
  t.match(cursor, /^[A-Za-z0-9_-]+$/, 'base64url, safe in a query string');
  t.same(decodeCursor(cursor, Key), ['2027-01-01T00:00:00.000Z', 42]);
  fc.assert(
    fc.property(fc.string({ maxLength: 100 }), fc.integer({ min: 1 }), (s, n) => {
      const back = decodeCursor(encodeCursor([s, n]), Key);
      return back[0] === s && back[1] === n;
    }),
  );
});

t.test('a cursor this server did not issue is INVALID_CURSOR, never another error', async (t) => {
  const good = encodeCursor(['x', 1]);
  const cases: Array<[string, string]> = [
    ['', 'empty'],
    ['abc+/', 'standard base64 characters'],
    ['a b', 'a space'],
    ['A'.repeat(513), 'longer than 512 characters'],
    [`${good.slice(0, -1)}${good.endsWith('A') ? 'B' : 'A'}`, 'its last character changed'],
    [Buffer.from('not json').toString('base64url'), 'not JSON'],
    [encodeCursor(['x', 0]), 'a key outside the schema'],
    [encodeCursor(['x']), 'a key of the wrong length'],
    [encodeCursor([1, 1]), 'a key of the wrong types'],
    [Buffer.from('{"a":1}').toString('base64url'), 'an object'],
  ];
  for (const [cursor, why] of cases)
    t.match(
      refusal(() => decodeCursor(cursor, Key)),
      INVALID,
      why,
    );
  // Base64 ignores trailing bits: "eA" and "eB" decode to the same byte; only the canonical one is ours.
  const canonical = Buffer.from('[12]').toString('base64url'); // 4 bytes: 6 characters, 4 bits unused
  const last = canonical.at(-1)!;
  const sibling = `${canonical.slice(0, -1)}${String.fromCharCode(last.charCodeAt(0) + 1)}`;
  t.same(Buffer.from(sibling, 'base64url'), Buffer.from('[12]'), 'the sibling decodes to the same bytes');
  t.match(
    refusal(() => decodeCursor(sibling, Type.Tuple([Type.Integer()]))),
    INVALID,
    'but is not the form issued',
  );
  t.match(invalidCursor(), INVALID);
  t.equal(invalidCursor().message, '/cursor: is not a cursor this server issued for this list');
});

t.test('cursorPage: one row more than the page means a next page, keyed by the last row shown', async (t) => {
  const rows = [
    { id: 5, at: 'e' },
    { id: 4, at: 'd' },
    { id: 3, at: 'c' },
  ];
  const keyOf = (r: { id: number; at: string }) => [r.at, r.id] as const;
  const page = cursorPage(rows, 2, keyOf);
  t.same(
    page.items.map((r) => r.id),
    [5, 4],
  );
  t.same(decodeCursor(page.next_cursor!, Key), ['d', 4], 'the key of the last row shown');
  t.same(cursorPage(rows, 3, keyOf), { items: rows, next_cursor: null }, 'exactly a page: no next');
  t.same(cursorPage([], 3, keyOf), { items: [], next_cursor: null });
});

t.test(
  'fetchPage: offset mode unless a cursor is given; an empty cursor is the first keyset page',
  async (t) => {
    const calls: unknown[] = [];
    const byOffset = async (q: OffsetQuery) => {
      calls.push(['offset', q]);
      return offsetPage<number>([], 0, q);
    };
    const byCursor = async (cursor: string | null, limit: number) => {
      calls.push(['cursor', cursor, limit]);
      return { items: [], next_cursor: null };
    };
    await fetchPage({}, byOffset, byCursor);
    await fetchPage({ page: 4, per_page: 7 }, byOffset, byCursor);
    await fetchPage({ cursor: '' }, byOffset, byCursor);
    await fetchPage({ cursor: 'abc', per_page: 5, page: 9 }, byOffset, byCursor);
    t.same(calls, [
      ['offset', { page: 1, per_page: PER_PAGE_DEFAULT }],
      ['offset', { page: 4, per_page: 7 }],
      ['cursor', null, PER_PAGE_DEFAULT],
      ['cursor', 'abc', 5],
    ]);
  },
);

t.test('pageBody puts the items under the list’s name and keeps the rest', async (t) => {
  t.same(pageBody('scripts', { items: [1, 2], next_cursor: 'c' }), { scripts: [1, 2], next_cursor: 'c' });
  t.same(pageBody('users', offsetPage(['u'], 1, { page: 1, per_page: 20 })), {
    users: ['u'],
    total: 1,
    page: 1,
    per_page: 20,
    pages: 1,
  });
});
