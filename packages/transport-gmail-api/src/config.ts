import type { Agent } from 'node:http';
import { type ErrorRule, RouteConfigError } from '@mailvia/core';

/** An OAuth 2.0 client (installed or web app) and a refresh token the account granted it. */
export interface GmailOAuth2Credentials {
  clientId: string;
  clientSecret: string;
  /** Granted with a scope that allows sending (`https://www.googleapis.com/auth/gmail.send`). */
  refreshToken: string;
}

/** A service account key with domain-wide delegation, sending as a Workspace user. */
export interface GmailServiceAccount {
  /** `client_email` of the key file. */
  clientEmail: string;
  /** `private_key` of the key file (PEM). */
  privateKey: string;
  /** `private_key_id` of the key file, sent as the JWT's `kid`. */
  privateKeyId?: string;
  /** The user to act as (the JWT's `sub`). @default the route's `user` */
  subject?: string;
}

/** Options of {@link gmailApi}. Timeouts are in milliseconds; sizes in bytes. */
export interface GmailApiRouteOptions {
  /** The mailbox that sends, e.g. `school-a@example.org`. Used in the route name and as the service account's `sub`. */
  user: string;
  /** Authenticate with an OAuth client and refresh token. Exactly one of `oauth2` and `serviceAccount`. */
  oauth2?: GmailOAuth2Credentials;
  /** Authenticate as a service account with domain-wide delegation. */
  serviceAccount?: GmailServiceAccount;
  /** The `userId` path parameter. @default 'me' */
  userId?: string;
  /** Scopes asked for by a service account. @default ['https://www.googleapis.com/auth/gmail.send'] */
  scopes?: string[];
  /**
   * Mails of at most this many bytes (of MIME) are sent as JSON `raw` (base64url); larger ones
   * through the media upload endpoint as `message/rfc822`, up to Gmail's 35 MB. The default sends
   * every mail through the upload endpoint: the bytes go as they are, without base64 growth.
   * @default 0
   */
  uploadThreshold?: number;
  /** Where the Gmail API is. @default 'https://gmail.googleapis.com/' */
  rootUrl?: string;
  /** Google's OAuth 2.0 token endpoint. @default 'https://oauth2.googleapis.com/token' */
  tokenUrl?: string;
  /**
   * The agent for every HTTP request (API and token endpoint), for example one that goes through
   * a SOCKS proxy. It must match the URLs' scheme. Mailvia never destroys it.
   * @default keep-alive agents of the route
   */
  agent?: Agent;
  /** The whole API request, from start to answer. @default 30_000 */
  timeout?: number;
  /** A cached access token is renewed when it has less than this left. @default 300_000 (Google's default) */
  refreshMargin?: number;
  /** A name for logs and receipts (never a secret). @default `gmail-api(USER)` */
  name?: string;
  /** Extra classification rows, tried before the package's and core's. */
  rules?: readonly ErrorRule[];
}

/** The options with every default filled in. */
export interface ResolvedGmailOptions {
  user: string;
  auth:
    | ({ kind: 'oauth2' } & GmailOAuth2Credentials)
    | ({ kind: 'service-account' } & Required<Omit<GmailServiceAccount, 'privateKeyId'>> & { privateKeyId?: string });
  userId: string;
  scopes: string[];
  uploadThreshold: number;
  rootUrl: string;
  tokenUrl: string;
  agent: Agent | undefined;
  timeout: number;
  refreshMargin: number;
  name: string;
  rules: readonly ErrorRule[];
  /** Texts that must never appear in an error or a log. */
  secrets: string[];
}

/** Google's token endpoint, as the libraries have it built in. */
export const GOOGLE_TOKEN_URL = 'https://oauth2.googleapis.com/token';
/** The scope that allows `users.messages.send` and nothing else. */
export const GMAIL_SEND_SCOPE = 'https://www.googleapis.com/auth/gmail.send';

function httpUrl(value: string, part: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new RouteConfigError(part, 'is not a URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new RouteConfigError(part, 'must be http(s)');
  if (url.username || url.password) throw new RouteConfigError(part, 'must not carry credentials');
  return url.href;
}

function nonEmpty(value: unknown, part: string): string {
  if (typeof value !== 'string' || value.trim() === '') throw new RouteConfigError(part, 'is missing');
  return value;
}

function duration(value: number | undefined, part: string, fallback: number, zero = false): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 0 || (!zero && value === 0)) {
    throw new RouteConfigError(part, `${String(value)} is not a valid number`);
  }
  return value;
}

/** Checks the options and fills in the defaults. Throws {@link RouteConfigError} naming the bad part. */
export function resolveGmailOptions(options: GmailApiRouteOptions): ResolvedGmailOptions {
  const user = nonEmpty(options?.user, 'user');
  if (!/^[^@\s]+@[^@\s]+$/.test(user)) throw new RouteConfigError('user', 'must be an e-mail address');
  if (Boolean(options.oauth2) === Boolean(options.serviceAccount)) {
    throw new RouteConfigError('auth', 'give exactly one of oauth2 (refresh token) and serviceAccount');
  }
  let auth: ResolvedGmailOptions['auth'];
  const secrets: string[] = [];
  if (options.oauth2) {
    const o = options.oauth2;
    auth = {
      kind: 'oauth2',
      clientId: nonEmpty(o.clientId, 'oauth2.clientId'),
      clientSecret: nonEmpty(o.clientSecret, 'oauth2.clientSecret'),
      refreshToken: nonEmpty(o.refreshToken, 'oauth2.refreshToken'),
    };
    secrets.push(o.clientSecret, o.refreshToken);
  } else {
    const s = options.serviceAccount!;
    const privateKey = nonEmpty(s.privateKey, 'serviceAccount.privateKey');
    if (!/-----BEGIN (RSA )?PRIVATE KEY-----/.test(privateKey)) {
      throw new RouteConfigError('serviceAccount.privateKey', 'is not a PEM private key');
    }
    auth = {
      kind: 'service-account',
      clientEmail: nonEmpty(s.clientEmail, 'serviceAccount.clientEmail'),
      privateKey,
      subject: s.subject ?? user,
      ...(s.privateKeyId ? { privateKeyId: s.privateKeyId } : {}),
    };
    // the key's base64 body, which is what would leak in a careless message
    secrets.push(privateKey, ...privateKey.split(/\r?\n/).filter((l) => l.length > 20 && !l.startsWith('-----')));
  }
  return {
    user,
    auth,
    userId: options.userId ?? 'me',
    scopes: options.scopes ?? [GMAIL_SEND_SCOPE],
    uploadThreshold: duration(options.uploadThreshold, 'uploadThreshold', 0, true),
    rootUrl: httpUrl(options.rootUrl ?? 'https://gmail.googleapis.com/', 'rootUrl'),
    tokenUrl: httpUrl(options.tokenUrl ?? GOOGLE_TOKEN_URL, 'tokenUrl'),
    agent: options.agent,
    timeout: duration(options.timeout, 'timeout', 30_000),
    refreshMargin: duration(options.refreshMargin, 'refreshMargin', 300_000, true),
    name: options.name ?? `gmail-api(${user})`,
    rules: options.rules ?? [],
    secrets,
  };
}
