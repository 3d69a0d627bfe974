/**
 * The enum labels of SQL (pg_enum, in declaration order) and of TypeScript
 * (src/domain/enums.ts) are the same lists.
 */
import t from 'tap';
import {
  AUTH_PROVIDERS,
  RUN_STATUSES,
  RUN_TRIGGERS,
  SCRIPT_STATUSES,
  USER_ROLES,
} from '../../src/domain/enums.ts';
import { testDatabase } from '../helpers/db.ts';

t.test('SQL enum labels equal the TypeScript lists', async (t) => {
  const { sql } = await testDatabase(t);
  const labels = async (type: string) =>
    (
      await sql<{ enumlabel: string }[]>`
        select e.enumlabel
        from pg_enum e join pg_type ty on ty.oid = e.enumtypid
        where ty.typname = ${type} and ty.typnamespace = 'public'::regnamespace
        order by e.enumsortorder
      `
    ).map((r) => r.enumlabel);

  const expected: Array<[string, readonly string[]]> = [
    ['auth_provider', AUTH_PROVIDERS],
    ['user_role', USER_ROLES],
    ['script_status', SCRIPT_STATUSES],
    ['run_status', RUN_STATUSES],
    ['run_trigger', RUN_TRIGGERS],
  ];
  for (const [type, list] of expected) t.strictSame(await labels(type), [...list], type);

  const [all] = await sql<{ types: string[] }[]>`
    select coalesce(array_agg(typname::text order by typname), '{}') as types
    from pg_type where typtype = 'e' and typnamespace = 'public'::regnamespace
  `;
  t.strictSame(all?.types, expected.map(([type]) => type).sort(), 'no other enum type is left untested');
});
