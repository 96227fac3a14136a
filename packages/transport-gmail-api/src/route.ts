import { readFileSync } from 'node:fs';
import { intParam, onlyParams, type RouteConfig, RouteConfigError, type RouteFactory } from '@mailvia/core';
import type { GmailApiRouteOptions, GmailServiceAccount } from './config.js';
import { gmailApi } from './transport.js';

const SECRET_PARAMS = ['clientSecret', 'refreshToken'];
const PARAMS = [
  'clientId',
  'clientSecret',
  'refreshToken',
  'keyFile',
  'subject',
  'userId',
  'scopes',
  'uploadThreshold',
  'rootUrl',
  'tokenUrl',
  'timeout',
  'refreshMargin',
  'name',
] as const;

/**
 * A `gmail+api://` URL fit for an error message: the secrets of its query masked, and a
 * password if one was put in. The mailbox stays readable (it is no secret).
 */
export function maskGmailUrl(raw: string): string {
  return raw
    .replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/?#\s]*):[^@/?#\s]*@/i, '$1:****@')
    .replace(new RegExp(`([?&](?:${SECRET_PARAMS.join('|')})=)[^&#]*`, 'g'), (_m, head: string) => `${head}****`);
}

/** Reads a service account key file (the JSON Google gives out). */
function readKeyFile(path: string, part: string): GmailServiceAccount {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch {
    throw new RouteConfigError(part, `cannot read a JSON key from ${JSON.stringify(path)}`);
  }
  if (
    json.type !== 'service_account' ||
    typeof json.client_email !== 'string' ||
    typeof json.private_key !== 'string'
  ) {
    throw new RouteConfigError(part, 'is not a service account key (type, client_email, private_key)');
  }
  return {
    clientEmail: json.client_email,
    privateKey: json.private_key,
    ...(typeof json.private_key_id === 'string' ? { privateKeyId: json.private_key_id } : {}),
  };
}

function field<T>(config: RouteConfig, key: string, type: 'string' | 'number' | 'object'): T | undefined {
  const v = config[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== type) throw new RouteConfigError(key, `must be a ${type}`);
  return v as T;
}

/**
 * The `gmail+api` route factory, for `createMailer({ factories: [gmailApiRoute] })`.
 *
 * URLs (values percent-encoded):
 * - `gmail+api://USER@DOMAIN?clientId=…&clientSecret=…&refreshToken=…` (OAuth refresh token)
 * - `gmail+api://USER@DOMAIN?keyFile=/path/service-account.json` (domain-wide delegation, `sub` = the user)
 *
 * Other query parameters: `subject`, `userId`, `scopes` (space or comma separated),
 * `uploadThreshold`, `rootUrl`, `tokenUrl`, `timeout`, `refreshMargin`, `name`. Object form:
 * `{ type: 'gmail+api', user, oauth2: {…} | serviceAccount: {…} | keyFile, … }`.
 */
export const gmailApiRoute: RouteFactory = {
  type: 'gmail+api',
  schemes: ['gmail+api'],
  fromUrl(url) {
    const where = maskGmailUrl(url.href);
    onlyParams(url, PARAMS, where);
    const q = url.searchParams;
    if (!url.username || !url.hostname) {
      throw new RouteConfigError('user', 'is missing (gmail+api://user@example.org?…)', where);
    }
    if (url.password) {
      throw new RouteConfigError('password', 'has no place in a gmail+api URL (use the query parameters)', where);
    }
    const user = `${decodeURIComponent(url.username)}@${url.hostname}`;
    const oauth = ['clientId', 'clientSecret', 'refreshToken'].filter((k) => q.get(k));
    const keyFile = q.get('keyFile');
    if (keyFile && oauth.length) {
      throw new RouteConfigError('query', 'give either keyFile or clientId/clientSecret/refreshToken, not both', where);
    }
    if (!keyFile && oauth.length !== 3) {
      const missing = ['clientId', 'clientSecret', 'refreshToken'].filter((k) => !q.get(k));
      throw new RouteConfigError(`query.${missing[0]}`, 'is missing (or give keyFile for a service account)', where);
    }
    const num = (k: string) => {
      const v = intParam(q.get(k), `query.${k}`, where);
      return v === undefined ? {} : { [k]: v };
    };
    const str = (k: string) => (q.get(k) ? { [k]: q.get(k) } : {});
    return {
      type: 'gmail+api',
      user,
      ...(keyFile
        ? { keyFile, ...str('subject') }
        : {
            oauth2: {
              clientId: q.get('clientId'),
              clientSecret: q.get('clientSecret'),
              refreshToken: q.get('refreshToken'),
            },
          }),
      ...(q.get('scopes')
        ? {
            scopes: q
              .get('scopes')!
              .split(/[\s,]+/)
              .filter(Boolean),
          }
        : {}),
      ...str('userId'),
      ...str('rootUrl'),
      ...str('tokenUrl'),
      ...str('name'),
      ...num('uploadThreshold'),
      ...num('timeout'),
      ...num('refreshMargin'),
    };
  },
  create(config) {
    const user = field<string>(config, 'user', 'string');
    if (!user) throw new RouteConfigError('user', 'is required');
    const keyFile = field<string>(config, 'keyFile', 'string');
    let serviceAccount = field<GmailServiceAccount>(config, 'serviceAccount', 'object');
    if (keyFile) serviceAccount = readKeyFile(keyFile, 'keyFile');
    const subject = field<string>(config, 'subject', 'string');
    if (serviceAccount && subject) serviceAccount = { ...serviceAccount, subject };
    const oauth2 = field<GmailApiRouteOptions['oauth2']>(config, 'oauth2', 'object');
    const scopes = config.scopes;
    if (scopes !== undefined && (!Array.isArray(scopes) || !scopes.every((s) => typeof s === 'string'))) {
      throw new RouteConfigError('scopes', 'must be a list of strings');
    }
    const opt = <K extends keyof GmailApiRouteOptions>(k: K, v: GmailApiRouteOptions[K] | undefined) =>
      v === undefined ? {} : { [k]: v };
    return gmailApi({
      user,
      ...opt('oauth2', oauth2),
      ...opt('serviceAccount', serviceAccount),
      ...opt('scopes', scopes as string[] | undefined),
      ...opt('userId', field<string>(config, 'userId', 'string')),
      ...opt('rootUrl', field<string>(config, 'rootUrl', 'string')),
      ...opt('tokenUrl', field<string>(config, 'tokenUrl', 'string')),
      ...opt('name', field<string>(config, 'name', 'string')),
      ...opt('uploadThreshold', field<number>(config, 'uploadThreshold', 'number')),
      ...opt('timeout', field<number>(config, 'timeout', 'number')),
      ...opt('refreshMargin', field<number>(config, 'refreshMargin', 'number')),
      ...opt('agent', config.agent as GmailApiRouteOptions['agent']),
    });
  },
};
