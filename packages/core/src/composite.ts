import { type Attempt, DeliveryError, type FailureKind, type FailurePhase, MailError } from './errors.js';
import type { PreparedMessage } from './message.js';
import { MemoryRouteState, type RestState, type RouteStateStore } from './route-state.js';
import { type Receipt, type SendObserver, type SendOptions, STOPPING_KINDS, type Transport } from './spec.js';
import { abortReason } from './util.js';

/** Phases in which a refusal is the server's answer (the route took the connection and spoke). */
const ANSWERED = new Set<FailurePhase>(['envelope', 'data', 'response']);

/** How long a failing route rests, per kind, in milliseconds. */
export interface RestPolicy {
  /** After `unavailable`; longer when the route said to retry later (`retryAfter`). @default 30_000 */
  unavailable?: number;
  /** After `limited` without a `retryAfter`. @default 60_000 */
  limited?: number;
  /** After a quota (`limited` with `quota`) without a `retryAfter`. @default 3_600_000 */
  quota?: number;
  /** After `misconfigured`: long, so a bad credential is not retried in a loop. @default 900_000 */
  misconfigured?: number;
}

/** Options of {@link failover} and {@link roundRobin}. */
export interface CompositeOptions {
  /** A name for logs. @default `failover(a b c)` */
  name?: string;
  /** Where resting routes are remembered. @default a store private to this composite */
  state?: RouteStateStore;
  /** Prefix of the keys in `state` (the organisation, so two organisations never share a rest). */
  stateKey?: string;
  rest?: RestPolicy;
  /** How long a probe holds a route after its rest. @default 10_000 */
  probeLease?: number;
}

const COMPOSITE = Symbol.for('mailvia.composite');

/** Calls the observer's `beforeAttempt`, as a promise (undefined without one); its failure is the caller's to await. */
function announce(observer: SendObserver | undefined, route: string): Promise<void> | undefined {
  if (!observer?.beforeAttempt) return undefined;
  let p: Promise<void>;
  try {
    p = Promise.resolve(observer.beforeAttempt(route));
  } catch (e) {
    p = Promise.reject(e);
  }
  p.catch(() => {});
  return p;
}

function isComposite(t: Transport): boolean {
  return (t as unknown as Record<symbol, unknown>)[COMPOSITE] === true;
}

class CompositeTransport implements Transport {
  readonly specificationVersion = 'v1' as const;
  readonly name: string;
  readonly [COMPOSITE] = true;
  private readonly state: RouteStateStore;
  private next = 0;

  constructor(
    readonly routes: readonly Transport[],
    private readonly rotate: boolean,
    private readonly options: CompositeOptions,
  ) {
    if (routes.length === 0) throw new TypeError(`${rotate ? 'roundRobin' : 'failover'}() needs at least one route`);
    this.name = options.name ?? `${rotate ? 'roundrobin' : 'failover'}(${routes.map((r) => r.name).join(' ')})`;
    this.state = options.state ?? new MemoryRouteState();
  }

  private key(route: Transport): string {
    return `${this.options.stateKey ?? ''}${route.name}`;
  }

  private restFor(error: MailError): number {
    const p = this.options.rest ?? {};
    switch (error.kind) {
      case 'limited':
        return error.retryAfter ?? (error.quota ? (p.quota ?? 3_600_000) : (p.limited ?? 60_000));
      case 'misconfigured':
        return p.misconfigured ?? 900_000;
      default:
        // a route that said when to come back is not probed before then
        return Math.max(p.unavailable ?? 30_000, error.retryAfter ?? 0);
    }
  }

  async send(message: PreparedMessage, options: SendOptions = {}): Promise<Receipt> {
    const { signal, observer } = options;
    const attempts: Attempt[] = [];
    const record = (a: Attempt) => {
      attempts.push(a);
      observer?.attempt?.(a);
    };
    const order = this.order();
    // when each route may take the message again, as far as known; `unhinted` once a route failed without saying
    const retryAt: number[] = [];
    let unhinted = false;
    let stop: MailError | undefined;
    for (const route of order) {
      if (signal?.aborted) {
        stop = new MailError(`${this.name}: ${abortReason(signal)}`, {
          kind: 'unavailable',
          phase: 'connect',
          route: this.name,
          code: 'EABORT',
        });
        break;
      }
      const composite = isComposite(route);
      const key = this.key(route);
      const now = Date.now();
      // the attempt is announced while the route's state is read: one round trip before the call, not two
      const before = composite ? undefined : announce(observer, route.name);
      let resting: RestState | undefined;
      try {
        resting = composite ? undefined : await this.state.get(key);
      } catch (err) {
        // an announced attempt ends here: the route was not tried
        const announced = before
          ? await before.then(
              () => true,
              () => false,
            )
          : false;
        if (announced)
          record({
            route: route.name,
            ok: false,
            kind: 'unavailable',
            phase: 'connect',
            error: `not tried: the route state could not be read (${err instanceof Error ? err.message : String(err)})`,
            startedAt: now,
            durationMs: 0,
          });
        throw err;
      }
      if (
        resting &&
        (resting.until > now || !(await this.state.claimProbe(key, now, this.options.probeLease ?? 10_000)))
      ) {
        // a failing hook fails the send as it is; a skip is reported after the announcement
        await before;
        retryAt.push(Math.max(resting.until, resting.probeUntil ?? 0));
        record({
          route: route.name,
          ok: false,
          kind: resting.kind,
          skipped: 'resting',
          error: `resting until ${new Date(resting.until).toISOString()}: ${resting.reason}`,
          startedAt: now,
          durationMs: 0,
        });
        continue;
      }
      // a failing hook (the delivery log is down) fails the send as it is: the route is not at fault
      await before;
      try {
        const receipt = await route.send(message, options);
        if (resting) await this.state.clear(key);
        if (composite) attempts.push(...receipt.attempts);
        else for (const a of receipt.attempts) record(a);
        return { ...receipt, attempts };
      } catch (err) {
        const error = MailError.isInstance(err)
          ? err
          : new MailError(`${route.name}: ${err instanceof Error ? err.message : String(err)}`, {
              kind: 'unavailable',
              phase: 'connect',
              route: route.name,
              cause: err,
            });
        if (error instanceof DeliveryError || (composite && 'attempts' in error)) {
          attempts.push(...(error as DeliveryError).attempts);
        } else {
          record({
            route: route.name,
            ok: false,
            kind: error.kind,
            phase: error.phase,
            ...(error.code !== undefined ? { code: error.code } : {}),
            error: error.message,
            startedAt: now,
            durationMs: Date.now() - now,
          });
        }
        // a probe the server answered by refusing this message: the route works again
        if (resting && error.kind === 'refused' && ANSWERED.has(error.phase)) await this.state.clear(key);
        if (STOPPING_KINDS.has(error.kind) || error.code === 'EABORT') {
          stop = error;
          break;
        }
        if (error.retryAfter !== undefined) retryAt.push(Date.now() + error.retryAfter);
        else unhinted = true;
        if (!composite) {
          const until = Date.now() + this.restFor(error);
          await this.state.rest(key, { until, kind: error.kind, reason: error.message });
          observer?.rested?.(route.name, until, error);
        }
      }
    }
    throw this.aggregate(message, attempts, stop, unhinted || retryAt.length === 0 ? undefined : Math.min(...retryAt));
  }

  private order(): readonly Transport[] {
    if (!this.rotate || this.routes.length === 1) return this.routes;
    const start = this.next;
    this.next = (this.next + 1) % this.routes.length;
    return [...this.routes.slice(start), ...this.routes.slice(0, start)];
  }

  private aggregate(
    message: PreparedMessage,
    attempts: Attempt[],
    stop: MailError | undefined,
    retryAt: number | undefined,
  ): DeliveryError {
    const failed = attempts.filter((a) => !a.ok);
    const kinds = new Set<FailureKind>(failed.map((a) => a.kind ?? 'unavailable'));
    let kind: FailureKind;
    if (stop) kind = stop.kind;
    else if (kinds.has('limited') && !kinds.has('unavailable')) kind = 'limited';
    else if (kinds.size === 1 && kinds.has('misconfigured')) kind = 'misconfigured';
    else kind = 'unavailable';
    // the earliest a route may take it, when every route said (or rests): no retry is worth making before
    const retryAfter = stop || retryAt === undefined ? undefined : Math.max(0, retryAt - Date.now());
    const lines = failed.map(
      (a) =>
        `  - ${a.route}: ${a.kind ?? 'failed'}${a.phase ? ` (${a.phase})` : ''}${a.skipped ? ' [skipped]' : ''}: ${a.error ?? ''}`,
    );
    const head = stop
      ? `${this.name} stopped on ${stop.kind === 'refused' ? 'a refusal' : stop.kind === 'unknown' ? 'an unknown outcome (not retried elsewhere, to avoid a duplicate)' : stop.message}`
      : `All ${this.routes.length} routes of ${this.name} failed`;
    return new DeliveryError(`${head} for ${message.messageId}:\n${lines.join('\n')}`, {
      kind,
      phase: stop?.phase ?? failed.at(-1)?.phase ?? 'connect',
      route: this.name,
      ...(stop?.code !== undefined ? { code: stop.code } : {}),
      ...(retryAfter !== undefined ? { retryAfter } : {}),
      quota: stop?.quota ?? false,
      recipients: [...(stop?.recipients ?? [])],
      attempts,
      ...(stop ? { cause: stop } : {}),
    });
  }

  async verify(options: { signal?: AbortSignal } = {}): Promise<void> {
    const errors: unknown[] = [];
    for (const r of this.routes) {
      try {
        await r.verify?.(options);
        return;
      } catch (e) {
        errors.push(e);
      }
    }
    throw errors[0];
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.routes.map((r) => r.close?.()));
  }
}

/**
 * Tries each route in order until one takes the message. Stops on `refused` (no route will take
 * it) and on `unknown` (the mail may already be out: never a second copy). A failing route rests
 * (skipped without a network call) for a time set by its failure kind; after the rest, one send
 * probes it. When every route fails, raises one {@link DeliveryError} listing every attempt.
 *
 * @example
 * ```ts
 * const chain = failover([smtp({ host: 'relay.local' }), roundRobin([sesA, sesB]), capture({ outbox })]);
 * ```
 */
export function failover(routes: readonly Transport[], options: CompositeOptions = {}): Transport {
  return new CompositeTransport(routes, false, options);
}

/** Like {@link failover}, but each send starts with the next route in turn (load spreading). */
export function roundRobin(routes: readonly Transport[], options: CompositeOptions = {}): Transport {
  return new CompositeTransport(routes, true, options);
}
