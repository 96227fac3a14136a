import {
  type ErrorRule,
  httpFailure,
  MailError,
  matchCode,
  matchText,
  type RequestProgress,
  redact,
  requestAborted,
} from '@mailvia/core';

const API = 'https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html#API_SendEmail_Errors';
const COMMON = 'https://docs.aws.amazon.com/ses/latest/APIReference-V2/CommonErrors.html';
const QUOTAS = 'https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html';

const name = matchCode;
const says = matchText;

/**
 * The rows of the classification table for Amazon SES v2, by exception name (the
 * `x-amzn-ErrorType` of the answer) and message text. Tried before core's generic rows, which
 * already map 5xx to `unavailable` and a connection lost after the request to `unknown`.
 */
export const SES_ERROR_RULES: readonly ErrorRule[] = [
  {
    source: 'ses',
    id: 'ses-daily-quota',
    kind: 'limited',
    quota: true,
    match: says(/Daily message quota exceeded/i),
    meaning: 'The 24-hour sending quota of the SES account is used up: the route can send again as the window frees',
    reference: QUOTAS,
  },
  {
    source: 'ses-v2',
    id: 'ses-rate',
    kind: 'limited',
    match: (f) =>
      name('TooManyRequestsException', 'ThrottlingException', 'Throttling')(f) ||
      says(/Maximum sending rate exceeded/i)(f),
    meaning: 'The SES sending rate (messages per second) is exceeded: back off',
    reference: QUOTAS,
  },
  {
    source: 'ses-v2',
    id: 'ses-sandbox-unverified',
    kind: 'misconfigured',
    match: (f) => name('MessageRejected')(f) && says(/not verified|sandbox/i)(f),
    meaning: 'The account is in the SES sandbox or the address is not a verified identity',
    reference: API,
  },
  {
    source: 'ses-v2',
    id: 'ses-message-rejected',
    kind: 'refused',
    match: name('MessageRejected'),
    meaning: 'SES refused the message content (e.g. a virus or a malformed message): no route will send it unchanged',
    reference: API,
  },
  {
    source: 'ses-v2',
    id: 'ses-mail-from-unverified',
    kind: 'misconfigured',
    match: name('MailFromDomainNotVerifiedException'),
    meaning: 'The sending or custom MAIL FROM domain is not verified in SES',
    reference: API,
  },
  {
    source: 'ses-v2',
    id: 'ses-sending-paused',
    kind: 'misconfigured',
    match: name('SendingPausedException', 'AccountSendingPausedException', 'ConfigurationSetSendingPausedException'),
    meaning: 'Sending is paused for the SES account or the configuration set',
    reference: API,
  },
  {
    source: 'ses-v2',
    id: 'ses-account-suspended',
    kind: 'misconfigured',
    match: name('AccountSuspendedException'),
    meaning: 'The SES account may no longer send',
    reference: API,
  },
  {
    source: 'ses-v2',
    id: 'ses-not-found',
    kind: 'misconfigured',
    match: name('NotFoundException'),
    meaning: 'A resource the route names (configuration set, identity) does not exist in this account or region',
    reference: API,
  },
  {
    source: 'ses-v2',
    id: 'ses-resource-limit',
    kind: 'misconfigured',
    match: name('LimitExceededException'),
    meaning: 'An SES resource limit of the account is reached',
    reference: API,
  },
  {
    source: 'ses-v2',
    id: 'ses-bad-request',
    kind: 'refused',
    match: name('BadRequestException', 'ValidationException', 'SerializationException'),
    meaning: 'SES refused the request as invalid: it will not be taken unchanged',
    reference: API,
  },
  {
    source: 'ses-v2',
    id: 'ses-credentials',
    kind: 'misconfigured',
    match: name(
      'UnrecognizedClientException',
      'InvalidSignatureException',
      'SignatureDoesNotMatch',
      'IncompleteSignature',
      'InvalidClientTokenId',
      'MissingAuthenticationToken',
      'AccessDeniedException',
      'ExpiredTokenException',
      'CredentialsProviderError',
    ),
    meaning: 'The AWS credentials are wrong, expired, or lack permission for ses:SendEmail',
    reference: COMMON,
  },
];

/** What the SDK's errors carry, as far as classification reads them. */
type SdkError = Error & {
  code?: string;
  $fault?: 'client' | 'server';
  $metadata?: { httpStatusCode?: number };
  $response?: { headers?: Record<string, string | undefined> };
};

const CREDENTIAL_ERRORS = new Set(['CredentialsProviderError', 'ProviderError', 'TokenProviderError']);

/** Everything needed to turn an SDK failure into a {@link MailError}. */
export interface FailureContext {
  route: string;
  action: string;
  progress: RequestProgress;
  secrets: readonly (string | undefined)[];
  rules: readonly ErrorRule[];
  /** The caller's signal (an abort by it is reported as such). */
  signal: AbortSignal | undefined;
  /** The signal that also carries the route's own deadline. */
  deadline: AbortSignal | undefined;
}

/** Turns an error of the AWS SDK into a classified {@link MailError}. */
export function toMailError(err: unknown, ctx: FailureContext): MailError {
  if (MailError.isInstance(err)) return err;
  const e = (err instanceof Error ? err : new Error(String(err))) as SdkError;
  const clean = (s: string) => redact(s, ctx.secrets);
  const status = e.$metadata?.httpStatusCode;
  const answered = status !== undefined && status > 0 && e.$response !== undefined;
  if (ctx.deadline?.aborted && !answered) {
    return requestAborted({
      route: ctx.route,
      action: ctx.action,
      signal: ctx.signal?.aborted ? ctx.signal : ctx.deadline,
      sent: ctx.progress.sent,
      cause: err,
    });
  }
  if (answered) {
    return httpFailure({
      route: ctx.route,
      status,
      ...(e.$response?.headers ? { headers: e.$response.headers } : {}),
      sent: true,
      errorCode: e.name,
      text: clean(e.message),
      message: clean(`${ctx.action} answered ${status} ${e.name}: ${e.message}`),
      rules: ctx.rules,
      cause: err,
    });
  }
  const credentials = CREDENTIAL_ERRORS.has(e.name);
  const code = e.code ?? e.name;
  const sent = ctx.progress.sent && !credentials;
  return httpFailure({
    route: ctx.route,
    sent,
    // no request yet: the credentials could not be had (auth), or the SDK refused the input (envelope)
    ...(credentials ? { phase: 'auth' as const } : !ctx.progress.started ? { phase: 'envelope' as const } : {}),
    errorCode: credentials ? 'CredentialsProviderError' : code,
    text: clean(e.message),
    message: clean(
      `${ctx.action} failed${sent ? ' after the request was sent, with no answer' : ''}: ${code === e.message ? code : `${code}: ${e.message}`}`,
    ),
    rules: ctx.rules,
    cause: err,
  });
}
