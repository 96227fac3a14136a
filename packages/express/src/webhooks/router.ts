import type { IncomingMessage } from 'node:http';
import { type VerifiedWebhook, type WebhookEvent, WebhookRefusal, type WebhookVerifier } from '@mailvia/core';
import type { Request, RequestHandler, Response } from 'express';
import { MailviaHttpError, MailviaSetupError } from '../errors.js';
import { bodyConsumed, fail, match, pathSegments, readBody, sendJson } from '../http.js';
import { MemoryReplayStore, type ReplayStore } from './replay.js';
import { defaultSuppress, feedStores, type WebhookStores } from './stores.js';

type MaybePromise<T> = T | Promise<T>;

/** Who sent a webhook request: the provider and organisation named by its URL. */
export interface WebhookContext {
  provider: string;
  organisation: string;
  req: Request;
}

/** A refused webhook request, for the application's security log (no secret, no body). */
export interface WebhookRefusalInfo {
  provider: string;
  organisation: string;
  code: string;
  message: string;
  ip: string | undefined;
}

/** Options of {@link mailviaWebhooks}. */
export interface MailviaWebhooksOptions {
  /**
   * The providers to receive from: the verifiers their packages make (`sendgridWebhook()` of
   * `@mailvia/transport-sendgrid`, `mailgunWebhook()`, `sesWebhook()`, or your own
   * {@link WebhookVerifier}). A list mounts each at its own `provider` segment; an object mounts
   * each at its key (`{ sendgrid: sendgridWebhook(), 'ses-eu': sesWebhook() }`).
   */
  providers: readonly WebhookVerifier[] | Readonly<Record<string, WebhookVerifier>>;
  /**
   * The organisation's secrets for a provider (several during a rotation), or undefined when the
   * organisation does not use it: SendGrid verification key, Mailgun signing key, SNS topic ARNs.
   */
  secrets: (context: WebhookContext) => MaybePromise<string | readonly string[] | undefined | null>;
  /**
   * Called with the events of each accepted request, before the answer. If it rejects, the error
   * goes to Express's error handler (`next(err)`, a 500), the provider delivers the request again,
   * and that delivery is not counted as a replay.
   */
  onEvents?: (events: WebhookEvent[], context: WebhookContext) => MaybePromise<void>;
  /**
   * The mailer (or its stores): each event is matched to its delivery in the delivery log
   * (recording a bounce, rejection or complaint there), and `suppress` decides which events put
   * the recipient on the organisation's suppression list.
   */
  mailer?: WebhookStores;
  /** Which events suppress the recipient. @default a permanent bounce, a complaint, an unsubscribe */
  suppress?: (event: WebhookEvent) => boolean;
  /** Told about each refused request (forged, stale, replayed, unknown organisation). */
  onRefused?: (info: WebhookRefusalInfo) => void;
  /** Seconds a signed request stays acceptable (a verifier may set its own). @default 300 */
  tolerance?: number;
  /** Where accepted requests are remembered, to refuse replays. @default a {@link MemoryReplayStore} */
  replayStore?: ReplayStore;
  /** Largest body accepted, in bytes. @default 5_000_000 */
  limit?: number;
  /** The clock, in epoch ms. @default Date.now */
  now?: () => number;
}

/**
 * Keeps the raw body for the webhook receiver when a JSON parser runs first:
 * `app.use(express.json({ verify: keepRawBody }))`.
 */
export function keepRawBody(req: IncomingMessage, _res: unknown, buf: Buffer): void {
  (req as IncomingMessage & { rawBody?: Buffer }).rawBody = Buffer.from(buf);
}

/**
 * Receives provider webhooks at `POST /<provider>/<organisation>` (relative to where it is
 * mounted): reads the raw body, finds the organisation's secrets, verifies the signature, refuses
 * stale and replayed requests, and hands the normalised events to `onEvents`.
 *
 * Mount it before any body parser, or keep the raw body with {@link keepRawBody}.
 *
 * This package knows no provider: the application hands it the verifiers of the provider packages.
 *
 * @example
 * ```ts
 * import { sendgridWebhook } from '@mailvia/transport-sendgrid';
 * import { mailgunWebhook } from '@mailvia/transport-mailgun';
 * import { sesWebhook } from '@mailvia/transport-ses';
 *
 * app.use('/webhooks', mailviaWebhooks({
 *   providers: [sendgridWebhook(), mailgunWebhook(), sesWebhook({ confirmSubscriptions: true })],
 *   secrets: ({ provider, organisation }) => db.webhookSecrets(organisation, provider),
 *   onEvents: (events) => deliveryLog.record(events),
 * }));
 * ```
 */
export function mailviaWebhooks(options: MailviaWebhooksOptions): RequestHandler {
  const given = options?.providers;
  const entries: [string, WebhookVerifier][] = Array.isArray(given)
    ? given.map((p: WebhookVerifier) => [p?.provider, p])
    : given && typeof given === 'object'
      ? Object.entries(given as Record<string, WebhookVerifier>)
      : [];
  if (entries.length === 0) {
    throw new MailviaSetupError(
      'providers',
      "list at least one provider's verifier (e.g. [sendgridWebhook()] from @mailvia/transport-sendgrid)",
    );
  }
  if (typeof options.secrets !== 'function') {
    throw new MailviaSetupError(
      'secrets',
      'is required: ({ provider, organisation }) => the secrets of that organisation',
    );
  }
  const providers = new Map<string, WebhookVerifier>();
  for (const [name, p] of entries) {
    if (!p || typeof p.verify !== 'function' || typeof name !== 'string' || !/^[a-z0-9][a-z0-9_-]*$/i.test(name)) {
      throw new MailviaSetupError('providers', 'each provider needs a URL-safe name and a verify function');
    }
    if (providers.has(name)) throw new MailviaSetupError('providers', `"${name}" is listed twice`);
    providers.set(name, p);
  }
  const replayStore = options.replayStore ?? new MemoryReplayStore();
  const limit = options.limit ?? 5_000_000;
  const now = options.now ?? Date.now;
  const defaultTolerance = options.tolerance ?? 300;

  return (req: Request, res: Response, next) => {
    let segments: string[];
    try {
      segments = pathSegments(req);
    } catch (err) {
      fail(res, next, err);
      return;
    }
    const params = match(segments, [':provider', ':organisation']);
    if (!params) {
      next();
      return;
    }
    const provider = params.provider!;
    const organisation = params.organisation!;
    const refuse = (thrown: unknown) => {
      // A verifier's refusal (from a provider package) is answered with its code and status.
      const err = WebhookRefusal.isInstance(thrown) ? new MailviaHttpError(thrown.code, thrown.message) : thrown;
      if (err instanceof MailviaHttpError) {
        options.onRefused?.({
          provider,
          organisation,
          code: err.code,
          message: err.message,
          ip: req.socket?.remoteAddress,
        });
      }
      fail(res, next, err);
    };
    if (req.method !== 'POST') {
      refuse(new MailviaHttpError('method_not_allowed', 'Webhooks are POSTed.', { allow: 'POST' }));
      return;
    }
    const verifier = providers.get(provider);
    if (!verifier) {
      refuse(
        new MailviaHttpError('webhook_unknown_provider', `No webhook receiver for "${provider}" is mounted here.`, {
          providers: [...providers.keys()],
        }),
      );
      return;
    }
    receive(req, res, verifier, provider, organisation).catch(refuse);
  };

  async function rawBodyOf(req: Request): Promise<Buffer> {
    const kept = (req as Request & { rawBody?: unknown }).rawBody;
    if (Buffer.isBuffer(kept)) return kept;
    if (Buffer.isBuffer(req.body)) return req.body;
    if (bodyConsumed(req)) {
      throw new MailviaHttpError(
        'webhook_body_already_parsed',
        'A body parser read this request before the webhook receiver, so its signature cannot be checked. Mount mailviaWebhooks() before express.json(), or use express.json({ verify: keepRawBody }).',
      );
    }
    return readBody(req, limit);
  }

  async function receive(
    req: Request,
    res: Response,
    verifier: WebhookVerifier,
    provider: string,
    organisation: string,
  ): Promise<void> {
    const rawBody = await rawBodyOf(req);
    const context: WebhookContext = { provider, organisation, req };
    const found = await options.secrets(context);
    const secrets = (typeof found === 'string' ? [found] : [...(found ?? [])]).filter(
      (s): s is string => typeof s === 'string' && s !== '',
    );
    if (secrets.length === 0) {
      throw new MailviaHttpError(
        'webhook_unknown_organisation',
        `No ${provider} webhook secret is configured for this organisation.`,
      );
    }
    const verified: VerifiedWebhook = await verifier.verify({ rawBody, headers: req.headers, secrets, organisation });
    const tolerance = (verifier.tolerance ?? defaultTolerance) * 1000;
    if (verified.signedAt !== undefined && Math.abs(now() - verified.signedAt) > tolerance) {
      throw new MailviaHttpError(
        'webhook_stale',
        `The request was signed at ${new Date(verified.signedAt).toISOString()}, more than ${tolerance / 1000} s from now.`,
      );
    }
    const key = `${provider}:${organisation}:${verified.replayId}`;
    if (!(await replayStore.claim(key, tolerance * 2 + 60_000))) {
      throw new MailviaHttpError('webhook_replayed', 'This request was already received (a replay).');
    }
    try {
      const extra = verified.afterAccept ? await verified.afterAccept() : undefined;
      const events: WebhookEvent[] = verified.events.map((e) => ({ ...e, provider, organisation }));
      if (options.mailer) await feedStores(events, options.mailer, options.suppress ?? defaultSuppress);
      if (events.length && options.onEvents) await options.onEvents(events, context);
      sendJson(res, 200, { received: events.length, ...(extra ?? {}) });
    } catch (err) {
      // Not accepted: the provider's next delivery of the same request must not count as a replay.
      await replayStore.release(key);
      throw err;
    }
  }
}
