import { readFileSync } from 'node:fs';
import {
  createMailer,
  failover,
  MailError,
  type PreparedMessage,
  prepareMessage,
  smtp,
  type Transport,
} from '@mailvia/core';
import {
  refusedPort,
  type SmtpSink,
  startSilentListener,
  startSmtpSink,
  transportConformance,
} from '@mailvia/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSocksTransport, type SocksTransportOptions, socksConnect, socksRoutes } from '../src/index.js';
import { createProxyUser, type Dante, startDante } from './peers/dante.js';
import { startImmediateSmtpServer } from './peers/immediate-smtp.js';

const USER = 'school-a@example.org';
const PASS = 'fake-app-password-aaaa';
const PROXY_USER = 'mailvia-socks-smtp';
const PROXY_PASS = 'fake-proxy-pass-cccc';
const PROXY_ONLY_NAME = 'upstream.proxy-only.test';

let sink: SmtpSink; // the provider: STARTTLS + AUTH
let secureSink: SmtpSink; // implicit TLS
let plainSink: SmtpSink; // AUTH without TLS (for URL routes, which cannot carry a CA)
let blockedSink: SmtpSink; // listening, but the proxy's rules refuse it
let backup: SmtpSink; // the next route of failover chains
let open: Dante; // no proxy auth
let authed: Dante; // username/password against a system user
let isolated: Dante; // sees PROXY_ONLY_NAME in its own /etc/hosts
let deadPort: number;
let proxyUser: ReturnType<typeof createProxyUser>;

beforeAll(async () => {
  proxyUser = createProxyUser(PROXY_USER, PROXY_PASS);
  const behaviour = (stage: string, d: { address?: string; mail?: { parsed: { subject?: string } } }) => {
    if (stage === 'rcpt' && d.address === 'nobody@example.org')
      return { code: 550, message: '5.1.1 No such user here' };
    if (stage === 'data' && d.mail?.parsed.subject?.includes('fail-limited'))
      return { code: 550, message: '5.4.5 Daily user sending limit exceeded.' };
    if (stage === 'data' && d.mail?.parsed.subject?.includes('fail-unknown')) return 'cut' as const;
    return undefined;
  };
  [sink, secureSink, plainSink, blockedSink, backup] = await Promise.all([
    startSmtpSink({ users: { [USER]: PASS }, behaviour }),
    startSmtpSink({ users: { [USER]: PASS }, secure: true }),
    startSmtpSink({ users: { [USER]: PASS }, starttls: false }),
    startSmtpSink({ starttls: false }),
    startSmtpSink({ starttls: false }),
  ]);
  deadPort = await refusedPort();
  [open, authed, isolated] = await Promise.all([
    startDante({ blockPorts: [blockedSink.port] }),
    startDante({ auth: true }),
    startDante({ hosts: [`127.0.0.1 ${PROXY_ONLY_NAME}`] }),
  ]);
});

afterAll(async () => {
  await Promise.allSettled([open?.stop(), authed?.stop(), isolated?.stop()]);
  await Promise.allSettled([sink, secureSink, plainSink, blockedSink, backup].map((s) => s?.close()));
  proxyUser?.remove();
});

const openProxy = () => `socks5h://127.0.0.1:${open.port}`;
const authedProxy = (pass = PROXY_PASS) => `socks5h://${PROXY_USER}:${pass}@127.0.0.1:${authed.port}`;

const route = (over: Partial<SocksTransportOptions> = {}) =>
  createSocksTransport({
    host: '127.0.0.1',
    port: sink.port,
    auth: { user: USER, pass: PASS },
    tls: { ca: sink.ca, servername: 'localhost' },
    proxy: authedProxy(),
    ...over,
  });
const backupRoute = () => smtp({ host: '127.0.0.1', port: backup.port, pool: false, name: 'backup' });

const message = (subject: string, to = 'parent@example.org') =>
  prepareMessage({ from: USER, to, subject, text: `Body of ${subject}` });

/** Sessions Dante relayed to a port (one "tcp/connect [" line each). */
const relayed = (d: Dante, port: number) =>
  d
    .log()
    .split('\n')
    .filter((l) => l.includes('tcp/connect [:') && l.endsWith(` 127.0.0.1.${port}`));

async function failureOf(t: Transport, m: PreparedMessage): Promise<MailError> {
  const err: unknown = await t.send(m).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(MailError.isInstance(err), `expected a MailError, got ${String(err)}`).toBe(true);
  return err as MailError;
}

transportConformance({
  name: 'smtp through Dante (socks5h, proxy auth, STARTTLS + AUTH)',
  create: () => route(),
  received: () =>
    sink.received.map((m) => ({ subject: m.parsed.subject ?? '', from: m.from, to: m.to, text: m.parsed.text ?? '' })),
  secrets: [PASS, PROXY_PASS, 'wrong-proxy-pass-dddd'],
  failures: {
    misconfigured: () => route({ proxy: authedProxy('wrong-proxy-pass-dddd') }),
    unavailable: () => route({ proxy: `socks5h://${PROXY_USER}:${PROXY_PASS}@127.0.0.1:${deadPort}` }),
    refused: () => {
      const t = route();
      return {
        specificationVersion: 'v1' as const,
        name: t.name,
        send: (m, o) => t.send(prepareMessage({ ...m, to: 'nobody@example.org' }), o),
        close: () => t.close!(),
      };
    },
    limited: () => route(),
    unknown: () => route(),
  },
});

describe('smtp through a real SOCKS5 proxy (Dante): what the far end and the proxy see', () => {
  it('delivers over STARTTLS with AUTH through a proxy without auth; Dante logged the session', async () => {
    const t = route({ proxy: openProxy(), pool: false });
    const m = message('through the open proxy');
    const before = relayed(open, sink.port).length;
    const receipt = await t.send(m);
    const got = sink.received.find((r) => r.parsed.messageId === m.messageId);
    expect(got).toBeDefined();
    expect(got!.user).toBe(USER);
    expect(got!.pass).toBe(PASS);
    expect(got!.secure).toBe(true);
    expect(got!.from).toBe(USER);
    expect(got!.to).toEqual(['parent@example.org']);
    expect(got!.parsed.text?.trim()).toBe('Body of through the open proxy');
    expect(receipt.route).toBe(`smtp://${USER}@127.0.0.1:${sink.port}?proxy=socks5h://127.0.0.1:${open.port}`);
    await open.waitForLog(() => relayed(open, sink.port).length > before);
  });

  it('delivers through a proxy that checks a username and password; Dante logged the user', async () => {
    const t = route({ pool: false });
    const m = message('through the authenticating proxy');
    const receipt = await t.send(m);
    expect(sink.received.some((r) => r.parsed.messageId === m.messageId && r.secure && r.user === USER)).toBe(true);
    expect(receipt.route).not.toContain(PROXY_PASS);
    expect(receipt.route).toContain(`socks5h://${PROXY_USER}@127.0.0.1:${authed.port}`);
    const log = await authed.waitForLog(
      new RegExp(`username%${PROXY_USER}@127\\.0\\.0\\.1\\.\\d+ .* 127\\.0\\.0\\.1\\.${sink.port}\\n`),
    );
    expect(log).not.toContain(PROXY_PASS);
  });

  it('delivers with implicit TLS (port-465 style) through the proxy', async () => {
    const t = route({ port: secureSink.port, secure: true, tls: { ca: secureSink.ca, servername: 'localhost' } });
    const m = message('implicit tls');
    await t.send(m);
    await t.close?.();
    const got = secureSink.received.find((r) => r.parsed.messageId === m.messageId);
    expect(got?.secure).toBe(true);
    expect(got?.user).toBe(USER);
    expect(relayed(authed, secureSink.port).length).toBeGreaterThan(0);
  });

  it('pools: 30 mails over at most 2 proxied connections', async () => {
    const t = route({ maxConnections: 2 });
    const before = { sink: sink.connections, dante: relayed(authed, sink.port).length, mails: sink.received.length };
    const ms = Array.from({ length: 30 }, (_, i) => message(`pooled ${i}`));
    await Promise.all(ms.map((m) => t.send(m)));
    await t.close?.();
    expect(sink.received.length - before.mails).toBe(30);
    expect(sink.connections - before.sink).toBeLessThanOrEqual(2);
    await authed.waitForLog(() => relayed(authed, sink.port).length > before.dante);
    expect(relayed(authed, sink.port).length - before.dante).toBeLessThanOrEqual(2);
  });

  it('socks5h: a name only the proxy can resolve works; the proxy did the lookup', async () => {
    // this machine does not know the name (it is in the hosts file of the isolated Dante's mount namespace only)
    expect(readFileSync('/etc/hosts', 'utf8')).not.toContain(PROXY_ONLY_NAME);
    const m = message('resolved by the proxy');
    const t = route({ host: PROXY_ONLY_NAME, proxy: `socks5h://127.0.0.1:${isolated.port}`, pool: false });
    await t.send(m);
    expect(sink.received.some((r) => r.parsed.messageId === m.messageId)).toBe(true);
    await isolated.waitForLog(() => relayed(isolated, sink.port).length > 0);
    // the same name through a Dante that sees this machine's hosts file: it cannot resolve it
    const err = await failureOf(
      route({ host: PROXY_ONLY_NAME, proxy: openProxy(), pool: false }),
      message('not resolvable'),
    );
    expect(err.kind).toBe('unavailable');
    expect(err.code).toBe('SOCKS_HOST_UNREACHABLE');
    await open.waitForLog(new RegExp(`could not resolve hostname "${PROXY_ONLY_NAME.replace(/\./g, '\\.')}"`));
  });

  it('socks5 resolves names here and hands the proxy an address; socks5h never resolves here', async () => {
    const looked: string[] = [];
    const lookup = async (host: string) => {
      looked.push(host);
      return '127.0.0.1';
    };
    for (const scheme of ['socks5', 'socks5h'] as const) {
      const connect = socksConnect(`${scheme}://127.0.0.1:${open.port}`, { lookup });
      const t = smtp({
        host: 'localhost',
        port: sink.port,
        auth: { user: USER, pass: PASS },
        tls: { ca: sink.ca },
        pool: false,
        connect,
      });
      const m = message(`resolved with ${scheme}`);
      await t.send(m);
      expect(sink.received.some((r) => r.parsed.messageId === m.messageId)).toBe(true);
    }
    expect(looked).toEqual(['localhost']);
  });
});

describe('proxy failures: the right kind, and the chain acts on it', () => {
  it('wrong proxy password: misconfigured, the next route takes the mail', async () => {
    const bad = route({ proxy: authedProxy('wrong-proxy-pass-dddd'), pool: false });
    const err = await failureOf(bad, message('wrong proxy password'));
    expect(err.kind).toBe('misconfigured');
    expect(err.phase).toBe('connect');
    expect(err.code).toBe('SOCKS_AUTH_FAILED');
    expect(err.message).toMatch(/refused the username or password/);
    expect(JSON.stringify(err) + err.message).not.toContain('wrong-proxy-pass-dddd');
    await authed.waitForLog(/password authentication failed for user "mailvia-socks-smtp"/);

    const m = message('falls over from a wrong proxy password');
    const receipt = await failover([route({ proxy: authedProxy('wrong-proxy-pass-dddd') }), backupRoute()]).send(m);
    expect(receipt.route).toBe('backup');
    expect(receipt.attempts.map((a) => [a.ok, a.kind, a.code])).toEqual([
      [false, 'misconfigured', 'SOCKS_AUTH_FAILED'],
      [true, undefined, undefined],
    ]);
    expect(backup.received.some((r) => r.parsed.messageId === m.messageId)).toBe(true);
  });

  it('no credentials for a proxy that requires them: misconfigured', async () => {
    const err = await failureOf(
      route({ proxy: `socks5h://127.0.0.1:${authed.port}`, pool: false }),
      message('no proxy credentials'),
    );
    expect(err.kind).toBe('misconfigured');
    expect(err.code).toBe('SOCKS_AUTH_REQUIRED');
    expect(err.message).toMatch(/may require a username and password/);
  });

  it('proxy down: unavailable, phase connect, the next route takes the mail', async () => {
    const down = route({ proxy: `socks5h://127.0.0.1:${deadPort}`, pool: false });
    const err = await failureOf(down, message('proxy down'));
    expect(err.kind).toBe('unavailable');
    expect(err.phase).toBe('connect');
    expect(err.code).toBe('ECONNREFUSED');
    expect(err.message).toContain(`the SOCKS proxy socks5h://127.0.0.1:${deadPort} could not be reached`);

    const m = message('falls over from a dead proxy');
    const receipt = await failover([down, backupRoute()]).send(m);
    expect(receipt.route).toBe('backup');
    expect(receipt.attempts[0]).toMatchObject({ ok: false, kind: 'unavailable', code: 'ECONNREFUSED' });
  });

  it("the proxy's rules refuse the destination: misconfigured, nothing reached it, the next route takes the mail", async () => {
    const refused = route({ port: blockedSink.port, proxy: openProxy(), pool: false });
    const err = await failureOf(refused, message('blocked destination'));
    expect(err.kind).toBe('misconfigured');
    expect(err.phase).toBe('connect');
    expect(err.code).toBe('SOCKS_NOT_ALLOWED');
    expect(err.message).toContain(`does not allow a connection to 127.0.0.1:${blockedSink.port}`);
    expect(blockedSink.connections).toBe(0);
    await open.waitForLog(new RegExp(`block\\(\\d+\\): tcp/connect .* 127\\.0\\.0\\.1\\.${blockedSink.port}`));

    const receipt = await failover([refused, backupRoute()]).send(message('falls over from a refused destination'));
    expect(receipt.route).toBe('backup');
    expect(receipt.attempts[0]).toMatchObject({ kind: 'misconfigured', code: 'SOCKS_NOT_ALLOWED' });
  });

  it('the server behind the proxy is down: unavailable, the next route takes the mail', async () => {
    const behind = route({ port: deadPort, proxy: openProxy(), pool: false });
    const err = await failureOf(behind, message('upstream down'));
    expect(err.kind).toBe('unavailable');
    expect(err.phase).toBe('connect');
    expect(err.code).toBe('SOCKS_CONNECTION_REFUSED');
    expect(err.message).toContain(`was refused a connection by 127.0.0.1:${deadPort}`);

    const receipt = await failover([behind, backupRoute()]).send(message('falls over from a dead upstream'));
    expect(receipt.route).toBe('backup');
    expect(receipt.attempts[0]).toMatchObject({ kind: 'unavailable', code: 'SOCKS_CONNECTION_REFUSED' });
  });

  it('a proxy that never answers the handshake: unavailable after proxyTimeout, phase connect', async () => {
    const silent = await startSilentListener();
    try {
      const t = route({ proxy: `socks5h://127.0.0.1:${silent.port}`, proxyTimeout: 300, pool: false });
      const err = await failureOf(t, message('silent proxy'));
      expect(err.kind).toBe('unavailable');
      expect(err.phase).toBe('connect');
      expect(err.code).toBe('SOCKS_TIMEOUT');
    } finally {
      await silent.close();
    }
  });

  it('an aborted signal stops a tunnel that is being set up', async () => {
    const silent = await startSilentListener();
    try {
      const connect = socksConnect(`socks5h://127.0.0.1:${silent.port}`, { timeout: 10_000, route: 'via-silent' });
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 100);
      const err: unknown = await connect({ host: '127.0.0.1', port: sink.port }, { signal: ac.signal }).catch((e) => e);
      expect(MailError.isInstance(err)).toBe(true);
      expect(err).toMatchObject({ kind: 'unavailable', phase: 'connect', code: 'EABORT', route: 'via-silent' });
    } finally {
      await silent.close();
    }
  });

  it('a server behind the proxy that never greets: unavailable, phase connect', async () => {
    const silent = await startSilentListener();
    try {
      const t = route({ port: silent.port, proxy: openProxy(), greetingTimeout: 400, pool: false });
      const err = await failureOf(t, message('silent upstream'));
      expect(err.kind).toBe('unavailable');
      expect(err.phase).toBe('connect');
      expect(silent.connections).toBe(1);
    } finally {
      await silent.close();
    }
  });

  it('no answer to the final dot (socket timeout after the data): unknown, phase data-sent, the chain stops', async () => {
    const hanging = await startImmediateSmtpServer({ hangAfterData: (m) => m.data.includes('Subject: hang') });
    try {
      const before = backup.received.length;
      const t = createSocksTransport({
        host: hanging.host,
        port: hanging.port,
        proxy: openProxy(),
        socketTimeout: 500,
        pool: false,
      });
      const err = await failureOf(failover([t, backupRoute()]), message('hang after data'));
      expect(err.kind).toBe('unknown');
      expect(err.phase).toBe('data-sent');
      expect(hanging.received).toHaveLength(1);
      expect(backup.received.length).toBe(before);
    } finally {
      await hanging.close();
    }
  });

  it('the connection is cut after the final dot: unknown, and the chain stops (no second copy)', async () => {
    const before = backup.received.length;
    const err = await failureOf(
      failover([route({ pool: false }), backupRoute()]),
      message('fail-unknown through the proxy'),
    );
    expect(err.kind).toBe('unknown');
    expect(backup.received.length).toBe(before);
    const direct = await failureOf(route({ pool: false }), message('fail-unknown again'));
    expect(direct.kind).toBe('unknown');
    expect(direct.phase).toBe('data-sent');
  });
});

describe('route data and URLs (socksRoutes in the mailer)', () => {
  it('smtp://…?proxy=socks5h://… replaces core’s smtp factory and sends through the proxy', async () => {
    const proxy = `socks5h://${PROXY_USER}:${PROXY_PASS}@127.0.0.1:${authed.port}`;
    const mailer = createMailer({
      factories: socksRoutes,
      // the proxy URL may be written as is when its password has no & # + or %
      routes: `smtp://${encodeURIComponent(USER)}:${PASS}@127.0.0.1:${plainSink.port}?pool=false&proxy=${proxy}`,
    });
    try {
      const before = relayed(authed, plainSink.port).length;
      const receipt = await mailer.send({ from: USER, to: 'parent@example.org', subject: 'url route', text: 'hi' });
      expect(receipt.route).toBe(
        `smtp://${USER}@127.0.0.1:${plainSink.port}?proxy=socks5h://${PROXY_USER}@127.0.0.1:${authed.port}`,
      );
      const got = plainSink.received.find((r) => r.parsed.subject === 'url route');
      expect(got?.user).toBe(USER);
      await authed.waitForLog(() => relayed(authed, plainSink.port).length > before);
    } finally {
      await mailer.close();
    }
  });

  it('the same factory without ?proxy= is core’s smtp route (direct)', async () => {
    const mailer = createMailer({ factories: socksRoutes, routes: `smtp://127.0.0.1:${backup.port}?pool=false` });
    try {
      const receipt = await mailer.send({ from: USER, to: 'p@example.org', subject: 'direct url', text: 'hi' });
      expect(receipt.route).toBe(`smtp://127.0.0.1:${backup.port}`);
      expect(backup.received.some((r) => r.parsed.subject === 'direct url')).toBe(true);
    } finally {
      await mailer.close();
    }
  });

  it('{ type: "socks", proxy, route: { type: "smtp", … } } sends through the proxy with STARTTLS', async () => {
    const mailer = createMailer({
      factories: socksRoutes,
      routes: [
        {
          type: 'socks',
          proxy: authedProxy(),
          route: {
            type: 'smtp',
            host: '127.0.0.1',
            port: sink.port,
            auth: { user: USER, pass: PASS },
            tls: { ca: sink.ca, servername: 'localhost' },
          },
        },
        'capture://',
      ],
    });
    try {
      const receipt = await mailer.send({ from: USER, to: 'parent@example.org', subject: 'socks object', text: 'hi' });
      expect(receipt.route).toContain(`?proxy=socks5h://${PROXY_USER}@127.0.0.1:${authed.port}`);
      const got = sink.received.find((r) => r.parsed.subject === 'socks object');
      expect(got?.secure).toBe(true);
    } finally {
      await mailer.close();
    }
  });

  it('a socks route wrapping an smtp URL; a wrong proxy password falls over to the next route', async () => {
    const mailer = createMailer({
      factories: socksRoutes,
      routes: [
        { type: 'socks', proxy: authedProxy('wrong-proxy-pass-dddd'), route: `smtp://127.0.0.1:${plainSink.port}` },
        { type: 'socks', proxy: openProxy(), route: `smtp://127.0.0.1:${backup.port}?pool=false` },
      ],
    });
    try {
      const receipt = await mailer.send({ from: USER, to: 'p@example.org', subject: 'wrapped url', text: 'hi' });
      expect(receipt.attempts.map((a) => a.kind ?? 'ok')).toEqual(['misconfigured', 'ok']);
      expect(backup.received.some((r) => r.parsed.subject === 'wrapped url')).toBe(true);
      expect(JSON.stringify(receipt)).not.toContain('wrong-proxy-pass-dddd');
    } finally {
      await mailer.close();
    }
  });
});
