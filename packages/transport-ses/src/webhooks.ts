import { verify, X509Certificate } from 'node:crypto';
import {
  bracketedMessageId as bracketed,
  webhookHeader as header,
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

/** The only hosts a SigningCertURL or SubscribeURL may point to. */
export const SNS_URL_PATTERN = /^https:\/\/sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?\//;

/** Options of {@link sesWebhook}. */
export interface SesWebhookOptions {
  /** The URL segment. @default 'ses' */
  provider?: string;
  /**
   * Seconds an SNS message stays acceptable after its `Timestamp` (SNS retries a delivery with
   * the same message and signature, per the topic's delivery policy). @default 3600
   */
  tolerance?: number;
  /**
   * Confirm SNS subscriptions of allowed topics by visiting their `SubscribeURL`. Off by
   * default: a `SubscriptionConfirmation` is then refused (403) and the subscription stays pending.
   * @default false
   */
  confirmSubscriptions?: boolean;
  /**
   * Fetches a signing certificate (PEM) from a URL that already matched {@link SNS_URL_PATTERN}.
   * @default an HTTPS GET with `fetch`, cached per URL
   */
  fetchCertificate?: (url: string) => Promise<string>;
  /** Visits a `SubscribeURL` (already checked against {@link SNS_URL_PATTERN}). @default an HTTPS GET with `fetch` */
  confirm?: (url: string) => Promise<void>;
}

/** The fields of an SNS HTTP(S) message. */
export interface SnsMessage {
  Type: string;
  MessageId: string;
  TopicArn: string;
  Message: string;
  Timestamp: string;
  SignatureVersion: string;
  Signature: string;
  SigningCertURL: string;
  Subject?: string;
  SubscribeURL?: string;
  Token?: string;
  UnsubscribeURL?: string;
}

/** The text SNS signs: `Name\nvalue\n` for each signed field, in this order. */
export function snsStringToSign(message: SnsMessage): string {
  const fields =
    message.Type === 'Notification'
      ? ['Message', 'MessageId', 'Subject', 'Timestamp', 'TopicArn', 'Type']
      : ['Message', 'MessageId', 'SubscribeURL', 'Timestamp', 'Token', 'TopicArn', 'Type'];
  let out = '';
  for (const f of fields) {
    const v = (message as unknown as Record<string, unknown>)[f];
    if (v === undefined || v === null) {
      if (f === 'Subject') continue;
      throw new WebhookRefusal('webhook_malformed', `The SNS message has no ${f}.`);
    }
    out += `${f}\n${String(v)}\n`;
  }
  return out;
}

async function defaultFetchCertificate(url: string): Promise<string> {
  const res = await fetch(url, { redirect: 'error', signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return res.text();
}

async function defaultConfirm(url: string): Promise<void> {
  const res = await fetch(url, { redirect: 'error', signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  await res.arrayBuffer();
}

const SES_TYPES: Record<string, WebhookEventType> = {
  Send: 'queued',
  Delivery: 'delivered',
  DeliveryDelay: 'deferred',
  Bounce: 'bounced',
  Complaint: 'complained',
  Reject: 'rejected',
  RenderingFailure: 'rejected',
  Open: 'opened',
  Click: 'clicked',
};

/**
 * Turns an SES notification (identity notifications: `notificationType`; event publishing:
 * `eventType`) into normalised events, one per recipient.
 */
export function normaliseSesNotification(raw: unknown, fallbackTime: string): ProviderEvent[] {
  const n = obj(raw);
  const name = str(n.eventType) ?? str(n.notificationType) ?? '';
  const mail = obj(n.mail);
  const common = obj(mail.commonHeaders);
  const destination = Array.isArray(mail.destination)
    ? mail.destination.filter((d): d is string => typeof d === 'string')
    : [];
  let type: WebhookEventType = SES_TYPES[name] ?? 'unknown';
  const base = (recipient: string | undefined, occurredAt: unknown): ProviderEvent => {
    const e: ProviderEvent = {
      type,
      providerEvent: name,
      occurredAt: typeof occurredAt === 'string' && !Number.isNaN(Date.parse(occurredAt)) ? occurredAt : fallbackTime,
      raw,
    };
    if (recipient) e.recipient = recipient;
    const messageId = bracketed(common.messageId);
    if (messageId) e.messageId = messageId;
    const sesId = str(mail.messageId);
    if (sesId) e.providerMessageId = sesId;
    const tags = obj(mail.tags);
    const list = Object.values(tags).flatMap((v) => (Array.isArray(v) ? v.filter((x) => typeof x === 'string') : []));
    if (list.length) e.tags = list as string[];
    return e;
  };
  switch (name) {
    case 'Bounce': {
      const b = obj(n.bounce);
      const permanent = str(b.bounceType) === 'Permanent';
      const rcpts = Array.isArray(b.bouncedRecipients) ? b.bouncedRecipients : [];
      return rcpts.map((r) => {
        const rr = obj(r);
        const e = base(str(rr.emailAddress), b.timestamp);
        e.permanent = permanent;
        const reason = str(rr.diagnosticCode) ?? str(b.bounceSubType);
        if (reason) e.reason = reason;
        const status = str(rr.status);
        if (status) e.status = status;
        if (str(b.feedbackId)) e.eventId = `${str(b.feedbackId)}:${str(rr.emailAddress)}`;
        return e;
      });
    }
    case 'Complaint': {
      const c = obj(n.complaint);
      const rcpts = Array.isArray(c.complainedRecipients) ? c.complainedRecipients : [];
      return rcpts.map((r) => {
        const e = base(str(obj(r).emailAddress), c.timestamp);
        const reason = str(c.complaintFeedbackType);
        if (reason) e.reason = reason;
        return e;
      });
    }
    case 'Delivery': {
      const d = obj(n.delivery);
      const rcpts = Array.isArray(d.recipients) ? d.recipients.filter((x): x is string => typeof x === 'string') : [];
      return rcpts.map((r) => {
        const e = base(r, d.timestamp);
        const reason = str(d.smtpResponse);
        if (reason) {
          e.reason = reason;
          const code = /^\d{3}/.exec(reason)?.[0];
          if (code) e.status = code;
        }
        return e;
      });
    }
    case 'DeliveryDelay': {
      const d = obj(n.deliveryDelay);
      const rcpts = Array.isArray(d.delayedRecipients) ? d.delayedRecipients : [];
      return rcpts.map((r) => {
        const rr = obj(r);
        const e = base(str(rr.emailAddress), d.timestamp);
        const reason = str(rr.diagnosticCode) ?? str(d.delayType);
        if (reason) e.reason = reason;
        const status = str(rr.status);
        if (status) e.status = status;
        return e;
      });
    }
    case 'Subscription': {
      const s = obj(n.subscription);
      const prefs = obj(s.newTopicPreferences);
      type = prefs.unsubscribeAll === true ? 'unsubscribed' : 'unknown';
      return destination.map((r) => base(r, s.timestamp));
    }
    default: {
      const detail = obj(n[name.charAt(0).toLowerCase() + name.slice(1)]);
      return (destination.length ? destination : [undefined]).map((r) => {
        const e = base(r, detail.timestamp ?? mail.timestamp);
        const reason = str(detail.reason) ?? str(detail.errorMessage);
        if (reason) e.reason = reason;
        const link = str(detail.link);
        if (link && type === 'clicked') e.url = link;
        return e;
      });
    }
  }
}

function toSnsMessage(value: unknown): SnsMessage {
  const m = obj(value);
  for (const f of ['Type', 'MessageId', 'TopicArn', 'Timestamp', 'SignatureVersion', 'Signature', 'SigningCertURL']) {
    if (typeof m[f] !== 'string' || m[f] === '') {
      throw new WebhookRefusal('webhook_malformed', `The body is not an SNS message (no ${f}).`);
    }
  }
  return m as unknown as SnsMessage;
}

/**
 * Amazon SES events delivered by Amazon SNS (HTTP/S subscription). The organisation's secrets
 * are the ARNs of the SNS topics it may receive from (the allow-list); a message from any other
 * topic is refused before its certificate is fetched.
 */
export function sesWebhook(options: SesWebhookOptions = {}): WebhookVerifier {
  const fetchCertificate = options.fetchCertificate ?? defaultFetchCertificate;
  const confirm = options.confirm ?? defaultConfirm;
  const certificates = new Map<string, Promise<X509Certificate>>();

  const certificate = (url: string): Promise<X509Certificate> => {
    let hit = certificates.get(url);
    if (!hit) {
      hit = fetchCertificate(url).then((pem) => new X509Certificate(pem));
      certificates.set(url, hit);
      hit.catch(() => certificates.delete(url));
      if (certificates.size > 100) certificates.delete(certificates.keys().next().value as string);
    }
    return hit;
  };

  return {
    provider: options.provider ?? 'ses',
    tolerance: options.tolerance ?? 3600,
    async verify(request: WebhookRequest): Promise<VerifiedWebhook> {
      const message = toSnsMessage(parseJson(request.rawBody, 'SNS'));
      const declared = header(request.headers, 'x-amz-sns-message-type');
      if (declared !== undefined && declared !== message.Type) {
        throw new WebhookRefusal('webhook_malformed', 'x-amz-sns-message-type does not match the message Type.');
      }
      if (!request.secrets.includes(message.TopicArn)) {
        throw new WebhookRefusal(
          'webhook_topic_not_allowed',
          'The SNS topic of this message is not one this organisation allows.',
        );
      }
      if (!SNS_URL_PATTERN.test(message.SigningCertURL) || !message.SigningCertURL.endsWith('.pem')) {
        throw new WebhookRefusal(
          'webhook_signature_invalid',
          'The SigningCertURL is not an Amazon SNS certificate URL (https://sns.<region>.amazonaws.com/….pem).',
        );
      }
      const algorithm =
        message.SignatureVersion === '1' ? 'sha1' : message.SignatureVersion === '2' ? 'sha256' : undefined;
      if (!algorithm) {
        throw new WebhookRefusal(
          'webhook_signature_invalid',
          `SignatureVersion ${message.SignatureVersion} is not 1 or 2.`,
        );
      }
      const text = snsStringToSign(message);
      let cert: X509Certificate;
      try {
        cert = await certificate(message.SigningCertURL);
      } catch {
        throw new WebhookRefusal('internal', 'The SNS signing certificate could not be fetched; SNS will retry.');
      }
      const now = Date.now();
      if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now) {
        throw new WebhookRefusal('webhook_signature_invalid', 'The SNS signing certificate is not valid now.');
      }
      let ok = false;
      try {
        ok = verify(algorithm, Buffer.from(text, 'utf8'), cert.publicKey, Buffer.from(message.Signature, 'base64'));
      } catch {
        ok = false;
      }
      if (!ok) throw new WebhookRefusal('webhook_signature_invalid', 'The SNS signature does not match.');
      const signedAt = Date.parse(message.Timestamp);
      if (Number.isNaN(signedAt)) throw new WebhookRefusal('webhook_malformed', 'The SNS Timestamp is not a date.');
      const verified: VerifiedWebhook = { replayId: message.MessageId, signedAt, events: [] };

      if (message.Type === 'SubscriptionConfirmation') {
        const url = message.SubscribeURL ?? '';
        if (!options.confirmSubscriptions) {
          throw new WebhookRefusal(
            'webhook_subscription_refused',
            'SNS subscription confirmations are not accepted here (sesWebhook({ confirmSubscriptions: true }) accepts them).',
          );
        }
        if (!SNS_URL_PATTERN.test(url)) {
          throw new WebhookRefusal('webhook_malformed', 'The SubscribeURL is not an Amazon SNS URL.');
        }
        verified.afterAccept = async () => {
          try {
            await confirm(url);
          } catch {
            throw new WebhookRefusal('internal', 'The SNS subscription could not be confirmed; SNS will retry.');
          }
          return { subscription: 'confirmed', topic: message.TopicArn };
        };
        return verified;
      }
      if (message.Type === 'UnsubscribeConfirmation') return verified;
      if (message.Type !== 'Notification') {
        throw new WebhookRefusal('webhook_malformed', `SNS message Type ${message.Type} is not known.`);
      }
      let notification: unknown;
      try {
        notification = JSON.parse(message.Message);
      } catch {
        notification = { eventType: 'unknown', text: message.Message };
      }
      verified.events = normaliseSesNotification(notification, new Date(signedAt).toISOString());
      return verified;
    },
  };
}
