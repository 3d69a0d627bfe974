/**
 * A load into an empty database (docs/import.md): the secondary indexes and the
 * foreign keys of the tables the import fills are dropped inside the transaction and
 * put back after the load from their own catalog definitions, each index built in one
 * sorted pass and each foreign key added NOT VALID and then VALIDATEd (one join,
 * not one lookup per row). DDL is transactional: if the import fails, they are back
 * as they were. Primary keys and unique constraints stay (they decide "present" and
 * refuse duplicates).
 */
import type { Sql, TransactionSql } from '../../db/client.ts';

/** What an import fills; in this order, so a foreign key's target is there first. */
const LOADED_TABLES = ['users', 'scripts', 'script_contents', 'script_runs', 'run_log_chunks'];

interface DeferredIndex {
  name: string;
  definition: string;
}

interface DeferredForeignKey {
  table: string;
  name: string;
  definition: string;
}

/** What a load into an empty database took away and puts back afterwards. */
export interface Deferred {
  indexes: DeferredIndex[];
  foreignKeys: DeferredForeignKey[];
}

export class LegacyIndexes {
  private readonly sql: TransactionSql;

  constructor(sql: TransactionSql) {
    this.sql = sql;
  }

  /** True when neither users nor scripts has a row (so no run either): the fast path may drop and rebuild indexes. */
  async targetIsEmpty(): Promise<boolean> {
    const sql = this.sql;
    const [row] = await sql<{ empty: boolean }[]>`
      select not exists (select from users) and not exists (select from scripts) as empty
    `;
    return row!.empty;
  }

  /**
   * Drops the secondary indexes and the foreign keys of the tables an import fills,
   * returning their definitions (from the catalog, so they come back exactly as they
   * were). Constraint indexes (primary keys, unique) stay.
   */
  async defer(): Promise<Deferred> {
    const sql = this.sql;
    const indexes = await sql<DeferredIndex[]>`
      select c.relname as name, pg_get_indexdef(i.indexrelid) as definition
      from pg_index as i
      join pg_class as c on c.oid = i.indexrelid
      where i.indrelid = any(${LOADED_TABLES}::regclass[])
        and not exists (select from pg_constraint as k where k.conindid = i.indexrelid)
      order by c.relname
    `;
    const foreignKeys = await sql<DeferredForeignKey[]>`
      select conrelid::regclass::text as table, conname as name, pg_get_constraintdef(oid) as definition
      from pg_constraint
      where contype = 'f' and conrelid = any(${LOADED_TABLES}::regclass[])
      order by conrelid::regclass::text, conname
    `;
    for (const index of indexes) await sql`drop index ${sql(index.name)}`;
    for (const fk of foreignKeys) await sql`alter table ${sql(fk.table)} drop constraint ${sql(fk.name)}`;
    return { indexes: [...indexes], foreignKeys: [...foreignKeys] };
  }

  /** Builds the indexes again and adds the foreign keys NOT VALID, then validates them. */
  async restore(deferred: Deferred, onStep: (what: string) => void): Promise<void> {
    const sql = this.sql;
    for (const index of deferred.indexes) {
      onStep(`index ${index.name}`);
      // The definition is PostgreSQL's own text of an index that existed a moment ago.
      await sql.unsafe(index.definition);
    }
    for (const fk of deferred.foreignKeys) {
      onStep(`foreign key ${fk.name}`);
      await sql.unsafe(`alter table ${fk.table} add constraint ${fk.name} ${fk.definition} not valid`);
      await sql`alter table ${sql(fk.table)} validate constraint ${sql(fk.name)}`;
    }
  }
}

/** After an import that changed something, committed: fresh planner statistics for what it filled. */
export async function analyzeImported(sql: Sql): Promise<void> {
  await sql`analyze users, scripts`;
}
