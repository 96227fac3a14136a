import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import { RouteConfigError } from '../errors.js';
import {
  type ConsumeOptions,
  fixedWindow,
  type QuotaConsumption,
  type QuotaLimit,
  type QuotaUsage,
  type QuotaWindow,
  type RestState,
  type RouteStateStore,
} from '../route-state.js';
import { decodeMessage, encodeMessage } from './codec.js';
import { Bell, runConsumer } from './consumer.js';
import type {
  AttemptRecord,
  DeliveryDetails,
  DeliveryEvent,
  DeliveryLog,
  DeliveryQuery,
  DeliveryRecord,
  JobOutcome,
  MailerStores,
  NewQueueJob,
  ProcessOptions,
  QueueAddResult,
  QueueConsumer,
  QueueJob,
  QueueJobInfo,
  QueueJobState,
  QueueStore,
  RetentionPolicy,
  SuppressionEntry,
  SuppressionList,
} from './types.js';
import { MAX_DELIVERY_EVENTS } from './types.js';

/** Options of {@link sqliteStores}. */
export interface SqliteStoreOptions {
  /** The database file (created with its tables when absent). `:memory:` for a throwaway one. */
  path: string;
  /**
   * SQLite's `synchronous` setting, in WAL mode. `full` syncs the log to disk at every commit:
   * an enqueue that resolved survives a power cut. `normal` syncs at checkpoints only: it
   * survives a crash of the process (kill -9) but a power cut may lose the last commits.
   * Concurrent writes share one commit (group commit) either way.
   * @default 'full'
   */
  synchronous?: 'full' | 'normal';
  /** How long a write waits for another process holding the database (ms). @default 5_000 */
  busyTimeout?: number;
  /** How long a sent job's idempotency key is remembered (ms). @default 7 days */
  idempotencyWindow?: number;
  /** How long a dead job (and its message) is kept for `resend` (ms). @default 30 days */
  deadRetention?: number;
}

type Row = Record<string, SQLInputValue>;

function loadSqlite(): typeof import('node:sqlite') {
  const get = (process as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule;
  const mod = get?.('node:sqlite') as typeof import('node:sqlite') | undefined;
  if (!mod?.DatabaseSync) {
    throw new RouteConfigError(
      'stores',
      `the embedded store needs node:sqlite (Node 22.13+ or 23.4+; this is ${process.version}); use memoryStores() or @mailvia/redis`,
    );
  }
  return mod;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS mailvia_jobs (
  id TEXT PRIMARY KEY,
  org TEXT NOT NULL,
  idem TEXT,
  message TEXT,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  taken INTEGER NOT NULL DEFAULT 0,
  route TEXT,
  created_at INTEGER NOT NULL,
  run_at INTEGER NOT NULL,
  lease_until INTEGER,
  owner TEXT,
  reason TEXT,
  updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS mailvia_jobs_idem ON mailvia_jobs(org, idem) WHERE idem IS NOT NULL;
CREATE INDEX IF NOT EXISTS mailvia_jobs_due ON mailvia_jobs(state, run_at);
CREATE INDEX IF NOT EXISTS mailvia_jobs_lease ON mailvia_jobs(state, lease_until);
CREATE TABLE IF NOT EXISTS mailvia_deliveries (
  id TEXT PRIMARY KEY,
  org TEXT NOT NULL,
  status TEXT NOT NULL,
  unknown INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mailvia_deliveries_org ON mailvia_deliveries(org, created_at);
CREATE INDEX IF NOT EXISTS mailvia_deliveries_status ON mailvia_deliveries(status, created_at);
CREATE INDEX IF NOT EXISTS mailvia_deliveries_created ON mailvia_deliveries(created_at);
CREATE INDEX IF NOT EXISTS mailvia_deliveries_message_id ON mailvia_deliveries(json_extract(data, '$.messageId'), org);
CREATE INDEX IF NOT EXISTS mailvia_deliveries_provider_id ON mailvia_deliveries(json_extract(data, '$.providerMessageId'), org)
  WHERE json_extract(data, '$.providerMessageId') IS NOT NULL;
CREATE TABLE IF NOT EXISTS mailvia_delivery_events (
  delivery_id TEXT NOT NULL,
  at INTEGER NOT NULL,
  data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mailvia_delivery_events_delivery ON mailvia_delivery_events(delivery_id);
CREATE TABLE IF NOT EXISTS mailvia_delivery_rcpt (
  delivery_id TEXT NOT NULL,
  address TEXT NOT NULL,
  PRIMARY KEY (delivery_id, address)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mailvia_delivery_rcpt_address ON mailvia_delivery_rcpt(address);
CREATE TABLE IF NOT EXISTS mailvia_attempts (
  id TEXT PRIMARY KEY,
  delivery_id TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mailvia_attempts_delivery ON mailvia_attempts(delivery_id, started_at);
CREATE TABLE IF NOT EXISTS mailvia_send_keys (
  org TEXT NOT NULL,
  idem TEXT NOT NULL,
  id TEXT NOT NULL,
  PRIMARY KEY (org, idem)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mailvia_send_keys_id ON mailvia_send_keys(id);
CREATE TABLE IF NOT EXISTS mailvia_suppression (
  org TEXT NOT NULL,
  address TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  data TEXT NOT NULL,
  PRIMARY KEY (org, address)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mailvia_rest (key TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mailvia_quota (key TEXT PRIMARY KEY, start INTEGER NOT NULL, used INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mailvia_quota_log (key TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS mailvia_quota_log_key ON mailvia_quota_log(key, at);
`;

interface Pending {
  fn: () => unknown;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/**
 * One SQLite database in WAL mode. Writes are queued and committed together at the end of the
 * event-loop turn (group commit): concurrent enqueues share one sync to disk; each write runs in
 * its own savepoint, so one failing write does not undo the others.
 */
export class SqliteDatabase {
  readonly db: DatabaseSync;
  private pending: Pending[] = [];
  private scheduled = false;
  private readonly statements = new Map<string, StatementSync>();
  private closed = false;

  constructor(options: SqliteStoreOptions) {
    const sync = options.synchronous ?? 'full';
    if (sync !== 'full' && sync !== 'normal')
      throw new RouteConfigError('synchronous', `${JSON.stringify(sync)} is neither full nor normal`);
    const { DatabaseSync } = loadSqlite();
    this.db = new DatabaseSync(options.path);
    this.db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(options.busyTimeout ?? 5000))}`);
    this.db.exec('PRAGMA journal_mode = WAL');
    this.db.exec(`PRAGMA synchronous = ${sync.toUpperCase()}`);
    this.db.exec(SCHEMA);
  }

  /** A cached prepared statement. */
  sql(text: string): StatementSync {
    let s = this.statements.get(text);
    if (!s) {
      s = this.db.prepare(text);
      this.statements.set(text, s);
    }
    return s;
  }

  /** Runs `fn` inside the next group commit; resolves with its result once committed. */
  write<T>(fn: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new Error('the SQLite store is closed'));
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending.splice(0);
    if (batch.length === 0) return;
    const results: [boolean, unknown][] = [];
    try {
      this.db.exec('BEGIN IMMEDIATE');
    } catch (e) {
      for (const p of batch) p.reject(e);
      return;
    }
    for (const p of batch) {
      this.db.exec('SAVEPOINT w');
      try {
        const v = p.fn();
        this.db.exec('RELEASE w');
        results.push([true, v]);
      } catch (e) {
        this.db.exec('ROLLBACK TO w');
        this.db.exec('RELEASE w');
        results.push([false, e]);
      }
    }
    try {
      this.db.exec('COMMIT');
    } catch (e) {
      try {
        this.db.exec('ROLLBACK');
      } catch {
        // already rolled back
      }
      for (const p of batch) p.reject(e);
      return;
    }
    batch.forEach((p, i) => {
      const [ok, v] = results[i]!;
      if (ok) p.resolve(v);
      else p.reject(v);
    });
  }

  /** Commits what is queued and closes the database. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.pending.length) await new Promise<void>((resolve) => setImmediate(resolve));
    this.flush();
    this.closed = true;
    this.db.close();
  }
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown): number => Number(v);

/** The embedded durable {@link QueueStore}: SQLite in WAL mode, shared by the processes of one machine. */
export class SqliteQueue implements QueueStore {
  private readonly bell = new Bell();
  private readonly consumers = new Set<QueueConsumer>();
  private readonly idempotencyWindow: number;
  private readonly deadRetention: number;
  private lastSweep = 0;

  constructor(
    readonly database: SqliteDatabase,
    options: Pick<SqliteStoreOptions, 'idempotencyWindow' | 'deadRetention'> = {},
  ) {
    this.idempotencyWindow = options.idempotencyWindow ?? 7 * 86_400_000;
    this.deadRetention = options.deadRetention ?? 30 * 86_400_000;
  }

  async add(job: NewQueueJob): Promise<QueueAddResult> {
    const now = Date.now();
    const org = job.organisation ?? '';
    const message = encodeMessage(job.message);
    const result = await this.database.write(() => {
      const r = this.database
        .sql(
          `INSERT INTO mailvia_jobs (id, org, idem, message, state, attempts, created_at, run_at, updated_at)
           VALUES (?, ?, ?, ?, 'waiting', 0, ?, ?, ?) ON CONFLICT DO NOTHING`,
        )
        .run(job.id, org, job.idempotencyKey ?? null, message, now, job.runAt ?? now, now);
      if (Number(r.changes) === 1) return { id: job.id, created: true };
      const existing =
        job.idempotencyKey === undefined
          ? undefined
          : (this.database.sql('SELECT id FROM mailvia_jobs WHERE org = ? AND idem = ?').get(org, job.idempotencyKey) as
              | Row
              | undefined);
      if (!existing) throw new Error(`a job with id ${job.id} already exists`);
      return { id: String(existing.id), created: false };
    });
    if (result.created) this.bell.ring();
    return result;
  }

  private toJob(r: Row): QueueJob {
    return {
      id: String(r.id),
      message: decodeMessage(String(r.message)),
      attempts: num(r.attempts),
      createdAt: num(r.created_at),
      runAt: num(r.run_at),
      ...(r.taken !== undefined ? { taken: num(r.taken) } : {}),
      ...(r.org ? { organisation: String(r.org) } : {}),
      ...(str(r.idem) !== undefined ? { idempotencyKey: String(r.idem) } : {}),
      ...(str(r.route) !== undefined ? { route: String(r.route) } : {}),
    };
  }

  process(handler: (job: QueueJob) => Promise<JobOutcome>, options: ProcessOptions = {}): QueueConsumer {
    const db = this.database;
    const consumer = runConsumer(
      {
        claim: (owner, n, leaseUntil, now) =>
          db.write(() => {
            if (now - this.lastSweep > 60_000) {
              this.lastSweep = now;
              db.sql(
                `DELETE FROM mailvia_jobs WHERE (state = 'sent' AND updated_at < ?) OR (state = 'dead' AND updated_at < ?)`,
              ).run(now - this.idempotencyWindow, now - this.deadRetention);
            }
            const rows = db
              .sql(
                `UPDATE mailvia_jobs SET state = 'active', owner = ?, lease_until = ?, updated_at = ?, taken = taken + 1
                 WHERE id IN (
                   SELECT id FROM mailvia_jobs WHERE state = 'waiting' AND run_at <= ?
                   UNION ALL
                   SELECT id FROM mailvia_jobs WHERE state = 'active' AND lease_until <= ?
                   LIMIT ?)
                 RETURNING id, org, idem, message, attempts, taken, route, created_at, run_at`,
              )
              .all(owner, leaseUntil, now, now, now, n) as Row[];
            return rows.map((r) => this.toJob(r));
          }),
        renew: (owner, ids, leaseUntil) =>
          db.write(() => {
            db.sql(
              `UPDATE mailvia_jobs SET lease_until = ? WHERE owner = ? AND state = 'active'
               AND id IN (SELECT value FROM json_each(?))`,
            ).run(leaseUntil, owner, JSON.stringify(ids));
          }),
        finish: (owner, id, outcome) =>
          db.write(() => {
            const now = Date.now();
            if (outcome.status === 'sent') {
              db.sql(
                `UPDATE mailvia_jobs SET state = 'sent', message = NULL, owner = NULL, lease_until = NULL, updated_at = ?
                 WHERE id = ? AND owner = ? AND state = 'active'`,
              ).run(now, id, owner);
            } else if (outcome.status === 'dead') {
              db.sql(
                `UPDATE mailvia_jobs SET state = 'dead', reason = ?, owner = NULL, lease_until = NULL, updated_at = ?
                 WHERE id = ? AND owner = ? AND state = 'active'`,
              ).run(outcome.reason, now, id, owner);
            } else {
              db.sql(
                `UPDATE mailvia_jobs SET state = 'waiting', run_at = ?, attempts = ?, route = ?, owner = NULL,
                 lease_until = NULL, updated_at = ? WHERE id = ? AND owner = ? AND state = 'active'`,
              ).run(outcome.runAt, outcome.attempts, outcome.route ?? null, now, id, owner);
            }
          }),
        nextDue: () => {
          const r = db
            .sql(
              `SELECT MIN(t) AS t FROM (
                 SELECT MIN(run_at) AS t FROM mailvia_jobs WHERE state = 'waiting'
                 UNION ALL SELECT MIN(lease_until) AS t FROM mailvia_jobs WHERE state = 'active')`,
            )
            .get() as Row | undefined;
          return r?.t === null || r?.t === undefined ? undefined : num(r.t);
        },
      },
      handler,
      options,
      this.bell,
    );
    this.consumers.add(consumer);
    return {
      stop: async () => {
        this.consumers.delete(consumer);
        await consumer.stop();
      },
    };
  }

  async get(id: string): Promise<QueueJobInfo | undefined> {
    const r = this.database.sql('SELECT * FROM mailvia_jobs WHERE id = ?').get(id) as Row | undefined;
    if (!r) return undefined;
    const { message, ...job } = this.toJob({ ...r, message: r.message ?? 'null' });
    return {
      ...job,
      ...(r.message !== null ? { message } : {}),
      state: String(r.state) as QueueJobState,
      ...(str(r.reason) !== undefined ? { reason: String(r.reason) } : {}),
    };
  }

  async revive(id: string): Promise<boolean> {
    const ok = await this.database.write(() => {
      const now = Date.now();
      const r = this.database
        .sql(
          `UPDATE mailvia_jobs SET state = 'waiting', attempts = 0, route = NULL, run_at = ?, reason = NULL, updated_at = ?
           WHERE id = ? AND state = 'dead' AND message IS NOT NULL`,
        )
        .run(now, now, id);
      return Number(r.changes) === 1;
    });
    if (ok) this.bell.ring();
    return ok;
  }

  async counts(): Promise<Record<QueueJobState, number>> {
    const out: Record<QueueJobState, number> = { waiting: 0, active: 0, sent: 0, dead: 0 };
    const rows = this.database.sql('SELECT state, COUNT(*) AS n FROM mailvia_jobs GROUP BY state').all() as Row[];
    for (const r of rows) out[String(r.state) as QueueJobState] = num(r.n);
    return out;
  }

  async close(): Promise<void> {
    await Promise.all([...this.consumers].map((c) => c.stop()));
    this.consumers.clear();
  }
}

/** The embedded {@link DeliveryLog}. */
export class SqliteDeliveryLog implements DeliveryLog {
  constructor(readonly database: SqliteDatabase) {}

  private write(record: DeliveryRecord): void {
    const db = this.database;
    db.sql(
      `INSERT INTO mailvia_deliveries (id, org, status, unknown, created_at, updated_at, data) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET org = excluded.org, status = excluded.status, unknown = excluded.unknown,
       created_at = excluded.created_at, updated_at = excluded.updated_at, data = excluded.data`,
    ).run(
      record.id,
      record.organisation ?? '',
      record.status,
      record.unknown ? 1 : 0,
      record.createdAt,
      record.updatedAt,
      JSON.stringify(record),
    );
  }

  private writeWhole(record: DeliveryRecord): void {
    this.write(record);
    const db = this.database;
    db.sql('DELETE FROM mailvia_delivery_rcpt WHERE delivery_id = ?').run(record.id);
    const ins = db.sql('INSERT OR IGNORE INTO mailvia_delivery_rcpt (delivery_id, address) VALUES (?, ?)');
    for (const a of record.recipients) ins.run(record.id, a.toLowerCase());
  }

  put(record: DeliveryRecord): Promise<void> {
    return this.database.write(() => this.writeWhole(record));
  }

  claim(record: DeliveryRecord): Promise<{ id: string; created: boolean }> {
    return this.database.write(() => {
      const db = this.database;
      if (record.idempotencyKey !== undefined) {
        const org = record.organisation ?? '';
        const held = db
          .sql(
            `SELECT d.id AS id, d.status AS status, d.unknown AS unknown FROM mailvia_send_keys k
             JOIN mailvia_deliveries d ON d.id = k.id WHERE k.org = ? AND k.idem = ?`,
          )
          .get(org, record.idempotencyKey) as Row | undefined;
        if (held && String(held.id) !== record.id && (held.status !== 'failed' || num(held.unknown) === 1))
          return { id: String(held.id), created: false };
        db.sql(
          `INSERT INTO mailvia_send_keys (org, idem, id) VALUES (?, ?, ?)
           ON CONFLICT (org, idem) DO UPDATE SET id = excluded.id`,
        ).run(org, record.idempotencyKey, record.id);
      }
      this.writeWhole(record);
      return { id: record.id, created: true };
    });
  }

  update(id: string, patch: Partial<Omit<DeliveryRecord, 'id'>>): Promise<boolean> {
    return this.database.write(() => {
      const r = this.database.sql('SELECT data FROM mailvia_deliveries WHERE id = ?').get(id) as Row | undefined;
      if (!r) return false;
      const next = { ...(JSON.parse(String(r.data)) as DeliveryRecord), ...patch };
      for (const [k, v] of Object.entries(patch)) if (v === undefined) delete (next as Record<string, unknown>)[k];
      this.write(next);
      return true;
    });
  }

  putAttempt(attempt: AttemptRecord, record?: DeliveryRecord): Promise<void> {
    return this.database.write(() => {
      if (record && !this.database.sql('SELECT 1 FROM mailvia_deliveries WHERE id = ?').get(attempt.deliveryId))
        this.writeWhole(record);
      this.database
        .sql(
          `INSERT INTO mailvia_attempts (id, delivery_id, started_at, data) VALUES (?, ?, ?, ?)
           ON CONFLICT (id) DO UPDATE SET data = excluded.data, started_at = excluded.started_at`,
        )
        .run(attempt.id, attempt.deliveryId, attempt.startedAt, JSON.stringify(attempt));
      if (attempt.status === 'in-flight') {
        this.database
          .sql(
            `UPDATE mailvia_deliveries SET status = 'sending', data = json_set(data, '$.status', 'sending')
             WHERE id = ? AND status != 'sending'`,
          )
          .run(attempt.deliveryId);
      }
    });
  }

  addEvent(id: string, event: DeliveryEvent): Promise<boolean> {
    return this.database.write(() => {
      const db = this.database;
      if (!db.sql('SELECT 1 FROM mailvia_deliveries WHERE id = ?').get(id)) return false;
      db.sql('INSERT INTO mailvia_delivery_events (delivery_id, at, data) VALUES (?, ?, ?)').run(
        id,
        event.at,
        JSON.stringify(event),
      );
      // keep the latest ones (in the order they were recorded)
      db.sql(
        `DELETE FROM mailvia_delivery_events WHERE delivery_id = ? AND rowid NOT IN (
           SELECT rowid FROM mailvia_delivery_events WHERE delivery_id = ? ORDER BY rowid DESC LIMIT ?)`,
      ).run(id, id, MAX_DELIVERY_EVENTS);
      return true;
    });
  }

  get(id: string): DeliveryDetails | undefined {
    const r = this.database.sql('SELECT data FROM mailvia_deliveries WHERE id = ?').get(id) as Row | undefined;
    if (!r) return undefined;
    const attempts = (
      this.database
        .sql('SELECT data FROM mailvia_attempts WHERE delivery_id = ? ORDER BY started_at, rowid')
        .all(id) as Row[]
    ).map((a) => JSON.parse(String(a.data)) as AttemptRecord);
    const events = (
      this.database
        .sql('SELECT data FROM mailvia_delivery_events WHERE delivery_id = ? ORDER BY rowid')
        .all(id) as Row[]
    ).map((e) => JSON.parse(String(e.data)) as DeliveryEvent);
    return { ...(JSON.parse(String(r.data)) as DeliveryRecord), history: attempts, events };
  }

  query(q: DeliveryQuery = {}): DeliveryRecord[] {
    const where: string[] = [];
    const args: SQLInputValue[] = [];
    // a Message-ID or provider id names one or two records: keep the planner on their index
    const lookup = q.messageId !== undefined || q.providerMessageId !== undefined ? '+' : '';
    if (q.organisation !== undefined) {
      where.push(`${lookup}org = ?`);
      args.push(q.organisation);
    }
    if (q.status !== undefined) {
      const list = Array.isArray(q.status) ? q.status : [q.status];
      where.push(`${lookup}status IN (${list.map(() => '?').join(', ') || "''"})`);
      args.push(...list);
    }
    if (q.recipient !== undefined) {
      where.push('id IN (SELECT delivery_id FROM mailvia_delivery_rcpt WHERE address = ?)');
      args.push(q.recipient.toLowerCase());
    }
    if (q.messageId !== undefined) {
      where.push("json_extract(data, '$.messageId') = ?");
      args.push(q.messageId);
    }
    if (q.providerMessageId !== undefined) {
      where.push("json_extract(data, '$.providerMessageId') = ?");
      args.push(q.providerMessageId);
    }
    if (q.since !== undefined) {
      where.push(`${lookup}created_at >= ?`);
      args.push(q.since);
    }
    if (q.until !== undefined) {
      where.push(`${lookup}created_at < ?`);
      args.push(q.until);
    }
    if (q.unknown !== undefined) {
      where.push('unknown = ?');
      args.push(q.unknown ? 1 : 0);
    }
    args.push(q.limit ?? 100, q.offset ?? 0);
    const rows = this.database.db
      .prepare(
        `SELECT data FROM mailvia_deliveries ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
         ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?`,
      )
      .all(...args) as Row[];
    return rows.map((r) => JSON.parse(String(r.data)) as DeliveryRecord);
  }

  prune(policy: RetentionPolicy): Promise<number> {
    return this.database.write(() => {
      const db = this.database;
      const old = `SELECT id FROM mailvia_deliveries WHERE created_at < ? AND status NOT IN ('queued', 'sending')`;
      db.sql(`DELETE FROM mailvia_attempts WHERE delivery_id IN (${old})`).run(policy.recordsBefore);
      db.sql(`DELETE FROM mailvia_delivery_rcpt WHERE delivery_id IN (${old})`).run(policy.recordsBefore);
      db.sql(`DELETE FROM mailvia_delivery_events WHERE delivery_id IN (${old})`).run(policy.recordsBefore);
      db.sql(`DELETE FROM mailvia_send_keys WHERE id IN (${old})`).run(policy.recordsBefore);
      const r = db
        .sql(`DELETE FROM mailvia_deliveries WHERE created_at < ? AND status NOT IN ('queued', 'sending')`)
        .run(policy.recordsBefore);
      db.sql(
        `UPDATE mailvia_deliveries SET data = json_remove(data, '$.content')
         WHERE updated_at < ? AND json_extract(data, '$.content') IS NOT NULL`,
      ).run(policy.contentBefore);
      return Number(r.changes);
    });
  }
}

/** The embedded {@link SuppressionList}. */
export class SqliteSuppressionList implements SuppressionList {
  constructor(readonly database: SqliteDatabase) {}

  add(entry: SuppressionEntry): Promise<void> {
    const e = { ...entry, address: entry.address.toLowerCase() };
    return this.database.write(() => {
      this.database
        .sql(
          `INSERT INTO mailvia_suppression (org, address, created_at, data) VALUES (?, ?, ?, ?)
           ON CONFLICT (org, address) DO UPDATE SET created_at = excluded.created_at, data = excluded.data`,
        )
        .run(e.organisation, e.address, e.createdAt, JSON.stringify(e));
    });
  }
  has(organisation: string, address: string): SuppressionEntry | undefined {
    const r = this.database
      .sql('SELECT data FROM mailvia_suppression WHERE org = ? AND address = ?')
      .get(organisation, address.toLowerCase()) as Row | undefined;
    return r ? (JSON.parse(String(r.data)) as SuppressionEntry) : undefined;
  }
  list(organisation: string, options: { limit?: number; offset?: number } = {}): SuppressionEntry[] {
    const rows = this.database
      .sql('SELECT data FROM mailvia_suppression WHERE org = ? ORDER BY created_at DESC LIMIT ? OFFSET ?')
      .all(organisation, options.limit ?? 100, options.offset ?? 0) as Row[];
    return rows.map((r) => JSON.parse(String(r.data)) as SuppressionEntry);
  }
  remove(organisation: string, address: string): Promise<boolean> {
    return this.database.write(
      () =>
        Number(
          this.database
            .sql('DELETE FROM mailvia_suppression WHERE org = ? AND address = ?')
            .run(organisation, address.toLowerCase()).changes,
        ) === 1,
    );
  }
}

/** The embedded {@link RouteStateStore}: resting routes and quota counters shared by the processes of one machine. */
export class SqliteRouteState implements RouteStateStore {
  constructor(readonly database: SqliteDatabase) {}

  get(key: string): RestState | undefined {
    const r = this.database.sql('SELECT data FROM mailvia_rest WHERE key = ?').get(key) as Row | undefined;
    return r ? (JSON.parse(String(r.data)) as RestState) : undefined;
  }
  rest(key: string, state: RestState): Promise<void> {
    return this.database.write(() => {
      this.database
        .sql('INSERT INTO mailvia_rest (key, data) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET data = excluded.data')
        .run(key, JSON.stringify(state));
    });
  }
  clear(key: string): Promise<void> {
    return this.database.write(() => {
      this.database.sql('DELETE FROM mailvia_rest WHERE key = ?').run(key);
    });
  }
  claimProbe(key: string, now: number, leaseMs: number): Promise<boolean> {
    return this.database.write(() => {
      const s = this.get(key);
      if (!s) return true;
      if (s.probeUntil !== undefined && s.probeUntil > now) return false;
      this.database
        .sql('UPDATE mailvia_rest SET data = ? WHERE key = ?')
        .run(JSON.stringify({ ...s, probeUntil: now + leaseMs }), key);
      return true;
    });
  }
  async consume(key: string, window: QuotaWindow, limit: number, options: ConsumeOptions = {}): Promise<QuotaUsage> {
    return (await this.consumeAll(key, [{ window, limit }], options)).windows[0]!;
  }
  consumeAll(key: string, limits: readonly QuotaLimit[], options: ConsumeOptions = {}): Promise<QuotaConsumption> {
    const now = options.now ?? Date.now();
    const amount = options.amount ?? 1;
    const db = this.database;
    // one write: every window is read and counted in the same transaction
    return db.write(() => {
      const seen = limits.map(({ window, limit }) => {
        const id = `${key}|${window.type}:${window.ms}`;
        if (window.type === 'fixed') {
          const { start, end } = fixedWindow(window, now);
          const r = db.sql('SELECT start, used FROM mailvia_quota WHERE key = ?').get(id) as Row | undefined;
          const used = r && num(r.start) === start ? num(r.used) : 0;
          return {
            limit,
            used,
            resetAt: end,
            add: () =>
              db
                .sql(
                  'INSERT INTO mailvia_quota (key, start, used) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET start = excluded.start, used = excluded.used',
                )
                .run(id, start, used + amount),
          };
        }
        db.sql('DELETE FROM mailvia_quota_log WHERE key = ? AND at <= ?').run(id, now - window.ms);
        const r = db.sql('SELECT COUNT(*) AS n, MIN(at) AS first FROM mailvia_quota_log WHERE key = ?').get(id) as Row;
        return {
          limit,
          used: num(r.n),
          resetAt: (r.first === null ? now : num(r.first)) + window.ms,
          add: () => {
            const ins = db.sql('INSERT INTO mailvia_quota_log (key, at) VALUES (?, ?)');
            for (let i = 0; i < amount; i++) ins.run(id, now);
          },
        };
      });
      const allowed = seen.every((w) => w.used + amount <= w.limit);
      if (allowed && amount > 0) for (const w of seen) w.add();
      return {
        allowed,
        windows: seen.map((w) => ({
          allowed: w.used + amount <= w.limit,
          used: allowed ? w.used + amount : w.used,
          limit: w.limit,
          resetAt: w.resetAt,
        })),
      };
    });
  }
  entries(prefix = ''): [string, RestState][] {
    const rows = this.database
      .sql('SELECT key, data FROM mailvia_rest WHERE substr(key, 1, ?) = ?')
      .all(prefix.length, prefix) as Row[];
    return rows.map((r) => [String(r.key), JSON.parse(String(r.data)) as RestState]);
  }
}

/**
 * The embedded durable stores: one SQLite file (node:sqlite, WAL mode) holding the queue, the
 * delivery log, the suppression list, resting routes and quota counters. No server; several
 * processes of one machine may share the file (a worker process and the app, say).
 *
 * @example
 * ```ts
 * const mailer = createMailer({ ...sqliteStores({ path: './data/mail.db' }), organisations });
 * mailer.startWorker();
 * await mailer.enqueue(message, { organisation: 'school-a', idempotencyKey: 'welcome:42' });
 * ```
 */
export function sqliteStores(options: SqliteStoreOptions): Required<MailerStores> & { database: SqliteDatabase } {
  const database = new SqliteDatabase(options);
  const queue = new SqliteQueue(database, options);
  return {
    database,
    queue,
    log: new SqliteDeliveryLog(database),
    suppression: new SqliteSuppressionList(database),
    state: new SqliteRouteState(database),
    close: async () => {
      await queue.close();
      await database.close();
    },
  };
}
