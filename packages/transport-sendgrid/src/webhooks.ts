import { createHash, createPublicKey, type KeyObject, verify } from 'node:crypto';
import {
  bracketedMessageId as bracketed,
  webhookHeader as header,
  isoFromEpochSeconds as isoFromSeconds,
  payloadObject as obj,
  type ProviderEvent,
  parseWebhookJson as parseJson,
  payloadString as str,
  type VerifiedWebhook,
  type WebhookEventType,
  WebhookRefusal,
  type WebhookRequest,
  type WebhookVerifier,
} from '@mailvia/core';

/** SendGrid's signature headers (Signed Event Webhook). */
export const SENDGRID_SIGNATURE_HEADER = 'x-twilio-email-event-webhook-signature';
export const SENDGRID_TIMESTAMP_HEADER = 'x-twilio-email-event-webhook-timestamp';

/** Options of {@link sendgridWebhook}. */
export interface SendgridWebhookOptions {
  /** The URL segment. @default 'sendgrid' */
  provider?: string;
  /** Seconds a signed request stays acceptable. @default the receiver's tolerance */
  tolerance?: number;
}

const keyCache = new Map<string, KeyObject>();

/**
 * Reads a SendGrid verification key: the base64 DER (SubjectPublicKeyInfo) the SendGrid app shows,
 * or a PEM. Throws (without echoing the key) when it is not an EC P-256 public key.
 */
export function sendgridPublicKey(key: string): KeyObject {
  const hit = keyCache.get(key);
  if (hit) return hit;
  let parsed: KeyObject;
  try {
    parsed = key.includes('-----BEGIN')
      ? createPublicKey(key)
      : createPublicKey({ key: Buffer.from(key.replace(/\s+/g, ''), 'base64'), format: 'der', type: 'spki' });
  } catch {
    throw new WebhookRefusal('internal', 'The SendGrid verification key of this organisation is not a public key.');
  }
  if (parsed.asymmetricKeyType !== 'ec' || parsed.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new WebhookRefusal('internal', 'The SendGrid verification key of this organisation is not a P-256 key.');
  }
  if (keyCache.size > 1000) keyCache.clear();
  keyCache.set(key, parsed);
  return parsed;
}

/**
 * Checks a SendGrid Event Webhook signature: ECDSA P-256 / SHA-256 over the timestamp header
 * followed by the raw body; the signature is base64 DER.
 */
export function verifySendgridSignature(
  publicKey: string,
  timestamp: string,
  rawBody: Buffer | string,
  signature: string,
): boolean {
  const key = sendgridPublicKey(publicKey);
  const body = typeof rawBody === 'string' ? Buffer.from(rawBody, 'utf8') : rawBody;
  try {
    return verify(
      'sha256',
      Buffer.concat([Buffer.from(timestamp, 'utf8'), body]),
      key,
      Buffer.from(signature, 'base64'),
    );
  } catch {
    return false;
  }
}

const TYPES: Record<string, WebhookEventType> = {
  processed: 'queued',
  delivered: 'delivered',
  deferred: 'deferred',
  bounce: 'bounced',
  dropped: 'rejected',
  spamreport: 'complained',
  open: 'opened',
  click: 'clicked',
  unsubscribe: 'unsubscribed',
  group_unsubscribe: 'unsubscribed',
};

/** Turns one SendGrid event object into a normalised event. */
export function normaliseSendgridEvent(raw: unknown): ProviderEvent {
  const e = obj(raw);
  const name = str(e.event) ?? '';
  const type: WebhookEventType = TYPES[name] ?? 'unknown';
  const event: ProviderEvent = { type, providerEvent: name, occurredAt: isoFromSeconds(e.timestamp), raw };
  const recipient = str(e.email);
  if (recipient) event.recipient = recipient;
  const messageId = bracketed(e['smtp-id']);
  if (messageId) event.messageId = messageId;
  const sgId = str(e.sg_message_id);
  // The id the send API returned (X-Message-Id) is the part before ".filter…".
  if (sgId) event.providerMessageId = sgId.split('.filter')[0]!;
  const eventId = str(e.sg_event_id);
  if (eventId) event.eventId = eventId;
  const reason = str(e.reason) ?? str(e.response);
  if (reason) event.reason = reason;
  const status = str(e.status);
  if (status) event.status = status;
  const url = str(e.url);
  if (url && type === 'clicked') event.url = url;
  const category = e.category;
  if (typeof category === 'string') event.tags = [category];
  else if (Array.isArray(category)) event.tags = category.filter((c): c is string => typeof c === 'string');
  if (type === 'bounced') {
    // "type": "blocked" is a temporary refusal that SendGrid does not retry; "bounce" is permanent.
    const bounceType = str(e.type);
    event.permanent = bounceType !== 'blocked';
  }
  return event;
}

/**
 * The SendGrid Event Webhook receiver (Signed Event Webhook). The organisation's secret is its
 * verification key, as SendGrid shows it (base64) or as a PEM.
 */
export function sendgridWebhook(options: SendgridWebhookOptions = {}): WebhookVerifier {
  return {
    provider: options.provider ?? 'sendgrid',
    ...(options.tolerance !== undefined ? { tolerance: options.tolerance } : {}),
    async verify(request: WebhookRequest): Promise<VerifiedWebhook> {
      const signature = header(request.headers, SENDGRID_SIGNATURE_HEADER);
      const timestamp = header(request.headers, SENDGRID_TIMESTAMP_HEADER);
      if (!signature || !timestamp) {
        throw new WebhookRefusal(
          'webhook_signature_invalid',
          `The request has no ${!signature ? 'X-Twilio-Email-Event-Webhook-Signature' : 'X-Twilio-Email-Event-Webhook-Timestamp'} header (is the Signed Event Webhook enabled?).`,
        );
      }
      const ok = request.secrets.some((k) => verifySendgridSignature(k, timestamp, request.rawBody, signature));
      if (!ok) throw refusal('The SendGrid signature does not match the body and timestamp.');
      if (!/^\d+$/.test(timestamp)) throw refusal('The SendGrid timestamp is not a number of seconds.');
      const payload = parseJson(request.rawBody, 'SendGrid');
      // SendGrid posts an array of events; a lone (signed) object is taken as one event.
      const list = Array.isArray(payload) ? payload : payload && typeof payload === 'object' ? [payload] : undefined;
      if (!list) {
        throw new WebhookRefusal('webhook_malformed', 'A SendGrid Event Webhook body is a JSON array of events.');
      }
      return {
        // The signed bytes, not the signature: an ECDSA signature has a second valid form
        // ((r, n - s)), so keying on it would let a replay through.
        replayId: createHash('sha256').update(timestamp).update('\n').update(request.rawBody).digest('hex'),
        signedAt: Number(timestamp) * 1000,
        events: list.map(normaliseSendgridEvent),
      };
    },
  };
}

function refusal(message: string): WebhookRefusal {
  return new WebhookRefusal('webhook_signature_invalid', message);
}
