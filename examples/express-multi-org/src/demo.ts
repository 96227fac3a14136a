import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { Receipt } from '@mailvia/core';
import { createApp } from './app.js';
import { startUpstream } from './upstream.js';

/** A loopback port where nothing listens: the "local relay" of school B is down. */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface DemoResult {
  receipts: Record<string, Receipt>;
  upstream: { account: string; subject: string; file: string }[];
  upstreamDir: string;
  outboxDir: string;
  url: string;
  close(): Promise<void>;
}

/** Starts the demo app with two organisations and sends one mail for each through it. */
export async function runDemo(options: {
  dir: string;
  port?: number;
  log?: (line: string) => void;
}): Promise<DemoResult> {
  const log = options.log ?? (() => {});
  const upstreamDir = join(options.dir, 'upstream');
  const outboxDir = join(options.dir, 'captured');
  // the organisations' real accounts, stood in for by one in-process SMTP server (fake passwords)
  const upstream = await startUpstream(
    { 'office@school-a.example': 'fake-app-password-a', 'office@school-b.example': 'fake-app-password-b' },
    upstreamDir,
  );
  const relay = await deadPort();
  const { app, mailer } = createApp(
    {
      // school A: straight to its provider, the outbox as last resort
      'school-a': [
        {
          type: 'smtp',
          host: '127.0.0.1',
          port: upstream.port,
          auth: { user: 'office@school-a.example', pass: 'fake-app-password-a' },
        },
        'capture://',
      ],
      // school B: its local relay first (down today), then its provider, then the outbox
      'school-b': [
        `smtp://127.0.0.1:${relay}?name=school-b-local-relay`,
        `smtp://office%40school-b.example:fake-app-password-b@127.0.0.1:${upstream.port}`,
        'capture://',
      ],
    },
    outboxDir,
  );
  const server = app.listen(options.port ?? 0, '127.0.0.1');
  await new Promise<void>((r) => server.once('listening', () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  log(`Demo app listening on ${url}`);

  const receipts: Record<string, Receipt> = {};
  for (const [org, from] of [
    ['school-a', 'office@school-a.example'],
    ['school-b', 'office@school-b.example'],
  ] as const) {
    const res = await fetch(`${url}/mail`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-organisation': org },
      body: JSON.stringify({
        from: { name: org === 'school-a' ? 'School A' : 'School B', address: from },
        to: 'parent@example.org',
        subject: `Term report from ${org}`,
        text: `Dear parent, the term report of ${org} is attached.`,
        attachments: [{ filename: 'report.txt', content: 'Maths: A\nFrench: B+\n' }],
      }),
    });
    const body = (await res.json()) as Receipt | { error: unknown };
    if (!res.ok || !('route' in body)) throw new Error(`${org}: ${JSON.stringify(body)}`);
    receipts[org] = body;
    log(`\n${org}: sent through ${body.route} (accepted by ${body.acceptedBy}), Message-ID ${body.messageId}`);
    body.attempts.forEach((a, i) => {
      const outcome = a.ok ? 'ok' : `failed: ${a.kind} during ${a.phase}${a.code ? ` (${a.code})` : ''}`;
      log(`  attempt ${i + 1}: ${a.route.padEnd(48)} ${outcome}, ${a.durationMs} ms`);
    });
  }
  log(`\nWhat the upstream received (one .eml per mail): ${upstreamDir}`);
  for (const m of upstream.received) log(`  ${m.subject} — authenticated as ${m.account} — ${m.file}`);
  log(
    `Captured mails (the last resort, and development mode): ${outboxDir}; while serving, the outbox page ${url}/outbox`,
  );
  return {
    receipts,
    upstream: upstream.received,
    upstreamDir,
    outboxDir,
    url,
    async close() {
      await mailer.close();
      await new Promise<void>((r) => server.close(() => r()));
      await upstream.close();
    },
  };
}
