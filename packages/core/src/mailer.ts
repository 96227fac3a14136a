import { EventEmitter } from 'node:events';
import { createOutbox, type Outbox } from './capture.js';
import { failover, type RestPolicy } from './composite.js';
import {
  DeliveryEngine,
  type DeliveryLogOptions,
  type DeliveryOptions,
  type EnqueueOptions,
  type EnqueueResult,
  findRoute,
  isComposite,
  type Worker,
  type WorkerOptions,
} from './delivery.js';
import { type Attempt, type FailureKind, MailError, RouteConfigError } from './errors.js';
import { type Message, type PreparedMessage, prepareMessage, type ValidationOptions } from './message.js';
import { type QuotaEvent, type QuotaReading, readQuota } from './quota.js';
import { type RouteFactory, RouteRegistry, type RouteSpec } from './registry.js';
import { MemoryRouteState, type RouteStateStore } from './route-state.js';
import type { Receipt, SendObserver, Transport } from './spec.js';
import type { DeliveryLog, QueueStore, SuppressionList } from './stores/types.js';
import { deadline } from './util.js';

/** `production` sends; `development` captures every mail in the outbox and sends nothing. */
export type MailerMode = 'production' | 'development';

/** Options of {@link createMailer}. */
export interface MailerOptions {
  /**
   * The routes of an organisation, in fallback order: `(id) => ['smtp://…', 'capture://']`.
   * Called once per organisation, then cached until {@link Mailer.invalidate}.
   */
  organisations?: (organisation: string) => RouteSpec | undefined | null | Promise<RouteSpec | undefined | null>;
  /** The routes used when a send names no organisation. */
  routes?: RouteSpec;
  /** @default 'production' — development must be asked for, so a forgotten setting never swallows mail. */
  mode?: MailerMode;
  /** Route factories of route packages (core's `smtp` and `capture` are always there). */
  factories?: readonly RouteFactory[];
  /** The outbox of `capture` routes and of development mode. @default an in-memory outbox */
  outbox?: Outbox;
  /** Where resting routes are remembered. @default in memory */
  state?: RouteStateStore;
  /** Message validation limits. */
  validation?: ValidationOptions;
  /** How long a whole send may take, across every route tried. @default 60_000 */
  timeout?: number;
  /** How long failing routes rest, per kind. */
  rest?: RestPolicy;
  /** Built chains kept open: at most `maxOrganisations`, each closed after `idleTimeout` ms unused. */
  cache?: { maxOrganisations?: number; idleTimeout?: number };
  /** Where enqueued mail waits (`sqliteStores()`, `memoryStores()`, `@mailvia/redis`); needed by `enqueue`. */
  queue?: QueueStore;
  /** Where every message and attempt is recorded (sends too). */
  log?: DeliveryLog | undefined;
  /** Recipients not to send to, per organisation, checked before every send. */
  suppression?: SuppressionList | undefined;
  /** Retries, back-off and the policy for unknown outcomes of enqueued mail. */
  delivery?: DeliveryOptions;
  /** Retention and redaction of the delivery log. */
  logging?: DeliveryLogOptions;
  /** Closes the stores on `close()` (the `close` of `sqliteStores()` and friends). */
  close?: () => Promise<void>;
}

/** Options of one send. */
export interface MailerSendOptions {
  organisation?: string;
  signal?: AbortSignal;
  /**
   * Sends on this route of the chain only, by name (resting and quota still apply): to retry an
   * unknown outcome where the message may already have gone, never elsewhere.
   */
  route?: string;
  /**
   * With a delivery log, the same key (per organisation) sends once: a second send answers the
   * first one's receipt (marked `duplicate`) without sending; concurrent sends with one key send
   * once. Without a delivery log nothing remembers keys, so `send` cannot de-duplicate (use
   * `enqueue`, whose queue keeps them). @default the message's `idempotencyKey`
   */
  idempotencyKey?: string;
}

/** The events of a {@link Mailer}. */
export interface MailerEvents {
  attempt: [{ organisation?: string; messageId: string; attempt: Attempt }];
  sent: [{ organisation?: string; receipt: Receipt }];
  failed: [{ organisation?: string; messageId: string; error: MailError }];
  'fell-over': [{ organisation?: string; messageId: string; failed: Attempt[]; route: string }];
  'route-rested': [
    {
      organisation?: string;
      route: string;
      until: number;
      kind: FailureKind;
      reason: string;
      /** The provider's raw code (e.g. `535 5.7.8`, `invalid_grant`). */
      code?: string;
      /** The classification row that decided the kind. */
      rule?: string;
    },
  ];
  /** A message entered the queue (`duplicate`: its idempotency key was there already). */
  queued: [{ organisation?: string; id: string; messageId?: string; duplicate: boolean }];
  /** A queued message failed for now and will be tried again at `runAt`. */
  retrying: [
    { organisation?: string; id: string; messageId: string; attempts: number; runAt: number; error: MailError },
  ];
  /** A queued message went to the dead-letter state. */
  dead: [{ organisation?: string; id: string; messageId: string; reason: string; error?: MailError }];
  /** An attempt's outcome is unknown: the route may have taken the message. */
  unknown: [{ organisation?: string; id: string; messageId: string; route?: string }];
  /** A send's idempotency key was sent already: nothing was sent; `id` is the first send's delivery. */
  duplicate: [{ organisation?: string; id: string; messageId: string; idempotencyKey?: string }];
  /** Recipients on the suppression list were left out of a send. */
  suppressed: [{ organisation?: string; messageId: string; recipients: string[] }];
  /** A route's quota crossed its warning threshold (default 80%). */
  'quota-warning': [QuotaEvent & { organisation?: string }];
  /** A route's quota is used up: the route is skipped until `resetAt`. */
  'quota-exhausted': [QuotaEvent & { organisation?: string }];
}

/** One route of an organisation's chain as {@link Mailer.routeHealth} reads it: live, from the route state store. */
export interface RouteStatus {
  /** The route's name (never a secret). */
  name: string;
  /** Where it sits in the chain: `[1, 0]` is the first route of the second member; `[]` for a lone route. */
  position: number[];
  /** Set while the route rests (skipped without a network call until `until`, epoch ms). */
  resting?: { until: number; kind: FailureKind; reason: string };
  /** The kind of the last failure that rested it (kept after the rest ended, while the store keeps it). */
  lastFailureKind?: FailureKind;
  /** Each window of the route's quota now: limit, used, left, reset time. Absent without a quota. */
  quota?: QuotaReading[];
  /** True when a quota window is used up: the route is skipped until that window's `resetAt`. */
  exhausted: boolean;
}

interface CachedChain {
  transport: Promise<Transport>;
  lastUsed: number;
}

const DEFAULT_ORG = '\u0000default';

/** The one object the application holds. */
export class Mailer extends EventEmitter<MailerEvents> {
  readonly mode: MailerMode;
  readonly outbox: Outbox;
  readonly registry: RouteRegistry;
  readonly state: RouteStateStore;
  /** The queue of `enqueue`, when configured. */
  readonly queue: QueueStore | undefined;
  /** The delivery log, when configured. */
  readonly log: DeliveryLog | undefined;
  /** The suppression list, when configured. */
  readonly suppression: SuppressionList | undefined;
  private readonly engine: DeliveryEngine;
  private readonly chains = new Map<string, CachedChain>();
  private readonly sweeper: NodeJS.Timeout | undefined;
  private readonly maxChains: number;
  private readonly idleTimeout: number;
  private closed = false;

  constructor(private readonly options: MailerOptions = {}) {
    super();
    this.mode = options.mode ?? 'production';
    if (this.mode !== 'production' && this.mode !== 'development') {
      throw new RouteConfigError('mode', `${JSON.stringify(this.mode)} is neither production nor development`);
    }
    this.outbox = options.outbox ?? createOutbox();
    this.registry = new RouteRegistry(options.factories ?? []);
    this.state = options.state ?? new MemoryRouteState();
    this.queue = options.queue;
    this.log = options.log;
    this.suppression = options.suppression;
    this.engine = new DeliveryEngine(
      {
        prepare: (m) => this.prepare(m),
        dispatch: (m, o) => this.dispatch(m, o),
        state: this.state,
        emitEvent: (name, payload) => (this.emit as (n: string, p: unknown) => boolean)(name, payload),
      },
      { queue: options.queue, log: options.log, suppression: options.suppression },
      options.delivery,
      options.logging,
    );
    this.maxChains = options.cache?.maxOrganisations ?? 256;
    this.idleTimeout = options.cache?.idleTimeout ?? 60_000;
    if (this.idleTimeout > 0 && Number.isFinite(this.idleTimeout)) {
      this.sweeper = setInterval(() => this.sweep(), Math.max(1000, this.idleTimeout / 2));
      this.sweeper.unref();
    }
  }

  /** Validates a message as {@link send} would, without sending. */
  prepare(message: Message | PreparedMessage): PreparedMessage {
    return prepareMessage(message, this.options.validation);
  }

  /**
   * Sends now, through the organisation's chain. Resolves with a receipt listing every attempt;
   * rejects with a {@link MailError} (a `DeliveryError` when a chain failed) whose kind says why.
   */
  async send(message: Message | PreparedMessage, options: MailerSendOptions = {}): Promise<Receipt> {
    if (this.closed)
      throw new MailError('the mailer is closed', { kind: 'unavailable', phase: 'validate', code: 'ECLOSED' });
    return this.engine.sendNow(this.prepare(message), options);
  }

  /**
   * Puts a validated message in the queue, durably, and resolves once it is stored; a worker
   * ({@link startWorker}, here or in another process) sends it through the organisation's chain,
   * with retries. The same idempotency key (per organisation) is enqueued once.
   */
  async enqueue(message: Message | PreparedMessage, options: EnqueueOptions = {}): Promise<EnqueueResult> {
    if (this.closed)
      throw new MailError('the mailer is closed', { kind: 'unavailable', phase: 'validate', code: 'ECLOSED' });
    return this.engine.enqueue(this.prepare(message), options);
  }

  /** Starts sending queued mail in this process. Several workers (and processes) may share a queue. */
  startWorker(options: WorkerOptions = {}): Worker {
    return this.engine.startWorker(options);
  }

  /**
   * Sends a dead delivery again (same id, idempotency key and Message-ID); a queued one is left as is.
   * Only enqueued deliveries can be resent: the queue keeps their message whole. A failed direct
   * `send` is refused with code `ERESENDUNAVAILABLE` (its message was never stored; the caller
   * got the error), a sent one with `EALREADYSENT`, one not in the queue with `ENOTFOUND`.
   */
  resend(id: string): Promise<EnqueueResult> {
    return this.engine.resend(id);
  }

  /**
   * The routes of an organisation's chain (the default routes without one), as they stand now:
   * resting state and quota usage, read from the route state store (shared by every instance
   * with Redis), not from past events. Nothing is counted or sent; no route is verified.
   */
  async routeHealth(organisation?: string): Promise<RouteStatus[]> {
    const chain = await this.transportFor(organisation);
    const prefix = organisation === undefined ? '' : `${organisation}:`;
    const now = Date.now();
    const leaves = (t: Transport, position: number[]): { route: Transport; position: number[] }[] =>
      isComposite(t)
        ? (t as unknown as { routes: readonly Transport[] }).routes.flatMap((r, i) => leaves(r, [...position, i]))
        : [{ route: t, position }];
    return Promise.all(
      leaves(chain, []).map(async ({ route, position }) => {
        const [rest, quota] = await Promise.all([this.state.get(`${prefix}${route.name}`), readQuota(route, now)]);
        return {
          name: route.name,
          position,
          ...(rest && rest.until > now ? { resting: { until: rest.until, kind: rest.kind, reason: rest.reason } } : {}),
          ...(rest ? { lastFailureKind: rest.kind } : {}),
          ...(quota ? { quota } : {}),
          exhausted: quota?.some((q) => q.exhausted) ?? false,
        };
      }),
    );
  }

  /** Applies the delivery log's retention now (workers do it every 10 minutes). */
  pruneLog(): Promise<number> {
    return this.engine.prune();
  }

  /** Sends a validated message through the chain (or one named route of it), with events. */
  private async dispatch(
    prepared: PreparedMessage,
    options: MailerSendOptions & { observer?: SendObserver },
  ): Promise<Receipt> {
    const { organisation } = options;
    const limit = deadline(options.signal, this.options.timeout ?? 60_000);
    const { signal } = limit;
    try {
      let transport = await this.transportFor(organisation);
      if (options.route !== undefined) {
        const leaf = findRoute(transport, options.route);
        if (!leaf)
          throw new MailError(`the chain of this organisation has no route named ${JSON.stringify(options.route)}`, {
            kind: 'misconfigured',
            phase: 'validate',
            code: 'ENOROUTE',
          });
        transport = leaf;
      }
      if (!isComposite(transport) && options.observer?.beforeAttempt) {
        // one route alone: a composite around it records, rests and skips it like any chain's route
        transport = failover([transport], {
          state: this.state,
          stateKey: organisation === undefined ? '' : `${organisation}:`,
          ...(this.options.rest ? { rest: this.options.rest } : {}),
        });
      }
      const extra = options.observer;
      const receipt = await transport.send(prepared, {
        ...(signal ? { signal } : {}),
        ...(organisation !== undefined ? { organisation } : {}),
        observer: {
          attempt: (attempt) => {
            extra?.attempt?.(attempt);
            this.emit('attempt', { organisation, messageId: prepared.messageId, attempt });
          },
          rested: (route, until, error) => {
            extra?.rested?.(route, until, error);
            this.emit('route-rested', {
              organisation,
              route,
              until,
              kind: error.kind,
              reason: error.message,
              ...(error.code !== undefined ? { code: error.code } : {}),
              ...(error.rule !== undefined ? { rule: error.rule } : {}),
            });
          },
          ...(extra?.beforeAttempt ? { beforeAttempt: extra.beforeAttempt } : {}),
          quota: (event) => {
            extra?.quota?.(event);
            this.emit(event.type === 'warning' ? 'quota-warning' : 'quota-exhausted', { ...event, organisation });
          },
        },
      });
      if (receipt.attempts.length === 0)
        receipt.attempts.push({ route: receipt.route, ok: true, startedAt: Date.now(), durationMs: 0 });
      const failed = receipt.attempts.filter((a) => !a.ok);
      if (failed.length)
        this.emit('fell-over', { organisation, messageId: prepared.messageId, failed, route: receipt.route });
      this.emit('sent', { organisation, receipt });
      return receipt;
    } catch (err) {
      const error = MailError.isInstance(err)
        ? err
        : new MailError(err instanceof Error ? err.message : String(err), {
            kind: 'unavailable',
            phase: 'connect',
            cause: err,
          });
      this.emit('failed', { organisation, messageId: prepared.messageId, error });
      throw error;
    } finally {
      limit.clear();
    }
  }

  /** The (cached) chain of an organisation. */
  transportFor(organisation?: string): Promise<Transport> {
    const key = organisation ?? DEFAULT_ORG;
    const hit = this.chains.get(key);
    if (hit) {
      hit.lastUsed = Date.now();
      this.chains.delete(key);
      this.chains.set(key, hit);
      return hit.transport;
    }
    const transport = this.build(organisation);
    this.chains.set(key, { transport, lastUsed: Date.now() });
    transport.catch(() => this.chains.delete(key));
    while (this.chains.size > this.maxChains) {
      const oldest = this.chains.keys().next().value as string;
      this.evict(oldest);
    }
    return transport;
  }

  private async build(organisation: string | undefined): Promise<Transport> {
    const context = {
      outbox: this.outbox,
      state: this.state,
      stateKey: organisation === undefined ? '' : `${organisation}:`,
    };
    const rest = this.options.rest ? { rest: this.options.rest } : {};
    if (this.mode === 'development') return this.registry.build({ type: 'capture' }, context);
    let spec: RouteSpec | undefined | null;
    if (organisation === undefined) {
      spec = this.options.routes;
      if (spec === undefined)
        throw new RouteConfigError(
          'organisation',
          'the send names no organisation and the mailer has no default routes',
        );
    } else {
      if (!this.options.organisations) {
        throw new RouteConfigError(
          'organisations',
          `the mailer has no organisation resolver (asked for ${JSON.stringify(organisation)})`,
        );
      }
      spec = await this.options.organisations(organisation);
      if (spec === undefined || spec === null || (Array.isArray(spec) && spec.length === 0)) {
        throw new RouteConfigError('organisation', `no routes for organisation ${JSON.stringify(organisation)}`);
      }
    }
    return this.registry.build(spec, context, rest);
  }

  /** Forgets an organisation's chain (its routes changed); open connections are closed. */
  async invalidate(organisation?: string): Promise<void> {
    await this.evict(organisation ?? DEFAULT_ORG);
  }

  /** How many organisations have a built chain now. */
  get cachedOrganisations(): number {
    return this.chains.size;
  }

  private async evict(key: string): Promise<void> {
    const hit = this.chains.get(key);
    if (!hit) return;
    this.chains.delete(key);
    try {
      await (await hit.transport).close?.();
    } catch {
      // a chain that failed to build has nothing to close
    }
  }

  private sweep(): void {
    const limit = Date.now() - this.idleTimeout;
    for (const [key, c] of this.chains) if (c.lastUsed < limit) void this.evict(key);
  }

  /** Closes every chain. Sends after this are refused. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    await this.engine.stop();
    await Promise.all([...this.chains.keys()].map((k) => this.evict(k)));
    await this.options.close?.();
  }
}

/**
 * Creates the mailer.
 *
 * @example
 * ```ts
 * const mailer = createMailer({
 *   organisations: async (id) => (await db.org(id)).routes, // e.g. ['smtp://…', 'capture://']
 * });
 * await mailer.send({ from: 'school@example.org', to: 'parent@example.org', subject: 'Hi', text: '…' }, { organisation: 'school-a' });
 * ```
 */
export function createMailer(options: MailerOptions = {}): Mailer {
  return new Mailer(options);
}
