/**
 * The store interfaces of durable delivery: the queue, the delivery log and the suppression
 * list (route state and quota counters are in `route-state.ts`). Three families implement them:
 * in memory (`memoryStores()`, tests and development), embedded and durable (`sqliteStores()`,
 * one machine, no server) and Redis (`@mailvia/redis`, many app instances and workers).
 *
 * The contract is small on purpose; the engine (the mailer and its worker) owns every decision:
 * stores keep data and make the few steps that must not race atomic.
 */
import type { FailureKind, FailurePhase } from '../errors.js';
import type { PreparedMessage } from '../message.js';
import type { RouteStateStore } from '../route-state.js';
import type { WebhookEventType } from '../webhooks.js';

/** A value or a promise of it: in-memory stores answer synchronously, others asynchronously. */
export type MaybePromise<T> = T | Promise<T>;

// ---------------------------------------------------------------------------------------------
// Queue

/** A message waiting in (or taken from) the queue. */
export interface QueueJob {
  /** The delivery id: the same id names the job in the queue and its record in the delivery log. */
  id: string;
  /** The organisation whose chain sends it; absent for the mailer's default routes. */
  organisation?: string;
  /** The key that made it unique within its organisation (the same key enqueued twice is one job). */
  idempotencyKey?: string;
  /** The validated message (the store keeps attachment bytes intact: see `encodeMessage`). */
  message: PreparedMessage;
  /** Attempts counted so far. Waits for a rate limit or quota do not count. */
  attempts: number;
  /**
   * When set, the next attempt goes to this route only, by name: an earlier attempt there has an
   * unknown outcome, and sending elsewhere could deliver a second copy.
   */
  route?: string;
  /** Epoch ms when it was enqueued. */
  createdAt: number;
  /** Epoch ms from which it may be taken. */
  runAt: number;
  /**
   * How many times a consumer took this job, this time included, when the store counts it.
   * 1 means no consumer had it before, so no earlier attempt can be in flight.
   */
  taken?: number;
  /**
   * The delivery record the job carries, in a queue that keeps records with its jobs
   * ({@link QueueStore.recordLog}): the log may not hold it yet (the worker writes it there with
   * its first attempt).
   */
  record?: DeliveryRecord;
}

/** What to enqueue: a job before any attempt. */
export interface NewQueueJob {
  id: string;
  organisation?: string;
  idempotencyKey?: string;
  message: PreparedMessage;
  /** Epoch ms from which it may be taken. @default now */
  runAt?: number;
  /** Its delivery record, kept with the job: given only to a queue with a {@link QueueStore.recordLog}. */
  record?: DeliveryRecord;
}

/** The result of {@link QueueStore.add}. */
export interface QueueAddResult {
  /** The job's id: the existing one when the idempotency key was already queued. */
  id: string;
  /** False when the organisation already had a job with this idempotency key (nothing was added). */
  created: boolean;
}

/**
 * A sent job's outcome in the delivery log: what the engine hands a queue that writes it
 * ({@link QueueStore.writesOutcomes}) instead of writing it itself.
 */
export interface SentOutcome {
  /** The send's ending attempts, written as {@link DeliveryLog.putAttempt} writes them. */
  attempts: AttemptRecord[];
  /** The record's changes, applied as {@link DeliveryLog.update} applies them. */
  patch: Partial<Omit<DeliveryRecord, 'id'>>;
}

/** What the worker decided about a job it took; the store applies it atomically. */
export type JobOutcome =
  /**
   * Sent: the job is done (the store keeps its idempotency key, drops the message). `outcome` is
   * given to a queue that writes it to the log ({@link QueueStore.writesOutcomes}).
   */
  | { status: 'sent'; outcome?: SentOutcome }
  /** Try again from `runAt`, with the counters and route given (they replace the job's). */
  | { status: 'retry'; runAt: number; attempts: number; route?: string }
  /** Give up: the job moves to the dead-letter state with the reason, until revived or pruned. */
  | { status: 'dead'; reason: string };

/** Where a job stands in the queue. */
export type QueueJobState = 'waiting' | 'active' | 'sent' | 'dead';

/** A job as {@link QueueStore.get} shows it. */
export interface QueueJobInfo extends Omit<QueueJob, 'message'> {
  state: QueueJobState;
  /** Why it is dead. */
  reason?: string;
  /** The message; dropped once sent (the idempotency key stays). */
  message?: PreparedMessage;
}

/** Options of {@link QueueStore.process}. */
export interface ProcessOptions {
  /** Jobs handled at the same time by this consumer. @default 4 */
  concurrency?: number;
  /**
   * How long a taken job stays reserved to this consumer without news (ms). The consumer
   * renews it while the handler runs; when a consumer dies, its jobs come back after this.
   * @default 30_000
   */
  lease?: number;
  /** How often an idle consumer looks for due jobs, for stores that poll (ms). @default 250 */
  pollInterval?: number;
}

/** A running consumer of a queue. */
export interface QueueConsumer {
  /** Stops taking jobs and waits for the handlers running now. */
  stop(): Promise<void>;
}

/**
 * Where enqueued mail waits. `add` must be durable when it resolves, and atomic per idempotency
 * key (50 parallel adds with one key create one job). A taken job is reserved with a lease; when
 * the consumer dies, the job is taken again after the lease (the worker then finds its in-flight
 * attempt in the {@link DeliveryLog} and treats its outcome as unknown).
 */
export interface QueueStore {
  /**
   * Optional: a delivery log that reads this queue. With that log, `mailer.enqueue` writes one
   * thing: the job, carrying its delivery record ({@link NewQueueJob.record}); the log answers
   * `get` and `query` for jobs not yet taken from the queue, and a worker writes the record to the
   * log with the job's first attempt ({@link DeliveryLog.putAttempt}). Such a log may leave mail
   * no worker took yet out of lookups by Message-ID or provider id (a provider reports only on
   * mail it was sent). Stores that write a job and its record together anyway (SQLite, memory)
   * leave it unset.
   */
  readonly recordLog?: DeliveryLog;
  /**
   * Optional, with {@link recordLog}: the queue writes a sent job's outcome to that log itself
   * ({@link JobOutcome}'s `outcome`), durably with the job's completion (so a worker that dies
   * before the log has it loses nothing: the queue writes it later). Outcomes may reach the log
   * a moment after the job completes, gathered with others in one write.
   */
  readonly writesOutcomes?: boolean;
  /** Adds a job durably; with an idempotency key already used in that organisation, adds nothing. */
  add(job: NewQueueJob): Promise<QueueAddResult>;
  /**
   * Runs `handler` on due jobs, `concurrency` at a time, and applies the outcome it returns. A
   * handler that throws is a bug: its job is retried after the lease, uncounted.
   */
  process(handler: (job: QueueJob) => Promise<JobOutcome>, options?: ProcessOptions): QueueConsumer;
  /** A job and its state, while the store keeps it (a sent job without its message). */
  get(id: string): Promise<QueueJobInfo | undefined>;
  /**
   * Moves a dead job back to waiting, due now, with its attempts reset and no route pinned (same
   * id, key and Message-ID): a resend is a decision to send again, so it starts the chain afresh,
   * even after an unknown outcome. False when the job is not dead (already waiting, active, sent or
   * pruned): two concurrent revivals send once.
   */
  revive(id: string): Promise<boolean>;
  /** How many jobs are in each state. */
  counts(): Promise<Record<QueueJobState, number>>;
  /** Releases connections and timers. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Delivery log

/**
 * Where a delivery stands:
 * - `queued`: waiting in the queue (first try or a retry at `nextAttemptAt`);
 * - `sending`: an attempt is in flight;
 * - `sent`: a route took it (see `route`, `providerMessageId`);
 * - `failed`: a direct `mailer.send` failed (the caller got the error; nothing retries it);
 * - `dead`: the queue gave up (refused, attempts used up, suppressed, or an unknown outcome the
 *   policy will not retry): see `reason`. `mailer.resend(id)` revives it.
 */
export type DeliveryStatus = 'queued' | 'sending' | 'sent' | 'failed' | 'dead';

/** The content of a logged message, kept only as long as configured, with secrets redacted. */
export interface LoggedContent {
  text?: string;
  html?: string;
  /** Attachments are never logged: only their names, types and sizes. */
  attachments: { filename?: string; contentType?: string; size?: number }[];
}

/** One message in the delivery log. */
export interface DeliveryRecord {
  /** The delivery id (also the queue job id). */
  id: string;
  organisation?: string;
  idempotencyKey?: string;
  /** The RFC 5322 Message-ID, the same on every attempt. */
  messageId: string;
  /** How it entered: `mailer.send` (now) or `mailer.enqueue` (queue). */
  via: 'send' | 'queue';
  status: DeliveryStatus;
  /** Envelope sender. */
  from: string;
  /** Envelope recipients, lower-cased. */
  recipients: string[];
  /** The subject, redacted. */
  subject: string;
  tags: string[];
  /** The route that took it, or the last one tried. */
  route?: string;
  /** The provider's id of the message, when sent. */
  providerMessageId?: string;
  /** Who held the message once sent (the receipt's `acceptedBy`). */
  acceptedBy?: 'provider' | 'relay' | 'outbox';
  /** The kind of the last failure. */
  kind?: FailureKind;
  /** The phase of the last failure. */
  phase?: FailurePhase;
  /** The provider's raw code of the last failure. */
  code?: string;
  /** Why it is dead or failed, or why the last attempt failed, in words (no secret). */
  reason?: string;
  /** Attempts counted so far (rate-limit waits and resting routes skipped do not count). */
  attempts: number;
  /** True when an attempt's outcome was unknown: the recipient may have received it twice. */
  unknown: boolean;
  /** Epoch ms. */
  createdAt: number;
  /** Epoch ms of the last change. */
  updatedAt: number;
  /** Epoch ms when sent. */
  sentAt?: number;
  /** Epoch ms of the next attempt (queued only). */
  nextAttemptAt?: number;
  /** Redacted content, while kept (see the mailer's `log.keepContent`). */
  content?: LoggedContent;
}

/**
 * Where an attempt stands. `in-flight` is written BEFORE the network call; an attempt still
 * in flight when its job is taken again (its worker died) becomes `unknown`.
 */
export type AttemptStatus = 'in-flight' | 'ok' | 'failed' | 'skipped' | 'unknown';

/** One attempt of a delivery on one route. */
export interface AttemptRecord {
  /** Unique id of the attempt. */
  id: string;
  deliveryId: string;
  /** The organisation, copied from the delivery (for queries). */
  organisation?: string;
  /** The route's name (never a secret). */
  route: string;
  status: AttemptStatus;
  kind?: FailureKind;
  phase?: FailurePhase;
  code?: string;
  /** Why it failed, in words. */
  error?: string;
  providerMessageId?: string;
  /** The provider's answer, as text. */
  response?: string;
  /** Epoch ms. */
  startedAt: number;
  /** Epoch ms, once ended. */
  endedAt?: number;
}

/**
 * What a provider said about a delivery after it took it (a webhook: delivered, bounced,
 * opened…). Recorded beside the record: it never changes the engine's own status, kind or reason.
 */
export interface DeliveryEvent {
  /** The normalised event type (`delivered`, `bounced`, `complained`, `opened`…). */
  type: WebhookEventType;
  /** Epoch ms when it happened (the provider's time when it told it). */
  at: number;
  /** The provider that told it (`sendgrid`, `mailgun`, `ses`). */
  provider: string;
  /** The recipient it is about (lower-cased), when the provider said. */
  recipient?: string;
  /** For `bounced`: true for a permanent (hard) bounce. */
  permanent?: boolean;
  /** The provider's SMTP status or enhanced code (`550`, `5.1.1`). */
  code?: string;
  /** In words: the bounce reason, the clicked link… (at most 500 characters). */
  detail?: string;
}

/** How many provider events a delivery keeps (the latest ones): an often-opened mail stays small. */
export const MAX_DELIVERY_EVENTS = 100;

/** A record with every attempt, as {@link DeliveryLog.get} returns it. */
export interface DeliveryDetails extends DeliveryRecord {
  /** Every attempt, oldest first. */
  history: AttemptRecord[];
  /** What providers said about it after it was sent, oldest first (the latest {@link MAX_DELIVERY_EVENTS}). */
  events: DeliveryEvent[];
}

/** A query of the delivery log. Every field narrows; records come newest first. */
export interface DeliveryQuery {
  organisation?: string;
  status?: DeliveryStatus | DeliveryStatus[];
  /** Envelope recipient (case-insensitive, exact address). */
  recipient?: string;
  /** The RFC 5322 Message-ID, with its angle brackets (`<…@…>`), exact. Indexed: webhooks find deliveries by it. */
  messageId?: string;
  /** The provider's id of the message (as the receipt gave it), exact. Indexed. */
  providerMessageId?: string;
  /** Created at or after (epoch ms). */
  since?: number;
  /** Created before (epoch ms). */
  until?: number;
  /** Only deliveries with an unknown outcome. */
  unknown?: boolean;
  /** @default 100 */
  limit?: number;
  /** Skips this many (paging). @default 0 */
  offset?: number;
}

/** What {@link DeliveryLog.prune} removes. */
export interface RetentionPolicy {
  /** Records (with their attempts and events) created before this epoch ms are deleted, unless queued or sending. */
  recordsBefore: number;
  /** Content of records updated before this epoch ms is dropped. */
  contentBefore: number;
}

/**
 * The delivery log: every message and every attempt. Writes must be durable when they resolve
 * (the in-flight attempt is what turns a crash into a known "unknown"). The engine redacts
 * content before it reaches the log; stores keep what they are given.
 */
export interface DeliveryLog {
  /** Creates or replaces a record (by id). */
  put(record: DeliveryRecord): MaybePromise<void>;
  /**
   * Writes a new record of a direct send (`via: 'send'`) that carries an idempotency key, unless
   * its organisation's key is held: by a record that is sending, sent, or failed with an unknown
   * outcome. A key whose record failed for certain, or was pruned, is taken over. Atomic per
   * organisation and key: of concurrent claims, one writes its record; the others get its id.
   * (Keys of `mailer.enqueue` live in the queue; the two do not see each other.)
   */
  claim(record: DeliveryRecord): MaybePromise<{ id: string; created: boolean }>;
  /** Changes fields of a record; false when there is none. `updatedAt` is set by the caller. */
  update(id: string, patch: Partial<Omit<DeliveryRecord, 'id'>>): MaybePromise<boolean>;
  /**
   * Creates or replaces an attempt (by id). An `in-flight` attempt also marks its delivery
   * `sending` (in the same step), so starting an attempt is one write. With `record` (the record
   * a queued job carried: {@link QueueStore.recordLog}), a delivery the log has no record of yet
   * gets that record first, in the same step; one it has is left as it is.
   */
  putAttempt(attempt: AttemptRecord, record?: DeliveryRecord): MaybePromise<void>;
  /**
   * Optional: a send's outcome in one step — writes its ending attempts as `putAttempt` does (even
   * when there is no record) and changes the record as `update` does; false when there is no
   * record. Without it the engine calls `putAttempt` for each and `update`.
   */
  finish?(
    id: string,
    attempts: readonly AttemptRecord[],
    patch: Partial<Omit<DeliveryRecord, 'id'>>,
  ): MaybePromise<boolean>;
  /**
   * Appends what a provider said about a delivery (keeps the latest {@link MAX_DELIVERY_EVENTS});
   * the record's own fields are left as they are. False when there is no such record.
   */
  addEvent(id: string, event: DeliveryEvent): MaybePromise<boolean>;
  /** A record with its attempts (oldest first) and provider events (oldest first). */
  get(id: string): MaybePromise<DeliveryDetails | undefined>;
  /** Records matching the query, newest first, without their attempts. */
  query(query?: DeliveryQuery): MaybePromise<DeliveryRecord[]>;
  /** Applies retention; resolves with how many records were deleted. */
  prune(policy: RetentionPolicy): MaybePromise<number>;
}

// ---------------------------------------------------------------------------------------------
// Suppression list

/** How an address got on the suppression list (see {@link SuppressionEntry.source}). */
export type SuppressionSource = 'refused' | 'bounce' | 'complaint' | 'unsubscribe' | 'manual';

/** A recipient the organisation does not send to until cleared. */
export interface SuppressionEntry {
  /** The organisation (`''` for the mailer's default routes). */
  organisation: string;
  /** The address, lower-cased. */
  address: string;
  /** Why, in words (e.g. the provider's refusal). */
  reason: string;
  /**
   * How it got there:
   * - `refused`: a permanent refusal the engine saw on a send, or a provider's own refusal (a drop);
   * - `bounce`: a provider reported a hard bounce (webhook);
   * - `complaint`: the recipient marked a mail as spam (webhook);
   * - `unsubscribe`: the recipient unsubscribed (webhook);
   * - `manual`: the application or an administrator added it.
   */
  source: SuppressionSource;
  /** The provider's code of the refusal (`550 5.1.1`). */
  code?: string;
  /** The delivery that was refused. */
  deliveryId?: string;
  /** Epoch ms. */
  createdAt: number;
}

/**
 * Recipients refused permanently, per organisation: the engine checks it before every send and
 * drops suppressed recipients from the envelope (a message with none left is not sent).
 * Addresses are compared lower-cased.
 */
export interface SuppressionList {
  /** Adds or replaces an entry. */
  add(entry: SuppressionEntry): MaybePromise<void>;
  /** The entry of an address, when suppressed. */
  has(organisation: string, address: string): MaybePromise<SuppressionEntry | undefined>;
  /** Entries of an organisation, newest first. */
  list(organisation: string, options?: { limit?: number; offset?: number }): MaybePromise<SuppressionEntry[]>;
  /** Clears an address; false when it was not suppressed. */
  remove(organisation: string, address: string): MaybePromise<boolean>;
}

/** The stores a mailer uses, as `sqliteStores()`, `memoryStores()` or `redisStores()` return them. */
export interface MailerStores {
  queue?: QueueStore;
  log?: DeliveryLog;
  suppression?: SuppressionList;
  state?: RouteStateStore;
  /** Closes what the stores opened (a database, connections). */
  close?(): Promise<void>;
}
