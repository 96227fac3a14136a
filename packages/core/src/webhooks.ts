/**
 * The contract of provider webhooks: what a provider package's verifier is given and returns,
 * and the normalised events it makes. A provider's signature scheme and event shapes live in its
 * own package (`sendgridWebhook()` in `@mailvia/transport-sendgrid`, …); a receiver (such as
 * `mailviaWebhooks()` of `@mailvia/express`) reads the raw body, finds the organisation's
 * secrets, calls the verifier, and checks the tolerance and replays.
 */
import type { IncomingHttpHeaders } from 'node:http';

/** The normalised event types every provider's events map to. */
export const WEBHOOK_EVENT_TYPES = [
  'queued',
  'delivered',
  'deferred',
  'bounced',
  'complained',
  'rejected',
  'opened',
  'clicked',
  'unsubscribed',
  'unknown',
] as const;

/**
 * - `queued`: the provider accepted the message for delivery (SendGrid `processed`, Mailgun `accepted`, SES `Send`).
 * - `delivered`: the receiving server accepted it.
 * - `deferred`: the receiving server refused it for now; the provider retries.
 * - `bounced`: the receiving server refused it; `permanent` tells a hard bounce from a soft one.
 * - `complained`: the recipient marked it as spam.
 * - `rejected`: the provider itself refused to send it (suppressed address, sandbox, bad content).
 * - `opened`, `clicked`, `unsubscribed`: engagement.
 * - `unknown`: an event the provider package does not map (the provider's own name is in `providerEvent`).
 */
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/** One provider event, normalised. One event is about one recipient. */
export interface WebhookEvent {
  type: WebhookEventType;
  /** The provider, as named in the webhook URL (`sendgrid`, `mailgun`, `ses`). */
  provider: string;
  /** The organisation, from the webhook URL. */
  organisation: string;
  /** The provider's own name of the event (`bounce`, `failed`, `Bounce`). */
  providerEvent: string;
  recipient?: string;
  /** The RFC 5322 Message-ID (`<…@…>`), when the provider tells it. */
  messageId?: string;
  /** The provider's id of the message (what `Receipt.providerMessageId` holds), when it tells it. */
  providerMessageId?: string;
  /** The provider's id of this event. */
  eventId?: string;
  /** When the event happened (ISO 8601). */
  occurredAt: string;
  /** For `bounced`: true for a hard (permanent) bounce. */
  permanent?: boolean;
  /** Why, in the provider's words (bounce reason, drop reason, diagnostic). */
  reason?: string;
  /** The SMTP status or enhanced code the provider reported (`550`, `5.1.1`). */
  status?: string;
  /** For `clicked`: the link. */
  url?: string;
  /** Tags / categories of the message, when the provider echoes them. */
  tags?: string[];
  /** The delivery log's id of the message, when the receiver found it there. */
  deliveryId?: string;
  /** The provider's event, as received. */
  raw: unknown;
}

/** An event as a verifier makes it (the receiver adds provider and organisation). */
export type ProviderEvent = Omit<WebhookEvent, 'provider' | 'organisation' | 'deliveryId'>;

/** What a verifier is given. */
export interface WebhookRequest {
  /** The body, byte for byte as received. */
  rawBody: Buffer;
  headers: IncomingHttpHeaders;
  /**
   * The organisation's secrets for this provider (several during a key rotation): SendGrid
   * verification keys, Mailgun signing keys, SNS topic ARNs.
   */
  secrets: readonly string[];
  /** The organisation, for messages. */
  organisation: string;
}

/** What a verifier returns for an authentic request. */
export interface VerifiedWebhook {
  /** A value unique to this delivery of this request, remembered to refuse a replay. */
  replayId: string;
  /** When the provider signed the request (epoch ms), checked against the tolerance. */
  signedAt?: number;
  events: ProviderEvent[];
  /**
   * Work to do once the request is accepted (e.g. confirming an SNS subscription); what it
   * resolves with is added to the answer.
   */
  afterAccept?: () => Promise<Record<string, unknown> | undefined>;
}

/**
 * A provider's webhook receiver: checks a request's signature and turns its payload into
 * normalised events. It lives with the provider (its signature scheme and event shapes are
 * provider specifics); a receiver such as `mailviaWebhooks()` of `@mailvia/express` mounts it.
 */
export interface WebhookVerifier {
  /** The URL segment of the provider: `/webhooks/<provider>/<organisation>`. */
  readonly provider: string;
  /** Seconds a signed request stays acceptable; overrides the receiver's tolerance. */
  readonly tolerance?: number;
  /**
   * Verifies the request. Throws a {@link WebhookRefusal} for a request that must be refused
   * (bad signature, malformed payload, topic not allowed) or that cannot be checked now.
   */
  verify(request: WebhookRequest): Promise<VerifiedWebhook>;
}

/**
 * The codes a verifier refuses a request with, and the HTTP status a receiver answers with.
 *
 * - `webhook_malformed`: the body is not what the provider sends.
 * - `webhook_signature_invalid`: no signature, or one that does not match the organisation's secrets.
 * - `webhook_topic_not_allowed`: an SNS topic the organisation does not allow.
 * - `webhook_subscription_refused`: an SNS subscription confirmation the receiver is not set to confirm.
 * - `internal`: the receiver's side failed (the organisation's key is not a key, a signing
 *   certificate could not be fetched): the provider delivers the request again later.
 */
export const WEBHOOK_REFUSAL_CODES = {
  webhook_malformed: 400,
  webhook_signature_invalid: 401,
  webhook_topic_not_allowed: 403,
  webhook_subscription_refused: 403,
  internal: 500,
} as const;

/** One of {@link WEBHOOK_REFUSAL_CODES}. */
export type WebhookRefusalCode = keyof typeof WEBHOOK_REFUSAL_CODES;

const REFUSAL_MARKER = Symbol.for('mailvia.webhookRefusal');

/**
 * A webhook request a verifier refuses. Its message is written by the verifier, never copied
 * from the request, and never carries a secret.
 */
export class WebhookRefusal extends Error {
  readonly code: WebhookRefusalCode;
  /** The HTTP status a receiver answers with. */
  readonly statusCode: number;
  constructor(code: WebhookRefusalCode, message: string) {
    super(message);
    this.name = 'WebhookRefusal';
    this.code = code;
    this.statusCode = WEBHOOK_REFUSAL_CODES[code];
    Object.defineProperty(this, REFUSAL_MARKER, { value: true });
  }

  /** True for a {@link WebhookRefusal}, also one made by another copy of this package. */
  static isInstance(value: unknown): value is WebhookRefusal {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[REFUSAL_MARKER] === true;
  }
}

/** Reads one request header (any case) as a string. */
export function webhookHeader(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** Parses a JSON body, or refuses the request as `webhook_malformed` (`what` names the provider). */
export function parseWebhookJson(raw: Buffer, what: string): unknown {
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    throw new WebhookRefusal('webhook_malformed', `The ${what} body is not valid JSON.`);
  }
}

/** A time in epoch seconds (number or numeric string) as ISO 8601, or now. */
export function isoFromEpochSeconds(value: unknown): string {
  const n = typeof value === 'string' ? Number(value) : value;
  if (typeof n === 'number' && Number.isFinite(n)) return new Date(n * 1000).toISOString();
  return new Date().toISOString();
}

/** `<id>` for a Message-ID given with or without angle brackets; undefined for anything else. */
export function bracketedMessageId(id: unknown): string | undefined {
  if (typeof id !== 'string' || id.trim() === '') return undefined;
  const t = id.trim();
  return t.startsWith('<') ? t : `<${t}>`;
}

/** The object at `value` (for reading a provider's payload), or an empty one. */
export function payloadObject(value: unknown): Record<string, unknown> {
  return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

/** The string (or finite number, as a string) at `value` of a provider's payload, or undefined. */
export function payloadString(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return undefined;
}
