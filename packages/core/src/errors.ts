/**
 * What the engine should do about a failure — not what went wrong in provider terms.
 *
 * - `refused`: the message or a recipient is refused. No other route will take it: stop.
 * - `unavailable`: this route cannot serve now (connection refused, TLS, 421, a 5xx from the
 *   server). Take the next route and rest this one for a cool-down.
 * - `limited`: the route is rate-limited or out of quota (429, 4.7.x, Gmail's `550 5.4.5`). Skip it
 *   until `retryAfter`; it is not a bad key.
 * - `misconfigured`: bad password, revoked token, unverified sender. Take the next route, disable
 *   this credential, alert; never retry it in a loop.
 * - `unknown`: the outcome is unknown — the connection died after the body was sent. The provider
 *   may already have the mail: never fall over automatically.
 */
export type FailureKind = 'refused' | 'unavailable' | 'limited' | 'misconfigured' | 'unknown';

/** Every failure kind, in the order of the list above. */
export const FAILURE_KINDS: readonly FailureKind[] = ['refused', 'unavailable', 'limited', 'misconfigured', 'unknown'];

/**
 * Where in a send the failure happened.
 *
 * - `validate`: the message was refused at the door, before any route saw it.
 * - `connect`: reaching the route (DNS, TCP, proxy, TLS, greeting, EHLO).
 * - `auth`: authenticating.
 * - `envelope`: sender, recipients, or the DATA command (SMTP); building the request (HTTP).
 * - `data`: while the body was being sent, before it was complete.
 * - `data-sent`: the whole body was sent and no answer came — the outcome is unknown.
 * - `response`: the route answered the complete message with a failure.
 */
export type FailurePhase = 'validate' | 'connect' | 'auth' | 'envelope' | 'data' | 'data-sent' | 'response';

const MARKER = Symbol.for('mailvia.error');

/** Options of a {@link MailError}. */
export interface MailErrorOptions {
  kind: FailureKind;
  phase: FailurePhase;
  /** Name of the route that raised it. */
  route?: string;
  /** The provider's raw code: an SMTP reply (`550 5.1.1`), an HTTP status (`HTTP 429`), a system code (`ECONNREFUSED`). */
  code?: string;
  /** The SMTP reply code or HTTP status, when there was one. */
  status?: number;
  /** Milliseconds after which the route may be tried again (`limited` or `unavailable`), when the provider said. */
  retryAfter?: number;
  /** True when the limit is a quota (daily, monthly) rather than a rate. */
  quota?: boolean;
  /** Recipients this failure is about (a refused recipient). */
  recipients?: string[];
  /** The rule of the classification table that decided the kind. */
  rule?: string;
  cause?: unknown;
}

/**
 * The one error type every route raises. Its {@link MailError.kind} drives the engine; its
 * message says why in words a person can act on, and never carries a secret.
 */
export class MailError extends Error {
  readonly kind: FailureKind;
  readonly phase: FailurePhase;
  readonly route: string | undefined;
  readonly code: string | undefined;
  readonly status: number | undefined;
  readonly retryAfter: number | undefined;
  readonly quota: boolean;
  readonly recipients: readonly string[];
  readonly rule: string | undefined;
  /** When the error was raised (epoch ms), so `retryAfter` can be turned into a time. */
  readonly at: number;
  readonly [MARKER] = true;

  constructor(message: string, options: MailErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MailError';
    this.kind = options.kind;
    this.phase = options.phase;
    this.route = options.route;
    this.code = options.code;
    this.status = options.status;
    this.retryAfter = options.retryAfter;
    this.quota = options.quota ?? false;
    this.recipients = options.recipients ?? [];
    this.rule = options.rule;
    this.at = Date.now();
  }

  /** True for any MailError, even one from another copy of this package. */
  static isInstance(value: unknown): value is MailError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[MARKER] === true;
  }

  /** The serialisable facts of this error (for logs and the delivery log). */
  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      message: this.message,
      kind: this.kind,
      phase: this.phase,
      route: this.route,
      code: this.code,
      status: this.status,
      retryAfter: this.retryAfter,
      quota: this.quota || undefined,
      recipients: this.recipients.length ? this.recipients : undefined,
      rule: this.rule,
    };
  }
}

/** A message refused at the door: {@link MessageValidationError.field} names the field. */
export class MessageValidationError extends MailError {
  /** The path of the offending field, e.g. `to[1].address`, `headers.X-Tag`, `attachments[0].path`. */
  readonly field: string;
  constructor(field: string, problem: string) {
    super(`Invalid message: ${field}: ${problem}`, { kind: 'refused', phase: 'validate', code: 'EINVALID' });
    this.name = 'MessageValidationError';
    this.field = field;
  }
}

/**
 * A route description (object or URL) that cannot be turned into a route: kind `misconfigured`,
 * phase `validate`. Never echoes a secret.
 */
export class RouteConfigError extends MailError {
  /** The part of the description at fault, e.g. `port`, `scheme`, `query.proxy`. */
  readonly part: string;
  constructor(part: string, problem: string, where?: string) {
    super(`Invalid route${where ? ` ${where}` : ''}: ${part}: ${problem}`, {
      kind: 'misconfigured',
      phase: 'validate',
      code: 'EROUTECONFIG',
    });
    this.name = 'RouteConfigError';
    this.part = part;
  }
}

/** One attempt of a send on one route, as receipts and aggregate errors list them. */
export interface Attempt {
  /** The route's name. */
  route: string;
  /** True when this route took the message. */
  ok: boolean;
  /** The failure kind, when it failed. */
  kind?: FailureKind;
  /** The phase the failure happened in. */
  phase?: FailurePhase;
  /** The provider's raw code of the failure. */
  code?: string;
  /** Why it failed, in words. */
  error?: string;
  /** Set when the route was skipped without a network call because it is resting. */
  skipped?: 'resting';
  /** Epoch ms when the attempt started. */
  startedAt: number;
  /** How long the attempt took, in ms (0 for a skipped route). */
  durationMs: number;
}

/**
 * Raised by a composite route when no route took the message. Its kind sums up the attempts:
 * `refused` or `unknown` when the chain stopped on one, `limited` when every route is limited,
 * `misconfigured` when every route is, else `unavailable`. Unless it stopped, its `retryAfter` is
 * the wait until the earliest time a route may take the message again, set only when every route
 * that failed gave a `retryAfter` (a resting route counts with the end of its rest).
 */
export class DeliveryError extends MailError {
  readonly attempts: readonly Attempt[];
  constructor(message: string, options: MailErrorOptions & { attempts: Attempt[] }) {
    super(message, options);
    this.name = 'DeliveryError';
    this.attempts = options.attempts;
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), attempts: this.attempts };
  }
}
