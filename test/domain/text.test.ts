/** pgText: the one character PostgreSQL text refuses (NUL) becomes U+FFFD; everything else is kept. */
import t from 'tap';
import { pgText } from '../../src/domain/text.ts';

t.test('every NUL becomes U+FFFD and nothing else changes', async (t) => {
  t.equal(pgText('a\u0000b\u0000'), 'a\uFFFDb\uFFFD');
  const clean = 'plain ü 📈 \u0001\n';
  t.equal(pgText(clean), clean, 'other control characters and any Unicode are kept');
  t.equal(pgText(''), '');
});
