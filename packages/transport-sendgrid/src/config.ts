import { createHash } from 'node:crypto';
import type { Agent } from 'node:http';
import { type ErrorRule, isLoopbackHost, RouteConfigError, type SmtpRouteOptions } from '@mailvia/core';

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
   * when the host only reaches the Internet through a proxy.
   * @default Node's global agent
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

/** A short, one-way fingerprint of a key: tells two keys apart in route names without showing either. */
export function keyFingerprint(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 8);
}

function checkKey(apiKey: unknown): string {
  if (typeof apiKey !== 'string' || apiKey.trim() === '') throw new RouteConfigError('apiKey', 'is required');
  if (/[\s\r\n]/.test(apiKey)) throw new RouteConfigError('apiKey', 'contains white space or a line break');
  return apiKey;
}

/**
 * Checks a base URL: http(s) only, no credentials in it, and clear text only to loopback.
 * Returns it without a trailing slash.
 */
export function checkBaseUrl(raw: string, part = 'baseUrl', where?: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new RouteConfigError(part, 'is not a URL', where);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new RouteConfigError(part, `${url.protocol} is not http: or https:`, where);
  }
  if (url.username || url.password) throw new RouteConfigError(part, 'must not carry credentials', where);
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    throw new RouteConfigError(
      part,
      `http: to ${url.hostname} would send the API key in clear text; use https:`,
      where,
    );
  }
  if (url.search || url.hash) throw new RouteConfigError(part, 'must not have a query or fragment', where);
  return url.href.replace(/\/+$/, '');
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
  const headers = { ...(options.headers ?? {}) };
  for (const [k, v] of Object.entries(headers)) {
    if (/^authorization$/i.test(k)) throw new RouteConfigError(`headers.${k}`, 'is set from apiKey');
    if (/[\r\n]/.test(k) || /[\r\n]/.test(v)) throw new RouteConfigError(`headers.${k}`, 'contains a line break');
  }
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
