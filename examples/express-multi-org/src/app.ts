import { createMailer, createOutbox, MailError, type RouteSpec } from '@mailvia/core';
import express, { type Request, type Response } from 'express';

/** What the application keeps per organisation: its routes, in fallback order (a database row in real life). */
export type OrganisationRoutes = Record<string, RouteSpec>;

/** The Express app: one endpoint sends for an organisation; two pages show what left and what was captured. */
export function createApp(organisations: OrganisationRoutes, outboxDir: string) {
  const outbox = createOutbox({ dir: outboxDir });
  const mailer = createMailer({
    organisations: (id) => organisations[id],
    outbox,
  });
  const app = express();
  app.use(express.json({ limit: '2mb' }));

  app.post('/organisations/:org/mail', async (req: Request<{ org: string }>, res: Response) => {
    try {
      const receipt = await mailer.send(req.body, { organisation: req.params.org });
      res.status(202).json(receipt);
    } catch (err) {
      if (!MailError.isInstance(err)) throw err;
      res.status(err.kind === 'refused' ? 422 : 502).json({ error: err.toJSON() });
    }
  });
  app.get('/outbox', async (_req, res) => {
    res.json(await outbox.list());
  });
  return { app, mailer };
}
