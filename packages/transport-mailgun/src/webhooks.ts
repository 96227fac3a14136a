import { createHmac, timingSafeEqual } from 'node:crypto';
import {
  bracketedMessageId as bracketed,
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

/** Options of {@link mailgunWebhook}. */
export interface MailgunWebhookOptions {
  /** The URL segment. @default 'mailgun' */
  provider?: string;
  /** Seconds a signed request stays acceptable. @default the receiver's tolerance */
  tolerance?: number;
}

/** Checks a Mailgun webhook signature: hex HMAC-SHA256(signing key, timestamp + token), compared in constant time. */
export function verifyMailgunSignature(
  signingKey: string,
  timestamp: string,
  token: string,
  signature: string,
): boolean {
  const expected = createHmac('sha256', signingKey).update(`${timestamp}${token}`).digest();
  if (!/^[0-9a-f]{64}$/i.test(signature)) return false;
  return timingSafeEqual(expected, Buffer.from(signature, 'hex'));
}

/** Mailgun's reasons for a permanent failure that mean "not even tried" (a suppression). */
const SUPPRESSED = new Set(['suppress-bounce', 'suppress-unsubscribe', 'suppress-complaint']);

const TYPES: Record<string, WebhookEventType> = {
  accepted: 'queued',
  delivered: 'delivered',
  rejected: 'rejected',
  opened: 'opened',
  clicked: 'clicked',
  unsubscribed: 'unsubscribed',
  complained: 'complained',
};

/** Turns one Mailgun `event-data` object into a normalised event. */
export function normaliseMailgunEvent(raw: unknown): ProviderEvent {
  const e = obj(raw);
  const name = str(e.event) ?? '';
  let type: WebhookEventType = TYPES[name] ?? 'unknown';
  const reasonCode = str(e.reason);
  const status = obj(e['delivery-status']);
  if (name === 'failed') {
    if (str(e.severity) === 'temporary') type = 'deferred';
    else type = reasonCode && SUPPRESSED.has(reasonCode) ? 'rejected' : 'bounced';
  }
  const event: ProviderEvent = { type, providerEvent: name, occurredAt: isoFromSeconds(e.timestamp), raw };
  const recipient = str(e.recipient);
  if (recipient) event.recipient = recipient;
  const messageId = bracketed(obj(obj(e.message).headers)['message-id']);
  if (messageId) {
    event.messageId = messageId;
    // Mailgun's send API answers with the Message-ID as the message's id.
    event.providerMessageId = messageId;
  }
  const id = str(e.id);
  if (id) event.eventId = id;
  if (type === 'bounced') event.permanent = true;
  const reason = str(obj(e.reject).reason) || str(status.message) || str(status.description) || reasonCode || undefined;
  if (reason) event.reason = reason;
  const code = str(status['enhanced-code']) ?? str(status['bounce-code']) ?? str(status.code);
  if (code) event.status = code;
  const url = str(e.url);
  if (url && type === 'clicked') event.url = url;
  if (Array.isArray(e.tags)) event.tags = e.tags.filter((t): t is string => typeof t === 'string');
  return event;
}

/**
 * The Mailgun webhook receiver (JSON webhooks: `{ signature: { timestamp, token, signature },
 * "event-data": {…} }`). The organisation's secret is its HTTP webhook signing key.
 */
export function mailgunWebhook(options: MailgunWebhookOptions = {}): WebhookVerifier {
  return {
    provider: options.provider ?? 'mailgun',
    ...(options.tolerance !== undefined ? { tolerance: options.tolerance } : {}),
    async verify(request: WebhookRequest): Promise<VerifiedWebhook> {
      const body = obj(parseJson(request.rawBody, 'Mailgun'));
      const sig = obj(body.signature);
      const timestamp = str(sig.timestamp);
      const token = str(sig.token);
      const signature = str(sig.signature);
      if (!timestamp || !token || !signature) {
        throw new WebhookRefusal(
          'webhook_signature_invalid',
          'The Mailgun body has no signature.timestamp, signature.token and signature.signature.',
        );
      }
      const ok = request.secrets.some((key) => verifyMailgunSignature(key, timestamp, token, signature));
      if (!ok) throw new WebhookRefusal('webhook_signature_invalid', 'The Mailgun signature does not match.');
      if (!/^\d+$/.test(timestamp)) {
        throw new WebhookRefusal('webhook_signature_invalid', 'The Mailgun timestamp is not a number of seconds.');
      }
      if (!body['event-data'] || typeof body['event-data'] !== 'object') {
        throw new WebhookRefusal('webhook_malformed', 'The Mailgun body has no "event-data" object.');
      }
      return {
        // Mailgun's documented replay defence: never honour the same token twice.
        replayId: token,
        signedAt: Number(timestamp) * 1000,
        events: [normaliseMailgunEvent(body['event-data'])],
      };
    },
  };
}
