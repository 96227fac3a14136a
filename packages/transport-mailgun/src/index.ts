export { checkBaseUrl, keyFingerprint, MAILGUN_API_URLS, type MailgunOptions } from './config.js';
export { MAILGUN_API_RULES } from './errors.js';
export {
  IDEMPOTENCY_KEY_VARIABLE,
  type MailgunFile,
  type MailgunMessageFields,
  MESSAGE_ID_VARIABLE,
  toMailgunFields,
} from './message.js';
export { mailgunRoute } from './routes.js';
export { mailgun } from './transport.js';
export {
  type MailgunWebhookOptions,
  mailgunWebhook,
  normaliseMailgunEvent,
  verifyMailgunSignature,
} from './webhooks.js';
