import type { ErrorRule, FailureFacts } from '@mailvia/core';

const API_ERRORS = 'https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/errors';
const SUPPORT_4XX =
  'https://support.sendgrid.com/hc/en-us/articles/18322114821403-4XX-API-Errors-and-Troubleshooting-Suggestions';
const SMTP_ERRORS = 'https://www.twilio.com/docs/sendgrid/for-developers/sending-email/smtp-errors-and-troubleshooting';

const text = (f: FailureFacts) => f.text ?? '';
const credits = (f: FailureFacts) => /Maximum credits exceeded/i.test(text(f));

/**
 * How SendGrid's Web API v3 answers map to failure kinds (from shared/reference/error-classes.json,
 * sources `sendgrid-api`). Tried before core's generic HTTP rows.
 */
export const SENDGRID_API_RULES: readonly ErrorRule[] = [
  {
    source: 'sendgrid-api',
    id: 'credits-exceeded',
    kind: 'limited',
    quota: true,
    match: (f) => f.httpStatus === 401 && credits(f),
    meaning: 'SendGrid credits are used up until the plan resets them: a quota, not a bad API key',
    reference: `${SUPPORT_4XX} ; github sendgrid/sendgrid-nodejs#1032`,
  },
  {
    source: 'sendgrid-api',
    id: 'temporary-block',
    kind: 'limited',
    match: (f) => f.httpStatus === 403 && /Too many bad requests|Temporary block/i.test(text(f)),
    meaning: 'SendGrid blocks this key for a while after too many bad requests: back off',
    reference: API_ERRORS,
  },
  {
    source: 'sendgrid-api',
    id: 'sender-identity',
    kind: 'misconfigured',
    match: (f) =>
      (f.httpStatus === 401 || f.httpStatus === 403) && /Sender Identity|not authorized to send from/i.test(text(f)),
    meaning: 'The from address is not a verified Sender Identity (or domain) of this SendGrid account',
    reference: 'https://twilio.com/docs/api/errors/60222',
  },
  {
    source: 'sendgrid-api',
    id: 'bad-key',
    kind: 'misconfigured',
    match: (f) => f.httpStatus === 401 || f.httpStatus === 403,
    meaning: 'The API key is invalid, revoked, or lacks the Mail Send permission',
    reference: `${SUPPORT_4XX} ; ${API_ERRORS}`,
  },
  {
    source: 'sendgrid-api',
    id: 'payload-refused',
    kind: 'refused',
    match: (f) => f.httpStatus === 400,
    meaning: 'SendGrid refused the message as invalid (see the fields named); it is not sent unchanged',
    reference: 'https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors',
  },
  {
    source: 'sendgrid-api',
    id: 'too-large',
    kind: 'unavailable',
    match: (f) => f.httpStatus === 413,
    meaning: 'The message is larger than SendGrid accepts (30 MB): another route may take it',
    reference: 'https://www.twilio.com/docs/sendgrid/api-reference/mail-send/limitations',
  },
  {
    source: 'sendgrid-api',
    id: 'rate-limit',
    kind: 'limited',
    match: (f) => f.httpStatus === 429,
    meaning: 'SendGrid rate limit reached: wait until X-RateLimit-Reset',
    reference: 'https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits',
  },
  {
    source: 'sendgrid-api',
    id: 'server-error',
    kind: 'unavailable',
    match: (f) => f.httpStatus !== undefined && f.httpStatus >= 500,
    meaning: 'SendGrid is failing or unavailable: another route may serve now',
    reference: API_ERRORS,
  },
];

/**
 * SendGrid's SMTP replies (sources `sendgrid-smtp`). Core already knows the credits text and
 * generic 535; these rows say it in SendGrid's terms and come first.
 */
export const SENDGRID_SMTP_RULES: readonly ErrorRule[] = [
  {
    source: 'sendgrid-smtp',
    id: 'credits-exceeded',
    kind: 'limited',
    quota: true,
    match: (f) => f.smtpCode !== undefined && credits(f),
    meaning: 'SendGrid credits are used up until the plan resets them (451 …Maximum credits exceeded): not a bad key',
    reference:
      'github mautic/mautic#8721 ; https://experienceleague.adobe.com/docs/commerce-knowledge-base/kb/troubleshooting/miscellaneous/emails-not-being-sent-sendgrid-credits-exceeded.html',
  },
  {
    source: 'sendgrid-smtp',
    id: 'sender-identity',
    kind: 'misconfigured',
    match: (f) => f.smtpCode !== undefined && /Sender Identity|not authorized to send from/i.test(text(f)),
    meaning: 'The from address is not a verified Sender Identity of this SendGrid account',
    reference: SMTP_ERRORS,
  },
  {
    source: 'sendgrid-smtp',
    id: 'bad-key',
    kind: 'misconfigured',
    match: (f) => f.smtpCode === 535,
    meaning: "SendGrid refused the API key as SMTP password (the user must be 'apikey')",
    reference: SMTP_ERRORS,
  },
];
