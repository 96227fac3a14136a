// A chain of the two HTTPS API routes of issue 5, each against its own stand-in: SES v2 through
// aws-ses-v2-local, Gmail through Prism serving the discovery document. The SES route comes from
// its package (a devDependency: no src of a route package imports another); its test peer, which
// the package does not export, from its test folder.
import { randomUUID } from 'node:crypto';
import { createMailer, type DeliveryError, failover, prepareMessage } from '@mailvia/core';
import { type FaultProxy, type Prism, startCutter, startFaultProxy, startPrism } from '@mailvia/core/testing';
import { ses, sesRoute } from '@mailvia/transport-ses';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SesPeer, startSesPeer } from '../../transport-ses/test/ses-peer.js';
import { gmailApi, gmailApiRoute, needsReconsent } from '../src/index.js';
import { decodeSend, SWAGGER, startGoogleTokenErrors, startTokenServer, type TokenServer } from './peers.js';

const FROM = 'school-a@example.org';
const CLIENT_ID = 'fake-client-id.apps.googleusercontent.com';
const CLIENT_SECRET = 'fake-client-secret-gggg';
const REFRESH = 'fake-refresh-token-hhhh';
const REVOKED = 'fake-revoked-token-iiii';
const SES_KEY = { accessKeyId: 'AKIAFAKEKEY0000CHAI', secretAccessKey: 'fake/ses+secret-jjjj' };

let prism: Prism;
let proxy: FaultProxy;
let tokens: TokenServer;
let sesPeer: SesPeer;
let cutter: Awaited<ReturnType<typeof startCutter>>;
let googleErrors: Awaited<ReturnType<typeof startGoogleTokenErrors>>;

beforeAll(async () => {
  [prism, tokens, sesPeer, cutter, googleErrors] = await Promise.all([
    startPrism(SWAGGER, { resolveFrom: import.meta.url }),
    startTokenServer(),
    startSesPeer(),
    startCutter(),
    startGoogleTokenErrors({ clientSecret: CLIENT_SECRET, revoked: [REVOKED] }),
  ]);
  proxy = await startFaultProxy({ upstream: prism.url });
});
afterAll(async () => {
  await Promise.allSettled([
    prism.close(),
    proxy.close(),
    tokens.close(),
    sesPeer.close(),
    cutter.close(),
    googleErrors.close(),
  ]);
});

const gmail = (refreshToken = REFRESH, tokenUrl?: string) =>
  gmailApi({
    user: FROM,
    oauth2: { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, refreshToken },
    rootUrl: `${proxy.url}/`,
    tokenUrl: tokenUrl ?? tokens.url,
  });

/** Did Prism answer a send of this Message-ID with 200? */
async function gmailGot(messageId: string): Promise<boolean> {
  for (const r of proxy.requests) {
    const d = await decodeSend(r);
    if (d?.parsed.messageId === messageId && r.status === 200) return true;
  }
  return false;
}

const msg = () =>
  prepareMessage({ from: FROM, to: 'parent@example.org', subject: `chain ${randomUUID()}`, text: 'Bonjour' });

describe('failover across the API routes', () => {
  it('createMailer: SES forced to fail (connection cut), Gmail sends; the receipt lists both attempts', async () => {
    const q = new URLSearchParams({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      refreshToken: REFRESH,
      rootUrl: `${proxy.url}/`,
      tokenUrl: tokens.url,
    });
    const sesUrl = `ses://${SES_KEY.accessKeyId}:${encodeURIComponent(SES_KEY.secretAccessKey)}@us-east-1?endpoint=${encodeURIComponent(`https://127.0.0.1:${cutter.port}`)}`;
    const mailer = createMailer({
      factories: [sesRoute, gmailApiRoute],
      organisations: () => [sesUrl, `gmail+api://school-a@example.org?${q}`],
    });
    try {
      const subject = `mailer chain ${randomUUID()}`;
      const receipt = await mailer.send(
        { from: FROM, to: 'parent@example.org', subject, text: '.' },
        { organisation: 'a' },
      );
      expect(receipt.route).toBe(`gmail-api(${FROM})`);
      expect(receipt.attempts.map((a) => [a.route, a.ok, a.kind])).toEqual([
        ['ses(us-east-1/…CHAI)', false, 'unavailable'],
        [`gmail-api(${FROM})`, true, undefined],
      ]);
      expect(await gmailGot(receipt.messageId)).toBe(true);
      expect((await sesPeer.stored()).some((e) => e.subject === subject)).toBe(false);
      for (const a of receipt.attempts) expect(a.error ?? '').not.toContain(SES_KEY.secretAccessKey);
    } finally {
      await mailer.close();
    }
  });

  it('an unknown outcome on SES (request sent, answer lost) stops the chain: Gmail never gets it', async () => {
    const m = msg();
    const chain = failover([
      ses({ region: 'us-east-1', credentials: SES_KEY, endpoint: sesPeer.fault({ do: 'forward-then-cut' }) }),
      gmail(),
    ]);
    const err = (await chain.send(m).catch((e: unknown) => e)) as DeliveryError;
    expect(err.kind).toBe('unknown');
    expect(err.attempts.map((a) => [a.kind, a.phase])).toEqual([['unknown', 'data-sent']]);
    expect(
      (await sesPeer.stored()).some((e) => e.subject === m.subject),
      'SES has the mail',
    ).toBe(true);
    expect(await gmailGot(m.messageId), 'Gmail was not asked').toBe(false);
  });

  it('Gmail with a revoked grant first: SES sends, and the attempt says consent is needed', async () => {
    const m = msg();
    const chain = failover([
      gmail(REVOKED, googleErrors.url),
      ses({ region: 'us-east-1', credentials: SES_KEY, endpoint: sesPeer.endpoint }),
    ]);
    const receipt = await chain.send(m);
    expect(receipt.route).toBe('ses(us-east-1/…CHAI)');
    expect(receipt.attempts[0]).toMatchObject({ ok: false, kind: 'misconfigured', code: 'invalid_grant' });
    expect((await sesPeer.stored()).some((e) => e.subject === m.subject)).toBe(true);
    expect(await gmailGot(m.messageId)).toBe(false);
  });

  it('both fail: one DeliveryError lists each route and its kind', async () => {
    const chain = failover([
      ses({ region: 'us-east-1', credentials: SES_KEY, endpoint: `https://127.0.0.1:${cutter.port}` }),
      gmail(REVOKED, googleErrors.url),
    ]);
    const err = (await chain.send(msg()).catch((e: unknown) => e)) as DeliveryError;
    expect(err.attempts.map((a) => a.kind)).toEqual(['unavailable', 'misconfigured']);
    expect(err.kind).toBe('unavailable');
    expect(needsReconsent(err)).toBe(true);
    expect(err.message).not.toContain(SES_KEY.secretAccessKey);
    expect(err.message).not.toContain(REVOKED);
  });
});
