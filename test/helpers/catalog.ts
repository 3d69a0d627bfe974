/**
 * What a database's `public` schema contains, read from the system catalogs and
 * normalised so that two databases built different ways (sql/schema vs
 * migrations/) can be compared with a plain deep-equal, and their differences
 * printed one readable line per object.
 *
 * Every object becomes one string, keyed by a name that does not depend on OIDs
 * or creation order: PostgreSQL's own deparsers (format_type, pg_get_expr,
 * pg_get_constraintdef, pg_get_indexdef, ...) produce the definitions, so two
 * spellings of the same DDL (`int` vs `integer`, extra parentheses, comments,
 * whitespace outside function bodies) compare equal, and a real difference
 * shows up as two definitions that a reader can compare by eye.
 *
 * Not compared (deliberately): owners, grants, comments, RLS policies, rules,
 * statistics objects, and the pgmigrations bookkeeping of node-pg-migrate.
 */
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type postgres from 'postgres';
import { MIGRATIONS_TABLE } from '../../src/db/migrate.ts';

export const SCHEMA_DIR = fileURLToPath(new URL('../../sql/schema', import.meta.url));

/** The kinds of object compared, in the order a diff reports them. */
export const KINDS = [
  'extension',
  'type',
  'table',
  'column',
  'constraint',
  'index',
  'trigger',
  'function',
  'view',
  'sequence',
] as const;
export type Kind = (typeof KINDS)[number];

/** kind → object name → normalised definition; names sorted within each kind. */
export type Catalog = Record<Kind, Record<string, string>>;

/** A pool, a reserved connection or a transaction: anything that runs a query. */
export type Queryable = postgres.ISql;

/**
 * One round trip: each branch of the UNION yields (kind, name, definition).
 * `ours` and `not_ext` keep out what we did not create: the migrations table
 * (and the index and sequence that hang off it), and members of extensions
 * (pg_trgm puts dozens of functions and a type into public; the extension
 * itself is compared by name and version instead).
 */
const CATALOG_QUERY = `
with ext_member as (
  select classid, objid from pg_depend where deptype = 'e'
), rel as (
  select c.* from pg_class c
  where c.relnamespace = 'public'::regnamespace
    and c.relname <> $1::text
    and not exists (select from ext_member e where e.classid = 'pg_class'::regclass and e.objid = c.oid)
), seq as (
  -- Identity sequences are described with their column; serial-owned and free ones on their own.
  select s.seqrelid, c.relname, d.refobjid as owner_rel, d.refobjsubid as owner_col, d.deptype,
    format_type(s.seqtypid, null) || ' start ' || s.seqstart || ' increment ' || s.seqincrement
      || ' min ' || s.seqmin || ' max ' || s.seqmax || ' cache ' || s.seqcache
      || case when s.seqcycle then ' cycle' else '' end as def
  from pg_sequence s
  join pg_class c on c.oid = s.seqrelid
  left join pg_depend d on d.classid = 'pg_class'::regclass and d.objid = s.seqrelid
    and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
  where c.relnamespace = 'public'::regnamespace
    and not exists (select from ext_member e where e.classid = 'pg_class'::regclass and e.objid = c.oid)
)
select 'extension' as kind, x.extname as name, 'version ' || x.extversion || ' in ' || x.extnamespace::regnamespace as def
from pg_extension x where x.extname <> 'plpgsql' -- plpgsql is in every database; not ours
union all
select 'type', t.typname, case t.typtype
    -- Label order matters (comparisons, ORDER BY), so labels are listed by enumsortorder.
    when 'e' then 'enum (' || coalesce((select string_agg(quote_literal(l.enumlabel), ', ' order by l.enumsortorder)
                                        from pg_enum l where l.enumtypid = t.oid), '') || ')'
    when 'd' then 'domain over ' || format_type(t.typbasetype, t.typtypmod)
                  || case when t.typnotnull then ' not null' else '' end || coalesce(' default ' || t.typdefault, '')
    when 'c' then 'composite (' || coalesce((select string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod), ', ' order by a.attnum)
                                             from pg_attribute a where a.attrelid = t.typrelid and a.attnum > 0 and not a.attisdropped), '') || ')'
    else 'type of kind ' || t.typtype::text end
from pg_type t
where t.typnamespace = 'public'::regnamespace
  and (t.typtype in ('e', 'd', 'r', 'm') or (t.typtype = 'c' and exists (select from pg_class c where c.oid = t.typrelid and c.relkind = 'c')))
  and not exists (select from ext_member e where e.classid = 'pg_type'::regclass and e.objid = t.oid)
union all
-- Column order is part of the table: it decides \`select *\`, \`insert ... values\` and COPY.
select 'table', c.relname,
  case c.relkind when 'p' then 'partitioned table' else 'table' end
  || case c.relpersistence when 'u' then ' unlogged' else '' end
  || coalesce(' inherits ' || (select string_agg(i.inhparent::regclass::text, ', ' order by i.inhseqno) from pg_inherits i where i.inhrelid = c.oid), '')
  || coalesce(' ' || pg_get_expr(c.relpartbound, c.oid), '')
  || coalesce(' partition by ' || pg_get_partkeydef(c.oid), '')
  || coalesce(' with (' || array_to_string(c.reloptions, ', ') || ')', '')
  || case when c.relrowsecurity then ' row level security' else '' end
  || ' columns (' || coalesce((select string_agg(quote_ident(a.attname), ', ' order by a.attnum)
                               from pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped), '') || ')'
from rel c where c.relkind in ('r', 'p')
union all
select 'column', c.relname || '.' || a.attname,
  format_type(a.atttypid, a.atttypmod)
  || case when a.attcollation <> t.typcollation then ' collate ' || quote_ident(co.collname) else '' end
  || case when a.attnotnull then ' not null' else ' null' end
  || case when a.attgenerated <> '' then ' generated always as (' || pg_get_expr(d.adbin, d.adrelid) || ')'
                                         || case a.attgenerated when 's' then ' stored' else ' virtual' end
          else coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '') end
  || case a.attidentity when 'a' then ' generated always as identity' when 'd' then ' generated by default as identity' else '' end
  || coalesce(' (' || s.def || ')', '')
from rel c
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
join pg_type t on t.oid = a.atttypid
left join pg_collation co on co.oid = a.attcollation
left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
left join seq s on s.deptype = 'i' and s.owner_rel = c.oid and s.owner_col = a.attnum
where c.relkind in ('r', 'p')
union all
-- NOT NULL constraints (pg_constraint rows since PostgreSQL 18, absent in 15) are left to
-- the columns' nullability, so that the catalog means the same on both servers.
select 'constraint', k.conname || ' on ' || coalesce(c.relname, t.typname), pg_get_constraintdef(k.oid)
from pg_constraint k
left join pg_class c on c.oid = k.conrelid
left join pg_type t on t.oid = k.contypid
where k.connamespace = 'public'::regnamespace and k.contype <> 'n' and c.relname is distinct from $1::text
union all
select 'index', i.relname, pg_get_indexdef(i.oid)
  || case when x.indisclustered then ' (clustered)' else '' end
  || case when not x.indisvalid then ' (invalid)' else '' end
from pg_index x join rel c on c.oid = x.indrelid join pg_class i on i.oid = x.indexrelid
union all
-- Internal triggers implement foreign keys, which the constraints already describe.
select 'trigger', g.tgname || ' on ' || c.relname, pg_get_triggerdef(g.oid)
  || case g.tgenabled when 'O' then '' else ' (enabled mode ' || g.tgenabled::text || ')' end
from pg_trigger g join rel c on c.oid = g.tgrelid where not g.tgisinternal
union all
-- The whole CREATE FUNCTION text: signature, volatility, security, settings and body.
-- pg_get_functiondef refuses aggregates, which get a short description instead.
select 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
  case when p.prokind = 'a' then 'aggregate returning ' || format_type(p.prorettype, null)
       else pg_get_functiondef(p.oid) end
from pg_proc p
where p.pronamespace = 'public'::regnamespace
  and not exists (select from ext_member e where e.classid = 'pg_proc'::regclass and e.objid = p.oid)
union all
select 'view', c.relname, case c.relkind when 'm' then 'materialized view' else 'view' end
  || coalesce(' with (' || array_to_string(c.reloptions, ', ') || ')', '') || ' as ' || pg_get_viewdef(c.oid)
from rel c where c.relkind in ('v', 'm')
union all
select 'sequence', s.relname, s.def
  || case when s.deptype = 'a' then ' owned by ' || s.owner_rel::regclass || '.' || quote_ident(a.attname) else '' end
from seq s
left join pg_attribute a on a.attrelid = s.owner_rel and a.attnum = s.owner_col
where s.deptype is distinct from 'i'
  and s.owner_rel is distinct from coalesce(to_regclass(quote_ident($1::text))::oid, 0::oid)
`;

/** Reads the normalised catalog of schema `public` (see the top of this file for what is left out). */
export async function readCatalog(sql: Queryable): Promise<Catalog> {
  const rows = await sql.unsafe<{ kind: Kind; name: string; def: string }[]>(CATALOG_QUERY, [
    MIGRATIONS_TABLE,
  ]);
  const grouped = new Map<Kind, [string, string][]>(KINDS.map((k) => [k, []]));
  for (const row of rows) grouped.get(row.kind)!.push([row.name, row.def]);
  // Sorted by code unit, not by the server's collation, so both sides sort alike everywhere.
  const byName = (x: [string, string], y: [string, string]) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0);
  return Object.fromEntries(
    KINDS.map((k) => [k, Object.fromEntries(grouped.get(k)!.sort(byName))]),
  ) as Catalog;
}

/**
 * The differences between two catalogs, one line per object, e.g.
 *   index ix_scripts_status: schema has "CREATE INDEX ..." / migrations has "CREATE INDEX ..."
 *   constraint ck_x on scripts only in schema
 * Empty when the catalogs are equal.
 */
export function diffCatalogs(a: Catalog, b: Catalog, labels: [string, string] = ['a', 'b']): string[] {
  const [la, lb] = labels;
  const lines: string[] = [];
  for (const kind of KINDS) {
    const left = a[kind] ?? {};
    const right = b[kind] ?? {};
    const names = [...new Set([...Object.keys(left), ...Object.keys(right)])].sort();
    for (const name of names) {
      const x = left[name];
      const y = right[name];
      if (y === undefined) lines.push(`${kind} ${name} only in ${la}`);
      else if (x === undefined) lines.push(`${kind} ${name} only in ${lb}`);
      else if (x !== y)
        lines.push(`${kind} ${name}: ${la} has ${JSON.stringify(x)} / ${lb} has ${JSON.stringify(y)}`);
    }
  }
  return lines;
}

/** The files of sql/schema in the order they are applied: lexical, which the 00-/10-/20- prefixes set. */
export async function schemaFiles(): Promise<string[]> {
  return (await readdir(SCHEMA_DIR)).filter((f) => f.endsWith('.sql')).sort();
}

/**
 * Builds the schema from sql/schema into the database `sql` points at. Each file may hold
 * many statements, which only the simple query protocol accepts (no parameters, so no
 * prepared statement). A failure names the file, since the server's message does not.
 */
export async function applySchemaFiles(sql: Queryable): Promise<void> {
  for (const file of await schemaFiles()) {
    const text = await readFile(`${SCHEMA_DIR}/${file}`, 'utf8');
    try {
      await sql.unsafe(text).simple();
    } catch (error) {
      throw new Error(`sql/schema/${file}: ${(error as Error).message}`, { cause: error });
    }
  }
}
