import { createHash, randomUUID } from 'node:crypto';
import {
  type DeliveryRecord,
  decodeMessage,
  type JobOutcome,
  messageToJSON,
  type NewQueueJob,
  type PreparedMessage,
  type ProcessOptions,
  type QueueAddResult,
  type QueueConsumer,
  type QueueJob,
  type QueueJobInfo,
  type QueueJobState,
  type QueueStore,
  type SentOutcome,
  withPatch,
} from '@mailvia/core';
import { type ConnectionOptions, DelayedError, Job, type JobsOptions, Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { type BatchItem, Gathered, type Transaction, type TransactionClient, WriteBatch } from './batch.js';
import type { ResolvedRedisOptions } from './config.js';
import type { RedisDeliveryLog } from './log.js';
import { script } from './scripts.js';

/** What a BullMQ job of the mail queue carries. */
interface JobData {
  /**
   * The prepared message, as `messageToJSON` gives it (as `encodeMessage` wrote it, in jobs of
   * 0.1); a sent job's is dropped a moment after its completion (see {@link RedisQueue.dropLater}).
   */
  message?: PreparedMessage | string;
  organisation?: string;
  idempotencyKey?: string;
  attempts: number;
  route?: string;
  createdAt: number;
  runAt: number;
  /** Tells the add that created a job from the adds that found it there (jobs with an idempotency key). */
  token?: string;
  /** Its delivery record, until a worker writes it to the log (see {@link RedisQueue.recordLog}). */
  record?: DeliveryRecord;
}

// Drops sent jobs' messages (and the records they carried: the log has them), keeping what the
// job's key and `get` need. A job is changed only once completed (`returnvalue`), and only if no
// worker took it since (`ats`, BullMQ's count of takes): a job whose completion has not landed
// yet is answered (its index) to be tried again; one gone (removed) is skipped.
// KEYS: the job hashes; ARGV: per job: its takes when sent, its data without the message.
const DROP_MESSAGES = `
local later = {}
for i = 1, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'returnvalue', 'ats')
  local same = (h[2] or '0') == ARGV[2 * i - 1]
  if h[1] then
    if same then redis.call('HSET', KEYS[i], 'data', ARGV[2 * i]) end
  elseif same and redis.call('EXISTS', KEYS[i]) == 1 then
    later[#later + 1] = i
  end
end
return later`;

/** At most this many jobs' messages are dropped by one script call. */
const DROP_BATCH = 500;

/** A sent job whose message is to be dropped. */
interface PendingDrop {
  key: string;
  takes: string;
  data: string;
  /** Epoch ms after which a job still not completed is left as it is (another worker will drop it). */
  until: number;
}

/** A sent job's outcome as its BullMQ return value: JSON, so the fields the patch removes are listed. */
interface StoredOutcome extends SentOutcome {
  removed?: string[];
}

/** A job's share of a write batch: BullMQ's own add, in the batch's transaction. */
class JobWrite implements BatchItem {
  readonly done: Promise<void>;
  private resolve!: () => void;
  private reject!: (e: unknown) => void;

  constructor(private readonly job: Job<JobData>) {
    this.done = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  write(tx: Transaction): void {
    // queues its one command synchronously; in a MULTI its promise only says QUEUED
    this.job.addJob(tx.multi as never).catch(() => {});
  }

  settle(replies: [Error | null, unknown][]): void {
    const [error, value] = replies[0] ?? [new Error('BullMQ wrote no command for the job')];
    if (error) this.reject(error);
    else if (typeof value === 'number' && value < 0) this.reject(new Error(`BullMQ refused the job (code ${value})`));
    else this.resolve();
  }

  fail(error: unknown): void {
    this.reject(error);
  }
}

/**
 * The queue on BullMQ. A job with an idempotency key gets a job id derived from the organisation
 * and the key, so BullMQ's atomic add keeps one job per key (for as long as the job is kept:
 * `idempotencyWindow` after it was sent). Retries are BullMQ delays (`moveToDelayed`), not
 * BullMQ attempts; a dead job is a failed BullMQ job (kept `deadRetention`); a worker that dies
 * leaves its jobs to BullMQ's stalled-job check, which gives them to another worker after the lease.
 */
export class RedisQueue implements QueueStore {
  readonly queue: Queue;
  /** Where jobs without a key are written, a transaction per tick (a log given it writes records there too). */
  readonly batch: WriteBatch;
  /**
   * The delivery log that reads this queue's jobs (`redisStores` sets it): with it, an enqueue's
   * record rides in its job, so the enqueue is one write, and the log finds it there until a
   * worker takes the job and writes the record with its first attempt.
   */
  recordLog: RedisDeliveryLog | undefined;
  private readonly workers = new Set<Worker>();
  private repairing: Promise<number> | undefined;
  /** Sent jobs whose message {@link dropLater} drops with the others of that moment. */
  private readonly drops: Gathered<PendingDrop>;
  private readonly dropScript = script(DROP_MESSAGES, 1);

  /**
   * With its log: a sent job's outcome is the job's BullMQ return value, stored by BullMQ's
   * completion itself, and reaches the log a moment later with the others of that time
   * (`outcomeDelay`); a worker that dies in between has it written by the next worker to start.
   */
  get writesOutcomes(): boolean {
    return this.recordLog !== undefined;
  }

  constructor(private readonly options: ResolvedRedisOptions) {
    this.queue = new Queue(options.queueName, {
      connection: options.connection as ConnectionOptions,
      prefix: options.prefix,
    });
    this.queue.on('error', () => {});
    const backend = this.queue.getBackend() as unknown as { client: Promise<TransactionClient> };
    this.drops = new Gathered((items) => this.writeDrops(items), options.outcomeDelay);
    this.batch = new WriteBatch(() => backend.client);
  }

  private jobId(job: NewQueueJob): string {
    if (job.idempotencyKey === undefined) return job.id;
    const hash = createHash('sha256')
      .update(`${job.organisation ?? ''}\u0000${job.idempotencyKey}`)
      .digest('hex');
    return `k-${hash.slice(0, 40)}`;
  }

  async add(job: NewQueueJob): Promise<QueueAddResult> {
    const id = this.jobId(job);
    const now = Date.now();
    const runAt = job.runAt ?? now;
    const key = job.idempotencyKey;
    const data: JobData = {
      message: messageToJSON(job.message),
      attempts: 0,
      createdAt: now,
      runAt,
      ...(key !== undefined ? { token: randomUUID() } : {}),
      ...(job.organisation !== undefined ? { organisation: job.organisation } : {}),
      ...(key !== undefined ? { idempotencyKey: key } : {}),
      ...(job.record !== undefined ? { record: { ...job.record, id } } : {}),
    };
    const opts: JobsOptions = {
      jobId: id,
      ...(runAt > now ? { delay: runAt - now } : {}),
      removeOnComplete: { age: Math.ceil(this.options.idempotencyWindow / 1000) },
      removeOnFail: { age: Math.ceil(this.options.deadRetention / 1000) },
    };
    if (key === undefined) {
      // no key, no duplicate: written with the records of this tick's enqueues, in one transaction
      const item = new JobWrite(new Job<JobData>(this.queue, 'mail', data, opts, id));
      this.batch.push(item, true);
      await item.done;
      return { id, created: true };
    }
    await this.queue.add('mail', data, opts);
    // BullMQ keeps the first job added with an id: the add whose token it holds created it
    const stored = await Job.fromId<JobData>(this.queue, id);
    return { id, created: stored?.data.token === data.token };
  }

  private toJob(bj: Job<JobData>): QueueJob {
    const d = bj.data;
    return {
      id: String(bj.id),
      // a sent job's message is dropped: it is never processed again
      message: typeof d.message === 'string' ? decodeMessage(d.message) : (d.message as PreparedMessage),
      attempts: d.attempts,
      createdAt: d.createdAt,
      runAt: d.runAt,
      ...(typeof bj.attemptsStarted === 'number' ? { taken: bj.attemptsStarted } : {}),
      ...(d.organisation !== undefined ? { organisation: d.organisation } : {}),
      ...(d.idempotencyKey !== undefined ? { idempotencyKey: d.idempotencyKey } : {}),
      ...(d.route !== undefined ? { route: d.route } : {}),
      ...(d.record !== undefined ? { record: d.record } : {}),
    };
  }

  /** The record a job carries (whether or not the log has it by now). */
  async carried(id: string): Promise<DeliveryRecord | undefined> {
    return (await Job.fromId<JobData>(this.queue, id))?.data.record;
  }

  /**
   * The records carried by jobs no worker has finished with (waiting, scheduled or being taken):
   * the log's answer for mail it has no record of yet. Reads every such job.
   */
  async untaken(): Promise<DeliveryRecord[]> {
    const jobs = await this.queue.getJobs(['waiting', 'prioritized', 'delayed', 'active'], 0, -1);
    const out: DeliveryRecord[] = [];
    for (const j of jobs) if (j?.data?.record) out.push(j.data.record);
    return out;
  }

  process(handler: (job: QueueJob) => Promise<JobOutcome>, options: ProcessOptions = {}): QueueConsumer {
    const lease = Math.max(1000, options.lease ?? 30_000);
    const worker = new Worker<JobData>(
      this.options.queueName,
      async (bj, token) => {
        let outcome: JobOutcome;
        try {
          outcome = await handler(this.toJob(bj));
        } catch {
          // a handler bug (or Redis gone mid-way): try again after the lease, uncounted
          await bj.moveToDelayed(Date.now() + lease, token);
          throw new DelayedError();
        }
        if (outcome.status === 'sent') {
          this.dropLater(bj, lease);
          if (!outcome.outcome || !this.recordLog) return 'sent';
          // a record missing (a crash between the queue and the log) is written whole
          const record = bj.data.record;
          const { patch } = outcome.outcome;
          this.recordLog.finishLater(String(bj.id), outcome.outcome, record && (() => withPatch(record, patch)));
          // BullMQ stores it with the completion: the log's copy is repaired from it after a crash
          const stored: StoredOutcome = { attempts: outcome.outcome.attempts, patch };
          const removed = Object.keys(patch).filter((k) => patch[k as keyof typeof patch] === undefined);
          if (removed.length) stored.removed = removed;
          return stored;
        }
        if (outcome.status === 'dead') throw new UnrecoverableError(outcome.reason);
        // the record is in the log by now (a retry writes it): the job need not carry it on
        const { route: _old, record: _record, ...rest } = bj.data;
        await bj.updateData({
          ...rest,
          attempts: outcome.attempts,
          runAt: outcome.runAt,
          ...(outcome.route !== undefined ? { route: outcome.route } : {}),
        });
        await bj.moveToDelayed(Math.max(outcome.runAt, Date.now()), token);
        throw new DelayedError();
      },
      {
        connection: this.options.connection as ConnectionOptions,
        prefix: this.options.prefix,
        concurrency: Math.max(1, options.concurrency ?? 4),
        lockDuration: lease,
        stalledInterval: lease,
        maxStalledCount: 1000,
      },
    );
    worker.on('error', () => {});
    this.workers.add(worker);
    // outcomes a worker that died could not write: now, and every lease while this one runs
    const repair = () => void this.repairOutcomes().catch(() => {});
    repair();
    const timer = setInterval(repair, lease);
    timer.unref?.();
    return {
      stop: async () => {
        clearInterval(timer);
        this.workers.delete(worker);
        await worker.close();
        // what Redis does not take now stays in the jobs, for the next worker to write
        await this.recordLog?.flushOutcomes().catch(() => {});
        await this.flushDrops().catch(() => {});
      },
    };
  }

  /**
   * Drops a sent job's message (and the record it carried: the log has it) a moment after its
   * completion, with the others of that moment in one call. The job stays, for its idempotency key
   * and `get`, without the message: account mails carry passwords and reset links, which the
   * queue keeps only until they are sent (the log keeps content only as configured, redacted).
   * `lease`: how long to wait for the completion to land before leaving the job to the worker
   * that completes it.
   */
  private dropLater(bj: Job<JobData>, lease: number): void {
    const { message: _message, record: _record, ...rest } = bj.data;
    this.drops.add({
      key: this.queue.toKey(String(bj.id)),
      takes: String(bj.attemptsStarted ?? 0),
      data: JSON.stringify(rest),
      until: Date.now() + lease,
    });
  }

  /**
   * Drops the messages {@link dropLater} holds now; resolves once they (and any being dropped) are
   * dropped. Jobs whose completion has not landed yet wait for the next call; when Redis refuses,
   * they are all tried again a second later.
   */
  flushDrops(): Promise<void> {
    return this.drops.flush();
  }

  /** Drops them; hands back those whose completion has not landed yet (until their `until`). */
  private async writeDrops(items: PendingDrop[]): Promise<PendingDrop[]> {
    const client = await (this.queue.getBackend() as unknown as { client: Promise<Redis> }).client;
    const later: PendingDrop[] = [];
    for (let i = 0; i < items.length; i += DROP_BATCH) {
      const part = items.slice(i, i + DROP_BATCH);
      const args: string[] = [];
      for (const d of part) args.push(d.takes, d.data);
      const waiting = (await this.dropScript(
        client,
        part.map((d) => d.key),
        args,
      )) as number[];
      for (const n of waiting) later.push(part[n - 1]!);
    }
    const now = Date.now();
    return later.filter((d) => d.until > now);
  }

  /**
   * Writes to the log the outcomes of jobs that completed while the log still says they are being
   * sent (their worker died before its batch of outcomes reached the log): read from the jobs'
   * return values. Resolves with how many it wrote.
   */
  repairOutcomes(): Promise<number> {
    this.repairing ??= this.repair().finally(() => {
      this.repairing = undefined;
    });
    return this.repairing;
  }

  private async repair(): Promise<number> {
    const log = this.recordLog;
    if (!log) return 0;
    const ids = await log.sending();
    if (ids.length === 0) return 0;
    let written = 0;
    await Promise.all(
      ids.map(async (id) => {
        const bj = await Job.fromId<JobData>(this.queue, id);
        const outcome = bj?.finishedOn ? (bj.returnvalue as StoredOutcome | null | undefined) : undefined;
        if (!outcome || !Array.isArray(outcome.attempts) || typeof outcome.patch !== 'object') return;
        const patch: Record<string, unknown> = { ...outcome.patch };
        for (const k of outcome.removed ?? []) patch[k] = undefined;
        await log.finish(id, outcome.attempts, patch as SentOutcome['patch']);
        // its worker died before dropping its message too
        if (bj && bj.data.message !== undefined) this.dropLater(bj, 0);
        written++;
      }),
    );
    return written;
  }

  async get(id: string): Promise<QueueJobInfo | undefined> {
    const bj = await Job.fromId<JobData>(this.queue, id);
    if (!bj) return undefined;
    const raw = await bj.getState();
    const state: QueueJobState =
      raw === 'completed' ? 'sent' : raw === 'failed' ? 'dead' : raw === 'active' ? 'active' : 'waiting';
    const { message, ...job } = this.toJob(bj);
    return {
      ...job,
      state,
      ...(state !== 'sent' ? { message } : {}),
      ...(state === 'dead' && bj.failedReason ? { reason: bj.failedReason } : {}),
    };
  }

  async revive(id: string): Promise<boolean> {
    const bj = await Job.fromId<JobData>(this.queue, id);
    if (!bj || (await bj.getState()) !== 'failed') return false;
    const { route: _r, ...rest } = bj.data;
    try {
      await bj.updateData({ ...rest, attempts: 0, runAt: Date.now() });
      await bj.retry('failed');
      return true;
    } catch {
      // another revival moved it first
      return false;
    }
  }

  async counts(): Promise<Record<QueueJobState, number>> {
    const c = await this.queue.getJobCounts('waiting', 'delayed', 'prioritized', 'active', 'completed', 'failed');
    return {
      waiting: (c.waiting ?? 0) + (c.delayed ?? 0) + (c.prioritized ?? 0),
      active: c.active ?? 0,
      sent: c.completed ?? 0,
      dead: c.failed ?? 0,
    };
  }

  async close(): Promise<void> {
    await Promise.all([...this.workers].map((w) => w.close()));
    this.workers.clear();
    await this.recordLog?.flushOutcomes().catch(() => {});
    await this.repairing?.catch(() => 0);
    await this.flushDrops().catch(() => {});
    await this.queue.close();
  }
}
