/** Names and URLs of the databases tests make. */
export const TEST_DATABASE_PREFIX = 'dctest_';

/** The same server URL with another database name. */
export function databaseUrl(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}
