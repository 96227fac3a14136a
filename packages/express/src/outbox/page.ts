import type { CapturedMail, Mailer, Outbox } from '@mailvia/core';
import type { Request, RequestHandler, Response } from 'express';
import { type ParsedMail, simpleParser } from 'mailparser';
import { MailviaHttpError, MailviaSetupError } from '../errors.js';
import { baseHeaders, fail, match, pathSegments, requestUrl, sendJson } from '../http.js';
import { OUTBOX_CSS, OUTBOX_JS, outboxHtml } from './assets.js';

type MaybePromise<T> = T | Promise<T>;

/** Options of {@link mailviaOutbox}. */
export interface MailviaOutboxOptions {
  /** The mailer whose outbox to show (`mailer.outbox`); its mode is checked. */
  mailer?: Mailer;
  /** An outbox to show (when there is no mailer, e.g. `capture://` routes' outbox). */
  outbox?: Outbox;
  /**
   * Mount even in production (a mailer in `production` mode, or `NODE_ENV=production`). Captured
   * mail holds password resets and invitations: only force it behind your own guard.
   * @default false
   */
  force?: boolean;
  /**
   * Shows only one organisation's mail: the one this returns for the request (e.g. the signed-in
   * user's). Returning undefined shows nothing. When not set, every organisation is shown.
   */
  organisation?: (req: Request) => MaybePromise<string | undefined | null>;
  /** The page's title. @default 'Mailvia outbox' */
  title?: string;
  /** Show a button that empties the outbox. @default true */
  allowClear?: boolean;
}

const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'";
// The mail's own HTML: no script at all (sandbox without allow-scripts), no network (remote
// images, fonts and styles are not fetched), inline styles and data: images only.
const MAIL_CSP =
  "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'";

const ID = /^[A-Za-z0-9._-]{1,100}$/;
const RAW_LIMIT = 2_000_000;
const NONE = '';

interface ParsedEntry {
  parsed: Promise<ParsedMail>;
}

/** Refuses the page in production unless forced. */
function assertDevelopment(options: MailviaOutboxOptions): void {
  if (options.force === true) return;
  if (options.mailer && options.mailer.mode !== 'development') {
    throw new MailviaSetupError(
      'mailer',
      `the outbox page shows captured mail and is for development: this mailer is in ${options.mailer.mode} mode. Mount it only in development, or pass force: true behind your own guard.`,
    );
  }
  if (process.env.NODE_ENV === 'production') {
    throw new MailviaSetupError(
      'NODE_ENV',
      'the outbox page is not mounted when NODE_ENV=production (pass force: true behind your own guard to do it anyway).',
    );
  }
}

/**
 * The development outbox page: lists captured mail per organisation (subject, recipients,
 * time), shows one as rendered HTML (in a sandboxed iframe), text, headers and raw source, with
 * its `.eml` to download, and refreshes as new mail is captured. Throws when mounted with a
 * mailer in production mode (or under `NODE_ENV=production`) unless `force` is set.
 *
 * @example
 * ```ts
 * if (mailer.mode === 'development') app.use('/dev/outbox', mailviaOutbox({ mailer }));
 * ```
 */
export function mailviaOutbox(options: MailviaOutboxOptions): RequestHandler {
  if (!options || (!options.mailer && !options.outbox)) {
    throw new MailviaSetupError('mailer', 'give the mailer (or an outbox) whose captured mail to show');
  }
  assertDevelopment(options);
  const outbox: Outbox = options.outbox ?? options.mailer!.outbox;
  const title = options.title ?? 'Mailvia outbox';
  const allowClear = options.allowClear ?? true;
  const parsedCache = new Map<string, ParsedEntry>();
  const streams = new Set<{ res: Response; organisation: string | undefined | null }>();
  let listening = false;
  let heartbeat: NodeJS.Timeout | undefined;

  const onCaptured = (mail: CapturedMail) => {
    for (const s of streams) {
      if (s.organisation !== null && (mail.organisation ?? NONE) !== (s.organisation ?? NONE)) continue;
      s.res.write(`event: captured\ndata: ${JSON.stringify(summary(mail))}\n\n`);
    }
  };
  const listen = () => {
    if (listening) return;
    listening = true;
    outbox.on('captured', onCaptured);
    heartbeat = setInterval(() => {
      for (const s of streams) s.res.write(': ping\n\n');
    }, 25_000);
    heartbeat.unref();
  };
  const unlisten = () => {
    if (!listening || streams.size > 0) return;
    listening = false;
    outbox.off('captured', onCaptured);
    if (heartbeat) clearInterval(heartbeat);
  };

  /** null = every organisation; otherwise the one organisation the request may see ('' = none). */
  const scopeOf = async (req: Request): Promise<string | null> => {
    if (!options.organisation) return null;
    const org = await options.organisation(req);
    if (typeof org !== 'string' || org === '') {
      throw new MailviaHttpError('forbidden', 'This request has no organisation whose outbox it may see.');
    }
    return org;
  };

  const visible = (mail: CapturedMail, scope: string | null) => scope === null || mail.organisation === scope;

  const getMail = async (id: string, scope: string | null) => {
    if (!ID.test(id)) throw new MailviaHttpError('not_found', 'No such captured mail.');
    const mail = await outbox.get(id);
    if (!mail || !visible(mail, scope)) throw new MailviaHttpError('not_found', 'No such captured mail.');
    return mail;
  };

  const parse = (id: string, raw: Buffer): Promise<ParsedMail> => {
    let hit = parsedCache.get(id);
    if (!hit) {
      hit = { parsed: simpleParser(raw) };
      parsedCache.set(id, hit);
      hit.parsed.catch(() => parsedCache.delete(id));
      while (parsedCache.size > 50) parsedCache.delete(parsedCache.keys().next().value as string);
    }
    return hit.parsed;
  };

  return (req: Request, res: Response, next) => {
    let segments: string[];
    try {
      segments = pathSegments(req);
    } catch (err) {
      fail(res, next, err);
      return;
    }
    const route = async (): Promise<boolean> => {
      const get = req.method === 'GET' || req.method === 'HEAD';
      if (segments.length === 0 && get) {
        const path = new URL(req.originalUrl || req.url || '/', 'http://x').pathname.replace(/^\/+/, '/');
        if (!path.endsWith('/')) {
          // Relative links of the page need the trailing slash.
          res.redirect(301, `${path}/${requestUrl(req).search}`);
          return true;
        }
        const scope = await scopeOf(req);
        baseHeaders(res);
        res.setHeader('Content-Security-Policy', PAGE_CSP);
        res.setHeader('Content-Type', 'text/html; charset=utf-8');
        res.end(outboxHtml({ title, scoped: scope !== null, allowClear }));
        return true;
      }
      if (match(segments, ['assets', 'outbox.js']) && get) return asset(res, 'text/javascript', OUTBOX_JS);
      if (match(segments, ['assets', 'outbox.css']) && get) return asset(res, 'text/css', OUTBOX_CSS);
      if (match(segments, ['api', 'mails']) && get) {
        const scope = await scopeOf(req);
        const all = (await outbox.list()).filter((m) => visible(m, scope));
        const counts = new Map<string, number>();
        for (const m of all) counts.set(m.organisation ?? NONE, (counts.get(m.organisation ?? NONE) ?? 0) + 1);
        const wanted = requestUrl(req).searchParams.get('organisation');
        const mails = wanted === null ? all : all.filter((m) => (m.organisation ?? NONE) === wanted);
        sendJson(res, 200, {
          organisations: [...counts].map(([id, count]) => ({ id, count })).sort((a, b) => a.id.localeCompare(b.id)),
          total: all.length,
          mails: mails.map(summary),
        });
        return true;
      }
      if (match(segments, ['api', 'clear']) && req.method === 'POST') {
        if (!allowClear) throw new MailviaHttpError('forbidden', 'Clearing is turned off (allowClear: false).');
        // A header a cross-site form cannot send: the page's fetch sets it.
        if (req.headers['x-mailvia-outbox'] !== '1') {
          throw new MailviaHttpError('forbidden', 'Clearing needs the X-Mailvia-Outbox: 1 header.');
        }
        const scope = await scopeOf(req);
        const wanted = requestUrl(req).searchParams.get('organisation');
        const org = scope ?? wanted;
        if (org === NONE) {
          throw new MailviaHttpError('bad_request', 'Mail without an organisation is cleared with everything.');
        }
        const removed = org === null ? await outbox.clear() : await outbox.clear({ organisation: org });
        parsedCache.clear();
        sendJson(res, 200, { removed });
        return true;
      }
      let p = match(segments, ['api', 'mails', ':id']);
      if (p && get) {
        const mail = await getMail(p.id!, await scopeOf(req));
        const parsed = await parse(mail.id, mail.raw);
        const { raw, html, text, ...meta } = mail;
        sendJson(res, 200, {
          ...meta,
          date: parsed.date?.toISOString(),
          text: text ?? parsed.text ?? '',
          hasHtml: Boolean(html ?? parsed.html),
          headers: parsed.headerLines.map((h) => h.line),
          raw: raw.length > RAW_LIMIT ? raw.subarray(0, RAW_LIMIT).toString('utf8') : raw.toString('utf8'),
          rawTruncated: raw.length > RAW_LIMIT,
          attachments: parsed.attachments.map((a, i) => ({
            index: i,
            filename: a.filename ?? `attachment-${i + 1}`,
            contentType: a.contentType,
            size: a.size,
            inline: a.related === true,
          })),
        });
        return true;
      }
      p = match(segments, ['mails', ':id', 'html']);
      if (p && get) {
        const mail = await getMail(p.id!, await scopeOf(req));
        const parsed = await parse(mail.id, mail.raw);
        // mailparser inlines cid: images as data: URIs.
        const html = typeof parsed.html === 'string' ? parsed.html : (mail.html ?? '');
        baseHeaders(res);
        res.setHeader('Content-Security-Policy', MAIL_CSP);
        res.setHeader('Content-Type', 'text/html; charset=utf-8');
        res.end(html);
        return true;
      }
      p = match(segments, ['mails', ':id', 'eml']);
      if (p && get) {
        const mail = await getMail(p.id!, await scopeOf(req));
        baseHeaders(res);
        res.setHeader('Content-Type', 'message/rfc822');
        res.setHeader('Content-Disposition', `attachment; filename="${emlName(mail)}"`);
        res.setHeader('Content-Length', mail.raw.length);
        res.end(mail.raw);
        return true;
      }
      p = match(segments, ['mails', ':id', 'attachments', ':index']);
      if (p && get) {
        const mail = await getMail(p.id!, await scopeOf(req));
        const parsed = await parse(mail.id, mail.raw);
        const a = /^\d+$/.test(p.index!) ? parsed.attachments[Number(p.index)] : undefined;
        if (!a) throw new MailviaHttpError('not_found', 'No such attachment.');
        baseHeaders(res);
        res.setHeader('Content-Security-Policy', "sandbox; default-src 'none'");
        // Always a download: an attached HTML file must not render on the app's origin.
        res.setHeader('Content-Type', 'application/octet-stream');
        res.setHeader('Content-Disposition', `attachment; filename="${safeFilename(a.filename ?? 'attachment')}"`);
        res.end(a.content);
        return true;
      }
      if (match(segments, ['events']) && get) {
        const scope = await scopeOf(req);
        baseHeaders(res);
        res.statusCode = 200;
        res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
        res.setHeader('X-Accel-Buffering', 'no');
        res.flushHeaders();
        res.write('retry: 3000\n\n');
        const stream = { res, organisation: scope };
        streams.add(stream);
        listen();
        req.on('close', () => {
          streams.delete(stream);
          unlisten();
        });
        return true;
      }
      return false;
    };
    route().then(
      (handled) => {
        if (!handled) next();
      },
      (err: unknown) => fail(res, next, err),
    );
  };
}

function asset(res: Response, type: string, body: string): true {
  baseHeaders(res);
  res.setHeader('Content-Type', `${type}; charset=utf-8`);
  res.end(body);
  return true;
}

function summary(mail: CapturedMail) {
  return {
    id: mail.id,
    organisation: mail.organisation ?? null,
    capturedAt: mail.capturedAt,
    from: mail.from,
    to: mail.to,
    cc: mail.cc,
    bcc: mail.bcc,
    subject: mail.subject,
    size: mail.size,
    messageId: mail.messageId,
  };
}

function safeFilename(name: string): string {
  return name.replace(/[^\w.\- ]+/g, '_').slice(0, 100) || 'file';
}

function emlName(mail: CapturedMail): string {
  return `${safeFilename(mail.subject || mail.id).trim() || mail.id}.eml`;
}
