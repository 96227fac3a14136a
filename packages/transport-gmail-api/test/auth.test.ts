import { createVerify, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createOutbox, type MailError, MemoryRouteState, prepareMessage, RouteRegistry } from '@mailvia/core';
import { type FaultProxy, type Prism, startFaultProxy, startPrism } from '@mailvia/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GmailApiRouteOptions, gmailApi, gmailApiRoute, maskGmailUrl, needsReconsent } from '../src/index.js';
import {
  decodeSend,
  SWAGGER,
  serviceAccountKey,
  startGoogleTokenErrors,
  startTokenServer,
  type TokenServer,
} from './peers.js';

const USER = 'teacher@example.org';
const CLIENT_ID = 'fake-client-id.apps.googleusercontent.com';
const CLIENT_SECRET = 'fake-client-secret-eeee';
const REFRESH = 'fake-refresh-token-ffff';
const SA_EMAIL = 'mailer@fake-project.iam.gserviceaccount.com';

let prism: Prism;
let proxy: FaultProxy;
let tokens: TokenServer;
const key = serviceAccountKey();
const otherKey = serviceAccountKey();
/** The access tokens the token server issued, in order. */
const issued: string[] = [];

beforeAll(async () => {
  [prism, tokens] = await Promise.all([startPrism(SWAGGER, { resolveFrom: import.meta.url }), startTokenServer()]);
  proxy = await startFaultProxy({ upstream: prism.url });
  tokens.server.service.on('beforeResponse', (response: { body: Record<string, unknown> }) => {
    issued.push(String(response.body.access_token));
  });
});
afterAll(async () => {
  await Promise.allSettled([prism.close(), proxy.close(), tokens.close()]);
});

const msg = (subject = `auth ${randomUUID()}`) =>
  prepareMessage({ from: USER, to: 'a@example.org', subject, text: '.' });

const oauthRoute = (over: Partial<GmailApiRouteOptions> = {}) =>
  gmailApi({
    user: USER,
    oauth2: { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, refreshToken: REFRESH },
    rootUrl: `${proxy.url}/`,
    tokenUrl: tokens.url,
    ...over,
  });

const saRoute = (over: Partial<GmailApiRouteOptions> = {}) =>
  gmailApi({
    user: USER,
    serviceAccount: { clientEmail: SA_EMAIL, privateKey: key.privateKey, privateKeyId: 'fake-key-id-1' },
    rootUrl: `${proxy.url}/`,
    tokenUrl: tokens.url,
    ...over,
  });

/** The bearer token the API saw for a subject. */
async function bearerFor(subject: string): Promise<string | undefined> {
  for (const r of proxy.requests) {
    const d = await decodeSend(r);
    if (d?.parsed.subject === subject) return d.token;
  }
  return undefined;
}

describe('OAuth refresh token', () => {
  it('refreshes with exactly the four fields of the contract, and sends with the token it got', async () => {
    const before = tokens.requests.length;
    const m = msg();
    await oauthRoute().send(m);
    expect(tokens.requests.slice(before)).toEqual([
      { grant_type: 'refresh_token', refresh_token: REFRESH, client_id: CLIENT_ID, client_secret: CLIENT_SECRET },
    ]);
    expect(await bearerFor(m.subject)).toBe(issued.at(-1));
  });

  it('caches the token across sends and renews it once when it expires, not per send', async () => {
    tokens.expiresIn = 2;
    try {
      const t = oauthRoute({ refreshMargin: 0 });
      const before = tokens.requests.length;
      const a = msg();
      const b = msg();
      await t.send(a);
      await t.send(b);
      expect(tokens.requests.length - before, 'one token for two sends').toBe(1);
      expect(await bearerFor(b.subject)).toBe(await bearerFor(a.subject));
      await new Promise((r) => setTimeout(r, 2300));
      const c = msg();
      const d = msg();
      const e = msg();
      await Promise.all([t.send(c), t.send(d), t.send(e)]);
      expect(tokens.requests.length - before, 'one renewal for three concurrent sends after expiry').toBe(2);
      const renewed = await bearerFor(c.subject);
      expect(renewed).not.toBe(await bearerFor(a.subject));
      expect(await bearerFor(d.subject)).toBe(renewed);
      expect(await bearerFor(e.subject)).toBe(renewed);
    } finally {
      tokens.expiresIn = 3600;
    }
  });

  it('renews ahead of expiry within refreshMargin', async () => {
    tokens.expiresIn = 60;
    try {
      const t = oauthRoute({ refreshMargin: 120_000 });
      const before = tokens.requests.length;
      await t.send(msg());
      await t.send(msg());
      expect(tokens.requests.length - before, 'a token with less than the margin left is renewed').toBe(2);
    } finally {
      tokens.expiresIn = 3600;
    }
  });
});

describe('service account with domain-wide delegation (JWT bearer)', () => {
  it('signs an RS256 assertion with iss, sub, scope, aud and a lifetime of at most an hour', async () => {
    const before = tokens.requests.length;
    const m = msg();
    const receipt = await saRoute().send(m);
    expect(receipt.route).toBe(`gmail-api(${USER})`);
    const [request] = tokens.requests.slice(before);
    expect(request?.grant_type).toBe('urn:ietf:params:oauth:grant-type:jwt-bearer');
    const [h, p, s] = request!.assertion!.split('.') as [string, string, string];
    const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as Record<string, unknown>;
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, number | string>;
    expect(header.alg).toBe('RS256');
    expect(createVerify('RSA-SHA256').update(`${h}.${p}`).verify(key.publicKey, Buffer.from(s, 'base64url'))).toBe(
      true,
    );
    expect(createVerify('RSA-SHA256').update(`${h}.${p}`).verify(otherKey.publicKey, Buffer.from(s, 'base64url'))).toBe(
      false,
    );
    expect(claims).toMatchObject({
      iss: SA_EMAIL,
      sub: USER,
      scope: 'https://www.googleapis.com/auth/gmail.send',
      aud: 'https://oauth2.googleapis.com/token',
    });
    expect(Number(claims.exp) - Number(claims.iat)).toBeLessThanOrEqual(3600);
    expect(Number(claims.exp)).toBeGreaterThan(Date.now() / 1000);
    expect(await bearerFor(m.subject)).toBe(issued.at(-1));
  });

  it('a subject other than the route user is used as sub', async () => {
    const before = tokens.requests.length;
    await saRoute({
      serviceAccount: { clientEmail: SA_EMAIL, privateKey: key.privateKey, subject: 'office@example.org' },
    }).send(msg());
    const assertion = tokens.requests.slice(before)[0]!.assertion!;
    const claims = JSON.parse(Buffer.from(assertion.split('.')[1]!, 'base64url').toString()) as { sub: string };
    expect(claims.sub).toBe('office@example.org');
  });

  it("Google's endpoint takes a correctly signed assertion and refuses another key's with invalid_grant", async () => {
    const google = await startGoogleTokenErrors({ clientSecret: CLIENT_SECRET, revoked: [], publicKey: key.publicKey });
    try {
      await expect(saRoute({ tokenUrl: google.url }).send(msg())).resolves.toMatchObject({ acceptedBy: 'provider' });
      const err = (await saRoute({
        tokenUrl: google.url,
        serviceAccount: { clientEmail: SA_EMAIL, privateKey: otherKey.privateKey },
      })
        .send(msg())
        .catch((e: unknown) => e)) as MailError;
      expect(err.kind).toBe('misconfigured');
      expect(err.code).toBe('invalid_grant');
      expect(err.message).toContain('Invalid JWT Signature');
      expect(needsReconsent(err)).toBe(true);
      const keyBody = otherKey.privateKey.split('\n')[1]!;
      expect(err.message).not.toContain(keyBody);
      expect(JSON.stringify(err)).not.toContain(keyBody);
    } finally {
      await google.close();
    }
  });

  it('verify() gets a token and reaches the API', async () => {
    await expect(saRoute().verify?.()).resolves.toBeUndefined();
  });
});

describe('gmail+api URLs', () => {
  const registry = new RouteRegistry([gmailApiRoute]);
  const context = { outbox: createOutbox(), state: new MemoryRouteState(), stateKey: 'test:' };

  it('builds an OAuth route from a URL and sends', async () => {
    const q = new URLSearchParams({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      refreshToken: REFRESH,
      rootUrl: `${proxy.url}/`,
      tokenUrl: tokens.url,
    });
    const t = registry.build(`gmail+api://teacher@example.org?${q}`, context);
    expect(t.name).toBe('gmail-api(teacher@example.org)');
    const m = msg();
    await t.send(m);
    expect(await bearerFor(m.subject)).toBeDefined();
  });

  it('builds a service account route from a key file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mailvia-gmail-'));
    const file = join(dir, 'sa.json');
    writeFileSync(
      file,
      JSON.stringify({
        type: 'service_account',
        client_email: SA_EMAIL,
        private_key: key.privateKey,
        private_key_id: 'fake-key-id-2',
      }),
    );
    const q = new URLSearchParams({ keyFile: file, rootUrl: `${proxy.url}/`, tokenUrl: tokens.url });
    const before = tokens.requests.length;
    await registry.build(`gmail+api://teacher@example.org?${q}`, context).send(msg());
    expect(tokens.requests.slice(before)[0]?.grant_type).toBe('urn:ietf:params:oauth:grant-type:jwt-bearer');
  });

  it('says what is wrong with a URL without showing its secrets', () => {
    const url = `gmail+api://teacher@example.org?clientId=${CLIENT_ID}&clientSecret=${CLIENT_SECRET}&refreshToken=${REFRESH}`;
    expect(maskGmailUrl(url)).toBe(
      `gmail+api://teacher@example.org?clientId=${CLIENT_ID}&clientSecret=****&refreshToken=****`,
    );
    const bad = [
      `${url}&colour=blue`,
      `gmail+api://teacher@example.org?clientId=${CLIENT_ID}&clientSecret=${CLIENT_SECRET}`,
      `${url}&keyFile=/tmp/x.json`,
      `gmail+api://example.org?clientId=${CLIENT_ID}&clientSecret=${CLIENT_SECRET}&refreshToken=${REFRESH}`,
    ];
    const problems = [/query\.colour: unknown parameter/, /query\.refreshToken: is missing/, /either keyFile/, /user/];
    bad.forEach((u, i) => {
      let err: Error | undefined;
      try {
        registry.build(u, context);
      } catch (e) {
        err = e as Error;
      }
      expect(err?.name).toBe('RouteConfigError');
      expect(err?.message).toMatch(problems[i]!);
      expect(err?.message).not.toContain(CLIENT_SECRET);
      expect(err?.message).not.toContain(REFRESH);
    });
  });

  it('refuses options without exactly one way to authenticate', () => {
    expect(() => gmailApi({ user: USER })).toThrow(/exactly one of oauth2/);
    expect(() =>
      gmailApi({
        user: USER,
        oauth2: { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, refreshToken: REFRESH },
        serviceAccount: { clientEmail: SA_EMAIL, privateKey: key.privateKey },
      }),
    ).toThrow(/exactly one of oauth2/);
    expect(() => gmailApi({ user: USER, serviceAccount: { clientEmail: SA_EMAIL, privateKey: 'not a key' } })).toThrow(
      /PEM/,
    );
  });
});
