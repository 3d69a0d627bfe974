/** SystemService: the database status in one round trip, and the metrics text sampled now. */
import t from 'tap';
import { migrationNames } from '../../src/db/migrate.ts';
import { Metrics } from '../../src/metrics.ts';
import { SystemService } from '../../src/services/system-service.ts';
import { testDatabase, testLogger } from '../helpers/db.ts';
import { makeScript, makeUser, queueRun } from '../helpers/fixtures.ts';

const { repos } = await testDatabase(t);
const metrics = new Metrics({ defaultMetrics: false });
const system = new SystemService(repos, metrics);

t.test('databaseStatus names the server version, every applied migration and this pool', async (t) => {
  const status = await system.databaseStatus();
  t.match(status.server_version, /^\d+(\.\d+)?/);
  t.same(status.applied_migrations, await migrationNames(), 'the migrations, in order');
  t.ok(status.connections >= 1, 'at least the connection that asked');
  t.ok(status.idle_connections <= status.connections);
});

t.test('metricsText samples the queue at the time of the call', async (t) => {
  const before = await system.metricsText(testLogger(), { pool: false });
  t.match(before, /^script_queue_depth\{status="queued"\} 0$/m);
  const user = await makeUser(repos);
  await queueRun(repos, (await makeScript(repos, user.id)).id);
  const after = await system.metricsText(testLogger(), { pool: true });
  t.match(after, /^script_queue_depth\{status="queued"\} 1$/m);
  t.match(after, /^db_pool_connections\{state="total"\} [1-9]\d*$/m, 'the pool is sampled when asked');
});
