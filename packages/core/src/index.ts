export {
  type CapturedMail,
  type CapturedMailContent,
  type CaptureRouteOptions,
  capture,
  createOutbox,
  Outbox,
  type OutboxFilter,
  type OutboxOptions,
} from './capture.js';
export {
  type Classification,
  CORE_ERROR_RULES,
  classify,
  type ErrorRule,
  type FailureFacts,
  type FailureReport,
  failure,
  matchCode,
  matchText,
  parseRetryAfter,
  parseSmtpReply,
  redact,
} from './classify.js';
export { type CompositeOptions, failover, type RestPolicy, roundRobin } from './composite.js';
export {
  type Attempt,
  DeliveryError,
  FAILURE_KINDS,
  type FailureKind,
  type FailurePhase,
  MailError,
  type MailErrorOptions,
  MessageValidationError,
  RouteConfigError,
} from './errors.js';
export {
  type AbortedRequest,
  checkBaseUrl,
  checkRequestHeaders,
  type HttpFailureReport,
  type HttpHeaders,
  headerValue,
  httpFailure,
  keyFingerprint,
  type RequestProgress,
  type RouteAgents,
  requestAborted,
  routeAgents,
  type TrackingAgentOptions,
  trackingAgent,
  trackRequest,
  withRequestProgress,
} from './http.js';
export {
  createMailer,
  Mailer,
  type MailerEvents,
  type MailerMode,
  type MailerOptions,
  type MailerSendOptions,
  type RouteStatus,
} from './mailer.js';
export {
  type Address,
  type AddressInput,
  type Attachment,
  formatAddress,
  type Message,
  type PreparedAttachment,
  type PreparedMessage,
  parseAddress,
  prepareMessage,
  type ValidationOptions,
} from './message.js';
export { composeMime } from './mime.js';
export { type QuotaEvent, type QuotaReading, type RouteQuota, readQuota } from './quota.js';
export {
  boolParam,
  captureRoute,
  intParam,
  maskUrl,
  onlyParams,
  type RouteConfig,
  type RouteContext,
  type RouteFactory,
  RouteRegistry,
  type RouteSpec,
  smtpRoute,
  urlCredentials,
} from './registry.js';
export {
  type ConsumeOptions,
  fixedWindow,
  MemoryRouteState,
  type QuotaConsumption,
  type QuotaLimit,
  type QuotaUsage,
  type QuotaWindow,
  type RestState,
  type RouteStateStore,
} from './route-state.js';
export { type SmtpRouteOptions, smtp } from './smtp.js';
export type { Receipt, SendObserver, SendOptions, SpecificationVersion, Transport } from './spec.js';
export { STOPPING_KINDS } from './spec.js';
export { decodeMessage, encodeMessage, messageToJSON } from './stores/codec.js';
export { Bell, type ClaimSource, runConsumer } from './stores/consumer.js';
export {
  MemoryDeliveryLog,
  MemoryQueue,
  type MemoryStoreOptions,
  MemorySuppressionList,
  matchesQuery,
  memoryStores,
  withPatch,
} from './stores/memory.js';
export {
  SqliteDatabase,
  SqliteDeliveryLog,
  SqliteQueue,
  SqliteRouteState,
  type SqliteStoreOptions,
  SqliteSuppressionList,
  sqliteStores,
} from './stores/sqlite.js';
export type {
  AttemptRecord,
  AttemptStatus,
  DeliveryDetails,
  DeliveryEvent,
  DeliveryLog,
  DeliveryQuery,
  DeliveryRecord,
  DeliveryStatus,
  JobOutcome,
  LoggedContent,
  MailerStores,
  MaybePromise,
  NewQueueJob,
  ProcessOptions,
  QueueAddResult,
  QueueConsumer,
  QueueJob,
  QueueJobInfo,
  QueueJobState,
  QueueStore,
  RetentionPolicy,
  SentOutcome,
  SuppressionEntry,
  SuppressionList,
  SuppressionSource,
} from './stores/types.js';
export { MAX_DELIVERY_EVENTS } from './stores/types.js';
export { abortReason, combineSignals, isLoopbackHost } from './util.js';
export {
  bracketedMessageId,
  isoFromEpochSeconds,
  type ProviderEvent,
  parseWebhookJson,
  payloadObject,
  payloadString,
  type VerifiedWebhook,
  WEBHOOK_EVENT_TYPES,
  WEBHOOK_REFUSAL_CODES,
  type WebhookEvent,
  type WebhookEventType,
  WebhookRefusal,
  type WebhookRefusalCode,
  type WebhookRequest,
  type WebhookVerifier,
  webhookHeader,
} from './webhooks.js';
