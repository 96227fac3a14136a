import { randomUUID } from 'node:crypto';
import { type Attempt, DeliveryError, MailError, RouteConfigError } from './errors.js';
import type { PreparedMessage } from './message.js';
import type { RouteStateStore } from './route-state.js';
import type { Receipt, SendObserver, Transport } from './spec.js';
import { withPatch } from './stores/memory.js';
import type {
  AttemptRecord,
  DeliveryDetails,
  DeliveryLog,
  DeliveryRecord,
  JobOutcome,
  LoggedContent,
  QueueJob,
  QueueStore,
  SuppressionList,
} from './stores/types.js';

/** How enqueued mail is retried, and what the delivery log keeps. */
export interface DeliveryOptions {
  /** Counted attempts before a message goes to the dead-letter state. @default 8 */
  maxAttempts?: number;
  /**
   * Exponential back-off between counted attempts: `initial * 2^(n-1)`, at most `max`, with
   * jitter (a random point in the upper half). A `retryAfter` the chain gave (the earliest of its
   * routes', when every route that failed said one) is a floor.
   * @default { initial: 5_000, max: 3_600_000 }
   */
  backoff?: { initial?: number; max?: number };
  /**
   * What to do when an attempt's outcome is unknown (the connection died after the body was
   * sent, or the worker died during the call): `same-route` retries on that route only, with the
   * same Message-ID (the provider may de-duplicate; a second copy is possible); `dead` stops
   * for a person to check (`mailer.resend(id)` then retries).
   * @default 'same-route'
   */
  unknown?: 'same-route' | 'dead';
  /** How long a `limited` wait lasts when a route said nothing (no `retryAfter`) (ms). @default 60_000 */
  limitedWait?: number;
  /** Add recipients a route refused permanently to the suppression list. @default true */
  suppressRefused?: boolean;
  /**
   * How long `mailer.send` waits for another send holding the same idempotency key to finish
   * before it fails with code `EDUPLICATE` (ms). @default 60_000
   */
  duplicateWait?: number;
}

/** What the delivery log keeps. */
export interface DeliveryLogOptions {
  /** How long records are kept (ms). @default 30 days */
  retention?: number;
  /**
   * How long the message's text and HTML are kept in the log, redacted (ms); 0 keeps none.
   * Attachments are never logged. @default 0
   */
  keepContent?: number;
  /**
   * Redacts subjects and content before they are logged. A function replaces the default
   * redaction; a list adds literal secrets or patterns to it. The default hides query strings
   * of links (reset tokens) and values after `password:`, `code:`, `token:`, `key:`, `pin:`.
   */
  redact?: ((text: string) => string) | readonly (string | RegExp)[];
}

const DEFAULT_PATTERNS: [RegExp, string][] = [
  [/(https?:\/\/[^\s?#"'<>]+)[?#][^\s"'<>]*/gi, '$1?[redacted]'],
  [
    /\b(password|passwd|passphrase|pass|pwd|pin|code|otp|token|secret|api[ _-]?key|key)(\s*(?:[:=]|\bis\b)\s*)([^\s"'<>]+)/gi,
    '$1$2[redacted]',
  ],
];

/** The redactor of {@link DeliveryLogOptions.redact}. */
export function makeRedactor(option: DeliveryLogOptions['redact']): (text: string) => string {
  if (typeof option === 'function') return option;
  const extra = option ?? [];
  return (text) => {
    let out = text;
    for (const [re, to] of DEFAULT_PATTERNS) out = out.replace(re, to);
    for (const s of extra) {
      if (typeof s === 'string') {
        if (s.length >= 3) out = out.split(s).join('[redacted]');
      } else out = out.replace(new RegExp(s.source, s.flags.includes('g') ? s.flags : `${s.flags}g`), '[redacted]');
    }
    return out;
  };
}

/** Options of `mailer.enqueue`. */
export interface EnqueueOptions {
  organisation?: string;
  /** The same key (within an organisation) enqueues once. @default the message's `idempotencyKey` */
  idempotencyKey?: string;
  /** Not before this many ms from now. */
  delay?: number;
}

/** What `mailer.enqueue` answers. */
export interface EnqueueResult {
  /** The delivery id (queue job and delivery log record). */
  id: string;
  /** True when the idempotency key was already enqueued: nothing new was added. */
  duplicate: boolean;
  /** The Message-ID the delivery carries, when known. */
  messageId?: string;
}

/** Options of `mailer.startWorker`. */
export interface WorkerOptions {
  /** Messages sent at the same time. @default 4 */
  concurrency?: number;
  /** How long a taken message is reserved without news (ms); a dead worker's messages come back after it. @default 30_000 */
  lease?: number;
  /** How often an idle worker polls, for polling stores (ms). @default 250 */
  pollInterval?: number;
}

/** A running worker. */
export interface Worker {
  /** Stops taking messages and waits for the ones being sent. */
  stop(): Promise<void>;
}

const COMPOSITE = Symbol.for('mailvia.composite');

/** True for `failover`/`roundRobin` transports. */
export function isComposite(t: Transport): boolean {
  return (t as unknown as Record<symbol, unknown>)[COMPOSITE] === true;
}

/** The route named `name` inside a chain (the chain itself when it has that name). */
export function findRoute(chain: Transport, name: string): Transport | undefined {
  if (chain.name === name) return chain;
  if (!isComposite(chain)) return undefined;
  for (const r of (chain as unknown as { routes: readonly Transport[] }).routes) {
    const hit = findRoute(r, name);
    if (hit) return hit;
  }
  return undefined;
}

/** What the engine needs of the mailer. */
export interface EngineHost {
  prepare(message: PreparedMessage): PreparedMessage;
  dispatch(
    message: PreparedMessage,
    options: { organisation?: string; route?: string; observer?: SendObserver; signal?: AbortSignal },
  ): Promise<Receipt>;
  readonly state: RouteStateStore;
  emitEvent(name: string, payload: unknown): void;
}

const firstLine = (s: string) => (s.split('\n')[0] ?? s).slice(0, 500);

/** The failure in one line: the cause a chain stopped on, or its last real attempt. */
function why(error: MailError): string {
  if (MailError.isInstance(error.cause)) return firstLine(error.cause.message);
  if (error instanceof DeliveryError) {
    const last = [...error.attempts].reverse().find((a) => !a.ok && !a.skipped && a.error);
    if (last) return firstLine(`${last.route}: ${last.error}`);
  }
  return firstLine(error.message);
}

function toMailError(err: unknown): MailError {
  return MailError.isInstance(err)
    ? err
    : new MailError(err instanceof Error ? err.message : String(err), {
        kind: 'unavailable',
        phase: 'connect',
        cause: err,
      });
}

/**
 * The delivery engine behind `mailer.enqueue`, `mailer.startWorker`, `mailer.resend` and the
 * delivery log of `mailer.send`: every decision about a queued message is made here.
 */
export class DeliveryEngine {
  private readonly redactor: (text: string) => string;
  private readonly workers = new Set<Worker>();

  constructor(
    private readonly host: EngineHost,
    readonly stores: { queue?: QueueStore; log?: DeliveryLog; suppression?: SuppressionList },
    private readonly policy: DeliveryOptions = {},
    private readonly logOptions: DeliveryLogOptions = {},
  ) {
    this.redactor = makeRedactor(logOptions.redact);
  }

  // ------------------------------------------------------------------------------------------
  // records

  private content(m: PreparedMessage): LoggedContent | undefined {
    if (!(this.logOptions.keepContent && this.logOptions.keepContent > 0)) return undefined;
    return {
      ...(m.text !== undefined ? { text: this.redactor(m.text) } : {}),
      ...(m.html !== undefined ? { html: this.redactor(m.html) } : {}),
      attachments: m.attachments.map((a) => ({
        ...(a.filename !== undefined ? { filename: a.filename } : {}),
        ...(a.contentType !== undefined ? { contentType: a.contentType } : {}),
        ...(a.content !== undefined
          ? {
              size:
                typeof a.content === 'string'
                  ? Buffer.byteLength(a.content, a.encoding ?? 'utf8')
                  : a.content.byteLength,
            }
          : {}),
      })),
    };
  }

  private newRecord(
    id: string,
    m: PreparedMessage,
    via: 'send' | 'queue',
    organisation: string | undefined,
    idempotencyKey: string | undefined,
  ): DeliveryRecord {
    const now = Date.now();
    const content = this.content(m);
    return {
      id,
      messageId: m.messageId,
      via,
      status: via === 'queue' ? 'queued' : 'sending',
      from: m.envelope.from,
      recipients: m.envelope.to.map((a) => a.toLowerCase()),
      subject: this.redactor(m.subject),
      tags: [...m.tags],
      attempts: 0,
      unknown: false,
      createdAt: now,
      updatedAt: now,
      ...(organisation !== undefined ? { organisation } : {}),
      ...(idempotencyKey !== undefined ? { idempotencyKey } : {}),
      ...(content ? { content } : {}),
    };
  }

  /**
   * An observer that writes each attempt to the log: in flight before the call, then its end.
   * `carried`, a record the queued job carried, is written with the first attempt when the log
   * has none yet.
   */
  private tracker(
    deliveryId: string,
    organisation: string | undefined,
    gate?: () => Promise<void>,
    carried?: DeliveryRecord,
  ) {
    const log = this.stores.log;
    const current = new Map<string, AttemptRecord>();
    const writes: Promise<unknown>[] = [];
    const succeeded: AttemptRecord[] = [];
    let last: string | undefined;
    const observer: SendObserver = {
      beforeAttempt: async (route) => {
        if (!log) {
          await gate?.();
          last = route;
          return;
        }
        const a: AttemptRecord = {
          id: randomUUID(),
          deliveryId,
          route,
          status: 'in-flight',
          startedAt: Date.now(),
          ...(organisation !== undefined ? { organisation } : {}),
        };
        current.set(route, a);
        // written while the suppression list is read: in flight before the call either way
        const written = Promise.resolve(carried ? log.putAttempt(a, carried) : log.putAttempt(a));
        carried = undefined;
        written.catch(() => {});
        try {
          await gate?.();
        } catch (e) {
          // no call is made: the attempt ends here, not in flight
          current.delete(route);
          await written.catch(() => {});
          await log.putAttempt({
            ...a,
            status: 'skipped',
            endedAt: Date.now(),
            error: firstLine(this.redactor(e instanceof Error ? e.message : String(e))),
          });
          throw e;
        }
        last = route;
        await written;
      },
      attempt: (a: Attempt) => {
        if (!log) return;
        const begun = current.get(a.route);
        current.delete(a.route);
        const rec: AttemptRecord = {
          id: begun?.id ?? randomUUID(),
          deliveryId,
          route: a.route,
          status: a.ok ? 'ok' : a.skipped ? 'skipped' : a.kind === 'unknown' ? 'unknown' : 'failed',
          startedAt: begun?.startedAt ?? a.startedAt,
          endedAt: a.startedAt + a.durationMs,
          ...(organisation !== undefined ? { organisation } : {}),
          ...(a.kind !== undefined ? { kind: a.kind } : {}),
          ...(a.phase !== undefined ? { phase: a.phase } : {}),
          ...(a.code !== undefined ? { code: a.code } : {}),
          ...(a.error !== undefined ? { error: firstLine(this.redactor(a.error)) } : {}),
        };
        // the successful attempt is written by settle(), with the receipt's details
        if (a.ok) succeeded.push(rec);
        else writes.push(Promise.resolve(log.putAttempt(rec)));
      },
    };
    return {
      observer,
      get lastRoute() {
        return last;
      },
      /** Ends attempts the chain did not report (a receipt's details) and waits for the writes. */
      async settle(receipt?: Receipt): Promise<void> {
        if (log && receipt) for (const a of this.endings(receipt)) writes.push(Promise.resolve(log.putAttempt(a)));
        await Promise.all(writes);
      },
      /** A successful send's ending attempts, with the receipt's details (written by `settle` or `sent`). */
      endings(receipt: Receipt): AttemptRecord[] {
        const out = [...succeeded, ...current.values()].map(
          (a): AttemptRecord => ({
            ...a,
            status: 'ok',
            endedAt: a.endedAt ?? Date.now(),
            ...(receipt.providerMessageId !== undefined ? { providerMessageId: receipt.providerMessageId } : {}),
            ...(receipt.response !== undefined ? { response: firstLine(receipt.response) } : {}),
          }),
        );
        succeeded.length = 0;
        current.clear();
        return out;
      },
      /**
       * Writes a successful send's outcome: its ending attempts and the record's changes, in one
       * step where the log has `finish`, else its attempts and an update in one turn (one SQLite
       * commit). False when the log has no record to change.
       */
      async sent(receipt: Receipt, patch: Partial<DeliveryRecord>): Promise<boolean> {
        if (!log) return true;
        if (log.finish) {
          const [found] = await Promise.all([log.finish(deliveryId, this.endings(receipt), patch), this.settle()]);
          return found;
        }
        const [, found] = await Promise.all([this.settle(receipt), log.update(deliveryId, patch)]);
        return found;
      },
    };
  }

  // ------------------------------------------------------------------------------------------
  // suppression

  private async filterSuppressed(
    organisation: string | undefined,
    message: PreparedMessage,
  ): Promise<{ message: PreparedMessage; dropped: string[] }> {
    const list = this.stores.suppression;
    if (!list) return { message, dropped: [] };
    const org = organisation ?? '';
    const hits = await Promise.all(message.envelope.to.map((a) => list.has(org, a)));
    const dropped = message.envelope.to.filter((_a, i) => hits[i] !== undefined);
    if (dropped.length === 0) return { message, dropped };
    const keep = message.envelope.to.filter((_a, i) => hits[i] === undefined);
    return { message: { ...message, envelope: { ...message.envelope, to: keep } }, dropped };
  }

  private async suppress(organisation: string | undefined, error: MailError, deliveryId: string): Promise<void> {
    const list = this.stores.suppression;
    if (!list || this.policy.suppressRefused === false || error.kind !== 'refused' || error.phase === 'validate')
      return;
    if (error.status !== undefined && error.status < 500) return;
    await Promise.all(
      error.recipients.map((address) =>
        list.add({
          organisation: organisation ?? '',
          address: address.toLowerCase(),
          reason: why(error),
          source: 'refused',
          createdAt: Date.now(),
          deliveryId,
          ...(error.code !== undefined ? { code: error.code } : {}),
        }),
      ),
    );
  }

  private suppressedError(dropped: string[]): MailError {
    return new MailError(`every recipient is on the suppression list (${dropped.join(', ')})`, {
      kind: 'refused',
      phase: 'validate',
      code: 'ESUPPRESSED',
      recipients: dropped,
    });
  }

  // ------------------------------------------------------------------------------------------
  // send now

  /**
   * `mailer.send`: suppression, then the chain, logged when the mailer has a delivery log. With
   * a log and an idempotency key, the key is claimed in the log first: a key already sent (or
   * being sent) answers the first send's receipt, and nothing is sent again.
   */
  async sendNow(
    prepared: PreparedMessage,
    options: { organisation?: string; route?: string; signal?: AbortSignal; idempotencyKey?: string },
  ): Promise<Receipt> {
    const { log } = this.stores;
    const { organisation, idempotencyKey: optionKey, ...rest } = options;
    const key = optionKey ?? prepared.idempotencyKey;
    const keyed =
      key !== undefined && key !== prepared.idempotencyKey ? { ...prepared, idempotencyKey: key } : prepared;
    const { message, dropped } = await this.filterSuppressed(organisation, keyed);
    if (dropped.length)
      this.host.emitEvent('suppressed', { organisation, messageId: prepared.messageId, recipients: dropped });
    const dispatchOptions = { ...rest, ...(organisation !== undefined ? { organisation } : {}) };
    if (!log) {
      if (message.envelope.to.length === 0) throw this.suppressedError(dropped);
      return this.host.dispatch(message, dispatchOptions);
    }
    const id = randomUUID();
    const record = this.newRecord(id, keyed, 'send', organisation, key);
    if (key === undefined) await log.put(record);
    else {
      const duplicate = await this.claimSend(log, record, options.signal);
      if (duplicate) return duplicate;
    }
    if (message.envelope.to.length === 0) {
      const error = this.suppressedError(dropped);
      await log.update(id, {
        status: 'failed',
        reason: error.message,
        kind: 'refused',
        code: 'ESUPPRESSED',
        updatedAt: Date.now(),
      });
      throw error;
    }
    const t = this.tracker(id, organisation);
    try {
      const receipt = await this.host.dispatch(message, { ...dispatchOptions, observer: t.observer });
      await t.sent(receipt, this.sentPatch(receipt, 1, false));
      return receipt;
    } catch (err) {
      await t.settle();
      const error = toMailError(err);
      await this.suppress(organisation, error, id);
      await log.update(id, {
        ...this.failurePatch(error, t.lastRoute),
        status: 'failed',
        attempts: 1,
        unknown: error.kind === 'unknown',
      });
      throw err;
    }
  }

  /**
   * Claims a direct send's idempotency key; undefined when this send holds it now. When another
   * send holds it: its receipt once it is sent (waiting while it is in flight), or an error when
   * its outcome is unknown or it stays in flight too long. A key whose send failed for certain is
   * taken over, so a send that failed can be tried again with its key.
   */
  private async claimSend(
    log: DeliveryLog,
    record: DeliveryRecord,
    signal?: AbortSignal,
  ): Promise<Receipt | undefined> {
    const deadline = Date.now() + (this.policy.duplicateWait ?? 60_000);
    for (let delay = 25; ; delay = Math.min(500, delay * 2)) {
      const claimed = await log.claim(record);
      if (claimed.created) return undefined;
      const first = await log.get(claimed.id);
      if (first?.status === 'sent') {
        const ok = [...first.history].reverse().find((a) => a.status === 'ok');
        this.host.emitEvent('duplicate', {
          organisation: record.organisation,
          id: first.id,
          messageId: first.messageId,
          idempotencyKey: record.idempotencyKey,
        });
        return {
          route: first.route ?? ok?.route ?? '',
          messageId: first.messageId,
          accepted: [...first.recipients],
          rejected: [],
          acceptedBy: first.acceptedBy ?? 'provider',
          attempts: [],
          duplicate: { deliveryId: first.id, ...(first.sentAt !== undefined ? { sentAt: first.sentAt } : {}) },
          ...(first.providerMessageId !== undefined ? { providerMessageId: first.providerMessageId } : {}),
          ...(ok?.response !== undefined ? { response: ok.response } : {}),
        };
      }
      if (first?.status === 'failed' && first.unknown) {
        throw new MailError(
          `the send with idempotency key ${JSON.stringify(record.idempotencyKey)} (delivery ${first.id}) has an unknown outcome: the route may have taken it, so it is not sent again; check the delivery log, or send with a new key`,
          { kind: 'unknown', phase: 'validate', code: 'EDUPLICATE' },
        );
      }
      // in flight elsewhere (or failed a moment ago: the next claim takes the key over)
      if (signal?.aborted || Date.now() + delay > deadline) {
        throw new MailError(
          `the send with idempotency key ${JSON.stringify(record.idempotencyKey)} (delivery ${claimed.id}) is still in flight (or its process stopped during it): its outcome is unknown, so it is not sent again`,
          { kind: 'unknown', phase: 'validate', code: 'EDUPLICATE' },
        );
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  private sentPatch(receipt: Receipt, attempts: number, unknown: boolean): Partial<DeliveryRecord> {
    const now = Date.now();
    return {
      status: 'sent',
      route: receipt.route,
      attempts,
      unknown,
      sentAt: now,
      updatedAt: now,
      providerMessageId: receipt.providerMessageId,
      acceptedBy: receipt.acceptedBy,
      nextAttemptAt: undefined,
      reason: undefined,
      kind: undefined,
      phase: undefined,
      code: undefined,
    };
  }

  private failurePatch(error: MailError, route: string | undefined): Partial<DeliveryRecord> {
    return {
      kind: error.kind,
      phase: error.phase,
      code: error.code,
      reason: this.redactor(why(error)),
      updatedAt: Date.now(),
      ...(route !== undefined ? { route } : {}),
    };
  }

  // ------------------------------------------------------------------------------------------
  // queue

  private queue(): QueueStore {
    const q = this.stores.queue;
    if (!q)
      throw new RouteConfigError(
        'queue',
        'the mailer has no queue: pass the stores of sqliteStores({ path }), memoryStores() or @mailvia/redis to createMailer',
      );
    return q;
  }

  /** `mailer.enqueue`. */
  async enqueue(prepared: PreparedMessage, options: EnqueueOptions): Promise<EnqueueResult> {
    const queue = this.queue();
    const { organisation } = options;
    const key = options.idempotencyKey ?? prepared.idempotencyKey;
    const message =
      key !== undefined && key !== prepared.idempotencyKey ? { ...prepared, idempotencyKey: key } : prepared;
    const id = randomUUID();
    const log = this.stores.log;
    // a queue this log reads carries the record in its job: the enqueue is one write
    const carried = log !== undefined && queue.recordLog === log;
    const add = queue.add({
      id,
      message,
      ...(organisation !== undefined ? { organisation } : {}),
      ...(key !== undefined ? { idempotencyKey: key } : {}),
      ...(options.delay !== undefined && options.delay > 0 ? { runAt: Date.now() + options.delay } : {}),
      ...(carried ? { record: this.newRecord(id, message, 'queue', organisation, key) } : {}),
    });
    if (key === undefined && log && !carried) {
      // no key, no duplicate: the job and its record go together (one commit in SQLite, one round trip in Redis)
      const [added] = await Promise.allSettled([add, log.put(this.newRecord(id, message, 'queue', organisation, key))]);
      if (added.status === 'rejected') {
        await Promise.resolve(
          log.update(id, { status: 'failed', reason: 'the queue did not take it', updatedAt: Date.now() }),
        ).catch(() => {});
        throw added.reason;
      }
      this.host.emitEvent('queued', { organisation, id, messageId: message.messageId, duplicate: false });
      return { id, duplicate: false, messageId: message.messageId };
    }
    const r = await add;
    if (r.created) {
      if (!carried) await log?.put(this.newRecord(r.id, message, 'queue', organisation, key));
      this.host.emitEvent('queued', { organisation, id: r.id, messageId: message.messageId, duplicate: false });
      return { id: r.id, duplicate: false, messageId: message.messageId };
    }
    const known = (await this.stores.log?.get(r.id))?.messageId ?? (await queue.get(r.id))?.message?.messageId;
    this.host.emitEvent('queued', { organisation, id: r.id, messageId: known, duplicate: true });
    return { id: r.id, duplicate: true, ...(known !== undefined ? { messageId: known } : {}) };
  }

  /** `mailer.startWorker`. */
  startWorker(options: WorkerOptions = {}): Worker {
    const queue = this.queue();
    const consumer = queue.process((job) => this.handle(job), options);
    const prune = setInterval(() => void this.prune().catch(() => {}), 600_000);
    prune.unref?.();
    const worker: Worker = {
      stop: async () => {
        clearInterval(prune);
        this.workers.delete(worker);
        await consumer.stop();
      },
    };
    this.workers.add(worker);
    return worker;
  }

  /** Applies the log's retention. */
  async prune(): Promise<number> {
    const log = this.stores.log;
    if (!log) return 0;
    const now = Date.now();
    return log.prune({
      recordsBefore: now - (this.logOptions.retention ?? 30 * 86_400_000),
      contentBefore: now - (this.logOptions.keepContent ?? 0),
    });
  }

  /**
   * Updates a job's record; writes it whole when missing (a crash between the queue and the log,
   * or a record its job carries that no attempt has written yet).
   */
  private async patch(job: QueueJob, patch: Partial<DeliveryRecord>): Promise<void> {
    const log = this.stores.log;
    if (!log || (await log.update(job.id, patch))) return;
    await log.put(
      withPatch(
        job.record ?? this.newRecord(job.id, job.message, 'queue', job.organisation, job.idempotencyKey),
        patch,
      ),
    );
  }

  private backoff(attempts: number, floor = 0): number {
    const initial = this.policy.backoff?.initial ?? 5_000;
    const max = this.policy.backoff?.max ?? 3_600_000;
    const base = Math.min(max, initial * 2 ** Math.max(0, attempts - 1));
    return Math.max(floor, Math.round(base / 2 + (Math.random() * base) / 2));
  }

  /** Decides about one queued message: the worker's whole policy. */
  async handle(job: QueueJob): Promise<JobOutcome> {
    const { log } = this.stores;
    const { organisation } = job;
    // a job no consumer had before has no earlier attempt to recover: skip reading the log
    const fresh = job.taken === 1 && job.attempts === 0 && job.route === undefined;
    let details: DeliveryDetails | undefined = log && !fresh ? await log.get(job.id) : undefined;
    if (log && !fresh && !details) {
      const rec = job.record ?? this.newRecord(job.id, job.message, 'queue', organisation, job.idempotencyKey);
      await log.put(rec);
      details = { ...rec, history: [], events: [] };
    }
    // a worker that died after the send but before the queue heard of it
    if (details?.status === 'sent') return { status: 'sent' };
    const took = details?.history.find((a) => a.status === 'ok');
    if (log && took) {
      await log.update(job.id, {
        status: 'sent',
        route: took.route,
        sentAt: took.endedAt ?? Date.now(),
        updatedAt: Date.now(),
        ...(took.providerMessageId !== undefined ? { providerMessageId: took.providerMessageId } : {}),
      });
      return { status: 'sent' };
    }
    let attempts = job.attempts;
    let route = job.route;
    let unknown = details?.unknown ?? false;
    const maxAttempts = this.policy.maxAttempts ?? 8;
    const stale = details?.history.filter((a) => a.status === 'in-flight') ?? [];
    if (log && stale.length) {
      const now = Date.now();
      await Promise.all(
        stale.map((a) =>
          log.putAttempt({
            ...a,
            status: 'unknown',
            kind: 'unknown',
            error: 'the worker stopped during this attempt: the route may have taken the message',
            endedAt: now,
          }),
        ),
      );
      attempts++;
      route = stale.at(-1)!.route;
      unknown = true;
      this.host.emitEvent('unknown', { organisation, id: job.id, messageId: job.message.messageId, route });
      const why = `the outcome of an attempt on ${route} is unknown (its worker stopped during the call)`;
      if (this.policy.unknown === 'dead') return this.dead(job, attempts, unknown, `${why}; not retried (policy)`);
    }
    if (attempts >= maxAttempts)
      return this.dead(job, attempts, unknown, `${attempts} attempts made; the last one's outcome is unknown`);

    // the suppression list is read while the chain looks at its routes; the answer is awaited
    // before the first network call, and leaves suppressed recipients out of the envelope
    const message: PreparedMessage = {
      ...job.message,
      envelope: { ...job.message.envelope, to: [...job.message.envelope.to] },
    };
    const suppressed = this.stores.suppression ? this.filterSuppressed(organisation, job.message) : undefined;
    suppressed?.catch(() => {});
    let filtered = false;
    const gate = suppressed
      ? async () => {
          const r = await suppressed;
          if (!filtered && r.dropped.length) {
            filtered = true;
            message.envelope.to = r.message.envelope.to;
            this.host.emitEvent('suppressed', {
              organisation,
              messageId: job.message.messageId,
              recipients: r.dropped,
            });
          }
          if (message.envelope.to.length === 0) throw this.suppressedError(r.dropped);
        }
      : undefined;

    const t = this.tracker(job.id, organisation, gate, job.record);
    try {
      const receipt = await this.host.dispatch(message, {
        ...(organisation !== undefined ? { organisation } : {}),
        ...(route !== undefined ? { route } : {}),
        observer: t.observer,
      });
      const patch = this.sentPatch(receipt, attempts + 1, unknown);
      const queue = this.stores.queue;
      if (log && queue?.writesOutcomes && queue.recordLog === log) {
        // the queue writes the outcome, durably with the job's completion
        await t.settle();
        return { status: 'sent', outcome: { attempts: t.endings(receipt), patch } };
      }
      // a record missing (a crash between the queue and the log) is written whole
      if (!(await t.sent(receipt, patch))) await this.patch(job, patch);
      return { status: 'sent' };
    } catch (err) {
      await t.settle();
      return this.failed(job, toMailError(err), attempts, route, unknown, t.lastRoute);
    }
  }

  private async failed(
    job: QueueJob,
    error: MailError,
    attempts: number,
    route: string | undefined,
    unknown: boolean,
    lastRoute: string | undefined,
  ): Promise<JobOutcome> {
    const now = Date.now();
    const maxAttempts = this.policy.maxAttempts ?? 8;
    const list: readonly Attempt[] = error instanceof DeliveryError ? error.attempts : [];
    const networked = list.filter((a) => !a.skipped);
    if (error.code === 'ENOROUTE') return this.dead(job, attempts, unknown, firstLine(error.message), error, lastRoute);
    if (error.kind === 'refused') {
      await this.suppress(job.organisation, error, job.id);
      return this.dead(job, attempts + 1, unknown, `refused: ${why(error)}`, error, lastRoute);
    }
    if (error.kind === 'limited') {
      // every route is limited: wait for the earliest reset, without using up an attempt
      const wait = error.retryAfter ?? this.policy.limitedWait ?? 60_000;
      return this.retry(job, error, now + Math.max(250, wait), attempts, route, unknown, lastRoute);
    }
    if (list.length > 0 && networked.length === 0) {
      // every route rests: no network call was made; wait for the first rest to end, uncounted
      // (a rest that ended while another send's probe holds the route ends with that probe)
      const ends = await Promise.all(
        list.map(async (a) => {
          const s = await this.host.state.get(
            `${job.organisation === undefined ? '' : `${job.organisation}:`}${a.route}`,
          );
          return s && Math.max(s.until, s.probeUntil ?? 0);
        }),
      );
      const until = Math.min(...ends.filter((x): x is number => x !== undefined && x > now), now + 60_000);
      return this.retry(job, error, until + 50, attempts, route, unknown, lastRoute);
    }
    attempts++;
    if (error.kind === 'unknown') {
      const at = [...list].reverse().find((a) => a.kind === 'unknown')?.route ?? error.route ?? lastRoute;
      route = at ?? route;
      unknown = true;
      this.host.emitEvent('unknown', {
        organisation: job.organisation,
        id: job.id,
        messageId: job.message.messageId,
        route,
      });
      if (this.policy.unknown === 'dead')
        return this.dead(
          job,
          attempts,
          unknown,
          `the outcome on ${route} is unknown; not retried (policy)`,
          error,
          lastRoute,
        );
    }
    if (attempts >= maxAttempts)
      return this.dead(job, attempts, unknown, `gave up after ${attempts} attempts: ${why(error)}`, error, lastRoute);
    return this.retry(
      job,
      error,
      now + this.backoff(attempts, error.retryAfter ?? 0),
      attempts,
      route,
      unknown,
      lastRoute,
    );
  }

  private async retry(
    job: QueueJob,
    error: MailError,
    runAt: number,
    attempts: number,
    route: string | undefined,
    unknown: boolean,
    lastRoute: string | undefined,
  ): Promise<JobOutcome> {
    await this.patch(job, {
      ...this.failurePatch(error, lastRoute),
      status: 'queued',
      attempts,
      unknown,
      nextAttemptAt: runAt,
    });
    this.host.emitEvent('retrying', {
      organisation: job.organisation,
      id: job.id,
      messageId: job.message.messageId,
      attempts,
      runAt,
      error,
    });
    return { status: 'retry', runAt, attempts, ...(route !== undefined ? { route } : {}) };
  }

  private async dead(
    job: QueueJob,
    attempts: number,
    unknown: boolean,
    reason: string,
    error?: MailError,
    lastRoute?: string,
  ): Promise<JobOutcome> {
    await this.patch(job, {
      ...(error ? this.failurePatch(error, lastRoute) : { updatedAt: Date.now() }),
      status: 'dead',
      reason: this.redactor(reason),
      attempts,
      unknown,
      nextAttemptAt: undefined,
    });
    this.host.emitEvent('dead', {
      organisation: job.organisation,
      id: job.id,
      messageId: job.message.messageId,
      reason,
      ...(error ? { error } : {}),
    });
    return { status: 'dead', reason };
  }

  /**
   * `mailer.resend`: a dead delivery goes back to the queue under the same id, idempotency key
   * and Message-ID (two concurrent resends send once); a queued one is left as it is.
   */
  async resend(id: string): Promise<EnqueueResult> {
    const record = await this.stores.log?.get(id);
    if (record?.via === 'send') {
      // only the queue keeps a message whole: the log has at most redacted text, never
      // attachments, headers or the To/Cc split, and sending that would be another message
      throw new MailError(
        record.status === 'sent'
          ? `delivery ${id} was sent already; send the message again to send another copy`
          : `delivery ${id} was a direct send (mailer.send): its message is not stored (the delivery log keeps at most redacted text, never attachments or headers), so it cannot be sent again from the log; the caller got the error and may send it again, or use mailer.enqueue for mail that must be retried and resendable`,
        { kind: 'refused', phase: 'validate', code: record.status === 'sent' ? 'EALREADYSENT' : 'ERESENDUNAVAILABLE' },
      );
    }
    const queue = this.queue();
    let job = await queue.get(id);
    // the log says dead a moment before the queue applies it: wait for the queue to catch up
    for (let i = 0; i < 40 && job?.state === 'active' && (await this.stores.log?.get(id))?.status === 'dead'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      job = await queue.get(id);
    }
    if (!job) {
      throw new MailError(
        `delivery ${id} is not in the queue (a direct send, or pruned): only queued deliveries can be resent`,
        { kind: 'refused', phase: 'validate', code: 'ENOTFOUND' },
      );
    }
    if (job.state === 'sent') {
      throw new MailError(`delivery ${id} was sent already; enqueue the message again to send another copy`, {
        kind: 'refused',
        phase: 'validate',
        code: 'EALREADYSENT',
      });
    }
    const messageId = job.message?.messageId;
    if (job.state === 'dead' && (await queue.revive(id))) {
      await this.stores.log?.update(id, {
        status: 'queued',
        attempts: 0,
        nextAttemptAt: Date.now(),
        reason: undefined,
        updatedAt: Date.now(),
      });
      this.host.emitEvent('queued', { organisation: job.organisation, id, messageId, duplicate: false });
      return { id, duplicate: false, ...(messageId !== undefined ? { messageId } : {}) };
    }
    return { id, duplicate: true, ...(messageId !== undefined ? { messageId } : {}) };
  }

  /** Stops every worker. */
  async stop(): Promise<void> {
    await Promise.all([...this.workers].map((w) => w.stop()));
  }
}
