import type { Agent } from 'node:http';
import {
  boolParam,
  intParam,
  maskUrl,
  onlyParams,
  type RouteConfig,
  RouteConfigError,
  type RouteFactory,
  type Transport,
} from '@mailvia/core';
import { sendgridApi } from './api.js';
import { checkBaseUrl, SENDGRID_SMTP_HOST } from './config.js';
import { sendgridSmtp } from './smtp.js';

/** The key of a `sendgrid+…://KEY@host` URL (or `apikey:KEY@host`, as SMTP settings are often written). */
function keyOf(url: URL, where: string): string {
  const user = decodeURIComponent(url.username);
  const pass = decodeURIComponent(url.password);
  const key = pass && user === 'apikey' ? pass : user && !pass ? user : '';
  if (!key) throw new RouteConfigError('apiKey', 'is missing: write it as sendgrid+…://API_KEY@…', where);
  return key;
}

const str = (config: RouteConfig, field: string, required = false): string | undefined => {
  const v = config[field];
  if (v === undefined || v === null) {
    if (required) throw new RouteConfigError(field, 'is required');
    return undefined;
  }
  if (typeof v !== 'string') throw new RouteConfigError(field, 'must be a string');
  return v;
};
const num = (config: RouteConfig, field: string): number | undefined => {
  const v = config[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new RouteConfigError(field, 'must be a number');
  return v;
};
const bool = (config: RouteConfig, field: string): boolean | undefined => {
  const v = config[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new RouteConfigError(field, 'must be true or false');
  return v;
};
const agentOf = (config: RouteConfig): Agent | undefined => {
  const v = config.agent;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object') throw new RouteConfigError('agent', 'must be an http(s) Agent');
  return v as Agent;
};
const headersOf = (config: RouteConfig): Record<string, string> | undefined => {
  const v = config.headers;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Object.values(v).some((x) => typeof x !== 'string'))
    throw new RouteConfigError('headers', 'must map header names to strings');
  return v as Record<string, string>;
};

/**
 * The `sendgrid+api` route: `sendgrid+api://API_KEY@default` (or `@eu` for EU data residency,
 * or `@host[:port]` for another HTTPS endpoint). Query: `timeout` (ms), `name`, `endpoint` (a
 * full base URL; `http:` only to loopback). As data: `{ type: 'sendgrid+api', apiKey, region?,
 * baseUrl?, agent?, timeout?, headers?, name? }`.
 */
export const sendgridApiRoute: RouteFactory = {
  type: 'sendgrid+api',
  schemes: ['sendgrid+api'],
  fromUrl(url) {
    const where = maskUrl(url.href);
    onlyParams(url, ['timeout', 'name', 'endpoint'], where);
    const apiKey = keyOf(url, where);
    const host = url.host.toLowerCase();
    const q = url.searchParams;
    const config: RouteConfig = { type: 'sendgrid+api', apiKey };
    if (q.get('endpoint')) {
      config.baseUrl = checkBaseUrl(q.get('endpoint')!, 'query.endpoint', where);
    } else if (host === 'eu') config.region = 'eu';
    else if (host !== 'default' && host !== 'global' && host !== '') config.baseUrl = `https://${url.host}`;
    else if (host === '') throw new RouteConfigError('host', 'is missing (use default, eu, or a host name)', where);
    const timeout = intParam(q.get('timeout'), 'query.timeout', where);
    if (timeout !== undefined) config.timeout = timeout;
    if (q.get('name')) config.name = q.get('name');
    return config;
  },
  create(config): Transport {
    const region = str(config, 'region');
    if (region !== undefined && region !== 'global' && region !== 'eu')
      throw new RouteConfigError('region', `${JSON.stringify(region)} is neither global nor eu`);
    const baseUrl = str(config, 'baseUrl');
    const timeout = num(config, 'timeout');
    const name = str(config, 'name');
    const agent = agentOf(config);
    const headers = headersOf(config);
    return sendgridApi({
      apiKey: str(config, 'apiKey', true)!,
      ...(region ? { region } : {}),
      ...(baseUrl ? { baseUrl } : {}),
      ...(timeout !== undefined ? { timeout } : {}),
      ...(name ? { name } : {}),
      ...(agent ? { agent } : {}),
      ...(headers ? { headers } : {}),
    });
  },
};

/**
 * The `sendgrid+smtp` route: `sendgrid+smtp://API_KEY@smtp.sendgrid.net:2525` (`@default` is
 * smtp.sendgrid.net; the port defaults to 2525, or 465 with `secure=true`). Query: `secure`,
 * `pool`, `maxConnections`, `name`. As data: `{ type: 'sendgrid+smtp', apiKey, host?, port?,
 * secure?, pool?, maxConnections?, name? }` and the other options of core's `smtp()`.
 */
export const sendgridSmtpRoute: RouteFactory = {
  type: 'sendgrid+smtp',
  schemes: ['sendgrid+smtp'],
  fromUrl(url) {
    const where = maskUrl(url.href);
    onlyParams(url, ['secure', 'pool', 'maxConnections', 'name'], where);
    const apiKey = keyOf(url, where);
    const q = url.searchParams;
    const hostname = url.hostname.replace(/^\[|\]$/g, '');
    if (!hostname) throw new RouteConfigError('host', 'is missing (use default or a host name)', where);
    const config: RouteConfig = {
      type: 'sendgrid+smtp',
      apiKey,
      host: hostname.toLowerCase() === 'default' ? SENDGRID_SMTP_HOST : hostname,
    };
    const port = intParam(url.port, 'port', where);
    if (port !== undefined) config.port = port;
    const secure = boolParam(q.get('secure'), 'query.secure', where);
    if (secure !== undefined) config.secure = secure;
    const pool = boolParam(q.get('pool'), 'query.pool', where);
    if (pool !== undefined) config.pool = pool;
    const maxConnections = intParam(q.get('maxConnections'), 'query.maxConnections', where);
    if (maxConnections !== undefined) config.maxConnections = maxConnections;
    if (q.get('name')) config.name = q.get('name');
    return config;
  },
  create(config): Transport {
    const { type: _type, ...rest } = config;
    str(config, 'apiKey', true);
    str(config, 'host');
    num(config, 'port');
    bool(config, 'secure');
    bool(config, 'pool');
    return sendgridSmtp(rest as unknown as Parameters<typeof sendgridSmtp>[0]);
  },
};
