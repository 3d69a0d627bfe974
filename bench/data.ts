/**
 * Generated data, loaded with COPY (text format) from Node streams: users with
 * realistic emails and usernames (so trigram search has something to find), both
 * providers, some linked to IBKR; scripts of every status spread over a year, most
 * of them owned by older users, with the columns each status requires
 * (sql/schema/20-scripts.sql). A seeded PRNG makes two runs load the same shapes.
 */
import { randomBytes, randomUUID } from 'node:crypto';

export const DAY = 86_400_000;
const ROWS_PER_CHUNK = 2_000;

export const FIRST_NAMES = (
  'james mary robert patricia john jennifer michael linda david elizabeth william barbara richard susan ' +
  'joseph jessica thomas sarah charles karen christopher lisa daniel nancy matthew betty anthony margaret ' +
  'mark sandra donald ashley steven kimberly paul emily andrew donna joshua michelle kenneth carol kevin ' +
  'amanda brian dorothy george melissa timothy deborah ronald stephanie edward rebecca jason sharon jeffrey ' +
  'laura ryan cynthia jacob kathleen gary amy nicholas angela eric shirley jonathan anna stephen brenda ' +
  'larry pamela justin emma scott nicole brandon helen benjamin samantha samuel katherine gregory christine ' +
  'alexander debra frank rachel patrick carolyn raymond janet jack catherine dennis maria jerry heather ' +
  'wei li yuki hiroshi priya arjun fatima omar olga ivan lukas sofia mateo chloe noah aiko kwame amara'
).split(' ');

export const LAST_NAMES = (
  'smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez gonzalez ' +
  'wilson anderson thomas taylor moore jackson martin lee perez thompson white harris sanchez clark ' +
  'ramirez lewis robinson walker young allen king wright scott torres nguyen hill flores green adams ' +
  'nelson baker hall rivera campbell mitchell carter roberts gomez phillips evans turner diaz parker ' +
  'cruz edwards collins reyes stewart morris morales murphy cook rogers gutierrez ortiz morgan cooper ' +
  'peterson bailey reed kelly howard ramos kim cox ward richardson watson brooks chavez wood james ' +
  'bennett gray mendoza ruiz hughes price alvarez castillo sanders patel myers long ross foster ' +
  'kowalski nakamura okafor lindqvist papadopoulos oyelaran vanderberg fitzgerald abernathy quintero'
).split(' ');

const DOMAINS = [
  'gmail.com',
  'yahoo.com',
  'outlook.com',
  'proton.me',
  'icloud.com',
  'hedgefund.io',
  'quant.dev',
];
const WORDS = ['momentum', 'mean_reversion', 'pairs', 'breakout', 'rsi', 'macd', 'grid', 'scalper', 'hedge'];
const EXTENSIONS = ['.py', '.py', '.py', '.py', '.js', '.js', '.ts'] as const;
const FAILURES = ['exit code 1', 'timed out after 300 s', 'memory limit exceeded', 'IBKR connection refused'];
// A syntactically valid argon2id PHC string; no password hashes to it that anyone knows.
const PHC = '$argon2id$v=19$m=19456,t=2,p=1$YmVuY2htYXJrc2FsdA$Wq0vJ2G8ySXqH3nGSdvW1yXk9sPpMX3rZsoL3kb1xdk';

export const USER_COLUMNS = [
  'email',
  'username',
  'hashed_password',
  'auth_provider',
  'google_id',
  'role',
  'is_active',
  'is_verified',
  'ibkr_user_id',
  'ibkr_access_token',
  'ibkr_refresh_token',
  'ibkr_token_expires_at',
  'ibkr_connected_at',
  'created_at',
  'updated_at',
  'last_login_at',
];

export const SCRIPT_COLUMNS = [
  'user_id',
  'filename',
  'original_filename',
  'file_path',
  'file_size',
  'file_extension',
  'sha256',
  'status',
  'error_message',
  'exit_code',
  'execution_time_seconds',
  'memory_usage_mb',
  'started_at',
  'completed_at',
  'created_at',
  'updated_at',
];

/** mulberry32: small, fast, seeded. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const N = '\\N';
const iso = (ms: number) => new Date(ms).toISOString();

export interface Span {
  start: number;
  length: number;
}

/** When user `k` of `n` registered: evenly over the span, so ids follow registration time. */
const userCreatedAt = (users: Span, k: number, n: number) => users.start + (k / n) * users.length;

export function* userRows(n: number, now: number, users: Span): Generator<string> {
  const random = prng(1);
  const pick = <T>(list: readonly T[]) => list[Math.floor(random() * list.length)] as T;
  // Some last names are common, most are rare: square the uniform draw.
  const lastName = () => LAST_NAMES[Math.floor(random() ** 2 * LAST_NAMES.length)] as string;
  let lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const first = pick(FIRST_NAMES);
    const last = lastName();
    const style = random();
    const local =
      style < 0.4
        ? `${first}.${last}${i}`
        : style < 0.6
          ? `${first[0]}${last}${i}`
          : style < 0.8
            ? `${last}.${first}.${i}`
            : `${first}_${i}`;
    const username =
      style < 0.3 ? `${first}${last}_${i}` : style < 0.6 ? `${last}-${first[0]}${i}` : `trader_${first}${i}`;
    const google = random() < 0.2;
    const created = userCreatedAt(users, i, n) + random() * 3_600_000;
    const ibkr = random() < 0.15;
    const connected = created + random() * (now - created);
    const login = random();
    const lastLogin =
      login < 0.1 ? N : iso(login < 0.4 ? now - random() * 7 * DAY : created + random() * (now - created));
    const updated = created + random() * (now - created) * 0.5;
    lines.push(
      [
        `${local}@${pick(DOMAINS)}`,
        username,
        google ? N : PHC,
        google ? 'google' : 'email',
        google ? `1${String(i).padStart(20, '0')}` : N,
        random() < 0.005 ? 'admin' : 'user',
        random() < 0.97 ? 't' : 'f',
        random() < 0.7 ? 't' : 'f',
        ibkr ? `U${10_000_000 + i}` : N,
        ibkr ? 'bench:access-token-ciphertext' : N,
        ibkr ? 'bench:refresh-token-ciphertext' : N,
        ibkr ? iso(now + random() * 30 * DAY) : N,
        ibkr ? iso(connected) : N,
        iso(created),
        iso(updated),
        lastLogin,
      ].join('\t'),
    );
    if (lines.length === ROWS_PER_CHUNK) {
      yield `${lines.join('\n')}\n`;
      lines = [];
    }
  }
  if (lines.length > 0) yield `${lines.join('\n')}\n`;
}

/**
 * Scripts in creation order (so ids follow created_at). Each belongs to a user
 * already registered then, the older users owning more. Queued and running
 * scripts are recent (the last 3 days), as on a live platform.
 */
export function* scriptRows(
  m: number,
  now: number,
  scripts: Span,
  users: Span & { firstId: number; count: number },
): Generator<string> {
  const random = prng(2);
  let lines: string[] = [];
  let hex = '';
  for (let j = 0; j < m; j++) {
    if (j % ROWS_PER_CHUNK === 0) hex = randomBytes(32 * ROWS_PER_CHUNK).toString('hex');
    const created = scripts.start + (j / m) * scripts.length + random() * 60_000;
    const registered = Math.max(
      1,
      Math.min(users.count, Math.floor(((created - users.start) / users.length) * users.count)),
    );
    const userId = users.firstId + Math.floor(random() ** 2 * registered);
    const ext = EXTENSIONS[Math.floor(random() * EXTENSIONS.length)] as string;
    const uuid = randomUUID();
    const size = Math.max(
      1,
      Math.min(10_000_000, Math.round(Math.exp(8.3 + random() * 2 - 1 + random() - 0.5))),
    );
    const recent = now - created < 3 * DAY;
    const r = random();
    const status = recent
      ? r < 0.1
        ? 'queued'
        : r < 0.13
          ? 'running'
          : r < 0.6
            ? 'uploaded'
            : r < 0.9
              ? 'completed'
              : 'failed'
      : r < 0.25
        ? 'uploaded'
        : r < 0.83
          ? 'completed'
          : r < 0.945
            ? 'failed'
            : 'cancelled';
    // Run times: log-normal around 20 s, at most 30 min; memory around 60 MB.
    const seconds = Math.min(1800, Math.exp(3 + (random() + random() + random() - 1.5) * 2));
    const started = created + random() * 1_800_000;
    let startedAt = N;
    let completedAt = N;
    let time = N;
    let memory = N;
    let exit = N;
    let error = N;
    let updated = created;
    if (status === 'queued') {
      // The run itself would be in script_runs: only the script's summary is generated here.
    } else if (status === 'running') {
      startedAt = iso(Math.min(now, started));
      updated = Math.min(now, started);
    } else if (status !== 'uploaded') {
      const ranFor = status === 'cancelled' && random() < 0.5 ? null : seconds;
      if (ranFor !== null) {
        startedAt = iso(started);
        time = ranFor.toFixed(3);
        memory = (20 + random() * random() * 400).toFixed(2);
      }
      updated = (ranFor === null ? created + random() * 600_000 : started + ranFor * 1000) + 1;
      completedAt = iso(updated);
      if (status === 'completed') {
        exit = '0';
      } else if (status === 'failed') {
        exit = random() < 0.8 ? '1' : '137';
        error = FAILURES[Math.floor(random() * FAILURES.length)] as string;
      } else {
        error = 'cancelled';
        if (ranFor !== null) exit = '-15';
      }
    }
    const word = WORDS[Math.floor(random() * WORDS.length)] as string;
    lines.push(
      [
        userId,
        `${uuid}${ext}`,
        `${word}_v${1 + Math.floor(random() * 20)}${ext}`,
        `${uuid.slice(0, 2)}/${uuid}${ext}`,
        size,
        ext,
        hex.slice((j % ROWS_PER_CHUNK) * 64, (j % ROWS_PER_CHUNK) * 64 + 64),
        status,
        error,
        exit,
        time,
        memory,
        startedAt,
        completedAt,
        iso(created),
        iso(updated),
      ].join('\t'),
    );
    if (lines.length === ROWS_PER_CHUNK) {
      yield `${lines.join('\n')}\n`;
      lines = [];
    }
  }
  if (lines.length > 0) yield `${lines.join('\n')}\n`;
}
