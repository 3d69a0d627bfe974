/** PostgreSQL write-ahead log positions. */

/** A pg_lsn as text (`16/B374D848`) to a number that compares. */
export function parseLsn(text: string): bigint {
  const [hi, lo] = text.split('/');
  if (hi === undefined || lo === undefined) throw new Error(`not an LSN: ${text}`);
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}
