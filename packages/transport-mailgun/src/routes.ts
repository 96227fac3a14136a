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
import { checkBaseUrl } from './config.js';
import { mailgun } from './transport.js';

const field = <T>(
  config: RouteConfig,
  name: string,
  type: 'string' | 'number' | 'boolean' | 'object',
): T | undefined => {
  const v = config[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== type) throw new RouteConfigError(name, `must be a ${type}`);
  return v as T;
};

/**
 * The `mailgun` route: `mailgun://API_KEY@mg.example.org?region=eu` (or `api:API_KEY@…`).
 * Query: `region` (`us`, `eu`), `endpoint` (a full base URL; `http:` only to loopback),
 * `timeout` (ms), `testmode`, `name`. As data: `{ type: 'mailgun', apiKey, domain, region?,
 * baseUrl?, agent?, timeout?, headers?, testMode?, name? }`.
 */
export const mailgunRoute: RouteFactory = {
  type: 'mailgun',
  schemes: ['mailgun'],
  fromUrl(url) {
    const where = maskUrl(url.href);
    onlyParams(url, ['region', 'endpoint', 'timeout', 'testmode', 'name'], where);
    const user = decodeURIComponent(url.username);
    const pass = decodeURIComponent(url.password);
    const apiKey = pass && user === 'api' ? pass : user && !pass ? user : '';
    if (!apiKey) throw new RouteConfigError('apiKey', 'is missing: write it as mailgun://API_KEY@domain', where);
    if (!url.hostname) throw new RouteConfigError('domain', 'is missing: mailgun://API_KEY@mg.example.org', where);
    if (url.port) throw new RouteConfigError('domain', 'takes no port (use endpoint= for another API host)', where);
    const q = url.searchParams;
    const config: RouteConfig = { type: 'mailgun', apiKey, domain: url.hostname };
    const region = q.get('region');
    if (region !== null) {
      if (region !== 'us' && region !== 'eu')
        throw new RouteConfigError('query.region', `${JSON.stringify(region)} is neither us nor eu`, where);
      config.region = region;
    }
    if (q.get('endpoint')) config.baseUrl = checkBaseUrl(q.get('endpoint')!, 'query.endpoint', where);
    const timeout = intParam(q.get('timeout'), 'query.timeout', where);
    if (timeout !== undefined) config.timeout = timeout;
    const testMode = boolParam(q.get('testmode'), 'query.testmode', where);
    if (testMode !== undefined) config.testMode = testMode;
    if (q.get('name')) config.name = q.get('name');
    return config;
  },
  create(config): Transport {
    const apiKey = field<string>(config, 'apiKey', 'string');
    const domain = field<string>(config, 'domain', 'string');
    if (!apiKey) throw new RouteConfigError('apiKey', 'is required');
    if (!domain) throw new RouteConfigError('domain', 'is required');
    const region = field<string>(config, 'region', 'string');
    if (region !== undefined && region !== 'us' && region !== 'eu')
      throw new RouteConfigError('region', `${JSON.stringify(region)} is neither us nor eu`);
    const baseUrl = field<string>(config, 'baseUrl', 'string');
    const timeout = field<number>(config, 'timeout', 'number');
    const testMode = field<boolean>(config, 'testMode', 'boolean');
    const name = field<string>(config, 'name', 'string');
    const agent = field<Agent>(config, 'agent', 'object');
    const headers = field<Record<string, string>>(config, 'headers', 'object');
    return mailgun({
      apiKey,
      domain,
      ...(region ? { region } : {}),
      ...(baseUrl ? { baseUrl } : {}),
      ...(timeout !== undefined ? { timeout } : {}),
      ...(testMode !== undefined ? { testMode } : {}),
      ...(name ? { name } : {}),
      ...(agent ? { agent } : {}),
      ...(headers ? { headers } : {}),
    });
  },
};
