import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type ConformanceMail, type FaultProxy, type ProxyAction, startFaultProxy } from '@mailvia/core/testing';
import { errorStatus } from './smithy.js';

/** A mail as aws-ses-v2-local stored it (`GET /store`). */
export interface StoredEmail {
  messageId: string;
  from: string;
  replyTo: string[];
  destination: { to: string[]; cc: string[]; bcc: string[] };
  subject: string;
  body: { text?: string; html?: string };
  attachments: { content: string; contentType: string; filename?: string; size: number }[];
  headers?: { name: string; value: string }[];
}

/** The bare addresses in an address header text (`"A" <a@x>, b@y`). */
export function addresses(text: string): string[] {
  return text
    .split(',')
    .map((part) => (/<([^>]+)>/.exec(part)?.[1] ?? part).trim())
    .filter(Boolean);
}

/**
 * aws-ses-v2-local started in this process on a free loopback port, behind a {@link FaultProxy}
 * that records every request (to check it against the Smithy model) and injects failures for
 * endpoints registered with {@link SesPeer.fault}.
 */
export interface SesPeer {
  /** The emulator itself. */
  emulatorUrl: string;
  proxy: FaultProxy;
  /** An endpoint that passes every request to the emulator. */
  endpoint: string;
  /** An endpoint whose requests get `action` (the emulator sees them only for forwarding actions). */
  fault(action: ProxyAction): string;
  /** What the emulator stored. */
  stored(): Promise<StoredEmail[]>;
  received(): Promise<ConformanceMail[]>;
  close(): Promise<void>;
}

/** The account GetAccount returns (the emulator reads it from AWS_SES_ACCOUNT). */
export function account(sendingEnabled: boolean): string {
  return JSON.stringify({
    DedicatedIpAutoWarmupEnabled: false,
    Details: {
      AdditionalContactEmailAddresses: [],
      ContactLanguage: 'EN',
      MailType: 'TRANSACTIONAL',
      ReviewDetails: { CaseId: 'case-1', Status: 'GRANTED' },
      UseCaseDescription: 'tests',
      WebsiteURL: 'https://example.org',
    },
    EnforcementStatus: 'HEALTHY',
    ProductionAccessEnabled: true,
    SendingEnabled: sendingEnabled,
    SendQuota: { Max24HourSend: 50000, MaxSendRate: 14, SentLast24Hours: 0 },
    SuppressionAttributes: { SuppressedReasons: [] },
  });
}

/**
 * An error answer in SES's restJson1 form: the exception name in `x-amzn-ErrorType`, the message
 * in the JSON body, and the status the Smithy model gives the exception (or `status` for AWS's
 * common errors, which the model does not list).
 */
export function sesError(
  name: string,
  message: string,
  options: { status?: number; headers?: Record<string, string> } = {},
): ProxyAction {
  return {
    do: 'answer',
    status: options.status ?? errorStatus(name),
    headers: {
      'x-amzn-errortype': `${name}:http://internal.amazon.com/coral/com.amazonaws.sesv2/`,
      'x-amzn-requestid': randomUUID(),
      ...(options.headers ?? {}),
    },
    body: { message },
  };
}

export async function startSesPeer(): Promise<SesPeer> {
  process.env.AWS_SES_ACCOUNT ??= account(true);
  // a CommonJS module with `exports.default`: the function is one level down, or not, by loader
  const mod: { default: unknown } = await import('aws-ses-v2-local');
  const start = (
    typeof mod.default === 'function' ? mod.default : (mod.default as { default: unknown }).default
  ) as (config: { host: string; port: number }) => Promise<Server>;
  const server: Server = await start({ host: '127.0.0.1', port: 0 });
  const emulatorUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const faults = new Map<string, ProxyAction>();
  const proxy = await startFaultProxy({
    upstream: emulatorUrl,
    behaviour(req) {
      const m = /^\/f\/([^/]+)(\/.*)$/.exec(req.url);
      if (!m) return { do: 'forward' };
      const action = faults.get(m[1]!);
      if (!action) return { do: 'answer', status: 599, body: { message: 'no such fault' } };
      if (action.do === 'forward' || action.do === 'forward-then-cut') return { ...action, path: m[2]! };
      return action;
    },
  });
  const stored = async () => {
    const res = await fetch(`${emulatorUrl}/store`);
    return ((await res.json()) as { emails: StoredEmail[] }).emails;
  };
  return {
    emulatorUrl,
    proxy,
    endpoint: proxy.url,
    fault(action) {
      const id = randomUUID();
      faults.set(id, action);
      return `${proxy.url}/f/${id}`;
    },
    stored,
    async received() {
      return (await stored()).map((e) => ({
        subject: e.subject,
        from: addresses(e.from)[0] ?? e.from,
        to: e.destination.to.flatMap(addresses),
        ...(e.body.text !== undefined ? { text: e.body.text } : {}),
      }));
    },
    async close() {
      await proxy.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
