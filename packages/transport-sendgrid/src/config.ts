import type { Agent } from 'node:http';
import {
  checkBaseUrl,
  checkRequestHeaders,
  type ErrorRule,
  keyFingerprint,
  RouteConfigError,
  type SmtpRouteOptions,
} from '@mailvia/core';

// core's, re-exported here for the package's public API (and routes.ts)
export { checkBaseUrl, keyFingerprint };

/** SendGrid's Web API v3 hosts, by data residency. */
export const SENDGRID_API_URLS = {
  global: 'https://api.sendgrid.com',
  eu: 'https://api.eu.sendgrid.com',
} as const;

/** SendGrid's SMTP relay and the port the route uses by default (the one hosts rarely block). */
export const SENDGRID_SMTP_HOST = 'smtp.sendgrid.net';
export const SENDGRID_SMTP_PORT = 2525;

/** Options of {@link sendgridApi}. */
export interface SendgridApiOptions {
  /** The API key (`SG.…`), with the Mail Send permission. Never logged, never in an error. */
  apiKey: string;
  /** Data residency: which SendGrid host to call. Ignored when `baseUrl` is set. @default 'global' */
  region?: 'global' | 'eu';
  /**
   * The API's base URL, e.g. a gateway, or a loopback contract server in tests. `http:` is
   * accepted for loopback hosts only: the key never crosses a network in clear text.
   * @default the region's host, e.g. `https://api.sendgrid.com`
   */
  baseUrl?: string;
  /**
   * The agent that opens connections (for `http:` and `https:` alike), e.g. a SOCKS proxy agent
   * when the host only reaches the Internet through a proxy. The route never destroys it.
   * @default keep-alive agents of the route, closed by `close()`
   */
  agent?: Agent;
  /** Give up on a request after this long (ms); an answer that never comes after the body was sent is an unknown outcome. @default 30_000 */
  timeout?: number;
  /** Extra HTTP request headers, e.g. `On-Behalf-Of` to send as a subuser. */
  headers?: Record<string, string>;
  /** A route name for logs and receipts. @default `sendgrid+api://<host>#key-<fingerprint>` */
  name?: string;
  /** Extra classification rows, tried before the package's and core's. */
  rules?: readonly ErrorRule[];
}

/** {@link SendgridApiOptions} with every default filled in. */
export interface SendgridApiConfig {
  apiKey: string;
  baseUrl: string;
  agent: Agent | undefined;
  timeout: number;
  headers: Record<string, string>;
  name: string;
  rules: readonly ErrorRule[];
}

/** Options of {@link sendgridSmtp}: those of core's `smtp()` route, with the API key as the credential. */
export interface SendgridSmtpOptions extends Omit<SmtpRouteOptions, 'host' | 'port' | 'auth' | 'name'> {
  /** The API key: it is the SMTP password (the user is always `apikey`). */
  apiKey: string;
  /** @default 'smtp.sendgrid.net' */
  host?: string;
  /**
   * SendGrid listens on 25, 587 and 2525 (STARTTLS) and 465 (implicit TLS). 2525 is the one a
   * host that blocks the usual mail ports most often leaves open.
   * @default 2525
   */
  port?: number;
  /** A route name for logs and receipts. @default `sendgrid+smtp://apikey@<host>:<port>#key-<fingerprint>` */
  name?: string;
}

function checkKey(apiKey: unknown): string {
  if (typeof apiKey !== 'string' || apiKey.trim() === '') throw new RouteConfigError('apiKey', 'is required');
  if (/[\s\r\n]/.test(apiKey)) throw new RouteConfigError('apiKey', 'contains white space or a line break');
  return apiKey;
}

/** Fills the defaults of {@link SendgridApiOptions}; throws a RouteConfigError naming the bad option. */
export function resolveApiConfig(options: SendgridApiOptions): SendgridApiConfig {
  const apiKey = checkKey(options.apiKey);
  const region = options.region ?? 'global';
  if (region !== 'global' && region !== 'eu') {
    throw new RouteConfigError('region', `${JSON.stringify(region)} is neither global nor eu`);
  }
  const baseUrl = checkBaseUrl(options.baseUrl ?? SENDGRID_API_URLS[region]);
  const timeout = options.timeout ?? 30_000;
  if (!Number.isFinite(timeout) || timeout <= 0) throw new RouteConfigError('timeout', 'must be a positive number');
  const headers = checkRequestHeaders(options.headers);
  return {
    apiKey,
    baseUrl,
    agent: options.agent,
    timeout,
    headers,
    name: options.name ?? `sendgrid+api://${new URL(baseUrl).host}#key-${keyFingerprint(apiKey)}`,
    rules: options.rules ?? [],
  };
}

/** Turns {@link SendgridSmtpOptions} into core `smtp()` options (user `apikey`, port 2525). */
export function resolveSmtpConfig(
  options: SendgridSmtpOptions,
): SmtpRouteOptions & { host: string; port: number; name: string } {
  const apiKey = checkKey(options.apiKey);
  const { apiKey: _key, host: h, port: p, name: n, rules, ...rest } = options;
  const host = h ?? SENDGRID_SMTP_HOST;
  const secure = options.secure ?? p === 465;
  const port = p ?? (secure ? 465 : SENDGRID_SMTP_PORT);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RouteConfigError('port', `${String(p)} is not a TCP port`);
  }
  return {
    ...rest,
    host,
    port,
    secure,
    auth: { user: 'apikey', pass: apiKey },
    name: n ?? `sendgrid+smtp://apikey@${host}:${port}#key-${keyFingerprint(apiKey)}`,
    rules: [...(rules ?? [])],
  };
}
