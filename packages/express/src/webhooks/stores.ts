import type { DeliveryLog, DeliveryRecord, SuppressionList, WebhookEvent } from '@mailvia/core';

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

/** Finds the logged delivery an event is about: same organisation and recipient, same Message-ID or provider id. */
async function findDelivery(log: DeliveryLog, event: WebhookEvent): Promise<DeliveryRecord | undefined> {
  if (!event.recipient || (!event.messageId && !event.providerMessageId)) return undefined;
  const candidates = await log.query({ organisation: event.organisation, recipient: event.recipient, limit: 200 });
  return candidates.find(
    (r) =>
      (event.messageId !== undefined && r.messageId === event.messageId) ||
      (event.providerMessageId !== undefined && r.providerMessageId === event.providerMessageId),
  );
}

function describe(event: WebhookEvent): string {
  return `${event.provider} reported ${event.type}${event.permanent === true ? ' (permanent)' : ''}${event.reason ? `: ${event.reason}` : ''}`.slice(
    0,
    500,
  );
}

/**
 * Feeds events to the delivery log (the record of the message gets the provider's verdict and
 * each event its `deliveryId`) and to the suppression list.
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
      if (record) {
        event.deliveryId = record.id;
        const negative =
          event.type === 'bounced' ||
          event.type === 'rejected' ||
          event.type === 'complained' ||
          event.type === 'unsubscribed';
        if (negative) {
          const refused = event.type === 'rejected' || (event.type === 'bounced' && event.permanent === true);
          await stores.log.update(record.id, {
            reason: describe(event),
            ...(event.status !== undefined ? { code: event.status } : {}),
            ...(refused ? { kind: 'refused' as const } : {}),
            updatedAt: now,
          });
        }
      }
    }
    if (stores.suppression && event.recipient && suppress(event)) {
      await stores.suppression.add({
        organisation: event.organisation,
        address: event.recipient.toLowerCase(),
        reason: describe(event),
        source: 'refused',
        ...(event.status !== undefined ? { code: event.status } : {}),
        ...(record ? { deliveryId: record.id } : {}),
        createdAt: now,
      });
    }
  }
}
