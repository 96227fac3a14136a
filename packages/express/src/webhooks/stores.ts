import type {
  DeliveryEvent,
  DeliveryLog,
  DeliveryRecord,
  SuppressionList,
  SuppressionSource,
  WebhookEvent,
} from '@mailvia/core';

/** The mailer's stores that provider events feed (a `Mailer` created with stores has both). */
export interface WebhookStores {
  log?: DeliveryLog | undefined;
  suppression?: SuppressionList | undefined;
}

/**
 * The default of `suppress`: a hard bounce, a spam complaint and an unsubscribe put the
 * recipient on the organisation's suppression list.
 */
export function defaultSuppress(event: WebhookEvent): boolean {
  return (
    (event.type === 'bounced' && event.permanent === true) ||
    event.type === 'complained' ||
    event.type === 'unsubscribed'
  );
}

/**
 * Finds the logged delivery an event is about, by one indexed lookup: the same organisation and
 * Message-ID (or provider id); among several (the same Message-ID sent twice), the newest one
 * addressed to the event's recipient.
 */
async function findDelivery(log: DeliveryLog, event: WebhookEvent): Promise<DeliveryRecord | undefined> {
  const { organisation } = event;
  const recipient = event.recipient?.toLowerCase();
  const pick = (found: DeliveryRecord[]) =>
    recipient === undefined ? found[0] : found.find((r) => r.recipients.includes(recipient));
  if (event.messageId !== undefined) {
    const hit = pick(await log.query({ organisation, messageId: event.messageId, limit: 20 }));
    if (hit) return hit;
  }
  if (event.providerMessageId !== undefined) {
    return pick(await log.query({ organisation, providerMessageId: event.providerMessageId, limit: 20 }));
  }
  return undefined;
}

function describe(event: WebhookEvent): string {
  return `${event.provider} reported ${event.type}${event.permanent === true ? ' (permanent)' : ''}${event.reason ? `: ${event.reason}` : ''}`.slice(
    0,
    500,
  );
}

/** The suppression list's `source` for an event that suppresses its recipient. */
export function suppressionSource(event: WebhookEvent): SuppressionSource {
  switch (event.type) {
    case 'bounced':
      return 'bounce';
    case 'complained':
      return 'complaint';
    case 'unsubscribed':
      return 'unsubscribe';
    default:
      // a provider's own refusal (a drop), or an event the application chose to suppress on
      return 'refused';
  }
}

function eventOf(event: WebhookEvent, now: number): DeliveryEvent {
  const at = Date.parse(event.occurredAt);
  const detail = (event.type === 'clicked' ? event.url : event.reason)?.slice(0, 500);
  return {
    type: event.type,
    at: Number.isFinite(at) ? at : now,
    provider: event.provider,
    ...(event.recipient ? { recipient: event.recipient.toLowerCase() } : {}),
    ...(event.permanent !== undefined ? { permanent: event.permanent } : {}),
    ...(event.status !== undefined ? { code: event.status } : {}),
    ...(detail ? { detail } : {}),
  };
}

/**
 * Feeds events to the delivery log (each is added to its delivery's `events`, found by
 * Message-ID or provider id; the record's own status, kind and reason stay the engine's) and
 * to the suppression list (with the source the event says: bounce, complaint, unsubscribe).
 */
export async function feedStores(
  events: WebhookEvent[],
  stores: WebhookStores,
  suppress: (event: WebhookEvent) => boolean,
): Promise<void> {
  const now = Date.now();
  for (const event of events) {
    let record: DeliveryRecord | undefined;
    if (stores.log) {
      record = await findDelivery(stores.log, event);
      if (record && (await stores.log.addEvent(record.id, eventOf(event, now)))) event.deliveryId = record.id;
    }
    if (stores.suppression && event.recipient && suppress(event)) {
      await stores.suppression.add({
        organisation: event.organisation,
        address: event.recipient.toLowerCase(),
        reason: describe(event),
        source: suppressionSource(event),
        ...(event.status !== undefined ? { code: event.status } : {}),
        ...(record ? { deliveryId: record.id } : {}),
        createdAt: now,
      });
    }
  }
}
