import { createMailer, DeliveryError, failover, prepareMessage } from '@mailvia/core';
import { type HttpPeer, type Prism, refusedPort, reply, startHttpPeer, startPrism } from '@mailvia/core/testing';
// a devDependency, for a chain spanning two providers (route packages never import each other in src)
import { sendgridApi, sendgridApiRoute } from '@mailvia/transport-sendgrid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mailgun, mailgunRoute } from '../src/index.js';

const SPEC = '/work/shared/contracts/mailgun/mailgun-openapi.prism-relaxed.yaml';
const SG_KEY = 'SG.fake-chain-key-iiiiiiiiiiiiiiiiii.jjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjj';
const MG_KEY = 'fake-mailgun-chain-key-kkkkkkkkkkkkkkkk';
const DOMAIN = 'mg.example.org';

let prism: Prism;
let deadPort: number;
let creditsSpent: HttpPeer;
let dropper: HttpPeer;
let mailgunCapture: HttpPeer;

beforeAll(async () => {
  [prism, deadPort, creditsSpent, dropper, mailgunCapture] = await Promise.all([
    startPrism(SPEC, { resolveFrom: import.meta.url }),
    refusedPort(),
    startHttpPeer((_ex, res) =>
      reply(res, 401, { errors: [{ field: null, message: 'Maximum credits exceeded', help: null }] }),
    ),
    startHttpPeer((_ex, _res, req) => req.socket.destroy()),
    startHttpPeer((_ex, res) => reply(res, 200, { id: '<2@mg.example.org>', message: 'Queued. Thank you.' })),
  ]);
}, 90_000);
afterAll(() => Promise.all([prism?.close(), creditsSpent?.close(), dropper?.close(), mailgunCapture?.close()]));

const message = () =>
  prepareMessage({ from: `school@${DOMAIN}`, to: 'parent@example.org', subject: 'Chain', text: 'Bonjour' });
const mg = () => mailgun({ apiKey: MG_KEY, domain: DOMAIN, baseUrl: prism.url });

describe('failover: SendGrid API first, Mailgun (contract server) next', () => {
  it('SendGrid unreachable (refused port): the mail goes through Mailgun; the receipt lists both attempts', async () => {
    const sg = sendgridApi({ apiKey: SG_KEY, baseUrl: `http://127.0.0.1:${deadPort}` });
    const chain = failover([sg, mg()]);
    const m = message();
    const r = await chain.send(m);
    expect(r.route).toBe(mg().name);
    expect(r.messageId).toBe(m.messageId);
    expect(r.providerMessageId).toBe('message-id');
    expect(r.attempts.map((a) => [a.route, a.ok, a.kind])).toEqual([
      [sg.name, false, 'unavailable'],
      [mg().name, true, undefined],
    ]);
    expect(r.attempts[0]?.phase).toBe('connect');
    expect(JSON.stringify(r)).not.toContain(SG_KEY);
    expect(JSON.stringify(r)).not.toContain(MG_KEY);
  });

  it("SendGrid out of credits (401 'Maximum credits exceeded'): limited, and Mailgun takes the mail", async () => {
    const sg = sendgridApi({ apiKey: SG_KEY, baseUrl: creditsSpent.url });
    const r = await failover([sg, mg()]).send(message());
    expect(r.attempts[0]).toMatchObject({ route: sg.name, ok: false, kind: 'limited' });
    expect(r.attempts[1]).toMatchObject({ ok: true });
    expect(creditsSpent.requests).toHaveLength(1);
  });

  it('SendGrid got the request and never answered: unknown, so Mailgun is NOT tried (no second copy)', async () => {
    const sg = sendgridApi({ apiKey: SG_KEY, baseUrl: dropper.url });
    const second = mailgun({ apiKey: MG_KEY, domain: DOMAIN, baseUrl: mailgunCapture.url });
    const err: unknown = await failover([sg, second])
      .send(message())
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeliveryError);
    const e = err as DeliveryError;
    expect(e.kind).toBe('unknown');
    expect(e.attempts).toHaveLength(1);
    expect(mailgunCapture.requests).toHaveLength(0);
  });

  it('a mailer with both route URLs falls over and says so', async () => {
    const mailer = createMailer({
      factories: [sendgridApiRoute, mailgunRoute],
      organisations: () => [
        `sendgrid+api://${SG_KEY}@default?endpoint=http://127.0.0.1:${deadPort}`,
        `mailgun://${MG_KEY}@${DOMAIN}?endpoint=${prism.url}`,
      ],
    });
    const fellOver: string[][] = [];
    mailer.on('fell-over', (event) => fellOver.push(event.failed.map((a) => a.route)));
    try {
      const r = await mailer.send(
        { from: `school@${DOMAIN}`, to: 'parent@example.org', subject: 'Chain via URLs', text: '.' },
        { organisation: 'school-a' },
      );
      expect(r.route).toMatch(/^mailgun:\/\/127\.0\.0\.1:\d+\/mg\.example\.org#key-/);
      expect(r.attempts).toHaveLength(2);
      expect(r.attempts[0]).toMatchObject({ ok: false, kind: 'unavailable' });
      expect(fellOver).toHaveLength(1);
      expect(fellOver[0]![0]).toMatch(/^sendgrid\+api:/);
      // SendGrid now rests: the next send skips it without a network call
      const again = await mailer.send(
        { from: `school@${DOMAIN}`, to: 'parent@example.org', subject: 'Chain again', text: '.' },
        { organisation: 'school-a' },
      );
      expect(again.attempts[0]).toMatchObject({ ok: false, skipped: 'resting' });
    } finally {
      await mailer.close();
    }
  });
});
