import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  DeliveryError,
  failover,
  MailError,
  MemoryRouteState,
  type PreparedMessage,
  prepareMessage,
  roundRobin,
  smtp,
  type Transport,
} from '../src/index.js';
import {
  refusedPort,
  type SmtpSink,
  type SmtpSinkOptions,
  startSilentListener,
  startSmtpSink,
} from '../src/testing/index.js';

const FROM = 'school@example.org';
const sinks: SmtpSink[] = [];
const open: Transport[] = [];

async function sink(behaviour?: SmtpSinkOptions['behaviour']) {
  const s = await startSmtpSink({ ...(behaviour ? { behaviour } : {}) });
  sinks.push(s);
  return s;
}
function route(s: { port: number }, name?: string, over: Partial<Parameters<typeof smtp>[0]> = {}) {
  const t = smtp({
    host: '127.0.0.1',
    port: s.port,
    tls: { rejectUnauthorized: false },
    ...(name ? { name } : {}),
    ...over,
  });
  open.push(t);
  return t;
}
function msg(subject: string, to: string | string[] = 'parent@example.org'): PreparedMessage {
  return prepareMessage({ from: FROM, to, subject, text: `body of ${subject}` });
}

let good: SmtpSink;
beforeAll(async () => {
  good = await sink();
});
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((t) => t.close?.()));
});
afterAll(async () => {
  await Promise.allSettled(sinks.map((s) => s.close()));
});

describe('failover over real sockets', () => {
  it('falls over from a refused port to the next route; the receipt lists both attempts', async () => {
    const chain = failover([route({ port: await refusedPort() }, 'dead'), route(good, 'good')]);
    const m = msg('refused-port');
    const r = await chain.send(m);
    expect(r.route).toBe('good');
    expect(r.attempts.map((a) => [a.route, a.ok, a.kind])).toEqual([
      ['dead', false, 'unavailable'],
      ['good', true, undefined],
    ]);
    expect(r.attempts[0]!.phase).toBe('connect');
    expect(good.received.some((x) => x.parsed.subject === 'refused-port')).toBe(true);
  });

  it('falls over from a listener that never greets', async () => {
    const silent = await startSilentListener();
    try {
      const chain = failover([route(silent, 'silent', { pool: false }), route(good, 'good')]);
      const r = await chain.send(msg('silent'));
      expect(r.route).toBe('good');
      expect(r.attempts[0]).toMatchObject({ route: 'silent', kind: 'unavailable', phase: 'connect' });
    } finally {
      await silent.close();
    }
  });

  it('falls over on AUTH rejected (535): misconfigured, and the route rests', async () => {
    const authSink = await startSmtpSink({ users: { real: 'right-password' } });
    sinks.push(authSink);
    const state = new MemoryRouteState();
    const bad = route(authSink, 'bad-auth', { auth: { user: 'real', pass: 'wrong-password' } });
    const chain = failover([bad, route(good, 'good')], { state });
    const r = await chain.send(msg('auth-535'));
    expect(r.attempts[0]).toMatchObject({ kind: 'misconfigured', phase: 'auth', code: '535 5.7.8' });
    expect(r.attempts[0]!.error).not.toContain('wrong-password');
    expect(state.get('bad-auth')?.kind).toBe('misconfigured');
  });

  it.each([
    [421, '4.3.2 Service shutting down', 'connect'],
    [451, '4.3.0 Local error in processing', 'mail'],
  ] as const)('falls over on %i', async (code, text, stage) => {
    const failing = await sink((s) => (s === stage ? { code, message: text } : undefined));
    const chain = failover([route(failing, `fail-${code}`), route(good, 'good')]);
    const r = await chain.send(msg(`code-${code}`));
    expect(r.route).toBe('good');
    expect(r.attempts[0]).toMatchObject({ kind: 'unavailable', code: `${code} ${text.split(' ')[0]}` });
    expect(failing.received).toHaveLength(0);
  });

  it('stops on 550 5.1.1 at RCPT: no other route receives the mail', async () => {
    const first = await sink((s, d) =>
      s === 'rcpt' ? { code: 550, message: `5.1.1 <${d.address}>: no such user` } : undefined,
    );
    const second = await sink();
    const chain = failover([route(first, 'first'), route(second, 'second')]);
    const err = await chain.send(msg('unknown-user', 'ghost@example.org')).catch((e) => e);
    expect(err).toBeInstanceOf(DeliveryError);
    expect(err.kind).toBe('refused');
    expect(err.recipients).toEqual(['ghost@example.org']);
    expect(err.attempts).toHaveLength(1);
    expect(err.message).toMatch(/stopped on a refusal/);
    expect(second.received).toHaveLength(0);
    expect(second.connections).toBe(0);
  });

  it('skips a limited route (550 5.4.5) afterwards without connecting to it', async () => {
    const gmail = await sink((s) =>
      s === 'data' ? { code: 550, message: '5.4.5 Daily user sending limit exceeded.' } : undefined,
    );
    const chain = failover([route(gmail, 'gmail'), route(good, 'good')]);
    const r1 = await chain.send(msg('quota-1'));
    expect(r1.attempts[0]).toMatchObject({ route: 'gmail', kind: 'limited' });
    const connections = gmail.connections;
    const r2 = await chain.send(msg('quota-2'));
    expect(r2.route).toBe('good');
    expect(r2.attempts[0]).toMatchObject({ route: 'gmail', skipped: 'resting', kind: 'limited', durationMs: 0 });
    expect(gmail.connections).toBe(connections);
  });

  it('never falls over on an unknown outcome (cut after the final dot): no second copy', async () => {
    const cutting = await sink((s) => (s === 'data' ? 'cut' : undefined));
    const second = await sink();
    const chain = failover([route(cutting, 'cutting'), route(second, 'second')]);
    const err = await chain.send(msg('cut-after-dot')).catch((e) => e);
    expect(err.kind).toBe('unknown');
    expect(err.phase).toBe('data-sent');
    expect(err.message).toMatch(/unknown outcome/);
    // the first server did take it; the second must never see it
    expect(cutting.received).toHaveLength(1);
    expect(second.received).toHaveLength(0);
    expect(second.connections).toBe(0);
  });

  it('raises one aggregate error listing every attempt when all routes fail', async () => {
    const p1 = await refusedPort();
    const authSink = await startSmtpSink({ users: { u: 'p-right' } });
    sinks.push(authSink);
    const chain = failover([
      route({ port: p1 }, 'r1'),
      route(authSink, 'r2', { auth: { user: 'u', pass: 'p-wrong' } }),
    ]);
    const err = await chain.send(msg('all-fail')).catch((e) => e);
    expect(err).toBeInstanceOf(DeliveryError);
    expect(err.attempts.map((a: { route: string; kind: string; phase: string }) => [a.route, a.kind, a.phase])).toEqual(
      [
        ['r1', 'unavailable', 'connect'],
        ['r2', 'misconfigured', 'auth'],
      ],
    );
    expect(err.attempts.every((a: { durationMs: number }) => typeof a.durationMs === 'number')).toBe(true);
    expect(err.kind).toBe('unavailable');
    expect(err.message).toMatch(/All 2 routes/);
    expect(err.message).not.toContain('p-wrong');
  });

  it('lets one probe through after the cool-down, and clears the rest when it succeeds', async () => {
    let down = true;
    const flaky = await sink((s) =>
      s === 'connect' && down ? { code: 421, message: '4.3.2 down for maintenance' } : undefined,
    );
    const state = new MemoryRouteState();
    const chain = failover([route(flaky, 'flaky', { pool: false }), route(good, 'good')], {
      state,
      rest: { unavailable: 150 },
    });
    await chain.send(msg('probe-1'));
    const before = flaky.connections;
    const r2 = await chain.send(msg('probe-2'));
    expect(r2.attempts[0]!.skipped).toBe('resting');
    expect(flaky.connections).toBe(before);
    down = false;
    await new Promise((r) => setTimeout(r, 200));
    const r3 = await chain.send(msg('probe-3'));
    expect(r3.route).toBe('flaky');
    expect(state.get('flaky')).toBeUndefined();
  });

  it('a probe the server answers by refusing the message clears the rest: the route works again', async () => {
    let down = true;
    const flaky = await sink((s, d) => {
      if (s === 'connect' && down) return { code: 421, message: '4.3.2 down for maintenance' };
      if (s === 'rcpt' && d.address === 'gone@example.org') return { code: 550, message: '5.1.1 No such user' };
      return undefined;
    });
    const state = new MemoryRouteState();
    const chain = failover([route(flaky, 'flaky', { pool: false }), route(good, 'good')], {
      state,
      rest: { unavailable: 150 },
    });
    await chain.send(msg('down'));
    expect(await state.get('flaky')).toBeDefined();
    down = false;
    await new Promise((r) => setTimeout(r, 200));
    // the probe: the server is back and refuses this recipient; the chain stops on the refusal
    await expect(chain.send(msg('probe', 'gone@example.org'))).rejects.toMatchObject({ kind: 'refused' });
    expect(await state.get('flaky')).toBeUndefined();
    // so the next mail goes through it at once, not after the probe's lease
    const next = await chain.send(msg('after'));
    expect(next.route).toBe('flaky');
    expect(next.attempts.map((a) => a.skipped)).toEqual([undefined]);
  });

  it('round-robin alternates between routes and still falls over', async () => {
    const a = await sink();
    const b = await sink();
    const rr = roundRobin([route(a, 'a'), route(b, 'b')]);
    const routes = [];
    for (let i = 0; i < 4; i++) routes.push((await rr.send(msg(`rr-${i}`))).route);
    expect(routes).toEqual(['a', 'b', 'a', 'b']);
    const rr2 = roundRobin([route({ port: await refusedPort() }, 'dead'), route(b, 'b2')]);
    expect((await rr2.send(msg('rr-fallover'))).route).toBe('b2');
  });

  it('nests: failover([dead, roundRobin([a, b])]) and the receipt flattens attempts', async () => {
    const a = await sink();
    const b = await sink();
    const chain = failover([route({ port: await refusedPort() }, 'dead'), roundRobin([route(a, 'a'), route(b, 'b')])]);
    const r = await chain.send(msg('nested'));
    expect(r.attempts.map((x) => x.route)).toEqual(['dead', 'a']);
    expect(chain.name).toBe('failover(dead roundrobin(a b))');
  });

  it('sends the same bytes to every route tried (composed once)', async () => {
    let firstRaw: Buffer | undefined;
    const afterBody = await sink((s, d) => {
      if (s !== 'data') return undefined;
      firstRaw = d.mail?.raw;
      return { code: 452, message: '4.3.1 Insufficient system storage' };
    });
    const second = await sink();
    const m = prepareMessage({
      from: FROM,
      to: 'parent@example.org',
      subject: 'same bytes',
      text: 'x',
      attachments: [{ filename: 'a.bin', content: new Uint8Array(200_000).fill(7) }],
    });
    const r = await failover([route(afterBody, 'first'), route(second, 'second')]).send(m);
    expect(r.route).toBe('second');
    // the first server refused after reading the whole body; the second got the same Message-ID and attachment
    expect(r.attempts[0]).toMatchObject({ route: 'first', kind: 'unavailable', phase: 'response' });
    expect(firstRaw).toBeDefined();
    expect(second.received[0]!.raw.equals(firstRaw!)).toBe(true);
    expect(second.received[0]!.raw.toString('latin1')).toContain(m.messageId);
    expect(second.received[0]!.parsed.attachments[0]!.content.length).toBe(200_000);
  });

  it('one AbortSignal covers the whole chain', async () => {
    const silent = await startSilentListener();
    try {
      const second = await sink();
      const chain = failover([
        route(silent, 'silent', { pool: false, greetingTimeout: 5000 }),
        route(second, 'second'),
      ]);
      const err = await chain.send(msg('deadline'), { signal: AbortSignal.timeout(300) }).catch((e) => e);
      expect(MailError.isInstance(err)).toBe(true);
      expect(err.code).toBe('EABORT');
      expect(err.message).toMatch(/deadline/);
      expect(second.connections).toBe(0);
    } finally {
      await silent.close();
    }
  });

  it('announces each attempt while it reads the route state, and reports a skip or a failed read only after the announcement', async () => {
    const events: string[] = [];
    const observer = {
      beforeAttempt: async (name: string) => {
        events.push(`announce ${name}`);
        await new Promise((r) => setTimeout(r, 20));
        events.push(`announced ${name}`);
      },
      attempt: (a: { route: string; ok: boolean; skipped?: string; error?: string }) =>
        events.push(`${a.ok ? 'ok' : a.skipped ? 'skipped' : 'failed'} ${a.route}`),
    };
    const state = new MemoryRouteState();
    state.rest('resting', { until: Date.now() + 60_000, kind: 'unavailable', reason: 'down' });
    const chain = failover([route(good, 'resting'), route(good, 'good')], { state });
    await chain.send(msg('announce'), { observer });
    expect(events).toEqual([
      'announce resting',
      'announced resting',
      'skipped resting',
      'announce good',
      'announced good',
      'ok good',
    ]);

    // the route state cannot be read: the announced attempt ends as failed, and the send fails with the store's error
    events.length = 0;
    const broken = new MemoryRouteState();
    broken.get = () => {
      throw new Error('route state store unreachable');
    };
    const before = good.received.length;
    const err = await failover([route(good, 'good')], { state: broken })
      .send(msg('broken state'), { observer })
      .catch((e: unknown) => e);
    expect((err as Error).message).toBe('route state store unreachable');
    expect(events).toEqual(['announce good', 'announced good', 'failed good']);
    expect(good.received.length).toBe(before);
  });
});
