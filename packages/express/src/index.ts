export {
  type AdminAction,
  type AdminMailer,
  type AdminRequestInfo,
  type MailviaAdminOptions,
  mailviaAdmin,
  type RouteHealth,
} from './admin.js';
export {
  ERROR_HELP_URL,
  HTTP_ERROR_CODES,
  type HttpErrorBody,
  type HttpErrorCode,
  MailviaHttpError,
  MailviaSetupError,
  mailviaErrorHandler,
  NoOrganisationError,
} from './errors.js';
export {
  createMailHandle,
  type MailHandle,
  type MailHandleEnqueueOptions,
  type MailHandleEnqueueResult,
  type MailHandleSendOptions,
  type MailviaOptions,
  mailvia,
  type OrganisationResolver,
} from './middleware.js';
export { type MailviaOutboxOptions, mailviaOutbox } from './outbox/page.js';
export {
  type MailgunWebhookOptions,
  mailgunWebhook,
  normaliseMailgunEvent,
  verifyMailgunSignature,
} from './webhooks/providers/mailgun.js';
export {
  normaliseSendgridEvent,
  SENDGRID_SIGNATURE_HEADER,
  SENDGRID_TIMESTAMP_HEADER,
  type SendgridWebhookOptions,
  sendgridWebhook,
  verifySendgridSignature,
} from './webhooks/providers/sendgrid.js';
export {
  normaliseSesNotification,
  type SesWebhookOptions,
  SNS_URL_PATTERN,
  type SnsMessage,
  sesWebhook,
  snsStringToSign,
} from './webhooks/providers/ses.js';
export { MemoryReplayStore, type ReplayStore } from './webhooks/replay.js';
export {
  keepRawBody,
  type MailviaWebhooksOptions,
  mailviaWebhooks,
  type WebhookContext,
  type WebhookRefusalInfo,
} from './webhooks/router.js';
export { defaultSuppress, type WebhookStores } from './webhooks/stores.js';
export {
  type ProviderEvent,
  type VerifiedWebhook,
  WEBHOOK_EVENT_TYPES,
  type WebhookEvent,
  type WebhookEventType,
  WebhookRefusal,
  type WebhookRequest,
  type WebhookVerifier,
} from './webhooks/types.js';
