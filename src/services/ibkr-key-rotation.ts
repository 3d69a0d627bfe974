/**
 * `rotate-ibkr-key`: re-encrypts every stored IBKR token with the newest key of the
 * ring, in batches of users by id, each batch one statement. Resumable: a batch
 * commits on its own, and only values not yet on the newest key are selected, so a
 * run that stops midway (a crash, a kill) is finished by running it again, and
 * rows already rotated are never touched twice. A value no key of the ring decrypts
 * is left as it is and reported (its user id), never overwritten.
 */

import type { StoredIbkrTokens } from '../repositories/ibkr-link-repository.ts';
import type { Repositories } from '../repositories/index.ts';
import type { SecretBox } from './secret-box.ts';
import { ibkrContext } from './user-service.ts';

export interface RotationReport {
  kid: string;
  /** Users whose tokens were rewritten. */
  rotated: number;
  /** Users changed meanwhile (relinked): their new values were left as they are. */
  raced: number;
  /** Users with a value no key of the ring decrypts. */
  failed: number[];
}

export async function rotateIbkrKeys(
  repos: Repositories,
  box: SecretBox,
  options: { batchSize?: number; onBatch?: (report: RotationReport) => void | Promise<void> } = {},
): Promise<RotationReport> {
  const batchSize = options.batchSize ?? 500;
  const report: RotationReport = { kid: box.kid, rotated: 0, raced: 0, failed: [] };
  let afterId = 0;
  for (;;) {
    const rows = await repos.ibkr.listTokensNotOn(box.kid, afterId, batchSize);
    if (rows.length === 0) break;
    const changes: Array<{ before: StoredIbkrTokens; after: Omit<StoredIbkrTokens, 'id'> }> = [];
    for (const row of rows) {
      try {
        changes.push({
          before: row,
          after: {
            ibkr_access_token: reencrypt(box, row.ibkr_access_token, ibkrContext(row.id, 'access')),
            ibkr_refresh_token: reencrypt(box, row.ibkr_refresh_token, ibkrContext(row.id, 'refresh')),
          },
        });
      } catch {
        report.failed.push(row.id);
      }
    }
    const written = await repos.ibkr.replaceTokens(changes);
    report.rotated += written;
    report.raced += changes.length - written;
    afterId = rows[rows.length - 1]!.id;
    await options.onBatch?.(report);
    if (rows.length < batchSize) break;
  }
  return report;
}

function reencrypt(box: SecretBox, stored: string | null, context: string): string | null {
  if (stored === null || box.isCurrent(stored)) return stored;
  return box.encrypt(box.decrypt(stored, context), context);
}
