/**
 * Shared pieces of the HTTP API routes (SendGrid, Mailgun, SES, the Gmail API…): how a route
 * learns whether its request was fully written, how it turns an HTTP failure into a classified
 * {@link MailError}, and the checks of an API base URL and of extra request headers. Provider
 * specifics (error bodies, the rows of the classification table) stay in each route package.
 *
 * ## Sent or not: the one fact that decides `unavailable` or `unknown`
 *
 * When an HTTP send fails without an answer, what the engine may do depends on whether the whole
 * request (head and body) had been written to the socket:
 *
 * - not written (refused connection, DNS, TLS, a cut before the body was out): the provider cannot
 *   have acted on it. Phase `connect`, kind `unavailable`: another route may send the mail.
 * - written, and then no answer (socket hang up, timeout, abort): the provider may have the mail.
 *   Phase `data-sent`, kind `unknown`: never fall over automatically.
 *
 * Node says it with the request's `'finish'` event (`ClientRequest.writableFinished`). A route that
 * makes its own `node:http` request reads that (or calls {@link trackRequest}). An SDK hides the
 * request, so a route:
 *
 * 1. gives the SDK agents wrapped by {@link trackingAgent} (or those of {@link routeAgents});
 * 2. runs the SDK call inside {@link withRequestProgress}, which hands it a {@link RequestProgress};
 * 3. on failure, passes `progress.sent` to {@link httpFailure} or {@link requestAborted}.
 *
 * The agent wrapper sees every request the SDK makes through it (`Agent.addRequest`), and the
 * progress travels with the call through `AsyncLocalStorage`, so concurrent sends on one agent
 * each see only their own request.
 *
 * @module
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { type Agent, type AgentOptions, type ClientRequest, Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { classify, type ErrorRule, failure, parseRetryAfter } from './classify.js';
import { type FailurePhase, MailError, RouteConfigError } from './errors.js';
import { abortReason, isLoopbackHost } from './util.js';

// --- request progress

/**
 * How far the HTTP request of one send got. Filled in while the send runs inside
 * {@link withRequestProgress}, by {@link trackingAgent} or {@link trackRequest}.
 */
export interface RequestProgress {
  /** A request was handed to the network (an agent, or `trackRequest`). False: the failure came before any request. */
  started: boolean;
  /** The request (head and body) was fully written to the socket: the provider may act on it. */
  sent: boolean;
}

const current = new AsyncLocalStorage<RequestProgress>();
const WRAPPED = Symbol.for('mailvia.trackingAgent');

/**
 * Runs `fn` with a fresh {@link RequestProgress}; requests made inside it through a
 * {@link trackingAgent} (or passed to {@link trackRequest}) report to it.
 *
 * @example
 * ```ts
 * await withRequestProgress(async (progress) => {
 *   try {
 *     return await sdk.send(command);
 *   } catch (err) {
 *     throw httpFailure({ route, sent: progress.sent, message: String(err), rules });
 *   }
 * });
 * ```
 */
export function withRequestProgress<T>(fn: (progress: RequestProgress) => Promise<T>): Promise<T> {
  const progress: RequestProgress = { started: false, sent: false };
  return current.run(progress, () => fn(progress));
}

/**
 * Reports `req` to a progress (by default the one of the enclosing {@link withRequestProgress}):
 * it has started, and is sent once it emits `'finish'` (head and body written). Does nothing
 * outside `withRequestProgress` without a `progress`.
 */
export function trackRequest(req: ClientRequest, progress: RequestProgress | undefined = current.getStore()): void {
  if (!progress) return;
  progress.started = true;
  if (req.writableFinished) progress.sent = true;
  else
    req.once('finish', () => {
      progress.sent = true;
    });
}

/** Options of {@link trackingAgent}. */
export interface TrackingAgentOptions {
  /**
   * The route made the agent, so closing the route may destroy it. False for an agent the
   * caller gave: the wrapper's `destroy()` leaves it alone.
   * @default false
   */
  owned?: boolean;
}

/**
 * Wraps an http(s) agent so that every request made through it inside
 * {@link withRequestProgress} reports when it was completely written. The agent itself is not
 * changed (a wrapper is a `Proxy` over it); wrapping a wrapper returns it as it is.
 */
export function trackingAgent<A extends Agent>(agent: A, options: TrackingAgentOptions = {}): A {
  if ((agent as unknown as Record<symbol, unknown>)[WRAPPED]) return agent;
  const owned = options.owned ?? false;
  const addRequest = (req: ClientRequest, requestOptions: unknown) => {
    trackRequest(req);
    return (agent as unknown as { addRequest(r: ClientRequest, o: unknown): void }).addRequest(req, requestOptions);
  };
  return new Proxy(agent, {
    get(target, prop) {
      if (prop === WRAPPED) return true;
      if (prop === 'addRequest') return addRequest;
      if (prop === 'destroy' && !owned) return () => {};
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** The agents of one HTTP route, both wrapped by {@link trackingAgent}. */
export interface RouteAgents {
  /** For `http:` URLs (loopback endpoints, tests). */
  http: Agent;
  /** For `https:` URLs. */
  https: Agent;
  /** The agent for a URL, by its scheme. */
  for(url: URL | string): Agent;
  /** Closes the route's own agents' sockets; a given agent is left alone. */
  destroy(): void;
}

/**
 * The agents an HTTP route sends through: the caller's `given` agent (for both schemes, e.g. a
 * SOCKS agent; never destroyed by the route) or keep-alive agents of the route's own, made with
 * `options`. Both are {@link trackingAgent}s.
 */
export function routeAgents(given?: Agent, options: AgentOptions = {}): RouteAgents {
  const owned = given === undefined;
  const http = trackingAgent(given ?? new HttpAgent({ keepAlive: true, ...options }), { owned });
  const https = trackingAgent(given ?? new HttpsAgent({ keepAlive: true, ...options }), { owned });
  return {
    http,
    https,
    for: (url) => (new URL(url).protocol === 'http:' ? http : https),
    destroy() {
      http.destroy();
      https.destroy();
    },
  };
}

// --- failures

/**
 * The headers of an HTTP answer, in any of the forms HTTP clients give them: a fetch `Headers`
 * (or anything with `get`, like axios's), or a plain object (`IncomingHttpHeaders`, the AWS SDK's
 * record) with names in any case.
 */
export type HttpHeaders = { get(name: string): unknown } | Readonly<Record<string, unknown>>;

/** One header of an answer, case-insensitively; the first value of a repeated one. */
export function headerValue(headers: HttpHeaders | undefined, name: string): string | undefined {
  if (!headers) return undefined;
  let v: unknown;
  if (typeof (headers as { get?: unknown }).get === 'function') v = (headers as { get(n: string): unknown }).get(name);
  else {
    const record = headers as Readonly<Record<string, unknown>>;
    const lower = name.toLowerCase();
    v = record[lower] ?? record[name] ?? Object.entries(record).find(([k]) => k.toLowerCase() === lower)?.[1];
  }
  if (Array.isArray(v)) v = v[0];
  return v === undefined || v === null ? undefined : String(v);
}

/** Everything an HTTP route knows about one failed request, for {@link httpFailure}. */
export interface HttpFailureReport {
  route: string;
  /** The human message; a secret in it must already have been removed (see `redact`). */
  message: string;
  /** The provider's rows, tried before core's. */
  rules?: readonly ErrorRule[];
  /** The HTTP status, when the server answered. */
  status?: number;
  /** The answer's headers: `Retry-After` and `X-RateLimit-Reset` are read from them. */
  headers?: HttpHeaders;
  /** The provider's words for the rules to match (its error message), free of secrets. */
  text?: string;
  /** Whether the whole request had been written when it failed (see {@link RequestProgress}). Ignored when `status` is set. */
  sent: boolean;
  /** A machine code: a system code (`ECONNREFUSED`), or the provider's error name or reason. */
  errorCode?: string;
  /**
   * Where it failed, when the route knows better than the default: `auth` for a token or
   * credentials request, `envelope` for a failure before any request was made.
   * @default 'response' with a status, else 'data-sent' when sent, else 'connect'
   */
  phase?: FailurePhase;
  /** A wait the provider stated another way (e.g. in the body), used when no header gives one. */
  retryAfter?: number;
  /** Recipients the failure is about. */
  recipients?: string[];
  cause?: unknown;
}

/**
 * Classifies a failed HTTP request and builds its {@link MailError}:
 *
 * - with a `status`: phase `response`, classified by status, `errorCode` and `text`
 *   (the provider's `rules` first);
 * - without one: phase `data-sent` when the request was `sent` (kind `unknown`: the provider may
 *   have the mail), else `connect` (classified by `errorCode`, e.g. `ECONNREFUSED` → `unavailable`).
 *
 * `retryAfter` comes from `Retry-After` (seconds or a date, on any answer), else, when the
 * failure is `limited`, from `X-RateLimit-Reset` (epoch seconds: the end of the window that ran
 * out), else from the report's own `retryAfter`.
 */
export function httpFailure(report: HttpFailureReport): MailError {
  const { status, headers } = report;
  const answered = status !== undefined;
  const phase: FailurePhase = report.phase ?? (answered ? 'response' : report.sent ? 'data-sent' : 'connect');
  const facts = {
    phase,
    ...(answered ? { httpStatus: status } : {}),
    ...(report.errorCode !== undefined ? { errorCode: report.errorCode } : {}),
    ...(report.text !== undefined ? { text: report.text } : {}),
  };
  const limited = classify(facts, report.rules).kind === 'limited';
  const retryAfter =
    parseRetryAfter(headerValue(headers, 'retry-after')) ??
    (limited ? parseRetryAfter(headerValue(headers, 'x-ratelimit-reset')) : undefined) ??
    report.retryAfter;
  return failure({
    route: report.route,
    ...facts,
    message: report.message,
    ...(retryAfter !== undefined ? { retryAfter } : {}),
    ...(report.recipients?.length ? { recipients: report.recipients } : {}),
    ...(report.rules ? { rules: report.rules } : {}),
    ...(report.cause !== undefined ? { cause: report.cause } : {}),
  });
}

/** What {@link requestAborted} needs. */
export interface AbortedRequest {
  route: string;
  /** The signal that aborted: the caller's, or the route's deadline. */
  signal: AbortSignal;
  /** Whether the whole request had been written (see {@link RequestProgress}). */
  sent: boolean;
  /** What was being done, for the message: `SendEmail`, `users.messages.send`. */
  action?: string;
  /** The phase when nothing was sent. @default 'connect' */
  phase?: FailurePhase;
  cause?: unknown;
}

/**
 * The error of a request given up by an abort signal or the route's deadline: `unknown`
 * (phase `data-sent`) when the whole request had been sent, else `unavailable`. Code `EABORT`.
 */
export function requestAborted(a: AbortedRequest): MailError {
  return new MailError(
    `${a.route}: ${a.action ? `${a.action}: ` : ''}${abortReason(a.signal)}${a.sent ? ' after the request was sent: outcome unknown' : ''}`,
    {
      kind: a.sent ? 'unknown' : 'unavailable',
      phase: a.sent ? 'data-sent' : (a.phase ?? 'connect'),
      route: a.route,
      code: 'EABORT',
      ...(a.cause !== undefined ? { cause: a.cause } : {}),
    },
  );
}

// --- configuration

/** A short, one-way fingerprint of a key: tells two keys apart in route names without showing either. */
export function keyFingerprint(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 8);
}

/**
 * Checks the base URL of an API that takes a key: http(s), no credentials, no query or fragment,
 * and clear text (`http:`) only to a loopback host, so the key never crosses a network unencrypted.
 * Returns it without a trailing slash; throws a {@link RouteConfigError} naming `part`.
 */
export function checkBaseUrl(raw: string, part = 'baseUrl', where?: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new RouteConfigError(part, 'is not a URL', where);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new RouteConfigError(part, `${url.protocol} is not http: or https:`, where);
  }
  if (url.username || url.password) throw new RouteConfigError(part, 'must not carry credentials', where);
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    throw new RouteConfigError(
      part,
      `http: to ${url.hostname} would send the API key in clear text; use https:`,
      where,
    );
  }
  if (url.search || url.hash) throw new RouteConfigError(part, 'must not have a query or fragment', where);
  return url.href.replace(/\/+$/, '');
}

/**
 * Checks extra request headers a route is given: no `Authorization` (the route sets it from
 * `setFrom`) and no line break in a name or value. Returns a copy.
 */
export function checkRequestHeaders(
  headers: Readonly<Record<string, string>> | undefined,
  setFrom = 'apiKey',
): Record<string, string> {
  const out = { ...(headers ?? {}) };
  for (const [k, v] of Object.entries(out)) {
    if (/^authorization$/i.test(k)) throw new RouteConfigError(`headers.${k}`, `is set from ${setFrom}`);
    if (/[\r\n]/.test(k) || /[\r\n]/.test(v)) throw new RouteConfigError(`headers.${k}`, 'contains a line break');
  }
  return out;
}
