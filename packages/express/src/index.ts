// The webhook contract lives in core (provider packages implement it); re-exported for convenience.
export {
  type ProviderEvent,
  type VerifiedWebhook,
  WEBHOOK_EVENT_TYPES,
  type WebhookEvent,
  type WebhookEventType,
  WebhookRefusal,
  type WebhookRequest,
  type WebhookVerifier,
} from '@mailvia/core';
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
export { MemoryReplayStore, type ReplayStore } from './webhooks/replay.js';
export {
  keepRawBody,
  type MailviaWebhooksOptions,
  mailviaWebhooks,
  type WebhookContext,
  type WebhookRefusalInfo,
} from './webhooks/router.js';
export { defaultSuppress, suppressionSource, type WebhookStores } from './webhooks/stores.js';
