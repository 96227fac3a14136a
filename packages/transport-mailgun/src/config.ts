import type { Agent } from 'node:http';
import { checkBaseUrl, checkRequestHeaders, type ErrorRule, keyFingerprint, RouteConfigError } from '@mailvia/core';

// core's, re-exported here for the package's public API (and routes.ts)
export { checkBaseUrl, keyFingerprint };

/** Mailgun's API hosts, by region. A key works only in the region its account lives in. */
export const MAILGUN_API_URLS = {
  us: 'https://api.mailgun.net',
  eu: 'https://api.eu.mailgun.net',
} as const;

/** Options of {@link mailgun}. */
export interface MailgunOptions {
  /** The API key (or a domain sending key). Never logged, never in an error. */
  apiKey: string;
  /** The sending domain, e.g. `mg.example.org`. */
  domain: string;
  /** Where the Mailgun account lives. A US key on the EU host (or the reverse) is refused with 401. @default 'us' */
  region?: 'us' | 'eu';
  /**
   * The API's base URL, e.g. a loopback contract server in tests. `http:` is accepted for
   * loopback hosts only: the key never crosses a network in clear text.
   * @default the region's host, e.g. `https://api.mailgun.net`
   */
  baseUrl?: string;
  /**
   * The agent that opens connections (for `http:` and `https:` alike), e.g. a SOCKS proxy agent.
   * @default Node's global agent
   */
  agent?: Agent;
  /** Give up when the connection is idle this long (ms); after the body was sent that is an unknown outcome. @default 30_000 */
  timeout?: number;
  /** Extra HTTP request headers, e.g. `X-Mailgun-On-Behalf-Of` to send for a subaccount. */
  headers?: Record<string, string>;
  /** Send with `o:testmode`: Mailgun accepts and drops the message (it is not delivered). @default false */
  testMode?: boolean;
  /** A route name for logs and receipts. @default `mailgun://<host>/<domain>#key-<fingerprint>` */
  name?: string;
  /** Extra classification rows, tried before the package's and core's. */
  rules?: readonly ErrorRule[];
}

/** {@link MailgunOptions} with every default filled in. */
export interface MailgunConfig {
  apiKey: string;
  domain: string;
  region: 'us' | 'eu';
  baseUrl: string;
  agent: Agent | undefined;
  timeout: number;
  headers: Record<string, string>;
  testMode: boolean;
  name: string;
  rules: readonly ErrorRule[];
}

const DOMAIN = /^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$/i;

/** Fills the defaults of {@link MailgunOptions}; throws a RouteConfigError naming the bad option. */
export function resolveConfig(options: MailgunOptions): MailgunConfig {
  const { apiKey, domain } = options;
  if (typeof apiKey !== 'string' || apiKey.trim() === '') throw new RouteConfigError('apiKey', 'is required');
  if (/\s/.test(apiKey)) throw new RouteConfigError('apiKey', 'contains white space or a line break');
  if (typeof domain !== 'string' || !DOMAIN.test(domain)) {
    throw new RouteConfigError('domain', `${JSON.stringify(domain)} is not a domain name (e.g. mg.example.org)`);
  }
  const region = options.region ?? 'us';
  if (region !== 'us' && region !== 'eu') {
    throw new RouteConfigError('region', `${JSON.stringify(region)} is neither us nor eu`);
  }
  const baseUrl = checkBaseUrl(options.baseUrl ?? MAILGUN_API_URLS[region]);
  const timeout = options.timeout ?? 30_000;
  if (!Number.isFinite(timeout) || timeout <= 0) throw new RouteConfigError('timeout', 'must be a positive number');
  const headers = checkRequestHeaders(options.headers);
  return {
    apiKey,
    domain: domain.toLowerCase(),
    region,
    baseUrl,
    agent: options.agent,
    timeout,
    headers,
    testMode: options.testMode ?? false,
    name: options.name ?? `mailgun://${new URL(baseUrl).host}/${domain.toLowerCase()}#key-${keyFingerprint(apiKey)}`,
    rules: options.rules ?? [],
  };
}
