import { Agent, request } from 'node:http';
import { describe, expect, it } from 'vitest';
import {
  checkBaseUrl,
  checkRequestHeaders,
  headerValue,
  httpFailure,
  type RequestProgress,
  RouteConfigError,
  requestAborted,
  routeAgents,
  trackingAgent,
  withRequestProgress,
} from '../src/index.js';
import { refusedPort, reply, startFaultProxy, startHttpPeer } from '../src/testing/index.js';

/** POSTs `body` to `url` through `agent`; resolves with the status, or the error's code. */
function post(url: string, agent: Agent, body: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = request(url, { method: 'POST', agent, headers: { 'content-length': String(body.length) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', (e: Error & { code?: string }) => resolve(e.code ?? e.message));
    req.end(body);
  });
}

describe('request progress through a tracking agent (real loopback servers)', () => {
  it('a refused connection: started, not sent', async () => {
    const agent = trackingAgent(new Agent());
    const port = await refusedPort();
    const [outcome, progress] = await withRequestProgress(async (p) => [
      await post(`http://127.0.0.1:${port}/`, agent, 'hello'),
      { ...p },
    ]);
    expect(outcome).toBe('ECONNREFUSED');
    expect(progress).toEqual({ started: true, sent: false });
  });

  it('a server that reads the whole request and cuts the connection: sent, and the server has the body', async () => {
    const peer = await startHttpPeer((_ex, _res, req) => req.socket.destroy());
    const agent = trackingAgent(new Agent({ keepAlive: true }), { owned: true });
    try {
      const body = 'x'.repeat(300_000);
      const [outcome, progress] = await withRequestProgress(async (p) => [await post(peer.url, agent, body), { ...p }]);
      expect(outcome).toBe('ECONNRESET');
      expect(progress).toEqual({ started: true, sent: true });
      expect(peer.requests[0]!.body.length).toBe(300_000);
    } finally {
      agent.destroy();
      await peer.close();
    }
  });

  it('a proxy that cuts before reading a large body: not sent (the body could not be written)', async () => {
    const peer = await startHttpPeer((_ex, res) => reply(res, 200, { ok: true }));
    const proxy = await startFaultProxy({ upstream: peer.url, behaviour: () => ({ do: 'cut-before-body' }) });
    const agent = trackingAgent(new Agent());
    try {
      const [outcome, progress] = await withRequestProgress(async (p) => [
        await post(proxy.url, agent, 'x'.repeat(16_000_000)),
        { ...p },
      ]);
      expect(typeof outcome, 'a connection error, not an answer').toBe('string');
      expect(progress.sent).toBe(false);
      expect(peer.requests).toHaveLength(0);
    } finally {
      await proxy.close();
      await peer.close();
    }
  });

  it('concurrent sends on one agent each see their own request', async () => {
    const peer = await startHttpPeer((ex, res, req) =>
      ex.url === '/cut' ? req.socket.destroy() : reply(res, 202, { id: 'ok' }),
    );
    const agent = trackingAgent(new Agent({ keepAlive: true }), { owned: true });
    const port = await refusedPort();
    try {
      const run = (url: string) =>
        withRequestProgress(
          async (p): Promise<[number | string, RequestProgress]> => [await post(url, agent, 'body'), p],
        );
      const [ok, cut, refused] = await Promise.all([
        run(`${peer.url}/ok`),
        run(`${peer.url}/cut`),
        run(`http://127.0.0.1:${port}/`),
      ]);
      expect(ok).toEqual([202, { started: true, sent: true }]);
      expect(cut[1]).toEqual({ started: true, sent: true });
      expect(refused).toEqual(['ECONNREFUSED', { started: true, sent: false }]);
    } finally {
      agent.destroy();
      await peer.close();
    }
  });

  it("closing the route destroys its own agents' sockets, never a given agent's", async () => {
    const peer = await startHttpPeer((_ex, res) => reply(res, 200, { ok: true }));
    const idle = (a: Agent) => Object.values(a.freeSockets).flat().length;
    const settle = () => new Promise((r) => setTimeout(r, 50));
    const given = new Agent({ keepAlive: true });
    try {
      const theirs = routeAgents(given);
      expect(theirs.for('https://api.example.org')).toBe(theirs.https);
      expect(theirs.for(`${peer.url}/x`)).toBe(theirs.http);
      expect(await post(peer.url, theirs.http, 'a')).toBe(200);
      await settle();
      theirs.destroy();
      await settle();
      expect(idle(given), 'the given agent keeps its keep-alive socket').toBe(1);
      const own = routeAgents();
      expect(await post(peer.url, own.http, 'a')).toBe(200);
      await settle();
      expect(idle(own.http)).toBe(1);
      own.destroy();
      await settle();
      expect(idle(own.http)).toBe(0);
    } finally {
      given.destroy();
      await peer.close();
    }
  });
});

describe('httpFailure', () => {
  const base = { route: 'api', message: 'failed' };

  it('no answer: connect when not sent, data-sent (unknown) when sent', () => {
    const before = httpFailure({ ...base, sent: false, errorCode: 'ECONNREFUSED' });
    expect([before.kind, before.phase, before.code]).toEqual(['unavailable', 'connect', 'ECONNREFUSED']);
    const after = httpFailure({ ...base, sent: true, errorCode: 'ECONNRESET' });
    expect([after.kind, after.phase]).toEqual(['unknown', 'data-sent']);
  });

  it('an answer: phase response, classified by status and the provider rows first', () => {
    const e = httpFailure({ ...base, sent: true, status: 503 });
    expect([e.kind, e.phase, e.status, e.code]).toEqual(['unavailable', 'response', 503, 'HTTP 503']);
    const own = httpFailure({
      ...base,
      sent: true,
      status: 401,
      text: 'Maximum credits exceeded',
      rules: [
        {
          source: 'p',
          id: 'credits',
          kind: 'limited',
          quota: true,
          match: (f) => f.httpStatus === 401 && /credits/.test(f.text ?? ''),
          meaning: 'credits',
        },
      ],
    });
    expect([own.kind, own.quota, own.rule]).toEqual(['limited', true, 'p/credits']);
  });

  it('Retry-After on any answer; X-RateLimit-Reset only when limited; the stated wait last', () => {
    const reset = String(Math.floor(Date.now() / 1000) + 120);
    expect(httpFailure({ ...base, sent: true, status: 429, headers: { 'Retry-After': '30' } }).retryAfter).toBe(30_000);
    expect(httpFailure({ ...base, sent: true, status: 503, headers: { 'retry-after': '5' } }).retryAfter).toBe(5000);
    const limited = httpFailure({
      ...base,
      sent: true,
      status: 429,
      headers: new Headers({ 'X-RateLimit-Reset': reset }),
    });
    expect(limited.retryAfter).toBeGreaterThan(100_000);
    expect(limited.retryAfter).toBeLessThanOrEqual(120_000);
    // a 5xx with the window's reset is no rate limit: the reset says nothing about when to retry
    expect(httpFailure({ ...base, sent: true, status: 500, headers: { 'x-ratelimit-reset': reset } }).retryAfter).toBe(
      undefined,
    );
    expect(httpFailure({ ...base, sent: true, status: 429, retryAfter: 7000 }).retryAfter).toBe(7000);
  });

  it('a phase the route knows better wins', () => {
    const e = httpFailure({ ...base, sent: false, phase: 'auth', errorCode: 'CredentialsProviderError' });
    expect(e.phase).toBe('auth');
  });
});

describe('requestAborted', () => {
  it('unknown after the request was sent, unavailable before', () => {
    const ac = new AbortController();
    ac.abort(new Error('the user cancelled'));
    const sent = requestAborted({ route: 'api', action: 'send', signal: ac.signal, sent: true });
    expect([sent.kind, sent.phase, sent.code]).toEqual(['unknown', 'data-sent', 'EABORT']);
    expect(sent.message).toBe('api: send: the user cancelled after the request was sent: outcome unknown');
    const before = requestAborted({ route: 'api', signal: AbortSignal.abort(), sent: false, phase: 'auth' });
    expect([before.kind, before.phase]).toEqual(['unavailable', 'auth']);
  });
});

describe('headers and base URLs', () => {
  it('reads a header in any case from records and Headers', () => {
    expect(headerValue({ 'Retry-After': '3' }, 'retry-after')).toBe('3');
    expect(headerValue({ 'set-cookie': ['a', 'b'] }, 'Set-Cookie')).toBe('a');
    expect(headerValue(new Headers({ 'X-A': '1' }), 'x-a')).toBe('1');
    expect(headerValue(undefined, 'x')).toBeUndefined();
  });

  it('checkBaseUrl: https anywhere, http only to loopback, no credentials or query', () => {
    expect(checkBaseUrl('https://api.example.org/')).toBe('https://api.example.org');
    expect(checkBaseUrl('http://127.0.0.1:4010')).toBe('http://127.0.0.1:4010');
    expect(() => checkBaseUrl('http://api.example.org')).toThrow(/clear text/);
    expect(() => checkBaseUrl('https://u:p@api.example.org')).toThrow(RouteConfigError);
    expect(() => checkBaseUrl('https://api.example.org/?a=1')).toThrow(/query/);
    expect(() => checkBaseUrl('ftp://api.example.org', 'query.endpoint')).toThrow(/query\.endpoint/);
  });

  it('checkRequestHeaders: no Authorization, no line breaks', () => {
    expect(checkRequestHeaders({ 'On-Behalf-Of': 'sub' })).toEqual({ 'On-Behalf-Of': 'sub' });
    expect(() => checkRequestHeaders({ authorization: 'x' })).toThrow(/set from apiKey/);
    expect(() => checkRequestHeaders({ 'X-A': 'a\r\nB: b' })).toThrow(/line break/);
  });
});
