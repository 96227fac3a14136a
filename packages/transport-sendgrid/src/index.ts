export { sendgridApi } from './api.js';
export {
  keyFingerprint,
  SENDGRID_API_URLS,
  SENDGRID_SMTP_HOST,
  SENDGRID_SMTP_PORT,
  type SendgridApiOptions,
  type SendgridSmtpOptions,
} from './config.js';
export { SENDGRID_API_RULES, SENDGRID_SMTP_RULES } from './errors.js';
export {
  IDEMPOTENCY_KEY_ARG,
  type MailSendBody,
  MESSAGE_ID_ARG,
  type SendgridAddress,
  type SendgridAttachment,
  toMailSendBody,
} from './payload.js';
export { sendgridApiRoute, sendgridSmtpRoute } from './routes.js';
export { sendgridSmtp } from './smtp.js';
export {
  normaliseSendgridEvent,
  SENDGRID_SIGNATURE_HEADER,
  SENDGRID_TIMESTAMP_HEADER,
  type SendgridWebhookOptions,
  sendgridWebhook,
  verifySendgridSignature,
} from './webhooks.js';
