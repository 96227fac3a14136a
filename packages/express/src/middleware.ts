import type { Mailer, Message, PreparedMessage, Receipt } from '@mailvia/core';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { MailviaSetupError, NoOrganisationError } from './errors.js';

type MaybePromise<T> = T | Promise<T>;

/** Finds the organisation of a request, from the app's own session, user, JWT, header or subdomain. */
export type OrganisationResolver = (req: Request) => MaybePromise<string | undefined | null>;

/** Options of one send through the handle (the organisation is already bound). */
export interface MailHandleSendOptions {
  signal?: AbortSignal;
}

/** Options of one enqueue through the handle: `mailer.enqueue`'s, the organisation already bound. */
export type MailHandleEnqueueOptions = Omit<NonNullable<Parameters<Mailer['enqueue']>[1]>, 'organisation'>;

/** What `enqueue` resolves with: the delivery id (`mailer.enqueue`'s result). */
export type MailHandleEnqueueResult = Awaited<ReturnType<Mailer['enqueue']>>;

/**
 * What `req.mail` holds: `send` and `enqueue` bound to the request's organisation. When the request
 * has none, both reject with a {@link NoOrganisationError} and nothing is sent.
 */
export interface MailHandle {
  /** The organisation found for this request, or undefined. */
  readonly organisation: string | undefined;
  /** Sends now through the organisation's routes (`mailer.send(message, { organisation })`). */
  send(message: Message | PreparedMessage, options?: MailHandleSendOptions): Promise<Receipt>;
  /** Queues the message for the organisation (`mailer.enqueue(message, { organisation })`). */
  enqueue(message: Message | PreparedMessage, options?: MailHandleEnqueueOptions): Promise<MailHandleEnqueueResult>;
}

/** Options of {@link mailvia}. */
export interface MailviaOptions {
  /** The application's mailer (`createMailer(…)`). */
  mailer: Mailer;
  /**
   * Finds the organisation of a request. Return undefined when there is none: the handle then
   * refuses to send, it never falls back to another account.
   * @example (req) => req.user?.organisationId
   */
  organisation: OrganisationResolver;
  /** The request property the handle is put on. @default 'mail' */
  property?: string;
}

/** Request properties of Node, Express and common middleware that the handle must not replace. */
const TAKEN = new Set([
  'app',
  'baseUrl',
  'body',
  'cookies',
  'get',
  'header',
  'headers',
  'hostname',
  'ip',
  'ips',
  'method',
  'next',
  'originalUrl',
  'params',
  'path',
  'protocol',
  'query',
  'res',
  'route',
  'secure',
  'session',
  'signedCookies',
  'socket',
  'url',
  'user',
]);

/** Builds the handle of one organisation (exported for tests and for code outside Express). */
export function createMailHandle(mailer: Mailer, organisation: string | undefined): MailHandle {
  return {
    organisation,
    async send(message, options = {}) {
      if (organisation === undefined) throw new NoOrganisationError();
      return mailer.send(message, { ...options, organisation });
    },
    async enqueue(message, options = {}) {
      if (organisation === undefined) throw new NoOrganisationError();
      return mailer.enqueue(message, { ...options, organisation });
    },
  };
}

/**
 * The Mailvia middleware: finds each request's organisation and puts a handle on the request
 * (`req.mail` by default) whose `send` / `enqueue` are bound to it.
 *
 * @example
 * ```ts
 * app.use(mailvia({ mailer, organisation: (req) => req.user?.organisationId }));
 * app.post('/invite', async (req, res) => {
 *   await req.mail.send({ from: 'school@example.org', to: req.body.email, subject: 'Welcome', text: '…' });
 *   res.sendStatus(204);
 * });
 * ```
 */
export function mailvia(options: MailviaOptions): RequestHandler {
  if (!options || typeof options !== 'object') throw new MailviaSetupError('options', 'are required');
  const { mailer, organisation: resolve } = options;
  if (!mailer || typeof mailer.send !== 'function') {
    throw new MailviaSetupError('mailer', 'is required (the object createMailer() returns)');
  }
  if (typeof resolve !== 'function') {
    throw new MailviaSetupError('organisation', 'is required: a function (req) => the organisation id of the request');
  }
  const property = options.property ?? 'mail';
  if (typeof property !== 'string' || property === '' || property in Object.prototype || TAKEN.has(property)) {
    throw new MailviaSetupError('property', `${JSON.stringify(property)} cannot be a request property`);
  }
  return (req: Request, _res: Response, next: NextFunction) => {
    let found: MaybePromise<string | undefined | null>;
    try {
      found = resolve(req);
    } catch (err) {
      next(err);
      return;
    }
    Promise.resolve(found).then(
      (org) => {
        const id = typeof org === 'string' && org !== '' ? org : undefined;
        (req as unknown as Record<string, unknown>)[property] = createMailHandle(mailer, id);
        next();
      },
      (err: unknown) => next(err),
    );
  };
}

declare global {
  // Express's documented way to add request properties.
  namespace Express {
    interface Request {
      /**
       * Set by the `mailvia()` middleware (default property): `send` / `enqueue` bound to the
       * request's organisation. Present only behind that middleware.
       */
      mail: MailHandle;
    }
  }
}
