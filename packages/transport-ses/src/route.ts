import {
  boolParam,
  intParam,
  maskUrl,
  onlyParams,
  type RouteConfig,
  RouteConfigError,
  type RouteFactory,
  urlCredentials,
} from '@mailvia/core';
import type { SesRouteOptions } from './config.js';
import { ses } from './transport.js';

const PARAMS = [
  'region',
  'configurationSet',
  'content',
  'emailTags',
  'endpoint',
  'fromArn',
  'timeout',
  'connectionTimeout',
  'name',
] as const;

function str(config: RouteConfig, key: string): string | undefined {
  const v = config[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new RouteConfigError(key, 'must be a string');
  return v;
}

function num(config: RouteConfig, key: string): number | undefined {
  const v = config[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number') throw new RouteConfigError(key, 'must be a number');
  return v;
}

/**
 * The `ses` route factory, for `createMailer({ factories: [sesRoute] })`.
 *
 * URL: `ses://ACCESS_KEY_ID:SECRET_ACCESS_KEY@REGION?configurationSet=…` (the secret
 * percent-encoded; `/` is `%2F`, `+` is `%2B`). Without a user and password the SDK's default
 * credential chain is used. Query parameters: `configurationSet`, `content` (`raw`|`simple`),
 * `emailTags` (true|false), `endpoint`, `fromArn`, `timeout`, `connectionTimeout`, `name`, and
 * `region` (instead of the host, with host `default`). Object form: `{ type: 'ses', region,
 * credentials: { accessKeyId, secretAccessKey }, … }` with the fields of {@link SesRouteOptions}.
 */
export const sesRoute: RouteFactory = {
  type: 'ses',
  schemes: ['ses'],
  fromUrl(url) {
    const where = maskUrl(url.href);
    onlyParams(url, PARAMS, where);
    const q = url.searchParams;
    const host = decodeURIComponent(url.hostname);
    const region = q.get('region') ?? (host && host !== 'default' ? host : undefined);
    if (!region) throw new RouteConfigError('region', 'is missing (ses://KEY:SECRET@eu-west-1)', where);
    if (q.get('region') && host && host !== 'default' && host !== q.get('region')) {
      throw new RouteConfigError('region', 'is given twice, as host and as query parameter, differently', where);
    }
    const auth = urlCredentials(url);
    if (auth && (!auth.user || !auth.pass)) {
      throw new RouteConfigError('credentials', 'need both the access key id and the secret access key', where);
    }
    const content = q.get('content');
    if (content !== null && content !== 'raw' && content !== 'simple') {
      throw new RouteConfigError('query.content', `${JSON.stringify(content)} is neither raw nor simple`, where);
    }
    const emailTags = boolParam(q.get('emailTags'), 'query.emailTags', where);
    const timeout = intParam(q.get('timeout'), 'query.timeout', where);
    const connectionTimeout = intParam(q.get('connectionTimeout'), 'query.connectionTimeout', where);
    return {
      type: 'ses',
      region,
      ...(auth ? { credentials: { accessKeyId: auth.user, secretAccessKey: auth.pass } } : {}),
      ...(q.get('configurationSet') ? { configurationSet: q.get('configurationSet') } : {}),
      ...(content ? { content } : {}),
      ...(emailTags !== undefined ? { emailTags } : {}),
      ...(q.get('endpoint') ? { endpoint: q.get('endpoint') } : {}),
      ...(q.get('fromArn') ? { fromArn: q.get('fromArn') } : {}),
      ...(timeout !== undefined ? { timeout } : {}),
      ...(connectionTimeout !== undefined ? { connectionTimeout } : {}),
      ...(q.get('name') ? { name: q.get('name') } : {}),
    };
  },
  create(config) {
    const region = str(config, 'region');
    if (!region) throw new RouteConfigError('region', 'is required');
    const creds = config.credentials;
    let credentials: SesRouteOptions['credentials'];
    if (typeof creds === 'function') credentials = creds as SesRouteOptions['credentials'];
    else if (creds !== undefined && creds !== null) {
      if (typeof creds !== 'object') throw new RouteConfigError('credentials', 'must be an object');
      const c = creds as Record<string, unknown>;
      if (typeof c.accessKeyId !== 'string' || typeof c.secretAccessKey !== 'string') {
        throw new RouteConfigError('credentials', 'needs accessKeyId and secretAccessKey strings');
      }
      credentials = {
        accessKeyId: c.accessKeyId,
        secretAccessKey: c.secretAccessKey,
        ...(typeof c.sessionToken === 'string' ? { sessionToken: c.sessionToken } : {}),
      };
    }
    const content = str(config, 'content');
    if (content !== undefined && content !== 'raw' && content !== 'simple') {
      throw new RouteConfigError('content', `${JSON.stringify(content)} is neither raw nor simple`);
    }
    const emailTags = config.emailTags;
    if (emailTags !== undefined && typeof emailTags !== 'boolean') {
      throw new RouteConfigError('emailTags', 'must be true or false');
    }
    const opt = <K extends keyof SesRouteOptions>(k: K, v: SesRouteOptions[K] | undefined) =>
      v === undefined ? {} : { [k]: v };
    return ses({
      region,
      ...opt('credentials', credentials),
      ...opt('endpoint', str(config, 'endpoint')),
      ...opt('configurationSet', str(config, 'configurationSet')),
      ...opt('content', content as SesRouteOptions['content']),
      ...opt('emailTags', emailTags as boolean | undefined),
      ...opt('fromArn', str(config, 'fromArn')),
      ...opt('timeout', num(config, 'timeout')),
      ...opt('connectionTimeout', num(config, 'connectionTimeout')),
      ...opt('name', str(config, 'name')),
      ...opt('agent', config.agent as SesRouteOptions['agent']),
    });
  },
};
