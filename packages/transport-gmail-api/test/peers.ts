import { createVerify, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import type { ReceivedMail, RecordedRequest } from '@mailvia/core/testing';
import { OAuth2Server } from 'oauth2-mock-server';

type ParsedMail = ReceivedMail['parsed'];
// mailparser's types come with core (@types/mailparser); this package only has the module
const { simpleParser } = createRequire(import.meta.url)('mailparser') as {
  simpleParser(source: Buffer): Promise<ParsedMail>;
};

/** The Swagger 2.0 form of Gmail's discovery document, which Prism serves. */
export const SWAGGER = '/work/shared/contracts/gmail/gmail.v1.prism-swagger2.json';
export const DISCOVERY = '/work/shared/contracts/gmail/gmail.v1.json';

/** A send request as Gmail received it, decoded. */
export interface GmailSend {
  form: 'upload' | 'json';
  userId: string;
  token: string | undefined;
  mime: Buffer;
  parsed: ParsedMail;
}

/** Decodes a recorded `users.messages.send` request (JSON `raw` or media upload); undefined for other requests. */
export async function decodeSend(r: RecordedRequest): Promise<GmailSend | undefined> {
  const m = /^\/(upload\/)?gmail\/v1\/users\/([^/]+)\/messages\/send(\?.*)?$/.exec(r.url);
  if (!m || r.method !== 'POST') return undefined;
  const token = /^Bearer (.+)$/.exec(String(r.headers.authorization ?? ''))?.[1];
  let mime: Buffer;
  if (m[1]) mime = r.body;
  else {
    const raw = (JSON.parse(r.body.toString('utf8')) as { raw: string }).raw;
    mime = Buffer.from(raw.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  }
  return {
    form: m[1] ? 'upload' : 'json',
    userId: decodeURIComponent(m[2]!),
    token,
    mime,
    parsed: await simpleParser(mime),
  };
}

/**
 * The violations of a `users.messages.send` request against Gmail's discovery document (the
 * official contract): the bound paths, `uploadType`, the upload's accepted media types and
 * maximum size, and for the JSON form a `Message` body whose `raw` is the discovery format
 * `byte` — "a padded, base64-encoded string of bytes, encoded with a URL and filename safe
 * alphabet" — that decodes to the mail.
 */
export function discoveryViolations(r: RecordedRequest): string[] {
  const d = JSON.parse(readFileSync(DISCOVERY, 'utf8')) as {
    servicePath: string;
    schemas: Record<string, { properties: Record<string, { type: string; format?: string }> }>;
    resources: {
      users: {
        resources: {
          messages: {
            methods: {
              send: {
                httpMethod: string;
                path: string;
                request: { $ref: string };
                mediaUpload: { accept: string[]; maxSize: string; protocols: { simple: { path: string } } };
              };
            };
          };
        };
      };
    };
  };
  const send = d.resources.users.resources.messages.methods.send;
  const out: string[] = [];
  if (r.method !== send.httpMethod) out.push(`method ${r.method} is not ${send.httpMethod}`);
  const url = new URL(r.url, 'http://x');
  const template = (p: string) => new RegExp(`^${p.replace('{userId}', '[^/]+')}$`);
  const jsonPath = template(`/${d.servicePath}${send.path}`);
  const uploadPath = template(send.mediaUpload.protocols.simple.path);
  if (uploadPath.test(url.pathname)) {
    const type = url.searchParams.get('uploadType');
    if (type !== 'media') out.push(`uploadType ${type} (a raw message/rfc822 body needs media)`);
    const ct = String(r.headers['content-type'] ?? '');
    const accepted = send.mediaUpload.accept.map((a) => new RegExp(`^${a.replace('*', '[^;]+')}(;|$)`));
    if (!accepted.some((re) => re.test(ct))) out.push(`content-type ${ct} is not one of ${send.mediaUpload.accept}`);
    if (r.body.length > Number(send.mediaUpload.maxSize)) out.push(`body over ${send.mediaUpload.maxSize} bytes`);
  } else if (jsonPath.test(url.pathname)) {
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(r.body.toString('utf8')) as Record<string, unknown>;
    } catch {
      return [...out, 'the JSON body does not parse'];
    }
    const schema = d.schemas[send.request.$ref]!;
    for (const key of Object.keys(body)) if (!schema.properties[key]) out.push(`${key} is not a Message field`);
    const raw = body.raw;
    if (typeof raw !== 'string') out.push('raw is missing');
    else if (schema.properties.raw?.format !== 'byte') out.push('the contract changed: raw is no longer format byte');
    else if (!/^[A-Za-z0-9_-]*={0,2}$/.test(raw) || raw.length % 4 !== 0) {
      out.push('raw is not padded base64url (discovery format byte)');
    }
  } else out.push(`path ${url.pathname} is neither ${jsonPath} nor ${uploadPath}`);
  if (!/^Bearer \S+$/.test(String(r.headers.authorization ?? ''))) out.push('no bearer token');
  return out;
}

/** A form body of a token request. */
export function form(req: { body?: unknown }): Record<string, string> {
  const b = req.body;
  if (b && typeof b === 'object') return b as Record<string, string>;
  return Object.fromEntries(new URLSearchParams(String(b ?? '')));
}

/** oauth2-mock-server on loopback, recording token requests. */
export interface TokenServer {
  url: string;
  server: OAuth2Server;
  /** Form bodies of every token request, in order. */
  requests: Record<string, string>[];
  /** `expires_in` of the next answers (seconds). */
  expiresIn: number;
  close(): Promise<void>;
}

export async function startTokenServer(): Promise<TokenServer> {
  const server = new OAuth2Server();
  await server.issuer.keys.generate('RS256');
  await server.start(0, '127.0.0.1');
  const state: TokenServer = {
    url: `${server.issuer.url}/token`,
    server,
    requests: [],
    expiresIn: 3600,
    close: () => server.stop(),
  };
  server.service.on('beforeResponse', (response: { body: Record<string, unknown> }, req: IncomingMessage) => {
    state.requests.push(form(req as IncomingMessage & { body?: unknown }));
    response.body.expires_in = state.expiresIn;
  });
  return state;
}

/**
 * Google's token endpoint for the answers oauth2-mock-server does not give, written from
 * shared/contracts/google-oauth/token-endpoint.md: a revoked refresh token gets
 * `400 {"error":"invalid_grant","error_description":"Token has been expired or revoked."}`, a
 * wrong client secret `401 invalid_client`, a JWT signed by another key `400 invalid_grant
 * "Invalid JWT Signature."`. Everything else it refuses with `400 unsupported_grant_type`.
 */
export async function startGoogleTokenErrors(options: {
  clientSecret: string;
  revoked: string[];
  publicKey?: string;
}): Promise<{ url: string; requests: Record<string, string>[]; close(): Promise<void> }> {
  const requests: Record<string, string>[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const f = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString()));
      requests.push(f);
      const answer = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
        res.end(JSON.stringify(body));
      };
      if (req.method !== 'POST' || !/application\/x-www-form-urlencoded/.test(req.headers['content-type'] ?? '')) {
        return answer(400, { error: 'invalid_request', error_description: 'POST a form' });
      }
      if (f.grant_type === 'refresh_token') {
        if (f.client_secret !== options.clientSecret) {
          return answer(401, { error: 'invalid_client', error_description: 'Unauthorized' });
        }
        if (options.revoked.includes(f.refresh_token ?? '')) {
          return answer(400, { error: 'invalid_grant', error_description: 'Token has been expired or revoked.' });
        }
        return answer(200, { access_token: 'ya29.fake-access-token', expires_in: 3599, token_type: 'Bearer' });
      }
      if (f.grant_type === 'urn:ietf:params:oauth:grant-type:jwt-bearer') {
        const [h, p, s] = (f.assertion ?? '').split('.');
        const ok =
          options.publicKey !== undefined &&
          h !== undefined &&
          p !== undefined &&
          s !== undefined &&
          createVerify('RSA-SHA256').update(`${h}.${p}`).verify(options.publicKey, Buffer.from(s, 'base64url'));
        if (!ok) return answer(400, { error: 'invalid_grant', error_description: 'Invalid JWT Signature.' });
        return answer(200, { access_token: 'ya29.fake-sa-token', expires_in: 3599, token_type: 'Bearer' });
      }
      return answer(400, { error: 'unsupported_grant_type', error_description: 'Invalid grant_type.' });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`,
    requests,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** An RSA key pair like a service account's, made for the test. */
export function serviceAccountKey(): { privateKey: string; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}
