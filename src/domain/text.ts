/** Text as PostgreSQL can store it. */

/** `text` with every NUL replaced by U+FFFD, the one character PostgreSQL text refuses (22021). */
export function pgText(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text;
}
