import { createServer as createHttpServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { createMailer, MailError, type RouteFactory, type Transport } from '@mailvia/core';
import { refusedPort, testCertificate } from '@mailvia/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { socksAgent, socksRoutes } from '../src/index.js';
import { createProxyUser, type Dante, startDante } from './peers/dante.js';

const PROXY_USER = 'mailvia-socks-http';
const PROXY_PASS = 'fake-proxy-pass-eeee';
const API_KEY = 'SG.fake-key';

/** A loopback HTTP(S) server standing in for a provider's API: 202 to POST /v3/mail/send with the right key. */
interface FakeApi {
  port: number;
  requests: { method: string; path: string; auth: string; body: string; remotePort: number }[];
  connections: number;
  close(): Promise<void>;
}

async function startApi(tls: boolean): Promise<FakeApi> {
  const state: FakeApi = { port: 0, requests: [], connections: 0, close: async () => {} };
  const handler = (req: IncomingMessage, res: import('node:http').ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      state.requests.push({
        method: req.method ?? '',
        path: req.url ?? '',
        auth: req.headers.authorization ?? '',
        body: Buffer.concat(chunks).toString(),
        remotePort: req.socket.remotePort ?? 0,
      });
      const ok =
        req.method === 'POST' && req.url === '/v3/mail/send' && req.headers.authorization === `Bearer ${API_KEY}`;
      res.writeHead(ok ? 202 : 401, { 'x-message-id': ok ? `msg-${state.requests.length}` : '' });
      res.end(ok ? '' : '{"errors":[{"message":"bad key"}]}');
    });
  };
  const { key, cert } = testCertificate();
  const server: Server = tls ? createHttpsServer({ key, cert }, handler) : createHttpServer(handler);
  server.on('connection', () => state.connections++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.port = (server.address() as AddressInfo).port;
  state.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return state;
}

let open: Dante;
let authed: Dante;
let https: FakeApi;
let http: FakeApi;
let blocked: FakeApi;
let deadPort: number;
let proxyUser: ReturnType<typeof createProxyUser>;

beforeAll(async () => {
  proxyUser = createProxyUser(PROXY_USER, PROXY_PASS);
  [https, http, blocked] = await Promise.all([startApi(true), startApi(false), startApi(false)]);
  deadPort = await refusedPort();
  [open, authed] = await Promise.all([startDante({ blockPorts: [blocked.port] }), startDante({ auth: true })]);
});
afterAll(async () => {
  await Promise.allSettled([open?.stop(), authed?.stop()]);
  await Promise.allSettled([https, http, blocked].map((s) => s?.close()));
  proxyUser?.remove();
});

const authedProxy = (pass = PROXY_PASS) => `socks5h://${PROXY_USER}:${pass}@127.0.0.1:${authed.port}`;

/** Dante's outgoing ports of the sessions it relayed to a port (the far end sees these). */
const relayedFrom = (d: Dante, port: number) =>
  d
    .log()
    .split('\n')
    .filter((l) => l.includes('tcp/connect [:') && l.endsWith(` 127.0.0.1.${port}`))
    .map((l) => Number(/127\.0\.0\.1\.(\d+) 127\.0\.0\.1\.\d+$/.exec(l)?.[1]));

interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

function post(url: string, agent: import('node:http').Agent, body = '{"personalizations":[]}'): Promise<Reply> {
  const secure = url.startsWith('https:');
  return new Promise((resolve, reject) => {
    const req = (secure ? httpsRequest : httpRequest)(
      url,
      {
        method: 'POST',
        agent,
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        ...(secure ? { ca: testCertificate().cert } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('socksAgent: an API route reaches its provider through Dante', () => {
  it('HTTPS through a proxy with username/password: the API answered, and the connection came from Dante', async () => {
    const agent = socksAgent(authedProxy());
    try {
      const reply = await post(
        `https://localhost:${https.port}/v3/mail/send`,
        agent,
        '{"subject":"through the proxy"}',
      );
      expect(reply.status).toBe(202);
      expect(reply.headers['x-message-id']).toBe('msg-1');
      const got = https.requests.at(-1)!;
      expect(got).toMatchObject({ method: 'POST', path: '/v3/mail/send', body: '{"subject":"through the proxy"}' });
      // the API saw a connection from a port Dante logged as its side of a session for this user
      await authed.waitForLog(() => relayedFrom(authed, https.port).includes(got.remotePort));
      expect(authed.log()).toMatch(
        new RegExp(
          `username%${PROXY_USER}@127\\.0\\.0\\.1\\.\\d+ 127\\.0\\.0\\.1\\.${authed.port} -> 127\\.0\\.0\\.1\\.${got.remotePort} 127\\.0\\.0\\.1\\.${https.port}`,
        ),
      );
    } finally {
      agent.destroy();
    }
  });

  it('plain HTTP with keep-alive: two requests share one proxied connection', async () => {
    const agent = socksAgent(`socks5h://127.0.0.1:${open.port}`);
    try {
      const before = http.connections;
      expect((await post(`http://127.0.0.1:${http.port}/v3/mail/send`, agent)).status).toBe(202);
      expect((await post(`http://127.0.0.1:${http.port}/v3/mail/send`, agent)).status).toBe(202);
      expect(http.connections - before).toBe(1);
      const [a, b] = http.requests.slice(-2);
      expect(a!.remotePort).toBe(b!.remotePort);
      await open.waitForLog(() => relayedFrom(open, http.port).includes(a!.remotePort));
    } finally {
      agent.destroy();
    }
  });

  it('a wrong proxy password fails the request with a MailError: misconfigured, phase connect, no secret', async () => {
    const agent = socksAgent(authedProxy('wrong-proxy-pass-ffff'));
    const err = await post(`https://localhost:${https.port}/v3/mail/send`, agent).catch((e: unknown) => e);
    agent.destroy();
    expect(MailError.isInstance(err)).toBe(true);
    expect(err).toMatchObject({ kind: 'misconfigured', phase: 'connect', code: 'SOCKS_AUTH_FAILED' });
    expect(`${(err as Error).message}${JSON.stringify(err)}`).not.toContain('wrong-proxy-pass-ffff');
  });

  it('proxy down, destination refused by the rules, API down behind the proxy: each its kind', async () => {
    const cases: [string, string, string, string][] = [
      [`socks5h://127.0.0.1:${deadPort}`, `http://127.0.0.1:${http.port}/v3/mail/send`, 'unavailable', 'ECONNREFUSED'],
      [
        `socks5h://127.0.0.1:${open.port}`,
        `http://127.0.0.1:${blocked.port}/v3/mail/send`,
        'misconfigured',
        'SOCKS_NOT_ALLOWED',
      ],
      [
        `socks5h://127.0.0.1:${open.port}`,
        `http://127.0.0.1:${deadPort}/v3/mail/send`,
        'unavailable',
        'SOCKS_CONNECTION_REFUSED',
      ],
    ];
    for (const [proxy, url, kind, code] of cases) {
      const agent = socksAgent(proxy);
      const err = await post(url, agent).catch((e: unknown) => e);
      agent.destroy();
      expect(MailError.isInstance(err), `${proxy} → ${url}: ${String(err)}`).toBe(true);
      expect(err).toMatchObject({ kind, code, phase: 'connect' });
    }
    expect(blocked.requests).toHaveLength(0);
  });

  it('{ type: "socks", route: { type: <an API route> } } hands that route an agent through the proxy', async () => {
    // a stand-in for an API route package: its factory takes an `agent` field, as the SendGrid,
    // Gmail API, SES and Mailgun routes do
    const apiRoute: RouteFactory = {
      type: 'fake-api',
      schemes: [],
      fromUrl: () => {
        throw new Error('object only');
      },
      create(config): Transport {
        const agent = config.agent as import('node:http').Agent;
        return {
          specificationVersion: 'v1',
          name: `fake-api:${String(config.port)}`,
          async send(m) {
            const r = await post(
              `https://localhost:${String(config.port)}/v3/mail/send`,
              agent,
              JSON.stringify({ subject: m.subject }),
            );
            if (r.status !== 202) throw new Error(`HTTP ${r.status}`);
            return {
              route: this.name,
              messageId: m.messageId,
              providerMessageId: String(r.headers['x-message-id']),
              accepted: m.envelope.to,
              rejected: [],
              acceptedBy: 'provider',
              attempts: [{ route: this.name, ok: true, startedAt: Date.now(), durationMs: 0 }],
            };
          },
        };
      },
    };
    const mailer = createMailer({
      factories: [...socksRoutes, apiRoute],
      routes: { type: 'socks', proxy: authedProxy(), route: { type: 'fake-api', port: https.port } },
    });
    try {
      const receipt = await mailer.send({
        from: 'a@example.org',
        to: 'b@example.org',
        subject: 'api via socks',
        text: '.',
      });
      expect(receipt.providerMessageId).toMatch(/^msg-/);
      const got = https.requests.find((r) => r.body.includes('api via socks'))!;
      expect(got).toBeDefined();
      await authed.waitForLog(() => relayedFrom(authed, https.port).includes(got.remotePort));
    } finally {
      await mailer.close();
    }
  });
});
