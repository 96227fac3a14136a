import { MemoryRouteState } from '../route-state.js';
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

interface Slot {
  job: QueueJob;
  state: QueueJobState;
  owner?: string;
  leaseUntil?: number;
  reason?: string;
  updatedAt: number;
}

const orgOf = (organisation: string | undefined) => organisation ?? '';

/** Options of the in-memory stores. */
export interface MemoryStoreOptions {
  /** How long a sent job's idempotency key is remembered (ms). @default 7 days */
  idempotencyWindow?: number;
  /** How long a dead job is kept for `resend` (ms). @default 30 days */
  deadRetention?: number;
}

/**
 * A {@link QueueStore} in process memory: for tests and development. Nothing survives a restart:
 * use `sqliteStores()` or `@mailvia/redis` where mail must not be lost.
 */
export class MemoryQueue implements QueueStore {
  private readonly jobs = new Map<string, Slot>();
  private readonly keys = new Map<string, string>();
  private readonly bell = new Bell();
  private readonly consumers = new Set<QueueConsumer>();
  private readonly idempotencyWindow: number;
  private readonly deadRetention: number;

  constructor(options: MemoryStoreOptions = {}) {
    this.idempotencyWindow = options.idempotencyWindow ?? 7 * 86_400_000;
    this.deadRetention = options.deadRetention ?? 30 * 86_400_000;
  }

  async add(job: NewQueueJob): Promise<QueueAddResult> {
    const key = job.idempotencyKey === undefined ? undefined : `${orgOf(job.organisation)}\u0000${job.idempotencyKey}`;
    if (key !== undefined) {
      const existing = this.keys.get(key);
      if (existing !== undefined && this.jobs.has(existing)) return { id: existing, created: false };
    }
    const now = Date.now();
    const stored: QueueJob = {
      id: job.id,
      message: structuredClone(job.message),
      attempts: 0,
      createdAt: now,
      runAt: job.runAt ?? now,
      ...(job.organisation !== undefined ? { organisation: job.organisation } : {}),
      ...(job.idempotencyKey !== undefined ? { idempotencyKey: job.idempotencyKey } : {}),
    };
    this.jobs.set(job.id, { job: stored, state: 'waiting', updatedAt: now });
    if (key !== undefined) this.keys.set(key, job.id);
    this.bell.ring();
    return { id: job.id, created: true };
  }

  process(handler: (job: QueueJob) => Promise<JobOutcome>, options: ProcessOptions = {}): QueueConsumer {
    const consumer = runConsumer(
      {
        claim: (owner, n, leaseUntil, now) => {
          this.sweep(now);
          const due = [...this.jobs.values()]
            .filter(
              (s) =>
                (s.state === 'waiting' && s.job.runAt <= now) || (s.state === 'active' && (s.leaseUntil ?? 0) <= now),
            )
            .sort((a, b) => a.job.runAt - b.job.runAt)
            .slice(0, n);
          for (const s of due) {
            s.job.taken = (s.job.taken ?? 0) + 1;
            s.state = 'active';
            s.owner = owner;
            s.leaseUntil = leaseUntil;
          }
          return due.map((s) => structuredClone(s.job));
        },
        renew: (owner, ids, leaseUntil) => {
          for (const id of ids) {
            const s = this.jobs.get(id);
            if (s?.state === 'active' && s.owner === owner) s.leaseUntil = leaseUntil;
          }
        },
        finish: (owner, id, outcome) => {
          const s = this.jobs.get(id);
          if (s?.state !== 'active' || s.owner !== owner) return;
          this.apply(s, outcome);
        },
        nextDue: () => {
          let next: number | undefined;
          for (const s of this.jobs.values()) {
            const t = s.state === 'waiting' ? s.job.runAt : s.state === 'active' ? s.leaseUntil : undefined;
            if (t !== undefined && (next === undefined || t < next)) next = t;
          }
          return next;
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

  private apply(s: Slot, outcome: JobOutcome): void {
    s.owner = undefined;
    s.leaseUntil = undefined;
    s.updatedAt = Date.now();
    if (outcome.status === 'sent') {
      s.state = 'sent';
    } else if (outcome.status === 'dead') {
      s.state = 'dead';
      s.reason = outcome.reason;
    } else {
      s.state = 'waiting';
      s.job.runAt = outcome.runAt;
      s.job.attempts = outcome.attempts;
      if (outcome.route === undefined) delete s.job.route;
      else s.job.route = outcome.route;
    }
  }

  private sweep(now: number): void {
    for (const [id, s] of this.jobs) {
      const age = now - s.updatedAt;
      if ((s.state === 'sent' && age > this.idempotencyWindow) || (s.state === 'dead' && age > this.deadRetention)) {
        this.jobs.delete(id);
        if (s.job.idempotencyKey !== undefined)
          this.keys.delete(`${orgOf(s.job.organisation)}\u0000${s.job.idempotencyKey}`);
      }
    }
  }

  async get(id: string): Promise<QueueJobInfo | undefined> {
    const s = this.jobs.get(id);
    if (!s) return undefined;
    const { message, ...job } = structuredClone(s.job);
    return {
      ...job,
      ...(s.state !== 'sent' ? { message } : {}),
      state: s.state,
      ...(s.reason !== undefined ? { reason: s.reason } : {}),
    };
  }

  async revive(id: string): Promise<boolean> {
    const s = this.jobs.get(id);
    if (s?.state !== 'dead') return false;
    s.state = 'waiting';
    s.job.attempts = 0;
    s.job.runAt = Date.now();
    delete s.job.route;
    s.reason = undefined;
    s.updatedAt = Date.now();
    this.bell.ring();
    return true;
  }

  async counts(): Promise<Record<QueueJobState, number>> {
    const out: Record<QueueJobState, number> = { waiting: 0, active: 0, sent: 0, dead: 0 };
    for (const s of this.jobs.values()) out[s.state]++;
    return out;
  }

  async close(): Promise<void> {
    await Promise.all([...this.consumers].map((c) => c.stop()));
    this.consumers.clear();
  }
}

/**
 * A record with a patch applied as {@link DeliveryLog.update} applies it (a property set to
 * `undefined` is removed): what a log writes whole when the record to update is missing.
 */
export function withPatch(record: DeliveryRecord, patch: Partial<Omit<DeliveryRecord, 'id'>>): DeliveryRecord {
  const out: Record<string, unknown> = { ...record, ...patch };
  for (const [k, v] of Object.entries(out)) if (v === undefined) delete out[k];
  return out as unknown as DeliveryRecord;
}

/** Applies a {@link DeliveryQuery} to records (shared by stores that filter in JavaScript). */
export function matchesQuery(r: DeliveryRecord, q: DeliveryQuery): boolean {
  if (q.organisation !== undefined && r.organisation !== q.organisation) return false;
  if (q.status !== undefined) {
    const list = Array.isArray(q.status) ? q.status : [q.status];
    if (!list.includes(r.status)) return false;
  }
  if (q.recipient !== undefined && !r.recipients.includes(q.recipient.toLowerCase())) return false;
  if (q.messageId !== undefined && r.messageId !== q.messageId) return false;
  if (q.providerMessageId !== undefined && r.providerMessageId !== q.providerMessageId) return false;
  if (q.since !== undefined && r.createdAt < q.since) return false;
  if (q.until !== undefined && r.createdAt >= q.until) return false;
  if (q.unknown !== undefined && r.unknown !== q.unknown) return false;
  return true;
}

/** A {@link DeliveryLog} in process memory. */
export class MemoryDeliveryLog implements DeliveryLog {
  private readonly records = new Map<string, DeliveryRecord>();
  private readonly attempts = new Map<string, Map<string, AttemptRecord>>();
  private readonly events = new Map<string, DeliveryEvent[]>();
  private readonly sendKeys = new Map<string, string>();

  put(record: DeliveryRecord): void {
    this.records.set(record.id, structuredClone(record));
  }
  claim(record: DeliveryRecord): { id: string; created: boolean } {
    if (record.idempotencyKey !== undefined) {
      const key = `${orgOf(record.organisation)}\u0000${record.idempotencyKey}`;
      const held = this.sendKeys.get(key);
      const holder = held === undefined ? undefined : this.records.get(held);
      if (holder && held !== record.id && (holder.status !== 'failed' || holder.unknown))
        return { id: holder.id, created: false };
      this.sendKeys.set(key, record.id);
    }
    this.put(record);
    return { id: record.id, created: true };
  }
  update(id: string, patch: Partial<Omit<DeliveryRecord, 'id'>>): boolean {
    const r = this.records.get(id);
    if (!r) return false;
    const next = { ...r, ...structuredClone(patch) };
    for (const [k, v] of Object.entries(patch)) if (v === undefined) delete (next as Record<string, unknown>)[k];
    this.records.set(id, next);
    return true;
  }
  putAttempt(attempt: AttemptRecord, record?: DeliveryRecord): void {
    if (record && !this.records.has(attempt.deliveryId)) this.put(record);
    let list = this.attempts.get(attempt.deliveryId);
    if (!list) {
      list = new Map();
      this.attempts.set(attempt.deliveryId, list);
    }
    list.set(attempt.id, structuredClone(attempt));
    const r = this.records.get(attempt.deliveryId);
    if (r && attempt.status === 'in-flight') r.status = 'sending';
  }
  addEvent(id: string, event: DeliveryEvent): boolean {
    if (!this.records.has(id)) return false;
    const list = this.events.get(id) ?? [];
    list.push(structuredClone(event));
    this.events.set(id, list.slice(-MAX_DELIVERY_EVENTS));
    return true;
  }
  get(id: string): DeliveryDetails | undefined {
    const r = this.records.get(id);
    if (!r) return undefined;
    const attempts = [...(this.attempts.get(id)?.values() ?? [])].sort((a, b) => a.startedAt - b.startedAt);
    return {
      ...structuredClone(r),
      history: structuredClone(attempts),
      events: structuredClone(this.events.get(id) ?? []),
    };
  }
  query(q: DeliveryQuery = {}): DeliveryRecord[] {
    const offset = q.offset ?? 0;
    const limit = q.limit ?? 100;
    return [...this.records.values()]
      .filter((r) => matchesQuery(r, q))
      .sort((a, b) => b.createdAt - a.createdAt)
      .slice(offset, offset + limit)
      .map((r) => structuredClone(r));
  }
  prune(policy: RetentionPolicy): number {
    let deleted = 0;
    for (const [id, r] of this.records) {
      if (r.createdAt < policy.recordsBefore && r.status !== 'queued' && r.status !== 'sending') {
        this.records.delete(id);
        this.attempts.delete(id);
        this.events.delete(id);
        if (r.idempotencyKey !== undefined) {
          const key = `${orgOf(r.organisation)}\u0000${r.idempotencyKey}`;
          if (this.sendKeys.get(key) === id) this.sendKeys.delete(key);
        }
        deleted++;
      } else if (r.content && r.updatedAt < policy.contentBefore) {
        delete r.content;
      }
    }
    return deleted;
  }
}

/** A {@link SuppressionList} in process memory. */
export class MemorySuppressionList implements SuppressionList {
  private readonly entries = new Map<string, SuppressionEntry>();
  private key(organisation: string, address: string): string {
    return `${organisation}\u0000${address.toLowerCase()}`;
  }
  add(entry: SuppressionEntry): void {
    const e = { ...entry, address: entry.address.toLowerCase() };
    this.entries.set(this.key(e.organisation, e.address), e);
  }
  has(organisation: string, address: string): SuppressionEntry | undefined {
    const e = this.entries.get(this.key(organisation, address));
    return e ? { ...e } : undefined;
  }
  list(organisation: string, options: { limit?: number; offset?: number } = {}): SuppressionEntry[] {
    const offset = options.offset ?? 0;
    return [...this.entries.values()]
      .filter((e) => e.organisation === organisation)
      .sort((a, b) => b.createdAt - a.createdAt)
      .slice(offset, offset + (options.limit ?? 100))
      .map((e) => ({ ...e }));
  }
  remove(organisation: string, address: string): boolean {
    return this.entries.delete(this.key(organisation, address));
  }
}

/**
 * Every store in process memory: for tests and development (nothing survives a restart).
 *
 * @example
 * ```ts
 * const mailer = createMailer({ ...memoryStores(), organisations });
 * ```
 */
export function memoryStores(
  options: MemoryStoreOptions = {},
): Required<Omit<MailerStores, 'close'>> & Pick<MailerStores, 'close'> {
  const queue = new MemoryQueue(options);
  return {
    queue,
    log: new MemoryDeliveryLog(),
    suppression: new MemorySuppressionList(),
    state: new MemoryRouteState(),
    close: () => queue.close(),
  };
}
