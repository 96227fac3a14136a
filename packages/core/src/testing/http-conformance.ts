import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { MailError } from '../errors.js';
import { prepareMessage } from '../message.js';
import type { Transport } from '../spec.js';
import { type HttpExchange, type HttpPeer, startHttpPeer } from './http.js';
import { refusedPort } from './peers.js';

/** What {@link httpFailureConformance} needs: a way to point the route at a loopback HTTP server. */
export interface HttpFailureConformanceOptions {
  /** Shown in the test names. */
  name: string;
  /**
   * The route with its API at `baseUrl` (plain HTTP on 127.0.0.1: the base URL, endpoint or
   * root URL option), giving up on an answer after `timeout` ms. Closed after the suite.
   */
  create: (baseUrl: string, options: { timeout: number }) => Transport | Promise<Transport>;
  /** A sender the route accepts. @default 'sender@example.org' */
  from?: string;
  /** Recipients the route accepts. @default ['rcpt@example.org'] */
  to?: string[];
  /** Secrets of the routes: none may appear in an error message or its JSON. */
  secrets?: string[];
}

/**
 * The suite every HTTP API route runs against loopback servers for the failures without an
 * answer: whether the request was fully sent decides `unavailable` (phase `connect`: another
 * route may send) or `unknown` (phase `data-sent`: the provider may have the mail). A refused
 * connection, a server that reads the whole request and cuts the connection, one that never
 * answers (the route's timeout), and an abort after the request arrived and before the send.
 *
 * @example
 * ```ts
 * httpFailureConformance({ name: 'mailgun', create: (baseUrl, { timeout }) => mailgun({ apiKey, domain, baseUrl, timeout }) });
 * ```
 */
export function httpFailureConformance(options: HttpFailureConformanceOptions): void {
  const from = options.from ?? 'sender@example.org';
  const to = options.to ?? ['rcpt@example.org'];
  const peers: HttpPeer[] = [];
  const open: Transport[] = [];
  const peer = async (answer: (exchange: HttpExchange, res: ServerResponse, req: IncomingMessage) => void) => {
    const p = await startHttpPeer(answer);
    peers.push(p);
    return p;
  };
  const route = async (baseUrl: string, timeout = 30_000) => {
    const t = await options.create(baseUrl, { timeout });
    open.push(t);
    return t;
  };
  const message = (text = 'Hello from the HTTP failure suite') =>
    prepareMessage({ from, to, subject: `http failure ${randomUUID()}`, text });
  const failureOf = async (sending: Promise<unknown>): Promise<MailError> => {
    const err: unknown = await sending.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(MailError.isInstance(err), `expected a MailError, got ${String(err)}`).toBe(true);
    const e = err as MailError;
    for (const s of options.secrets ?? []) {
      expect(e.message).not.toContain(s);
      expect(JSON.stringify(e)).not.toContain(s);
    }
    return e;
  };

  describe(`${options.name}: HTTP failures without an answer (sent or not)`, () => {
    afterAll(async () => {
      await Promise.allSettled(open.map((t) => t.close?.()));
      await Promise.allSettled(peers.map((p) => p.close()));
    });

    it('a refused connection: nothing was sent, unavailable, phase connect', async () => {
      const port = await refusedPort();
      const e = await failureOf((await route(`http://127.0.0.1:${port}`)).send(message()));
      expect(e.kind).toBe('unavailable');
      expect(e.phase).toBe('connect');
      expect(e.code).toBe('ECONNREFUSED');
    });

    it('the server read the whole request, then cut the connection: unknown, phase data-sent', async () => {
      const p = await peer((_ex, _res, req) => req.socket.destroy());
      const e = await failureOf((await route(p.url)).send(message('x'.repeat(200_000))));
      expect(e.kind).toBe('unknown');
      expect(e.phase).toBe('data-sent');
      // the server did get the whole message: that is why the outcome is unknown
      expect(p.requests).toHaveLength(1);
      expect(p.requests[0]!.body.length).toBeGreaterThanOrEqual(200_000);
    });

    it('no answer within the timeout after the request was sent: unknown, phase data-sent', async () => {
      const p = await peer(() => {});
      const e = await failureOf((await route(p.url, 500)).send(message()));
      expect(e.kind).toBe('unknown');
      expect(e.phase).toBe('data-sent');
      expect(p.requests).toHaveLength(1);
    });

    it('an abort after the request arrived is unknown; an abort before the send sends nothing', async () => {
      const p = await peer(() => {});
      const t = await route(p.url);
      const ac = new AbortController();
      const pending = failureOf(t.send(message(), { signal: ac.signal }));
      while (p.requests.length === 0) await new Promise((r) => setTimeout(r, 10));
      ac.abort();
      const e = await pending;
      expect(e.kind).toBe('unknown');
      expect(e.code).toBe('EABORT');
      const early = await failureOf(t.send(message(), { signal: AbortSignal.abort() }));
      expect(early.kind).toBe('unavailable');
      expect(p.requests).toHaveLength(1);
    });
  });
}
