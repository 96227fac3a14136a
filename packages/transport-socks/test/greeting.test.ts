import { Socket } from 'node:net';
import { MailError, prepareMessage, smtp } from '@mailvia/core';
import { SocksClient } from 'socks';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createSocksTransport, socksConnect } from '../src/index.js';
import { type Dante, startDante } from './peers/dante.js';
import { type ImmediateSmtpServer, startImmediateSmtpServer } from './peers/immediate-smtp.js';
import { runConcurrently } from './peers/util.js';

let dante: Dante;
let server: ImmediateSmtpServer;

beforeAll(async () => {
  dante = await startDante();
  server = await startImmediateSmtpServer();
});
afterAll(async () => {
  await server?.close();
  await dante?.stop();
});

const mail = (i: number, tag: string) =>
  prepareMessage({ from: 'sender@example.org', to: 'rcpt@example.org', subject: `${tag} ${i}`, text: `mail ${i}` });

describe('no lost greeting through a real SOCKS5 proxy (Dante) to a server that greets at once', () => {
  it('control: handing over the socket of socks.createConnection as is loses greetings here', async () => {
    // what nodemailer's own SOCKS path does: the bytes that came with the proxy's reply are
    // re-emitted before the SMTP client listens
    const naive = smtp({
      host: server.host,
      port: server.port,
      pool: false,
      greetingTimeout: 500,
      connect: async ({ host, port }) =>
        (
          await SocksClient.createConnection({
            command: 'connect',
            proxy: { host: dante.host, port: dante.port, type: 5 },
            destination: { host, port },
          })
        ).socket,
    });
    const results = await runConcurrently(60, 10, (i) => naive.send(mail(i, 'naive')));
    const lost = results.filter((r) => r.status === 'rejected');
    expect(
      lost.length,
      'the race this package fixes did not show up: the test below would prove nothing',
    ).toBeGreaterThan(0);
    for (const r of lost) expect(String((r as PromiseRejectedResult).reason.message)).toMatch(/greeting/i);
  });

  it('1,000 unpooled sends through Dante: every one greeted and delivered', async () => {
    const before = server.received.length;
    const connectionsBefore = server.connections;
    const route = createSocksTransport({
      host: server.host,
      port: server.port,
      pool: false,
      proxy: `socks5h://${dante.host}:${dante.port}`,
    });
    const messages = Array.from({ length: 1000 }, (_, i) => mail(i, 'immediate'));
    const results = await runConcurrently(1000, 16, (i) => route.send(messages[i]!));
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(
      failed.map((r) => (MailError.isInstance(r.reason) ? r.reason.message : String(r.reason))).slice(0, 5),
    ).toEqual([]);
    // the far end has each of them, each on its own connection
    const got = server.received.slice(before);
    expect(got).toHaveLength(1000);
    const ids = new Set(got.map((m) => /^Message-ID: (.*)$/im.exec(m.data)?.[1]));
    for (const m of messages) expect(ids.has(m.messageId)).toBe(true);
    expect(server.connections - connectionsBefore).toBe(1000);
    // and each went through the proxy: Dante logged a relayed session to the server's port
    const started = (log: string) =>
      log.split('\n').filter((l) => l.includes('tcp/connect [:') && l.endsWith(` 127.0.0.1.${server.port}`));
    const sessions = started(await dante.waitForLog((log) => started(log).length >= 1000, 15_000));
    expect(sessions.length).toBeGreaterThanOrEqual(1000);
    // the server saw connections from Dante's ports, which Dante logged
    const danteOut = new Set(sessions.map((l) => Number(/127\.0\.0\.1\.(\d+) 127\.0\.0\.1\.\d+$/.exec(l)?.[1])));
    for (const m of got) expect(danteOut.has(m.remotePort)).toBe(true);
  }, 60_000);

  it('socksConnect hands over a socket whose first read is the greeting, even when it came with the reply', async () => {
    const connect = socksConnect({ host: dante.host, port: dante.port });
    // count the hand-overs where the greeting had come with the proxy's reply and was put back
    const unshift = vi.spyOn(Socket.prototype, 'unshift');
    const results = await runConcurrently(100, 10, async () => {
      const socket = await connect({ host: server.host, port: server.port });
      // a reader that attaches late, as an SMTP client may
      await new Promise((r) => setTimeout(r, 5));
      const first = await new Promise<string>((resolve, reject) => {
        socket.once('data', (d: Buffer) => resolve(d.toString()));
        socket.once('error', reject);
        socket.resume();
      });
      socket.destroy();
      return first;
    });
    const putBack = unshift.mock.calls.length;
    unshift.mockRestore();
    for (const r of results) {
      expect(r.status).toBe('fulfilled');
      expect((r as PromiseFulfilledResult<string>).value).toMatch(/^220 immediate\.test/);
    }
    expect(putBack, 'no greeting came with the reply: the case was not exercised').toBeGreaterThan(0);
  });
});
