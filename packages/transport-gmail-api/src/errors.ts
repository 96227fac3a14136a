import {
  type ErrorRule,
  type HttpHeaders,
  httpFailure,
  MailError,
  matchCode,
  matchText,
  type RequestProgress,
  redact,
  requestAborted,
} from '@mailvia/core';

const ERRORS = 'https://developers.google.com/workspace/gmail/api/guides/handle-errors';
const LIMITS = 'https://support.google.com/a/answer/166852';
const OAUTH = 'RFC 6749 §5.2; https://developers.google.com/identity/protocols/oauth2#expiration';

const reason = matchCode;
const says = matchText;

/** The rule id of a refresh token or service account grant Google no longer accepts. */
const INVALID_GRANT_RULE = 'google-oauth/invalid-grant';

/**
 * Rows of the classification table for the Gmail API (by the `reason` of Google's error body,
 * and its message) and for Google's OAuth token endpoint (by the `error` code). Tried before
 * core's generic rows, which map 5xx to `unavailable` and a lost answer to `unknown`.
 */
export const GMAIL_ERROR_RULES: readonly ErrorRule[] = [
  {
    source: 'google-oauth',
    id: 'invalid-grant',
    kind: 'misconfigured',
    match: reason('invalid_grant'),
    meaning:
      'Google no longer accepts the refresh token or the service account grant (revoked, expired, password changed, ' +
      'or delegation missing): the account must consent again',
    reference: OAUTH,
  },
  {
    source: 'google-oauth',
    id: 'invalid-client',
    kind: 'misconfigured',
    match: reason('invalid_client', 'unauthorized_client', 'invalid_scope', 'access_denied'),
    meaning: 'The OAuth client (id, secret) or its authorisation for these scopes is wrong',
    reference: OAUTH,
  },
  {
    source: 'gmail-api',
    id: 'daily-sending-limit',
    kind: 'limited',
    quota: true,
    match: (f) => reason('dailyLimitExceeded', 'quotaExceeded')(f) || says(/sending limit/i)(f),
    meaning: 'The daily sending limit of the mailbox or project is reached: it frees over the rolling 24 h',
    reference: `${ERRORS}; ${LIMITS}`,
  },
  {
    source: 'gmail-api',
    id: 'rate-limit',
    kind: 'limited',
    match: (f) =>
      reason('rateLimitExceeded', 'userRateLimitExceeded', 'RATE_LIMIT_EXCEEDED', 'RESOURCE_EXHAUSTED')(f) ||
      f.httpStatus === 429,
    meaning: 'Too many requests for the user or the project: back off',
    reference: ERRORS,
  },
  {
    source: 'gmail-api',
    id: 'permission',
    kind: 'misconfigured',
    match: reason('insufficientPermissions', 'ACCESS_TOKEN_SCOPE_INSUFFICIENT', 'domainPolicy', 'forbidden'),
    meaning: 'The token lacks the gmail.send scope, or the Workspace admin does not allow this app',
    reference: ERRORS,
  },
  {
    source: 'gmail-api',
    id: 'auth-error',
    kind: 'misconfigured',
    match: (f) => f.httpStatus === 401 || reason('authError', 'UNAUTHENTICATED')(f),
    meaning: 'Gmail refused a freshly refreshed access token: the credentials are not valid for this mailbox',
    reference: ERRORS,
  },
  {
    source: 'gmail-api',
    id: 'failed-precondition',
    kind: 'misconfigured',
    match: reason('failedPrecondition', 'FAILED_PRECONDITION'),
    meaning: 'The mailbox cannot send through the API (Gmail not enabled, or delegation not set up for it)',
    reference: ERRORS,
  },
  {
    source: 'gmail-api',
    id: 'invalid-message',
    kind: 'refused',
    match: (f) =>
      (f.httpStatus === 400 || f.httpStatus === 422) && !reason('failedPrecondition', 'FAILED_PRECONDITION')(f),
    meaning: 'Gmail refused the message as invalid (a header, an address): it will not be taken unchanged',
    reference: ERRORS,
  },
];

/** What a gaxios error carries, as far as classification reads it. */
interface HttpishError extends Error {
  code?: string | number;
  status?: number;
  response?: {
    status?: number;
    data?: unknown;
    headers?: HttpHeaders;
  };
}

/** Google's error fields: `{ error: { code, message, status, errors: [{ reason }], details } }` or an OAuth `{ error, error_description }`. */
function googleError(data: unknown): { reason?: string; text?: string } {
  let body = data;
  if (typeof data === 'string') {
    try {
      body = JSON.parse(data);
    } catch {
      return { text: data.slice(0, 300) };
    }
  }
  if (typeof body !== 'object' || body === null) return {};
  const b = body as Record<string, unknown>;
  if (typeof b.error === 'string') {
    return {
      reason: b.error,
      ...(typeof b.error_description === 'string' ? { text: b.error_description } : {}),
    };
  }
  if (typeof b.error === 'object' && b.error !== null) {
    const e = b.error as {
      message?: string;
      status?: string;
      errors?: { reason?: string; message?: string }[];
      details?: { reason?: string }[];
    };
    const r = e.errors?.find((x) => x.reason)?.reason ?? e.details?.find((x) => x.reason)?.reason ?? e.status;
    return { ...(r ? { reason: r } : {}), ...(e.message ? { text: e.message } : {}) };
  }
  // a problem+json body (RFC 9457), as mock servers answer
  const text = [b.title, b.detail].filter((x) => typeof x === 'string').join(': ');
  return text ? { text } : {};
}

/** Everything needed to turn a failure into a {@link MailError}. */
export interface FailureContext {
  route: string;
  /** `users.messages.send`, `token endpoint`… */
  action: string;
  /** Progress of the API request; absent for token requests (their loss is never an unknown outcome). */
  progress?: RequestProgress;
  secrets: readonly string[];
  rules: readonly ErrorRule[];
  signal: AbortSignal | undefined;
  deadline: AbortSignal | undefined;
}

/** The HTTP status of an error, when the server answered. */
export function statusOf(err: unknown): number | undefined {
  const e = err as HttpishError;
  const s = e?.response?.status ?? e?.status;
  return typeof s === 'number' && s > 0 ? s : undefined;
}

/**
 * Turns an error of gaxios (the API client's and google-auth-library's HTTP layer) into a
 * classified {@link MailError}. The original error is not kept as `cause`: it holds the request
 * options, with the bearer token.
 */
export function toMailError(err: unknown, ctx: FailureContext): MailError {
  if (MailError.isInstance(err)) return err;
  const e = (err instanceof Error ? err : new Error(String(err))) as HttpishError;
  const clean = (s: string) => redact(s, ctx.secrets).replace(/Bearer\s+[\w.~+/=-]+/g, 'Bearer ****');
  const status = statusOf(e);
  const auth = ctx.progress === undefined;
  const sent = ctx.progress?.sent === true;
  if (status === undefined && ctx.deadline?.aborted) {
    return requestAborted({
      route: ctx.route,
      action: ctx.action,
      signal: ctx.signal?.aborted ? ctx.signal : ctx.deadline,
      sent,
      ...(auth ? { phase: 'auth' as const } : {}),
    });
  }
  if (status !== undefined) {
    const g = googleError(e.response?.data);
    const text = clean(g.text ?? e.message);
    // an OAuth error code (invalid_grant…) is the code an application shows: keep it bare
    const oauthCode = auth && g.reason !== undefined && /^[a-z_]+$/.test(g.reason);
    return httpFailure({
      route: ctx.route,
      ...(oauthCode ? { phase: 'auth' as const } : { status, ...(auth ? { phase: 'auth' as const } : {}) }),
      ...(e.response?.headers ? { headers: e.response.headers } : {}),
      sent: true,
      ...(g.reason !== undefined ? { errorCode: g.reason } : {}),
      text,
      message: `${ctx.action} answered ${status}${g.reason ? ` ${g.reason}` : ''}: ${text}${
        g.reason === 'invalid_grant' ? ' (the account must grant access again)' : ''
      }`,
      rules: ctx.rules,
    });
  }
  const code = typeof e.code === 'string' ? e.code : e.name;
  return httpFailure({
    route: ctx.route,
    sent: sent && !auth,
    // a token request is authentication whatever became of it; no request at all: the client refused the input
    ...(auth ? { phase: 'auth' as const } : !ctx.progress?.started ? { phase: 'envelope' as const } : {}),
    errorCode: code,
    text: clean(e.message),
    message: clean(
      `${ctx.action} failed${sent && !auth ? ' after the request was sent, with no answer' : ''}: ${e.message}`,
    ),
    rules: ctx.rules,
  });
}

/**
 * True when a failure (or an attempt of a chain's `DeliveryError`) means Google refused
 * the grant (`invalid_grant`): the account must go through consent again before this route can
 * send. Show it to the account's owner; retrying will not help.
 */
export function needsReconsent(error: unknown): boolean {
  if (!MailError.isInstance(error)) return false;
  if (error.rule === INVALID_GRANT_RULE) return true;
  const attempts = (error as { attempts?: readonly { code?: string }[] }).attempts;
  return attempts?.some((a) => a.code === 'invalid_grant') ?? false;
}
