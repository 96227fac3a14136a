import type {
  DeliveryDetails,
  DeliveryLog,
  DeliveryQuery,
  DeliveryRecord,
  DeliveryStatus,
  FailureKind,
  Mailer,
  Message,
  SuppressionList,
  Transport,
} from '@mailvia/core';
import { MailError } from '@mailvia/core';
import type { Request, RequestHandler, Response } from 'express';
import { MailviaHttpError, MailviaSetupError } from './errors.js';
import { fail, jsonBody, match, pathSegments, requestUrl, sendJson } from './http.js';

type MaybePromise<T> = T | Promise<T>;

/** What an admin request asks to do; `authorize` gets it with the organisation. */
export type AdminAction =
  | 'health'
  | 'deliveries.read'
  | 'deliveries.resend'
  | 'suppressions.read'
  | 'suppressions.write'
  | 'test-send';

/** What `authorize` is told about a request. */
export interface AdminRequestInfo {
  organisation: string;
  action: AdminAction;
}

/**
 * The parts of the mailer the admin API uses. `Mailer` has them; the delivery log, the
 * suppression list and `resend` exist when the mailer was given stores.
 */
export type AdminMailer = Pick<Mailer, 'send' | 'transportFor' | 'routeHealth' | 'mode'> & {
  log?: DeliveryLog | undefined;
  suppression?: SuppressionList | undefined;
  resend?: (id: string) => Promise<unknown>;
  enqueue?: Mailer['enqueue'];
  queue?: unknown;
};

/** Options of {@link mailviaAdmin}. */
export interface MailviaAdminOptions {
  mailer: AdminMailer;
  /**
   * Decides whether the request may do `action` for `organisation` (your own guard: a staff
   * session, an organisation admin role…). Required: there is no open default.
   */
  authorize: (req: Request, info: AdminRequestInfo) => MaybePromise<boolean>;
  /** The sender of test sends when the request names none. */
  testSender?: (organisation: string) => MaybePromise<string | undefined>;
  /** How long each route's verify() may take, in ms. @default 10_000 */
  verifyTimeout?: number;
  /**
   * The message of a failed direct `send`, rebuilt by the application for a resend. Only enqueued
   * deliveries can be resent from the store (the queue keeps their message whole; the delivery log
   * never does: at most redacted text, no attachments or headers). Without this option (or when it
   * answers undefined) resending a failed direct send answers 409 `resend_unavailable` with the
   * reason. The rebuilt message is enqueued once per delivery (idempotency key
   * `mailvia-resend:<id>`) when the mailer has a queue, else sent now.
   */
  resendMessage?: (delivery: DeliveryDetails, organisation: string) => MaybePromise<Message | undefined>;
}

const STATUSES: readonly DeliveryStatus[] = ['queued', 'sending', 'sent', 'failed', 'dead'];

/** One route of an organisation's chain, as the health answer shows it. */
export interface RouteHealth {
  /** The route's name (never a secret). */
  name: string;
  /** Where it sits in the chain: `[1, 0]` is the first route of the second member. */
  position: number[];
  /**
   * - `ok`: verify() passed and the route is not resting;
   * - `exhausted`: a quota window is used up: skipped until that window's `resetAt`;
   * - `resting`: skipped until `resting.until` after a failure;
   * - `failing`: verify() failed;
   * - `unchecked`: not verified (the route has no verify(), or `verify=false`).
   */
  status: 'ok' | 'exhausted' | 'resting' | 'failing' | 'unchecked';
  verify?: { ok: boolean; durationMs: number; kind?: FailureKind; error?: string };
  resting?: { until: string; kind: FailureKind; reason: string };
  /**
   * Each window of the route's quota, read live from the mailer's route state store (shared by
   * every instance with Redis) at `checkedAt`: limit, used, left and when a unit frees up.
   */
  quota?: { window: string; limit: number; used: number; left: number; resetAt: string; exhausted: boolean }[];
  /** The kind of the last failure known for this route (resting state, delivery log, verify). */
  lastErrorKind?: FailureKind;
}

function leaves(t: Transport, position: number[] = []): { route: Transport; position: number[] }[] {
  const members = (t as unknown as { routes?: unknown }).routes;
  if (Array.isArray(members) && members.length > 0) {
    return (members as Transport[]).flatMap((m, i) => leaves(m, [...position, i]));
  }
  return [{ route: t, position }];
}

function parseTime(value: string | null, name: string): number | undefined {
  if (value === null || value === '') return undefined;
  const n = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  if (!Number.isFinite(n)) throw new MailviaHttpError('bad_request', `${name} is not a date (ISO 8601 or epoch ms).`);
  return n;
}

function parseInteger(value: string | null, name: string, min: number, max: number): number | undefined {
  if (value === null || value === '') return undefined;
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new MailviaHttpError('bad_request', `${name} must be a whole number from ${min} to ${max}.`);
  }
  return Number(value);
}

function withoutContent(record: DeliveryRecord): Omit<DeliveryRecord, 'content'> {
  const { content: _content, ...rest } = record;
  return rest;
}

/**
 * The admin API, as JSON, per organisation: route health, deliveries (with their attempts),
 * resend, the suppression list and a test send. Mount it behind your own guard; `authorize` is
 * required and is asked about every request.
 *
 * Routes (relative to the mount point):
 * - `GET /organisations/:org/health[?verify=false]`
 * - `GET /organisations/:org/deliveries?status=&since=&until=&recipient=&limit=&offset=`
 * - `GET /organisations/:org/deliveries/:id`
 * - `POST /organisations/:org/deliveries/:id/resend`
 * - `GET /organisations/:org/suppressions`, `POST` (`{ address, reason }`), `DELETE /organisations/:org/suppressions/:address`
 * - `POST /organisations/:org/test-send` (`{ to, from?, subject?, text? }`)
 *
 * @example
 * ```ts
 * app.use('/admin/mail', mailviaAdmin({
 *   mailer,
 *   authorize: (req, { organisation }) => req.user?.isAdminOf(organisation) === true,
 * }));
 * ```
 */
export function mailviaAdmin(options: MailviaAdminOptions): RequestHandler {
  if (!options || typeof options !== 'object') throw new MailviaSetupError('options', 'are required');
  if (typeof options.authorize !== 'function') {
    throw new MailviaSetupError(
      'authorize',
      'is required: (req, { organisation, action }) => boolean. The admin API has no open default.',
    );
  }
  const { mailer, authorize } = options;
  if (!mailer || typeof mailer.send !== 'function') throw new MailviaSetupError('mailer', 'is required');
  const verifyTimeout = options.verifyTimeout ?? 10_000;

  const log = (): DeliveryLog => {
    if (!mailer.log) {
      throw new MailviaHttpError(
        'not_supported',
        'This mailer keeps no delivery log (give createMailer a `log` store).',
      );
    }
    return mailer.log;
  };
  const suppression = (): SuppressionList => {
    if (!mailer.suppression) {
      throw new MailviaHttpError(
        'not_supported',
        'This mailer keeps no suppression list (give createMailer a `suppression` store).',
      );
    }
    return mailer.suppression;
  };

  async function guard(req: Request, organisation: string, action: AdminAction): Promise<void> {
    if ((await authorize(req, { organisation, action })) !== true) {
      throw new MailviaHttpError(
        'forbidden',
        `This request may not ${action.replace('.', ' ')} for this organisation.`,
      );
    }
  }

  async function delivery(organisation: string, id: string) {
    const found = await log().get(id);
    // Another organisation's delivery is not found here (ids are not a way across organisations).
    if (!found || (found.organisation ?? '') !== organisation) {
      throw new MailviaHttpError('not_found', 'No such delivery for this organisation.');
    }
    return found;
  }

  async function health(organisation: string, verify: boolean) {
    const chain = await mailer.transportFor(organisation);
    const live = await mailer.routeHealth(organisation);
    const transports = new Map(leaves(chain).map((l) => [l.position.join('.'), l.route]));
    let recent: DeliveryRecord[] = [];
    if (mailer.log) recent = await mailer.log.query({ organisation, limit: 50 });
    const routes: RouteHealth[] = await Promise.all(
      live.map(async (r) => {
        const h: RouteHealth = { name: r.name, position: r.position, status: 'unchecked' };
        if (r.resting) {
          h.resting = {
            until: new Date(r.resting.until).toISOString(),
            kind: r.resting.kind,
            reason: r.resting.reason,
          };
        }
        if (r.lastFailureKind) h.lastErrorKind = r.lastFailureKind;
        const fromLog = recent.find((d) => d.route === r.name && d.kind !== undefined);
        if (!h.lastErrorKind && fromLog?.kind) h.lastErrorKind = fromLog.kind;
        if (r.quota) {
          h.quota = r.quota.map((q) => ({
            window: q.window,
            limit: q.limit,
            used: q.used,
            left: q.left,
            resetAt: new Date(q.resetAt).toISOString(),
            exhausted: q.exhausted,
          }));
        }
        const route = transports.get(r.position.join('.'));
        if (verify && route?.verify) {
          const started = Date.now();
          try {
            await route.verify({ signal: AbortSignal.timeout(verifyTimeout) });
            h.verify = { ok: true, durationMs: Date.now() - started };
          } catch (err) {
            const e = MailError.isInstance(err) ? err : undefined;
            h.verify = {
              ok: false,
              durationMs: Date.now() - started,
              ...(e ? { kind: e.kind } : {}),
              error: e ? e.message : 'verify failed',
            };
            if (e) h.lastErrorKind = e.kind;
          }
        }
        h.status = r.exhausted
          ? 'exhausted'
          : h.resting
            ? 'resting'
            : h.verify
              ? h.verify.ok
                ? 'ok'
                : 'failing'
              : 'unchecked';
        return h;
      }),
    );
    return {
      organisation,
      mode: mailer.mode,
      chain: chain.name,
      checkedAt: new Date().toISOString(),
      ok: routes.some((r) => r.status === 'ok' || r.status === 'unchecked'),
      routes,
    };
  }

  /** A failed direct send: only the application can give its message back (see `resendMessage`). */
  async function resendDirect(found: DeliveryDetails, organisation: string, force: boolean) {
    if (found.status === 'sending' || found.status === 'queued') {
      throw new MailviaHttpError('conflict', 'This delivery is still being sent.', { reason: 'EINPROGRESS' });
    }
    if (found.unknown && !force) {
      throw new MailviaHttpError(
        'resend_unavailable',
        'The outcome of this send is unknown: the route may have taken it, and a resend could deliver a second copy. Check with the provider, then resend with ?force=true.',
        { reason: 'unknown_outcome' },
      );
    }
    const message = options.resendMessage ? await options.resendMessage(found, organisation) : undefined;
    if (!message) {
      throw new MailviaHttpError(
        'resend_unavailable',
        options.resendMessage
          ? 'This delivery was a direct send and the application could not rebuild its message.'
          : 'This delivery was a direct send (mailer.send): its message is not stored (the delivery log keeps at most redacted text, never attachments or headers), so it cannot be resent from here. Send it again from the application, use mailer.enqueue for mail that must be resendable, or give mailviaAdmin a resendMessage option.',
        { reason: options.resendMessage ? 'message_not_rebuilt' : 'message_not_stored' },
      );
    }
    if (mailer.queue && typeof mailer.enqueue === 'function') {
      const result = await mailer.enqueue(message, { organisation, idempotencyKey: `mailvia-resend:${found.id}` });
      return { resent: found.id, result };
    }
    const receipt = await mailer.send(message, { organisation });
    return { resent: found.id, receipt };
  }

  async function route(req: Request, res: Response): Promise<boolean> {
    const segments = pathSegments(req);
    if (segments[0] !== 'organisations' || segments.length < 3) return false;
    const organisation = segments[1]!;
    const url = requestUrl(req);
    const method = req.method;
    const allow = (methods: string): never => {
      throw new MailviaHttpError('method_not_allowed', `Use ${methods}.`, { allow: methods });
    };

    if (match(segments, ['organisations', ':org', 'health'])) {
      if (method !== 'GET') allow('GET');
      await guard(req, organisation, 'health');
      sendJson(res, 200, await health(organisation, url.searchParams.get('verify') !== 'false'));
      return true;
    }
    if (match(segments, ['organisations', ':org', 'deliveries'])) {
      if (method !== 'GET') allow('GET');
      await guard(req, organisation, 'deliveries.read');
      const q = url.searchParams;
      const status = q.get('status');
      const statuses = status ? status.split(',').map((s) => s.trim()) : undefined;
      for (const s of statuses ?? []) {
        if (!STATUSES.includes(s as DeliveryStatus)) {
          throw new MailviaHttpError(
            'bad_request',
            `status ${JSON.stringify(s)} is not one of ${STATUSES.join(', ')}.`,
          );
        }
      }
      const limit = parseInteger(q.get('limit'), 'limit', 1, 500) ?? 50;
      const offset = parseInteger(q.get('offset'), 'offset', 0, 1_000_000) ?? 0;
      const query: DeliveryQuery = { organisation, limit, offset };
      if (statuses) query.status = statuses as DeliveryStatus[];
      const since = parseTime(q.get('since'), 'since');
      if (since !== undefined) query.since = since;
      const until = parseTime(q.get('until'), 'until');
      if (until !== undefined) query.until = until;
      const recipient = q.get('recipient');
      if (recipient) query.recipient = recipient;
      if (q.get('unknown') === 'true') query.unknown = true;
      const records = await log().query(query);
      const deliveries = await Promise.all(
        records.map(async (r) => {
          const details = await log().get(r.id);
          return { ...withoutContent(r), attempts: details?.history ?? [], events: details?.events ?? [] };
        }),
      );
      sendJson(res, 200, {
        deliveries,
        ...(records.length === limit ? { nextOffset: offset + limit } : {}),
      });
      return true;
    }
    let p = match(segments, ['organisations', ':org', 'deliveries', ':id']);
    if (p) {
      if (method !== 'GET') allow('GET');
      await guard(req, organisation, 'deliveries.read');
      sendJson(res, 200, await delivery(organisation, p.id!));
      return true;
    }
    p = match(segments, ['organisations', ':org', 'deliveries', ':id', 'resend']);
    if (p) {
      if (method !== 'POST') allow('POST');
      await guard(req, organisation, 'deliveries.resend');
      const found = await delivery(organisation, p.id!);
      if (found.via === 'send' && found.status !== 'sent') {
        sendJson(res, 202, await resendDirect(found, organisation, url.searchParams.get('force') === 'true'));
        return true;
      }
      if (typeof mailer.resend !== 'function' || !mailer.queue) {
        throw new MailviaHttpError('not_supported', 'This mailer cannot resend (it has no queue).');
      }
      let result: unknown;
      try {
        result = await mailer.resend(p.id!);
      } catch (err) {
        // The engine refuses a resend it cannot do (already sent, pruned from the queue).
        if (MailError.isInstance(err) && err.phase === 'validate') {
          if (err.code === 'ERESENDUNAVAILABLE') throw new MailviaHttpError('resend_unavailable', err.message);
          throw new MailviaHttpError('conflict', err.message, err.code ? { reason: err.code } : undefined);
        }
        throw err;
      }
      sendJson(res, 202, { resent: p.id, result });
      return true;
    }
    if (match(segments, ['organisations', ':org', 'suppressions'])) {
      if (method === 'GET') {
        await guard(req, organisation, 'suppressions.read');
        const q = url.searchParams;
        const limit = parseInteger(q.get('limit'), 'limit', 1, 1000) ?? 100;
        const offset = parseInteger(q.get('offset'), 'offset', 0, 10_000_000) ?? 0;
        const entries = await suppression().list(organisation, { limit, offset });
        sendJson(res, 200, {
          suppressions: entries,
          ...(entries.length === limit ? { nextOffset: offset + limit } : {}),
        });
        return true;
      }
      if (method === 'POST') {
        await guard(req, organisation, 'suppressions.write');
        const body = await jsonBody(req);
        const address = typeof body.address === 'string' ? body.address.trim().toLowerCase() : '';
        if (!/^[^\s@]+@[^\s@]+$/.test(address))
          throw new MailviaHttpError('bad_request', 'address must be an email address.');
        const entry = {
          organisation,
          address,
          reason: typeof body.reason === 'string' && body.reason ? body.reason : 'added by an administrator',
          source: 'manual' as const,
          createdAt: Date.now(),
        };
        await suppression().add(entry);
        sendJson(res, 201, entry);
        return true;
      }
      allow('GET, POST');
    }
    p = match(segments, ['organisations', ':org', 'suppressions', ':address']);
    if (p) {
      if (method !== 'DELETE') allow('DELETE');
      await guard(req, organisation, 'suppressions.write');
      const removed = await suppression().remove(organisation, p.address!.toLowerCase());
      if (!removed) throw new MailviaHttpError('not_found', 'This address is not on the suppression list.');
      sendJson(res, 200, { removed: p.address!.toLowerCase() });
      return true;
    }
    if (match(segments, ['organisations', ':org', 'test-send'])) {
      if (method !== 'POST') allow('POST');
      await guard(req, organisation, 'test-send');
      const body = await jsonBody(req);
      const from =
        (typeof body.from === 'string' && body.from) || (await options.testSender?.(organisation)) || undefined;
      if (!from) throw new MailviaHttpError('bad_request', 'from is required (or give mailviaAdmin a testSender).');
      if (typeof body.to !== 'string' && !Array.isArray(body.to)) {
        throw new MailviaHttpError('bad_request', 'to is required.');
      }
      const message: Message = {
        from,
        to: body.to as string | string[],
        subject: typeof body.subject === 'string' && body.subject ? body.subject : 'Mailvia test message',
        text:
          typeof body.text === 'string' && body.text
            ? body.text
            : `This is a test message from the Mailvia admin API for ${organisation}, sent ${new Date().toISOString()}.`,
        tags: ['mailvia-test'],
      };
      const receipt = await mailer.send(message, { organisation });
      sendJson(res, 200, { receipt });
      return true;
    }
    return false;
  }

  return (req: Request, res: Response, next) => {
    route(req, res).then(
      (handled) => {
        if (!handled) fail(res, next, new MailviaHttpError('not_found', 'No such admin endpoint.'));
      },
      (err: unknown) => fail(res, next, err),
    );
  };
}
