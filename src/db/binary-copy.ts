/**
 * The framing of PostgreSQL's binary COPY format (docs, "COPY", "Binary Format"): what
 * a `COPY … (format binary)` stream starts and ends with. Rows in between are a field
 * count (int16), then per field its length (int32, -1 for null) and its bytes.
 */

/** The signature `PGCOPY\n\377\r\n\0`, flags (0) and header extension length (0). */
export const COPY_HEADER = Buffer.concat([Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.alloc(8)]);

/** The file trailer: a field count of -1. */
export const COPY_TRAILER = Buffer.from([0xff, 0xff]);
