import type {
  DeliveryLog,
  DeliveryQuery,
  DeliveryRecord,
  DeliveryStatus,
  FailureKind,
  Mailer,
  Message,
  RestState,
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
export type AdminMailer = Pick<Mailer, 'send' | 'transportFor' | 'state' | 'mode'> & {
  log?: DeliveryLog | undefined;
  suppression?: SuppressionList | undefined;
  resend?: (id: string) => Promise<unknown>;
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
   * - `resting`: skipped until `resting.until` after a failure;
   * - `failing`: verify() failed;
   * - `unchecked`: not verified (the route has no verify(), or `verify=false`).
   */
  status: 'ok' | 'resting' | 'failing' | 'unchecked';
  verify?: { ok: boolean; durationMs: number; kind?: FailureKind; error?: string };
  resting?: { until: string; kind: FailureKind; reason: string };
  /**
   * Usage of the route's quota windows, when known: read from the route when it exposes
   * `quotaUsage()`, else the last `quota-warning` / `quota-exhausted` event of the mailer for this
   * route (`asOf` says when; the count may have grown since).
   */
  quota?: { window: string; used: number; limit: number; left: number; resetAt: string; asOf?: string }[];
  /** The kind of the last failure known for this route (resting state, delivery log). */
  lastErrorKind?: FailureKind;
}

interface QuotaReadable {
  quotaUsage?: () => MaybePromise<{ window: string; used: number; limit: number; resetAt: number }[]>;
}

interface QuotaEventLike {
  organisation?: string;
  route: string;
  window: string;
  used: number;
  limit: number;
  resetAt: number;
}

interface QuotaSeen extends QuotaEventLike {
  organisation: string;
  at: number;
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

  // The last quota event per organisation, route and window (the mailer tells them as they happen).
  const quotaSeen = new Map<string, QuotaSeen>();
  const onQuota = (e: QuotaEventLike) => {
    if (typeof e.route !== 'string') return;
    const organisation = e.organisation ?? '';
    quotaSeen.set(`${organisation}\u0000${e.route}\u0000${e.window}`, { ...e, organisation, at: Date.now() });
    if (quotaSeen.size > 10_000) quotaSeen.delete(quotaSeen.keys().next().value as string);
  };
  const emitter = mailer as unknown as { on?: (event: string, listener: (e: QuotaEventLike) => void) => unknown };
  if (typeof emitter.on === 'function') {
    emitter.on('quota-warning', onQuota);
    emitter.on('quota-exhausted', onQuota);
  }

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
    const prefix = `${organisation}:`;
    const state = mailer.state;
    let recent: DeliveryRecord[] = [];
    if (mailer.log) recent = await mailer.log.query({ organisation, limit: 50 });
    const now = Date.now();
    const routes: RouteHealth[] = await Promise.all(
      leaves(chain).map(async ({ route, position }) => {
        const h: RouteHealth = { name: route.name, position, status: 'unchecked' };
        const rest: RestState | undefined = await state.get(`${prefix}${route.name}`);
        if (rest && rest.until > now) {
          h.resting = { until: new Date(rest.until).toISOString(), kind: rest.kind, reason: rest.reason };
        }
        if (rest) h.lastErrorKind = rest.kind;
        const fromLog = recent.find((r) => r.route === route.name && r.kind !== undefined);
        if (!h.lastErrorKind && fromLog?.kind) h.lastErrorKind = fromLog.kind;
        const usage = await (route as QuotaReadable).quotaUsage?.();
        if (usage) {
          h.quota = usage.map((u) => ({
            window: u.window,
            used: u.used,
            limit: u.limit,
            left: Math.max(0, u.limit - u.used),
            resetAt: new Date(u.resetAt).toISOString(),
          }));
        } else {
          const seen = [...quotaSeen.values()].filter(
            (q) => q.organisation === organisation && q.route === route.name && q.resetAt > now,
          );
          if (seen.length) {
            h.quota = seen.map((q) => ({
              window: q.window,
              used: q.used,
              limit: q.limit,
              left: Math.max(0, q.limit - q.used),
              resetAt: new Date(q.resetAt).toISOString(),
              asOf: new Date(q.at).toISOString(),
            }));
          }
        }
        if (verify && route.verify) {
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
        h.status = h.resting ? 'resting' : h.verify ? (h.verify.ok ? 'ok' : 'failing') : 'unchecked';
        return h;
      }),
    );
    return {
      organisation,
      mode: mailer.mode,
      chain: chain.name,
      checkedAt: new Date().toISOString(),
      ok: routes.some((r) => r.status === 'ok' || (r.status === 'unchecked' && !r.resting)),
      routes,
    };
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
        records.map(async (r) => ({ ...withoutContent(r), attempts: (await log().get(r.id))?.history ?? [] })),
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
      await delivery(organisation, p.id!);
      if (typeof mailer.resend !== 'function') {
        throw new MailviaHttpError('not_supported', 'This mailer cannot resend (it has no queue).');
      }
      let result: unknown;
      try {
        result = await mailer.resend(p.id!);
      } catch (err) {
        // The engine refuses a resend it cannot do (already sent, a direct send, pruned).
        if (MailError.isInstance(err) && err.phase === 'validate') {
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
