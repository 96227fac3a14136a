import { createMailer, createOutbox, type Mailer, type RouteSpec } from '@mailvia/core';
import { mailvia, mailviaErrorHandler, mailviaOutbox } from '@mailvia/express';
import express, { type Express } from 'express';

/** What the application keeps per organisation: its routes, in fallback order (a database row in real life). */
export type OrganisationRoutes = Record<string, RouteSpec>;

/**
 * The Express app: each request names its organisation (here in a header; in real life from the
 * session), `req.mail.send` sends with that organisation's routes, and the outbox page shows what
 * the last-resort `capture://` route kept.
 */
export function createApp(organisations: OrganisationRoutes, outboxDir: string): { app: Express; mailer: Mailer } {
  const outbox = createOutbox({ dir: outboxDir });
  const mailer = createMailer({ organisations: (id) => organisations[id], outbox });
  const app = express();
  app.use(express.json({ limit: '2mb' }));
  app.use(mailvia({ mailer, organisation: (req) => req.get('x-organisation') }));

  app.post('/mail', async (req, res, next) => {
    try {
      res.status(202).json(await req.mail.send(req.body));
    } catch (err) {
      next(err);
    }
  });
  // captured mail holds password resets: in a real app, only in development or behind a guard
  app.use('/outbox', mailviaOutbox({ outbox, force: true }));
  app.use(mailviaErrorHandler());
  return { app, mailer };
}
