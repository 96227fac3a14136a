import type { Attempt, FailureKind, MailError } from './errors.js';
import type { PreparedMessage } from './message.js';
import type { QuotaEvent } from './quota.js';

/**
 * The version of the route contract. A route declares the version it implements, so that a
 * future `v2` can be bridged instead of breaking every route package.
 */
export type SpecificationVersion = 'v1';

/** What a route learns about the send besides the message. */
export interface SendOptions {
  /** Aborts the send. One signal covers a whole chain: it is handed to every route tried. */
  signal?: AbortSignal;
  /** The organisation the message is sent for, when the application said. */
  organisation?: string;
  /** Told about each attempt and each route put to rest, as they happen (composites call it). */
  observer?: SendObserver;
}

/** Hooks a composite route calls while it works; the mailer turns them into events. */
export interface SendObserver {
  /** An attempt ended (or a resting route was skipped). */
  attempt?(attempt: Attempt): void;
  /** A route was put to rest until `until` (epoch ms) because of a failure of `kind`. */
  rested?(route: string, until: number, error: MailError): void;
  /**
   * Called when a chain picks a route, while it reads the route's state, and awaited before the
   * route's network call: a durable delivery log records the attempt as in flight here, so a crash
   * during the call leaves an attempt known as unknown. A route then found resting is reported to
   * {@link attempt} as skipped once this has resolved; a rejection fails the send as it is.
   */
  beforeAttempt?(route: string): void | Promise<void>;
  /** A route's quota crossed its warning threshold or was used up. */
  quota?(event: QuotaEvent): void;
}

/**
 * The proof that a route took a message.
 *
 * For a relay (such as a local Exim), "took" means *accepted by the relay*, not delivered: see
 * {@link Receipt.acceptedBy}.
 */
export interface Receipt {
  /** The route that took the message. */
  route: string;
  /** The message's RFC 5322 Message-ID (`<…@…>`), the same on every attempt. */
  messageId: string;
  /** The id the provider gave the message, when it gave one (SMTP queue id, API message id). */
  providerMessageId?: string;
  /** Envelope recipients the route accepted. */
  accepted: string[];
  /** Envelope recipients the route refused (the others were still sent). */
  rejected: string[];
  /** The provider's final answer, as text (an SMTP reply, an HTTP status line). */
  response?: string;
  /**
   * Who holds the message now: `'provider'` (the provider accepted it for delivery), `'relay'` (a
   * local relay queued it and delivers it later: its queue and log tell the final outcome), or
   * `'outbox'` (captured, never sent).
   */
  acceptedBy: 'provider' | 'relay' | 'outbox';
  /** Every attempt made for this send, in order, the successful one last. */
  attempts: Attempt[];
  /**
   * Set by `mailer.send` when its idempotency key was sent already (a delivery log is needed):
   * nothing was sent now, `attempts` is empty, and the other fields are the first send's, from
   * the log.
   */
  duplicate?: {
    /** The delivery log id of the send that holds the key. */
    deliveryId: string;
    /** Epoch ms when that send went. */
    sentAt?: number;
  };
}

/**
 * A route: one way a message can leave. The whole contract is {@link Transport.send}; `verify`
 * and `close` are optional. Composites (`failover`, `roundRobin`) are routes too.
 *
 * A route raises only {@link MailError}s, whose `kind` tells the engine what to do.
 *
 * @example
 * ```ts
 * const route: Transport = {
 *   specificationVersion: 'v1',
 *   name: 'my-api',
 *   async send(message, { signal } = {}) {
 *     const res = await fetch(url, { method: 'POST', body: JSON.stringify(message), signal });
 *     if (!res.ok) throw classifyHttpFailure({ status: res.status, route: 'my-api' });
 *     return { route: 'my-api', messageId: message.messageId, accepted: message.envelope.to,
 *       rejected: [], acceptedBy: 'provider', attempts: [] };
 *   },
 * };
 * ```
 */
export interface Transport {
  readonly specificationVersion: SpecificationVersion;
  /** A name for logs and receipts, e.g. `smtp(smtp.gmail.com:587 as school-a@gmail.com)`. Never a secret. */
  readonly name: string;
  /**
   * Sends one validated message. Resolves with a receipt, or rejects with a {@link MailError}.
   * Must not resolve before the route took the message; must honour `signal`.
   */
  send(message: PreparedMessage, options?: SendOptions): Promise<Receipt>;
  /** Checks the route can send (connects, authenticates), without sending. Rejects with a MailError. */
  verify?(options?: { signal?: AbortSignal }): Promise<void>;
  /** Releases connections. The route may be used again afterwards (it reconnects lazily). */
  close?(): Promise<void>;
}

/** Kinds after which a composite stops instead of trying another route. */
export const STOPPING_KINDS: ReadonlySet<FailureKind> = new Set<FailureKind>(['refused', 'unknown']);
