import type { Agent as HttpAgent } from 'node:http';
import { type ErrorRule, RouteConfigError } from '@mailvia/core';

/** Static AWS credentials: an access key of an IAM user (or role session) allowed `ses:SendEmail`. */
export interface SesCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  /** For temporary credentials (STS). */
  sessionToken?: string;
}

/** A function that returns (possibly refreshed) credentials, such as those of `@aws-sdk/credential-providers`. */
export type SesCredentialProvider = () => Promise<SesCredentials & { expiration?: Date }>;

/** Options of {@link ses}. Timeouts are in milliseconds. */
export interface SesRouteOptions {
  /** The AWS region of the SES account, e.g. `eu-west-1`. */
  region: string;
  /**
   * Static credentials, or a provider function from `@aws-sdk/credential-providers`.
   * @default the SDK's default chain (environment, shared files, instance or task role)
   */
  credentials?: SesCredentials | SesCredentialProvider;
  /** Another endpoint than SES's own for the region (a VPC endpoint, a local emulator). */
  endpoint?: string;
  /** The configuration set to send with (event publishing, dedicated IPs). */
  configurationSet?: string;
  /**
   * `raw` sends the MIME of core's `composeMime` (the same bytes every SMTP route sends, with
   * our Message-ID); `simple` hands subject and bodies to SES to assemble. Messages with
   * attachments are always sent raw.
   * @default 'raw'
   */
  content?: 'raw' | 'simple';
  /** Send the message's tags and metadata as SES `EmailTags` (sanitised to SES's characters). @default true */
  emailTags?: boolean;
  /** `FromEmailAddressIdentityArn`, for sending authorisation (sending as another account's identity). */
  fromArn?: string;
  /**
   * The agent for HTTP requests, for example one that goes through a SOCKS proxy. It must match
   * the endpoint's scheme (an `https.Agent` for SES itself). Mailvia never destroys it.
   * @default a keep-alive agent of the route
   */
  agent?: HttpAgent;
  /** TCP (and TLS) connect timeout. @default 5000 */
  connectionTimeout?: number;
  /** The whole request, from start to answer. @default 30_000 */
  timeout?: number;
  /** A name for logs and receipts (never a secret). @default `ses(REGION/…LAST4-OF-KEY)` */
  name?: string;
  /** Extra classification rows, tried before the package's and core's. */
  rules?: readonly ErrorRule[];
}

/** The options with every default filled in. */
export interface ResolvedSesOptions {
  region: string;
  credentials: SesCredentials | SesCredentialProvider | undefined;
  endpoint: string | undefined;
  configurationSet: string | undefined;
  content: 'raw' | 'simple';
  emailTags: boolean;
  fromArn: string | undefined;
  agent: HttpAgent | undefined;
  connectionTimeout: number;
  timeout: number;
  name: string;
  rules: readonly ErrorRule[];
  /** Texts that must never appear in an error or a log. */
  secrets: string[];
}

const REGION = /^[a-z]{2}(-[a-z]+)+-\d{1,2}$/;

function positive(value: number | undefined, part: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0)
    throw new RouteConfigError(part, `${String(value)} is not a positive duration`);
  return value;
}

/** Checks the options and fills in the defaults. Throws {@link RouteConfigError} naming the bad part. */
export function resolveSesOptions(options: SesRouteOptions): ResolvedSesOptions {
  if (!options || typeof options.region !== 'string' || !options.region) {
    throw new RouteConfigError('region', 'is required (e.g. eu-west-1)');
  }
  if (!REGION.test(options.region)) {
    throw new RouteConfigError(
      'region',
      `${JSON.stringify(options.region)} is not an AWS region name (e.g. eu-west-1)`,
    );
  }
  const content = options.content ?? 'raw';
  if (content !== 'raw' && content !== 'simple') {
    throw new RouteConfigError('content', `${JSON.stringify(content)} is neither raw nor simple`);
  }
  const creds = options.credentials;
  const secrets: string[] = [];
  let keyHint = '';
  if (creds !== undefined && typeof creds !== 'function') {
    if (!creds.accessKeyId) throw new RouteConfigError('credentials.accessKeyId', 'is missing');
    if (!creds.secretAccessKey) throw new RouteConfigError('credentials.secretAccessKey', 'is missing');
    secrets.push(creds.secretAccessKey);
    if (creds.sessionToken) secrets.push(creds.sessionToken);
    keyHint = `/…${creds.accessKeyId.slice(-4)}`;
  }
  if (options.endpoint !== undefined) {
    let url: URL;
    try {
      url = new URL(options.endpoint);
    } catch {
      throw new RouteConfigError('endpoint', 'is not a URL');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new RouteConfigError('endpoint', 'must be an http(s) URL');
    }
    if (url.username || url.password) throw new RouteConfigError('endpoint', 'must not carry credentials');
  }
  const set = options.configurationSet;
  return {
    region: options.region,
    credentials: creds,
    endpoint: options.endpoint,
    configurationSet: set,
    content,
    emailTags: options.emailTags ?? true,
    fromArn: options.fromArn,
    agent: options.agent,
    connectionTimeout: positive(options.connectionTimeout, 'connectionTimeout', 5000),
    timeout: positive(options.timeout, 'timeout', 30_000),
    name: options.name ?? `ses(${options.region}${keyHint}${set ? ` set=${set}` : ''})`,
    rules: options.rules ?? [],
    secrets,
  };
}

/**
 * The credentials in the form the SDK takes. A provider function's failure is reported as a
 * `CredentialsProviderError` (what the SDK's own providers throw), so it reads as misconfigured.
 */
export function sdkCredentials(
  creds: SesCredentials | SesCredentialProvider | undefined,
): SesCredentials | SesCredentialProvider | undefined {
  if (creds === undefined) return undefined;
  if (typeof creds === 'function') {
    return async () => {
      try {
        return await creds();
      } catch (err) {
        if (err instanceof Error && err.name === 'CredentialsProviderError') throw err;
        const e = new Error(`the credentials provider failed: ${err instanceof Error ? err.message : String(err)}`);
        e.name = 'CredentialsProviderError';
        throw e;
      }
    };
  }
  return {
    accessKeyId: creds.accessKeyId,
    secretAccessKey: creds.secretAccessKey,
    ...(creds.sessionToken ? { sessionToken: creds.sessionToken } : {}),
  };
}
