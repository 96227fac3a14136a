import { type FailureKind, type FailurePhase, MailError } from './errors.js';

/**
 * The facts of one failure, in a form every route can fill: an SMTP reply, an HTTP answer, a
 * system/TLS/library error code, and the phase it happened in.
 */
export interface FailureFacts {
  phase: FailurePhase;
  /** SMTP reply code (e.g. 550) when the server answered. */
  smtpCode?: number;
  /** RFC 3463 enhanced status code (e.g. `5.1.1`) when the reply carried one. */
  enhanced?: string;
  /** HTTP status when an HTTP API answered. */
  httpStatus?: number;
  /** A machine code: `ECONNREFUSED`, `CERT_HAS_EXPIRED`, a provider's error name or reason. */
  errorCode?: string;
  /** The reply or error text (already free of secrets). */
  text?: string;
}

/** One row of the classification table. */
export interface ErrorRule {
  /** Where the row comes from, e.g. `smtp-generic`, `gmail-smtp`, `sendgrid-api`. */
  source: string;
  /** A short id for logs: which row decided. */
  id: string;
  kind: FailureKind;
  /** True when the limit is a quota with a reset (daily, monthly), not a rate. */
  quota?: boolean;
  /** Does this row describe these facts? Rows are tried in order; the first match wins. */
  match: (facts: FailureFacts) => boolean;
  /** What it means, for people. */
  meaning: string;
  /** Where the rule was researched (RFC, provider doc). */
  reference?: string;
}

/** The result of classifying: the kind and the row that decided it. */
export interface Classification {
  kind: FailureKind;
  quota: boolean;
  rule: ErrorRule;
}

const text = (f: FailureFacts) => f.text ?? '';
const reply = (f: FailureFacts) => `${f.smtpCode ?? ''} ${f.enhanced ?? ''} ${f.text ?? ''}`;
const enh = (f: FailureFacts, re: RegExp) => f.enhanced !== undefined && re.test(f.enhanced);
/** A row matcher for provider tables: the failure's `errorCode` is one of `codes` (an exception name, a reason). */
export function matchCode(...codes: string[]): (facts: FailureFacts) => boolean {
  const set = new Set(codes);
  return (f) => f.errorCode !== undefined && set.has(f.errorCode);
}

/** A row matcher for provider tables: the failure's text matches `re`. */
export function matchText(re: RegExp): (facts: FailureFacts) => boolean {
  return (f) => re.test(f.text ?? '');
}

const code = matchCode;
const beforeData = (f: FailureFacts) => f.phase !== 'data-sent' && f.phase !== 'response';

const RFC5321 = 'RFC 5321 §4.2.1-4.2.3';
const RFC3463 = 'RFC 3463 §2-§3.8';

/**
 * The table for SMTP replies, network, TLS and nodemailer errors, seeded from the researched
 * classification (shared/reference/error-classes.json). Order matters: specific rows (provider
 * texts) come before generic ones. HTTP API routes add their own rows in front with
 * {@link classifyFailure}'s `rules` argument; the rows here end with generic HTTP statuses.
 */
export const CORE_ERROR_RULES: readonly ErrorRule[] = [
  // --- the outcome is unknown: the body went out and no answer came back
  {
    source: 'network',
    id: 'no-answer-after-data',
    kind: 'unknown',
    match: (f) => f.phase === 'data-sent' && f.smtpCode === undefined && f.httpStatus === undefined,
    meaning:
      'The connection failed after the whole message was sent and before the answer: the mail may have been taken',
    reference: 'RFC 5321 §4.1.1.4; RFC 1047 (duplicate messages)',
  },
  // --- provider SMTP texts (before the generic code rows)
  {
    source: 'gmail-smtp',
    id: 'gmail-daily-limit',
    kind: 'limited',
    quota: true,
    match: (f) =>
      f.smtpCode === 550 && /Daily (user )?sending (limit|quota) exceeded|Daily SMTP relay limit/i.test(text(f)),
    meaning: 'Gmail daily sending limit reached: the account can send again after the rolling 24 h window',
    reference: 'https://support.google.com/a/answer/3726730',
  },
  {
    source: 'gmail-smtp',
    id: 'gmail-5.4.5',
    kind: 'limited',
    quota: true,
    match: (f) => enh(f, /^5\.4\.5$/),
    meaning: 'Daily sending quota exceeded (5.4.5)',
    reference: 'https://support.google.com/a/answer/3726730',
  },
  {
    source: 'sendgrid-smtp',
    id: 'sendgrid-credits',
    kind: 'limited',
    quota: true,
    match: (f) => /Maximum credits exceeded/i.test(text(f)),
    meaning: 'SendGrid credits exhausted for the period: a quota, not a bad key',
    reference: 'https://www.twilio.com/docs/sendgrid/for-developers/sending-email/smtp-errors-and-troubleshooting',
  },
  {
    source: 'gmail-smtp',
    id: 'gmail-unsolicited-rate',
    kind: 'unavailable',
    match: (f) => f.smtpCode === 421 && /unusual rate of unsolicited mail/i.test(text(f)),
    meaning: 'Gmail is throttling this sender for suspected spam: try another route',
    reference: 'https://support.google.com/mail/answer/81126',
  },
  {
    source: 'gmail-smtp',
    id: 'gmail-app-password',
    kind: 'misconfigured',
    match: (f) => f.smtpCode === 534 || enh(f, /^5\.7\.(9|14)$/),
    meaning: 'The account needs an App Password or a web login before SMTP is allowed',
    reference: 'https://support.google.com/mail/answer/185833',
  },
  {
    source: 'mailgun-smtp',
    id: 'mailgun-sandbox',
    kind: 'misconfigured',
    match: (f) => /Sandbox subdomains are for test purposes only/i.test(text(f)),
    meaning: 'A Mailgun sandbox domain may only send to authorised recipients',
    reference: 'https://documentation.mailgun.com/docs/mailgun/user-manual/',
  },
  {
    source: 'sendgrid-smtp',
    id: 'sender-identity',
    kind: 'misconfigured',
    match: (f) => f.smtpCode !== undefined && /Sender Identity|not authorized to send from/i.test(text(f)),
    meaning: 'The sender address is not a verified identity of this account',
    reference: 'https://www.twilio.com/docs/sendgrid/ui/sending-email/sender-verification',
  },
  {
    source: 'exim-relay',
    id: 'relay-not-permitted',
    kind: 'misconfigured',
    match: (f) => f.smtpCode === 550 && /relay(ing)? not permitted|relay access denied/i.test(text(f)),
    meaning: 'The relay refuses to relay for this client: authentication or relay rules are wrong',
    reference: 'Exim spec ch. 42 (ACL), acl_smtp_rcpt',
  },
  // --- authentication
  {
    source: 'smtp-auth',
    id: 'auth-failed',
    kind: 'misconfigured',
    match: (f) =>
      f.smtpCode === 535 ||
      enh(f, /^5\.7\.8$/) ||
      (f.phase === 'auth' && f.smtpCode !== undefined && f.smtpCode >= 500),
    meaning: 'Authentication failed: wrong user or password, or the credential was revoked',
    reference: 'RFC 4954 §6',
  },
  {
    source: 'smtp-auth',
    id: 'auth-required',
    kind: 'misconfigured',
    match: (f) =>
      f.smtpCode === 530 ||
      f.smtpCode === 538 ||
      ((f.phase === 'auth' || f.phase === 'connect') && enh(f, /^5\.7\.(0|11)$/)),
    meaning: 'The server requires authentication or encryption this route is not configured for',
    reference: 'RFC 4954 §6; RFC 3207',
  },
  {
    source: 'smtp-auth',
    id: 'auth-temporary',
    kind: 'limited',
    match: (f) => f.phase === 'auth' && f.smtpCode !== undefined && f.smtpCode >= 400 && f.smtpCode < 500,
    meaning: 'Temporary authentication failure (too many login attempts): back off',
    reference: 'RFC 4954 §6',
  },
  {
    source: 'nodemailer',
    id: 'auth-library',
    kind: 'misconfigured',
    match: code('EAUTH', 'ENOAUTH', 'EOAUTH2'),
    meaning: 'Authentication could not be performed with the configured credentials',
    reference: 'nodemailer smtp-connection',
  },
  // --- rate limits and policy throttling
  {
    source: 'smtp-generic',
    id: 'rate-4.7',
    kind: 'limited',
    match: (f) => f.smtpCode !== undefined && f.smtpCode >= 400 && f.smtpCode < 500 && enh(f, /^4\.7\.\d+$/),
    meaning: 'Transient policy or rate limit (4.7.x): back off on this route',
    reference: `${RFC3463}; IANA SMTP enhanced status codes`,
  },
  {
    source: 'gmail-smtp',
    id: 'peak-relay-limit',
    kind: 'limited',
    match: (f) => f.smtpCode === 450 && /limit exceeded/i.test(text(f)),
    meaning: 'A peak or rate limit was exceeded: back off',
    reference: 'https://support.google.com/a/answer/2956491',
  },
  {
    source: 'ses',
    id: 'ses-smtp-throttling',
    kind: 'limited',
    match: (f) => f.smtpCode === 454 && /Throttling failure/i.test(text(f)),
    quota: false,
    meaning: 'SES throttling (sending rate or daily quota)',
    reference: 'https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html',
  },
  // --- recipient refused (stop: no route will take it)
  {
    source: 'smtp-generic',
    id: 'recipient-unknown',
    kind: 'refused',
    match: (f) => f.smtpCode !== undefined && f.smtpCode >= 500 && enh(f, /^5\.1\.(1|2|3|10)$/),
    meaning: 'The recipient address does not exist or is malformed',
    reference: RFC3463,
  },
  {
    source: 'smtp-generic',
    id: 'mailbox-disabled',
    kind: 'refused',
    match: (f) => f.smtpCode !== undefined && f.smtpCode >= 500 && enh(f, /^5\.2\.(1|2)$/),
    meaning: 'The mailbox is disabled or full',
    reference: RFC3463,
  },
  {
    source: 'smtp-generic',
    id: 'content-refused',
    kind: 'refused',
    match: (f) => f.smtpCode !== undefined && f.smtpCode >= 500 && enh(f, /^5\.6\.\d+$/),
    meaning: 'The message content or format is refused',
    reference: RFC3463,
  },
  {
    source: 'smtp-generic',
    id: 'recipient-refused-rcpt',
    kind: 'refused',
    match: (f) =>
      f.phase === 'envelope' &&
      (f.smtpCode === 550 || f.smtpCode === 553) &&
      !enh(f, /^5\.7\./) &&
      /RCPT|recipient|mailbox|user/i.test(reply(f)),
    meaning: 'The server refused the recipient',
    reference: RFC5321,
  },
  {
    source: 'nodemailer',
    id: 'envelope-invalid',
    kind: 'refused',
    match: (f) => f.errorCode === 'EENVELOPE' && f.smtpCode === undefined,
    meaning: 'The envelope (sender or recipients) is not acceptable',
    reference: 'nodemailer smtp-connection',
  },
  // --- the route cannot serve now
  {
    source: 'smtp-generic',
    id: 'size-exceeded',
    kind: 'unavailable',
    match: (f) => f.smtpCode === 552 || enh(f, /^5\.(3\.4|2\.3)$/),
    meaning: 'The message is larger than this route accepts: another route may take it',
    reference: RFC3463,
  },
  {
    source: 'smtp-generic',
    id: 'policy-5.7',
    kind: 'unavailable',
    match: (f) => f.smtpCode !== undefined && f.smtpCode >= 500 && enh(f, /^5\.7\.\d+$/),
    meaning: "Refused by this server's policy (5.7.x): another route may take it",
    reference: RFC3463,
  },
  {
    source: 'smtp-generic',
    id: 'network-routing',
    kind: 'unavailable',
    match: (f) => f.smtpCode !== undefined && enh(f, /^4\.4\.\d+$/),
    meaning: 'Network or routing problem on the server side',
    reference: RFC3463,
  },
  {
    source: 'smtp-generic',
    id: 'service-unavailable',
    kind: 'unavailable',
    match: (f) => f.smtpCode === 421 || f.smtpCode === 554,
    meaning: 'The server is not available or refuses the transaction',
    reference: RFC5321,
  },
  {
    source: 'smtp-generic',
    id: 'command-error',
    kind: 'misconfigured',
    match: (f) => f.smtpCode !== undefined && [500, 501, 502, 503, 504, 555].includes(f.smtpCode) && beforeData(f),
    meaning: 'The server does not understand what this route sends (protocol or configuration mismatch)',
    reference: RFC5321,
  },
  {
    source: 'smtp-generic',
    id: 'transient',
    kind: 'unavailable',
    match: (f) => f.smtpCode !== undefined && f.smtpCode >= 400 && f.smtpCode < 500,
    meaning: 'Temporary failure on the server (4xx): another route may serve now',
    reference: RFC5321,
  },
  {
    source: 'smtp-generic',
    id: 'permanent-other',
    kind: 'unavailable',
    match: (f) => f.smtpCode !== undefined && f.smtpCode >= 500,
    meaning: 'The server refused the message for a reason that another route may not have',
    reference: RFC5321,
  },
  // --- TLS
  {
    source: 'tls',
    id: 'tls-certificate',
    kind: 'misconfigured',
    match: code(
      'CERT_HAS_EXPIRED',
      'DEPTH_ZERO_SELF_SIGNED_CERT',
      'SELF_SIGNED_CERT_IN_CHAIN',
      'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
      'ERR_TLS_CERT_ALTNAME_INVALID',
      'HOSTNAME_MISMATCH',
    ),
    meaning: "The server's TLS certificate is not trusted for this host name",
    reference: 'Node.js TLS errors',
  },
  {
    source: 'tls',
    id: 'tls-required',
    kind: 'misconfigured',
    match: (f) =>
      code('ETLS', 'EREQUIRETLS', 'ERR_SSL_WRONG_VERSION_NUMBER')(f) || /STARTTLS|TLS not available/i.test(text(f)),
    meaning: 'TLS could not be negotiated (wrong port for implicit TLS, or STARTTLS missing): no clear-text fallback',
    reference: 'RFC 3207; RFC 8314',
  },
  // --- network
  {
    source: 'network',
    id: 'dns-not-found',
    kind: 'misconfigured',
    match: code('ENOTFOUND', 'EAI_NONAME', 'EAI_NODATA'),
    meaning: 'The host name does not resolve',
    reference: 'getaddrinfo(3)',
  },
  {
    source: 'network',
    id: 'connect-failed',
    kind: 'unavailable',
    match: code(
      'ECONNREFUSED',
      'EHOSTUNREACH',
      'ENETUNREACH',
      'EAI_AGAIN',
      'ETIMEDOUT',
      'ECONNRESET',
      'EPIPE',
      'ECONNECTION',
      'ESOCKET',
      'EPROTOCOL',
      'ECONNABORTED',
      'EDNS',
    ),
    meaning: 'The route could not be reached or the connection broke before the message was complete',
    reference: 'Node.js system errors',
  },
  {
    source: 'nodemailer',
    id: 'max-limit',
    kind: 'limited',
    match: code('EMAXLIMIT'),
    meaning: 'The connection reached its message limit',
    reference: 'nodemailer smtp-pool',
  },
  // --- HTTP APIs, generic (provider rows go in front)
  {
    source: 'http',
    id: 'http-429',
    kind: 'limited',
    match: (f) => f.httpStatus === 429,
    meaning: 'Too many requests: back off until the reset',
    reference: 'RFC 6585 §4',
  },
  {
    source: 'http',
    id: 'http-auth',
    kind: 'misconfigured',
    match: (f) => f.httpStatus === 401 || f.httpStatus === 403,
    meaning: 'The API key or token is refused',
    reference: 'RFC 9110 §15.5.2, §15.5.4',
  },
  {
    source: 'http',
    id: 'http-too-large',
    kind: 'unavailable',
    match: (f) => f.httpStatus === 413,
    meaning: 'The message is larger than this API accepts: another route may take it',
    reference: 'RFC 9110 §15.5.14',
  },
  {
    source: 'http',
    id: 'http-not-found',
    kind: 'misconfigured',
    match: (f) => f.httpStatus === 404,
    meaning: 'The API endpoint, domain or resource does not exist (wrong region or domain?)',
    reference: 'RFC 9110 §15.5.5',
  },
  {
    source: 'http',
    id: 'http-bad-request',
    kind: 'refused',
    match: (f) => f.httpStatus === 400 || f.httpStatus === 422,
    meaning: 'The API refused the message as invalid',
    reference: 'RFC 9110 §15.5.1',
  },
  {
    source: 'http',
    id: 'http-server-error',
    kind: 'unavailable',
    match: (f) => f.httpStatus !== undefined && (f.httpStatus >= 500 || f.httpStatus === 408),
    meaning: 'The API is failing or overloaded',
    reference: 'RFC 9110 §15.6',
  },
  {
    source: 'http',
    id: 'http-other',
    kind: 'unavailable',
    match: (f) => f.httpStatus !== undefined && f.httpStatus >= 400,
    meaning: 'The API answered with an unexpected error status',
    reference: 'RFC 9110 §15',
  },
  // --- last resort
  {
    source: 'core',
    id: 'unclassified',
    kind: 'unavailable',
    match: () => true,
    meaning: 'An error this table does not know: treated as this route being unavailable',
  },
];

/** Finds the first row that matches; provider rows (`rules`) are tried before core's. */
export function classify(facts: FailureFacts, rules: readonly ErrorRule[] = []): Classification {
  for (const list of [rules, CORE_ERROR_RULES]) {
    for (const rule of list) {
      if (rule.match(facts)) return { kind: rule.kind, quota: rule.quota ?? false, rule };
    }
  }
  /* c8 ignore next */
  throw new Error('unreachable: the last core rule matches everything');
}

/** Splits an SMTP reply line into its code, enhanced code and text. */
export function parseSmtpReply(response: string): { code?: number; enhanced?: string; text: string } {
  const m = /^(\d{3})[ -](?:(\d\.\d{1,3}\.\d{1,3})\s+)?([\s\S]*)$/.exec(response.trim());
  if (!m) return { text: response.trim() };
  return { code: Number(m[1]), ...(m[2] ? { enhanced: m[2] } : {}), text: (m[3] ?? '').trim() };
}

/**
 * Parses an HTTP `Retry-After` (seconds or HTTP date) or an epoch reset header
 * (`X-RateLimit-Reset`, seconds) into milliseconds from now.
 */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (value === null || value === undefined || value.trim() === '') return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) {
    const n = Number(v);
    // large numbers are epoch seconds (X-RateLimit-Reset), small ones are delays
    if (n > 1_000_000_000) return Math.max(0, n * 1000 - now);
    return Math.round(n * 1000);
  }
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** Everything a route knows about one failure, to turn into a {@link MailError}. */
export interface FailureReport extends FailureFacts {
  route: string;
  /** The human message; a secret in it must already have been removed (see {@link redact}). */
  message: string;
  retryAfter?: number;
  recipients?: string[];
  /** Provider rows to try before core's. */
  rules?: readonly ErrorRule[];
  cause?: unknown;
}

/** Classifies a failure and builds the {@link MailError} for it. */
export function failure(report: FailureReport): MailError {
  const c = classify(report, report.rules);
  const rawCode =
    report.smtpCode !== undefined
      ? `${report.smtpCode}${report.enhanced ? ` ${report.enhanced}` : ''}`
      : report.httpStatus !== undefined
        ? `HTTP ${report.httpStatus}${report.errorCode ? ` ${report.errorCode}` : ''}`
        : report.errorCode;
  const status = report.smtpCode ?? report.httpStatus;
  return new MailError(`${report.route}: ${report.message} [${c.kind}: ${c.rule.meaning}]`, {
    kind: c.kind,
    phase: report.phase,
    route: report.route,
    ...(rawCode !== undefined ? { code: rawCode } : {}),
    ...(status !== undefined ? { status } : {}),
    ...(report.retryAfter !== undefined ? { retryAfter: report.retryAfter } : {}),
    quota: c.quota,
    ...(report.recipients ? { recipients: report.recipients } : {}),
    rule: `${c.rule.source}/${c.rule.id}`,
    cause: report.cause,
  });
}

/** Removes each secret (and its base64 forms) from a text. Empty and short secrets are ignored. */
export function redact(textIn: string, secrets: readonly (string | undefined)[]): string {
  let out = textIn;
  for (const s of secrets) {
    if (!s || s.length < 3) continue;
    for (const form of [s, Buffer.from(s).toString('base64'), encodeURIComponent(s)]) {
      out = out.split(form).join('****');
    }
  }
  return out;
}
