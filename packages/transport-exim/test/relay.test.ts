/**
 * The exim route and the generated relay, against a real Exim (Debian exim4-daemon-light) relaying
 * to loopback "upstreams" (smtp-server with STARTTLS + AUTH standing in for smtp.gmail.com).
 */
import { randomUUID } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createMailer, failover, MailError, type PreparedMessage, prepareMessage, smtp } from '@mailvia/core';
import {
  freePort,
  type ReceivedMail,
  refusedPort,
  type SmtpSink,
  startSmtpSink,
  transportConformance,
} from '@mailvia/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/command.js';
import { formatDoctorReport, runDoctor } from '../src/doctor.js';
import { type RelayOrganisation, validateOrganisations } from '../src/organisations.js';
import { relayStatus } from '../src/status.js';
import { exim, eximRoute } from '../src/transport.js';
import { type RunningRelay, startDebianRelay, startRelay, swaks } from './relay-harness.js';

// obviously fake credentials
const RELAY = {
  a: 'fake-relay-password-aaaa',
  b: 'fake-relay-password-bbbb',
  c: 'fake-relay-password-cccc',
  d: 'fake-relay-password-dddd',
  e: 'fake-relay-password-eeee',
  f: 'fake-relay-password-ffff',
  g: 'fake-relay-password-gggg',
  h: 'fake-relay-password-hhhh',
};
const UP = {
  a: 'fake-app-password-aaaa',
  // characters that mean something to Exim's client_send (^ and :) and to shells
  b: 'fake-app^pass:word "b" $x',
  c: 'fake-app-password-cccc-WRONG',
  d: 'fake-app-password-dddd',
  e: 'fake-app-password-eeee',
  f: 'fake-app-password-ffff',
  g: 'fake-app-password-gggg',
  h: 'fake-app-password-hhhh',
};
const SECRETS = [...Object.values(RELAY), ...Object.values(UP)];

let upstream: SmtpSink; // the shared "smtp.gmail.com"
let backup: SmtpSink; // the next route of a failover chain
let blocking: SmtpSink; // an upstream that refuses this server's IP, as Google does
let late: SmtpSink | undefined; // an upstream that comes up later
let latePort: number;
let deadPort: number;
let relay: RunningRelay;
let orgs: RelayOrganisation[];
let orgsFile: string;

const subject = (tag: string) => `${tag} ${randomUUID()}`;

async function arrived(sink: SmtpSink, subj: string, timeoutMs = 10_000): Promise<ReceivedMail> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const m = sink.received.find((r) => r.parsed.subject === subj);
    if (m) return m;
    if (Date.now() > end) throw new Error(`"${subj}" did not reach the upstream within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const route = (org: keyof typeof RELAY, over: Partial<Parameters<typeof exim>[0]> = {}) =>
  exim({
    port: relay.port,
    auth: { user: `school-${org}`, pass: RELAY[org] },
    relay: relay.exim,
    ...over,
  });

const message = (from: string, subj: string, extra: Partial<Parameters<typeof prepareMessage>[0]> = {}) =>
  prepareMessage({ from, to: 'parent@example.org', subject: subj, text: 'Bonjour', ...extra });

beforeAll(async () => {
  upstream = await startSmtpSink({
    users: {
      'a@school-a.example': UP.a,
      'b@school-b.example': UP.b,
      'c@school-c.example': 'fake-app-password-cccc', // the relay has another one: refused
      'g@school-g.example': UP.g,
    },
    behaviour(stage, d) {
      if (stage === 'data' && d.user === 'g@school-g.example') {
        return {
          code: 550,
          message: '5.4.5 Daily user sending limit exceeded. For more information on Gmail sending limits',
        };
      }
    },
  });
  backup = await startSmtpSink({ users: { 'backup@example.org': 'fake-backup-password' } });
  blocking = await startSmtpSink({
    users: { 'h@school-h.example': UP.h },
    behaviour: (stage) =>
      stage === 'mail'
        ? {
            code: 421,
            message:
              '4.7.0 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address.',
          }
        : undefined,
  });
  deadPort = await refusedPort();
  latePort = await freePort();
  const org = (id: string, port = upstream.port, senders = [`${id.slice(-1)}@${id}.example`]) => ({
    id,
    relay: { password: RELAY[id.slice(-1) as keyof typeof RELAY] },
    senders,
    upstream: {
      host: '127.0.0.1',
      port,
      user: `${id.slice(-1)}@${id}.example`,
      password: UP[id.slice(-1) as keyof typeof UP],
    },
  });
  const input = [
    org('school-a', upstream.port, ['a@school-a.example', '@news.school-a.example']),
    org('school-b'),
    org('school-c'),
    org('school-d', deadPort),
    org('school-e', latePort),
    org('school-f', latePort),
    org('school-g'),
    org('school-h', blocking.port),
  ];
  orgs = await validateOrganisations(input, { allowLoopbackUpstream: true });
  relay = await startRelay({ orgs, upstreamCa: upstream.ca });
  orgsFile = join(relay.dir, 'organisations.json');
  writeFileSync(orgsFile, JSON.stringify(input), { mode: 0o600 });
});

afterAll(async () => {
  await relay?.stop();
  await Promise.allSettled([upstream?.close(), backup?.close(), blocking?.close(), late?.close()]);
});

transportConformance({
  name: 'exim (real Exim relaying to a STARTTLS + AUTH upstream)',
  create: () => route('a'),
  // what the upstream received, as organisation A: the relay's far end, not the relay
  received: () =>
    upstream.received
      .filter((m) => m.user === 'a@school-a.example')
      .map((m) => ({ subject: m.parsed.subject ?? '', from: m.from, to: m.to, text: m.parsed.text ?? '' })),
  from: 'a@school-a.example',
  acceptedBy: 'relay',
  secrets: SECRETS,
  receiveTimeout: 10_000,
  failures: {
    misconfigured: () => route('a', { auth: { user: 'school-a', pass: 'wrong-relay-password-zzzz' } }),
    unavailable: () => route('a', { port: deadPort }),
  },
});

describe('each organisation goes out through its own account', () => {
  it("A's mail arrives upstream authenticated as A, over TLS, headers, body and attachment intact", async () => {
    const t = route('a');
    const subj = subject('Bulletin — trimestre 1');
    const m = message('École A <a@school-a.example>', subj, {
      to: ['parent@example.org', 'Zoë <zoe@bücher.example>'],
      cc: 'teacher@example.org',
      html: '<p>Bonjour <b>à tous</b></p>',
      headers: { 'X-School': 'A' },
      attachments: [{ filename: 'report.pdf', content: Buffer.from('%PDF-1.4 fake'), contentType: 'application/pdf' }],
    });
    const receipt = await t.send(m);
    await t.close();
    expect(receipt.acceptedBy).toBe('relay');
    expect(receipt.providerMessageId).toMatch(/^[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}$/);
    const got = await arrived(upstream, subj);
    expect(got.user).toBe('a@school-a.example');
    expect(got.pass).toBe(UP.a);
    expect(got.secure).toBe(true);
    expect(got.from).toBe('a@school-a.example');
    expect(got.to.sort()).toEqual(['parent@example.org', 'teacher@example.org', 'zoe@bücher.example']);
    expect(got.parsed.messageId).toBe(m.messageId);
    expect(got.parsed.from?.value[0]?.name).toBe('École A');
    expect(got.parsed.headers.get('x-school')).toBe('A');
    expect(got.parsed.text?.trim()).toBe('Bonjour');
    expect(got.parsed.html).toContain('<b>à tous</b>');
    expect(got.parsed.attachments[0]?.filename).toBe('report.pdf');
    expect(got.parsed.attachments[0]?.content.toString()).toBe('%PDF-1.4 fake');
    // the relay added its Received line, naming the organisation that authenticated
    expect(String(got.parsed.headers.get('received'))).toMatch(/esmtpa|mailvia-relay/);
  });

  it("B's mail arrives as B with B's own password (one with ^, : and quotes)", async () => {
    const t = route('b');
    const subj = subject('from B');
    await t.send(message('b@school-b.example', subj));
    await t.close();
    const got = await arrived(upstream, subj);
    expect(got.user).toBe('b@school-b.example');
    expect(got.pass).toBe(UP.b);
    expect(got.secure).toBe(true);
  });

  it('a sender at an allowed domain (@news.school-a.example) goes out as A', async () => {
    const t = route('a');
    const subj = subject('newsletter');
    await t.send(message('lettre@news.school-a.example', subj));
    await t.close();
    expect((await arrived(upstream, subj)).user).toBe('a@school-a.example');
  });

  it('tells the final outcome: relayStatus reads the relay log and queue (delivered, with the upstream reply)', async () => {
    const t = route('a');
    const subj = subject('status');
    const receipt = await t.send(message('a@school-a.example', subj));
    await t.close();
    await arrived(upstream, subj);
    await relay.waitForLog((l) => l.includes(`${receipt.providerMessageId} Completed`));
    const status = await t.status(receipt);
    expect(status.state).toBe('delivered');
    expect(status.queueId).toBe(receipt.providerMessageId);
    expect(status.relayUser).toBe('school-a');
    expect(status.inQueue).toBe(false);
    expect(status.recipients).toEqual([
      expect.objectContaining({ address: 'parent@example.org', state: 'delivered', host: '127.0.0.1' }),
    ]);
    expect(status.recipients[0]?.response).toMatch(/^250 /);
    // by Message-ID alone, as an application that kept only the receipt's messageId would ask
    expect((await relayStatus({ ...relay.exim, messageId: receipt.messageId })).state).toBe('delivered');
  });

  it('a pooled client sending 15 mails on one connection: every one is delivered at once, none waits for a queue run', async () => {
    const t = route('a', { maxConnections: 1 });
    const subjects = Array.from({ length: 15 }, (_, i) => subject(`pooled ${i}`));
    for (const s of subjects) await t.send(message('a@school-a.example', s));
    await t.close();
    // no queue runner is running: only immediate deliveries can bring these upstream
    for (const s of subjects) await arrived(upstream, s);
    expect(relay.log().some((l) => /no immediate delivery/i.test(l))).toBe(false);
  });
});

describe('what the relay refuses', () => {
  it('a wrong relay password is refused at AUTH (misconfigured) and nothing reaches the upstream', async () => {
    const before = upstream.received.length;
    const t = route('a', { auth: { user: 'school-a', pass: 'wrong-relay-password-zzzz' } });
    const err = await t.send(message('a@school-a.example', subject('wrong relay password'))).catch((e) => e);
    await t.close();
    expect(MailError.isInstance(err)).toBe(true);
    expect(err.kind).toBe('misconfigured');
    expect(err.phase).toBe('auth');
    expect(err.code).toBe('535');
    expect(err.message).not.toContain('wrong-relay-password-zzzz');
    await relay.waitForLog((l) => /mailvia_plain authenticator failed .*535/.test(l));
    expect(upstream.received.length).toBe(before);
  });

  it("a relay user with another organisation's password is refused (user AND password are checked)", async () => {
    const t = route('a', { auth: { user: 'school-a', pass: RELAY.b } });
    const err = await t.send(message('a@school-a.example', subject('cross password'))).catch((e) => e);
    await t.close();
    expect(err.kind).toBe('misconfigured');
    expect(err.phase).toBe('auth');
  });

  it('unauthenticated relaying is refused (relay not permitted)', async () => {
    const t = smtp({ host: '127.0.0.1', port: relay.port, pool: false });
    const err = await t.send(message('a@school-a.example', subject('no auth'))).catch((e) => e);
    expect(MailError.isInstance(err)).toBe(true);
    expect(err.kind).toBe('misconfigured');
    expect(err.code).toBe('550 5.7.1');
    expect(err.message).toMatch(/relay not permitted/);
  });

  it("A cannot send with B's sender address, nor put B's address in From:", async () => {
    const before = upstream.received.length;
    const t = route('a');
    const envelope = await t.send(message('b@school-b.example', subject('spoof envelope'))).catch((e) => e);
    expect(envelope.kind).toBe('misconfigured');
    expect(envelope.phase).toBe('envelope');
    expect(envelope.rule).toBe('exim-relay/sender-not-allowed');
    // Exim wraps long replies over several lines
    expect(envelope.message).toMatch(/is not an allowed sender of organisation\s+(550 5\.7\.1 )?school-a/);
    // envelope sender A's, From: header B's
    const m = prepareMessage({
      from: 'b@school-b.example',
      to: 'parent@example.org',
      subject: subject('spoof header'),
      text: '.',
    });
    const spoof = { ...m, envelope: { ...m.envelope, from: 'a@school-a.example' } } as PreparedMessage;
    const header = await t.send(spoof).catch((e) => e);
    expect(header.kind).toBe('misconfigured');
    expect(header.rule).toBe('exim-relay/sender-not-allowed');
    await t.close();
    expect(upstream.received.length).toBe(before);
  });
});

describe('when the upstream fails, the mail stays in the relay and the relay says why', () => {
  let refusedId: string;
  let downId: string;
  let limitedId: string;

  it('upstream refuses the credentials: accepted by the relay, kept in its queue, status says the password was refused', async () => {
    const t = route('c');
    const receipt = await t.send(message('c@school-c.example', subject('bad app password')));
    await t.close();
    expect(receipt.acceptedBy).toBe('relay');
    refusedId = receipt.providerMessageId!;
    await relay.waitForLog((l) => l.includes(refusedId) && l.includes(' == '));
    const status = await t.status(receipt);
    expect(status.state).toBe('deferred');
    expect(status.inQueue).toBe(true);
    expect(status.recipients[0]?.diagnosis?.id).toBe('upstream-bad-credentials');
    expect(status.recipients[0]?.diagnosis?.title).toMatch(/bad App Password/);
    expect((await relay.queue()).map((q) => q.queueId)).toContain(refusedId);
    expect(upstream.received.some((m) => m.user === 'c@school-c.example')).toBe(false);
  });

  it('one refused password rests the shared upstream for 1 s only: the next organisation then delivers at once', async () => {
    // Exim keeps retry data per upstream host; the generated retry rule keeps that rest to 1 s
    await new Promise((r) => setTimeout(r, 1200));
    const t = route('a');
    const subj = subject('after a refused password');
    const receipt = await t.send(message('a@school-a.example', subj));
    await t.close();
    await arrived(upstream, subj);
    expect(relay.linesOf(receipt.providerMessageId!).some((l) => l.includes(' == '))).toBe(false);
  });

  it('upstream down: accepted by the relay, kept in its queue, status says the connection was refused', async () => {
    const t = route('d');
    const receipt = await t.send(message('d@school-d.example', subject('upstream down')));
    await t.close();
    downId = receipt.providerMessageId!;
    await relay.waitForLog((l) => l.includes(downId) && l.includes(' == '));
    const status = await t.status(receipt);
    expect(status.state).toBe('deferred');
    expect(status.recipients[0]?.diagnosis?.id).toBe('upstream-refused');
  });

  it("the upstream's daily limit (550 5.4.5) fails the message in the relay; status says so", async () => {
    const t = route('g');
    const receipt = await t.send(message('g@school-g.example', subject('over the limit')));
    await t.close();
    limitedId = receipt.providerMessageId!;
    await relay.waitForLog((l) => l.includes(limitedId) && l.includes(' ** '));
    const status = await t.status(receipt);
    expect(status.state).toBe('failed');
    expect(status.recipients[0]?.diagnosis?.id).toBe('upstream-daily-limit');
    // the relay's own bounce goes nowhere: the failed message leaves the queue, nothing is frozen
    await relay.waitForLog((l) => l.includes(`${limitedId} Completed`));
    expect((await relay.queue()).some((q) => q.queueId === limitedId || q.frozen)).toBe(false);
  });

  it("the upstream blocks the server's IP (421 4.7.0 unusual rate…): kept in the queue, status says the IP is blocked", async () => {
    const t = route('h');
    const receipt = await t.send(message('h@school-h.example', subject('ip blocked')));
    await t.close();
    await relay.waitForLog((l) => l.includes(receipt.providerMessageId!) && l.includes(' == '));
    const status = await t.status(receipt);
    expect(status.state).toBe('deferred');
    expect(status.recipients[0]?.diagnosis?.id).toBe('upstream-ip-blocked');
  });

  it('the doctor says why, per organisation, with exit code 2 — and prints no secret', async () => {
    const report = await runDoctor({
      config: relay.configFile,
      organisations: orgs,
      upstreamCa: upstream.ca,
      ...(relay.exim.eximBin ? { eximBin: relay.exim.eximBin } : {}),
    });
    const by = (id: string) => report.checks.find((c) => c.id === id);
    expect(by('config-valid')?.status).toBe('ok');
    expect(by('listening')?.status).toBe('ok');
    expect(by('no-open-relay')?.status).toBe('ok');
    expect(by('queue-per-connection')?.status).toBe('ok');
    expect(by('loopback-only')?.status).toBe('ok');
    expect(by('file:upstreams')?.status).toBe('ok');
    for (const id of ['a', 'b', 'c', 'd', 'g', 'h']) expect(by(`auth:school-${id}`)?.status).toBe('ok');
    expect(by(`upstream:127.0.0.1:${upstream.port}`)?.status).toBe('ok');
    expect(by(`upstream:127.0.0.1:${deadPort}`)?.status).toBe('fail');
    const queue = by('queue')!;
    expect(queue.status).toBe('fail');
    expect(queue.detail?.join('\n')).toMatch(
      new RegExp(`${refusedId}.*\\[school-c\\].*refused the organisation's account`),
    );
    expect(queue.detail?.join('\n')).toMatch(new RegExp(`${downId}.*\\[school-d\\].*refused the connection`));
    const badPassword = report.checks.find((c) => c.id === 'log:upstream-bad-credentials');
    expect(badPassword?.title).toContain('school-c');
    expect(report.checks.find((c) => c.id === 'log:upstream-daily-limit')?.title).toContain('school-g');
    expect(report.checks.find((c) => c.id === 'log:upstream-ip-blocked')?.title).toContain('school-h');
    expect(report.version?.version).toMatch(/^4\./);
    expect(report.exitCode).toBe(2);
    const text = formatDoctorReport(report);
    for (const s of SECRETS) expect(text).not.toContain(s);
    expect(JSON.stringify(report)).not.toContain(UP.a);
  });

  it('the doctor with --upstream-auth logs in to each upstream as the organisation and names the refused one', async () => {
    const report = await runDoctor({
      config: relay.configFile,
      organisations: orgs.filter((o) => ['school-a', 'school-c'].includes(o.id)),
      upstreamAuth: true,
      upstreamCa: upstream.ca,
    });
    expect(report.checks.find((c) => c.id === 'upstream:school-a')?.status).toBe('ok');
    const c = report.checks.find((x) => x.id === 'upstream:school-c')!;
    expect(c.status).toBe('fail');
    expect(c.title).toMatch(/login refused/);
    for (const s of SECRETS) expect(JSON.stringify(report)).not.toContain(s);
  });

  it('the CLI doctor gives the same verdict as an exit code, and --json', async () => {
    let out = '';
    const code = await runCli(
      ['doctor', '--config', relay.configFile, '--orgs', orgsFile, '--allow-loopback-upstream', '--json'],
      { out: (t) => (out += t), err: (t) => (out += t) },
    );
    expect(code).toBe(2);
    expect(JSON.parse(out).checks.some((c: { id: string }) => c.id === 'no-open-relay')).toBe(true);
    for (const s of SECRETS) expect(out).not.toContain(s);
  });

  it('the CLI status tells the outcome with its exit code (1 deferred, 2 failed, 4 unknown)', async () => {
    const io = () => {
      const o = { text: '', out: (t: string) => (o.text += t), err: (t: string) => (o.text += t) };
      return o;
    };
    const a = io();
    expect(await runCli(['status', '--queue-id', refusedId, '--config', relay.configFile], a)).toBe(1);
    expect(a.text).toMatch(/deferred/);
    expect(await runCli(['status', '--queue-id', limitedId, '--config', relay.configFile], io())).toBe(2);
    expect(
      await runCli(['status', '--message-id', '<nobody@nowhere.example>', '--config', relay.configFile], io()),
    ).toBe(4);
  });

  it('two organisations queued for the same upstream go out, when it comes back, each with its own account on its own connection', async () => {
    const subjE = subject('queued E');
    const subjF = subject('queued F');
    const te = route('e');
    const tf = route('f');
    const re = await te.send(message('e@school-e.example', subjE));
    const rf = await tf.send(message('f@school-f.example', subjF));
    await Promise.all([te.close(), tf.close()]);
    await relay.waitForLog((l) => l.includes(re.providerMessageId!) && l.includes(' == '));
    await relay.waitForLog((l) => l.includes(rf.providerMessageId!) && (l.includes(' == ') || l.includes('retry')));
    late = await startSmtpSink({
      port: latePort,
      users: { 'e@school-e.example': UP.e, 'f@school-f.example': UP.f },
    });
    await relay.deliver([re.providerMessageId!, rf.providerMessageId!]);
    const e = await arrived(late, subjE);
    const f = await arrived(late, subjF);
    expect([e.user, e.pass]).toEqual(['e@school-e.example', UP.e]);
    expect([f.user, f.pass]).toEqual(['f@school-f.example', UP.f]);
    expect(e.session).not.toBe(f.session);
  });
});

describe('in a failover chain', () => {
  it('relay down: the chain falls over to the next route at once', async () => {
    const chain = failover([
      route('a', { port: deadPort }),
      smtp({
        host: '127.0.0.1',
        port: backup.port,
        auth: { user: 'backup@example.org', pass: 'fake-backup-password' },
        requireTLS: true,
        tls: { ca: backup.ca, servername: 'localhost' },
      }),
    ]);
    const subj = subject('relay down');
    const receipt = await chain.send(message('a@school-a.example', subj));
    await chain.close?.();
    expect(receipt.route).toMatch(/^smtp:/);
    expect(receipt.acceptedBy).toBe('provider');
    expect(receipt.attempts[0]).toMatchObject({
      ok: false,
      kind: 'unavailable',
      phase: 'connect',
      code: 'ECONNREFUSED',
    });
    // "at once": refused locally, no timeout waited for
    expect(receipt.attempts[0]!.durationMs).toBeLessThan(1000);
    await arrived(backup, subj);
  });

  it('a mailer built from exim:// URLs sends through the relay as the organisation', async () => {
    const mailer = createMailer({
      factories: [eximRoute],
      organisations: (id) =>
        id === 'school-b'
          ? [`exim://school-b:${encodeURIComponent(RELAY.b)}@127.0.0.1:${relay.port}`, 'capture://']
          : null,
    });
    const subj = subject('through the mailer');
    const receipt = await mailer.send(
      { from: 'b@school-b.example', to: 'x@example.org', subject: subj, text: '.' },
      { organisation: 'school-b' },
    );
    await mailer.close();
    expect(receipt.route).toBe(`exim://school-b@127.0.0.1:${relay.port}`);
    expect(receipt.acceptedBy).toBe('relay');
    expect((await arrived(upstream, subj)).user).toBe('b@school-b.example');
  });
});

describe('the same flows driven by a real SMTP client (swaks)', () => {
  const base = () => ['--server', `127.0.0.1:${relay.port}`, '--to', 'parent@example.org'];

  it('AUTH PLAIN as A: accepted, and the upstream sees A', async () => {
    const subj = subject('swaks A');
    const r = swaks([
      ...base(),
      '--from',
      'a@school-a.example',
      '--auth',
      'PLAIN',
      '--auth-user',
      'school-a',
      '--auth-password',
      RELAY.a,
      '--header',
      `Subject: ${subj}`,
    ]);
    expect(r.code, r.output).toBe(0);
    expect(r.output).toMatch(/250 OK id=/);
    expect((await arrived(upstream, subj)).user).toBe('a@school-a.example');
  });

  it('AUTH LOGIN as B: accepted, and the upstream sees B', async () => {
    const subj = subject('swaks B');
    const r = swaks([
      ...base(),
      '--from',
      'b@school-b.example',
      '--auth',
      'LOGIN',
      '--auth-user',
      'school-b',
      '--auth-password',
      RELAY.b,
      '--header',
      `Subject: ${subj}`,
    ]);
    expect(r.code, r.output).toBe(0);
    expect((await arrived(upstream, subj)).user).toBe('b@school-b.example');
  });

  it('a wrong password is refused with 535', () => {
    const r = swaks([
      ...base(),
      '--from',
      'a@school-a.example',
      '--auth',
      'PLAIN',
      '--auth-user',
      'school-a',
      '--auth-password',
      'wrong-relay-password-zzzz',
    ]);
    expect(r.code).not.toBe(0);
    expect(r.output).toMatch(/535 Incorrect authentication data/);
  });

  it('without AUTH, relaying is refused', () => {
    const r = swaks([...base(), '--from', 'a@school-a.example']);
    expect(r.code).not.toBe(0);
    expect(r.output).toMatch(/550 5\.7\.1 relay not permitted/);
  });

  it("A with B's sender is refused at MAIL", () => {
    const r = swaks([
      ...base(),
      '--from',
      'b@school-b.example',
      '--auth',
      'PLAIN',
      '--auth-user',
      'school-a',
      '--auth-password',
      RELAY.a,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.output).toMatch(
      /550.5\.7\.1 <b@school-b\.example> is not an allowed sender of(\s|<\*\* 550.5\.7\.1)+organisation\s+(<\*\* 550 5\.7\.1 )?school-a/,
    );
  });

  it('a client that is not on loopback would be refused: the daemon listens on 127.0.0.1 only', () => {
    const conf = readFileSync(relay.configFile, 'utf8');
    expect(conf).toMatch(/^local_interfaces = <; 127\.0\.0\.1$/m);
    expect(conf).toMatch(/^smtp_accept_queue_per_connection = 0$/m);
    // the credentials files are private to the Exim user
    for (const f of ['relay-users', 'upstreams']) {
      const st = statSync(join(relay.dir, 'data', f));
      expect(st.mode & 0o777).toBe(0o600);
    }
    const users = readFileSync(join(relay.dir, 'data', 'relay-users'), 'utf8');
    for (const s of Object.values(RELAY)) expect(users).not.toContain(s);
    expect(users).toMatch(/^school-a: \$6\$/m);
  });
});

describe("Debian's own Exim configuration with the generated fragments (split configuration)", () => {
  let debian: RunningRelay;
  beforeAll(async () => {
    debian = await startDebianRelay({
      orgs: orgs.filter((o) => ['school-a', 'school-b'].includes(o.id)),
      upstreamCa: upstream.ca,
    });
  });
  afterAll(() => debian?.stop());
  const via = (org: 'a' | 'b', pass = RELAY[org]) =>
    exim({ port: debian.port, auth: { user: `school-${org}`, pass }, relay: debian.exim });

  it('relays A as A and B as B, with their own accounts', async () => {
    for (const org of ['a', 'b'] as const) {
      const t = via(org);
      const subj = subject(`debian ${org}`);
      const receipt = await t.send(message(`${org}@school-${org}.example`, subj));
      await t.close();
      expect(receipt.acceptedBy).toBe('relay');
      const got = await arrived(upstream, subj);
      expect([got.user, got.pass, got.secure]).toEqual([`${org}@school-${org}.example`, UP[org], true]);
    }
  });

  it("refuses a wrong relay password and A with B's sender", async () => {
    const wrong = via('a', 'wrong-relay-password-zzzz');
    expect((await wrong.send(message('a@school-a.example', subject('x'))).catch((e) => e)).phase).toBe('auth');
    await wrong.close();
    const t = via('a');
    const err = await t.send(message('b@school-b.example', subject('debian spoof'))).catch((e) => e);
    await t.close();
    expect(err.rule).toBe('exim-relay/sender-not-allowed');
  });

  it("never sends unauthenticated local mail through an organisation's upstream (Debian relays it its own way)", async () => {
    const subj = subject('debian unauthenticated');
    const t = smtp({ host: '127.0.0.1', port: debian.port, pool: false });
    const r = await t.send(message('a@school-a.example', subj)).catch((e) => e);
    if (!MailError.isInstance(r)) {
      // Debian's defaults accept local clients as the system MTA; the mail goes Debian's way out
      await debian.waitForLog((l) => l.includes(r.providerMessageId ?? '') && / (==|\*\*|=>) /.test(l));
      expect(debian.linesOf(r.providerMessageId!).join('\n')).not.toMatch(/R=mailvia_relay/);
    }
    expect(upstream.received.some((m) => m.parsed.subject === subj)).toBe(false);
  });
});
