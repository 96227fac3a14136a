import {
  type HttpHeaders,
  headerValue,
  httpFailure,
  MailError,
  type PreparedMessage,
  type Receipt,
  type RouteAgents,
  redact,
  requestAborted,
  routeAgents,
  type SendOptions,
  type Transport,
  withRequestProgress,
} from '@mailvia/core';
import { Client } from '@sendgrid/client';
import type { ClientRequest } from '@sendgrid/client/src/request.js';
import { resolveApiConfig, type SendgridApiConfig, type SendgridApiOptions } from './config.js';
import { SENDGRID_API_RULES } from './errors.js';
import { type MailSendBody, toMailSendBody } from './payload.js';

/** What the SDK rejects with: an HTTP error answer (ResponseError) or an axios network error. */
interface SdkError {
  code?: string | number;
  message?: string;
  /** ResponseError: the answer. */
  response?: { headers?: HttpHeaders; body?: unknown };
}

interface ApiErrorBody {
  errors?: { message?: unknown; field?: unknown; help?: unknown }[];
}

/** The request options Mailvia sets on the SDK's axios request, besides the SDK's own. */
type SdkDefaults = Omit<ClientRequest, 'httpsAgent'> & {
  maxRedirects: number;
  timeout: number;
  signal?: AbortSignal;
  httpAgent?: unknown;
  httpsAgent?: unknown;
};

/**
 * A route that sends through SendGrid's Web API v3 (`POST /v3/mail/send`, HTTPS on port 443)
 * with `@sendgrid/client`. The message goes as v3 JSON: tags become categories, metadata and
 * the Message-ID go in `custom_args` (SendGrid writes its own Message-ID header), and the
 * receipt's `providerMessageId` is SendGrid's `X-Message-Id`.
 *
 * @example
 * ```ts
 * const route = sendgridApi({ apiKey: process.env.SENDGRID_API_KEY! });
 * ```
 */
export function sendgridApi(options: SendgridApiOptions): Transport {
  return new SendgridApiTransport(resolveApiConfig(options));
}

class SendgridApiTransport implements Transport {
  readonly specificationVersion = 'v1' as const;
  readonly name: string;
  /** The caller's agent, or the route's own keep-alive agents; they tell whether a request was fully sent. */
  private readonly agents: RouteAgents;

  constructor(private readonly config: SendgridApiConfig) {
    this.name = config.name;
    this.agents = routeAgents(config.agent);
  }

  /** A client per request: the abort signal and the agent travel with the request, not a shared object. */
  private client(signal: AbortSignal | undefined): Client {
    const c = new Client();
    c.setDefaultHeader({
      ...this.config.headers,
      Authorization: `Bearer ${this.config.apiKey}`,
      'User-Agent': 'mailvia-transport-sendgrid',
    });
    const defaults: SdkDefaults = {
      url: '',
      baseUrl: this.config.baseUrl,
      // an API answer is final: no redirect follower (and the key goes to no other host)
      maxRedirects: 0,
      timeout: this.config.timeout,
      ...(signal ? { signal } : {}),
      httpAgent: this.agents.http,
      httpsAgent: this.agents.https,
    };
    c.setDefaultRequest(defaults as ClientRequest);
    return c;
  }

  async send(message: PreparedMessage, options: SendOptions = {}): Promise<Receipt> {
    const { signal } = options;
    const startedAt = Date.now();
    if (signal?.aborted) throw this.aborted(signal, false);
    let body: MailSendBody;
    try {
      body = await toMailSendBody(message, signal);
    } catch (err) {
      if (signal?.aborted) throw this.aborted(signal, false);
      throw new MailError(`${this.name}: an attachment could not be read: ${this.clean(err)}`, {
        kind: 'refused',
        phase: 'envelope',
        route: this.name,
        code: 'EATTACHMENT',
      });
    }
    if (body.personalizations[0]!.to.length === 0) {
      // SendGrid needs a To in each personalization; another route (SMTP) can send a Bcc-only mail
      throw new MailError(`${this.name}: SendGrid needs at least one To recipient; this message has only Cc/Bcc`, {
        kind: 'unavailable',
        phase: 'envelope',
        route: this.name,
        code: 'ENOTO',
      });
    }
    const [res] = await withRequestProgress(async (progress) => {
      try {
        return await this.client(signal).request({ url: '/v3/mail/send', method: 'POST', body });
      } catch (err) {
        throw this.fail(err, signal, progress.sent, body);
      }
    });
    const status = res.statusCode;
    const providerMessageId = headerValue(res.headers as HttpHeaders, 'x-message-id');
    const p = body.personalizations[0]!;
    const accepted = [...p.to, ...(p.cc ?? []), ...(p.bcc ?? [])].map((a) => a.email);
    return {
      route: this.name,
      messageId: message.messageId,
      ...(providerMessageId ? { providerMessageId } : {}),
      accepted,
      rejected: [],
      response: `HTTP ${status}`,
      acceptedBy: 'provider',
      attempts: [{ route: this.name, ok: true, startedAt, durationMs: Date.now() - startedAt }],
    };
  }

  /**
   * Checks the key: `GET /v3/scopes` must answer and list `mail.send`. Sends nothing and spends
   * no credit.
   */
  async verify(options: { signal?: AbortSignal } = {}): Promise<void> {
    const { signal } = options;
    if (signal?.aborted) throw this.aborted(signal, false);
    const [, body] = await withRequestProgress(async (progress) => {
      try {
        return await this.client(signal).request({ url: '/v3/scopes', method: 'GET' });
      } catch (err) {
        throw this.fail(err, signal, progress.sent);
      }
    });
    const scopes = (body as { scopes?: unknown } | undefined)?.scopes;
    if (!Array.isArray(scopes) || !scopes.includes('mail.send')) {
      throw new MailError(`${this.name}: the API key does not have the Mail Send permission (mail.send scope)`, {
        kind: 'misconfigured',
        phase: 'auth',
        route: this.name,
        code: 'ESCOPE',
        rule: 'sendgrid-api/missing-scope',
      });
    }
  }

  async close(): Promise<void> {
    // closes the route's own agents' sockets; a given agent is left alone
    this.agents.destroy();
  }

  private clean(err: unknown): string {
    const text = err instanceof Error ? err.message : String(err);
    return redact(text, [this.config.apiKey]);
  }

  private aborted(signal: AbortSignal, sent: boolean): MailError {
    return requestAborted({ route: this.name, signal, sent });
  }

  /** Classifies what the SDK rejected with; the raw error (which holds the request headers) is not kept. */
  private fail(err: unknown, signal: AbortSignal | undefined, sent: boolean, body?: MailSendBody): MailError {
    const e = (err ?? {}) as SdkError;
    const secrets = [this.config.apiKey];
    const rules = [...this.config.rules, ...SENDGRID_API_RULES];
    if (typeof e.code === 'number' && e.response) {
      const status = e.code;
      const details = describeErrors(e.response.body, headerValue(e.response.headers, 'sl-violations'));
      const text = redact(details || (e.message ?? ''), secrets);
      const recipients = body ? refusedRecipients(e.response.body, body) : [];
      return httpFailure({
        route: this.name,
        status,
        ...(e.response.headers ? { headers: e.response.headers } : {}),
        sent: true,
        text,
        message: `HTTP ${status}${e.message ? ` ${e.message}` : ''}${text && text !== e.message ? `: ${text}` : ''}`,
        ...(recipients.length ? { recipients } : {}),
        rules,
        cause: new Error(`HTTP ${status}`),
      });
    }
    if (signal?.aborted) return this.aborted(signal, sent);
    const code = typeof e.code === 'string' ? e.code : undefined;
    const message = redact(e.message ?? String(err), secrets);
    return httpFailure({
      route: this.name,
      sent,
      ...(code ? { errorCode: code } : {}),
      text: message,
      message: sent ? `${message} (after the whole request was sent: SendGrid may have the mail)` : message,
      rules,
      cause: Object.assign(new Error(message), code ? { code } : {}),
    });
  }
}

/** The v3 `errors[]` (message and field), plus a contract server's `sl-violations`, as one line. */
function describeErrors(body: unknown, violations: string | undefined): string {
  const parts: string[] = [];
  if (typeof body === 'string') parts.push(body.slice(0, 500));
  else if (body && typeof body === 'object') {
    for (const e of (body as ApiErrorBody).errors ?? []) {
      const field = typeof e.field === 'string' && e.field !== 'null' ? ` (field ${e.field})` : '';
      if (e.message !== undefined && e.message !== null) parts.push(`${String(e.message)}${field}`);
    }
  }
  if (violations) {
    // Prism and other contract servers list the request's violations of the OpenAPI document
    try {
      const list = JSON.parse(violations) as { message?: string }[];
      for (const v of list) if (v.message) parts.push(v.message);
    } catch {
      parts.push(violations.slice(0, 500));
    }
  }
  return parts.join('; ');
}

/** Recipients SendGrid names as invalid (`personalizations.0.to.1.email`). */
function refusedRecipients(responseBody: unknown, body: MailSendBody): string[] {
  const out: string[] = [];
  const errors = (responseBody as ApiErrorBody | undefined)?.errors;
  if (!Array.isArray(errors)) return out;
  for (const e of errors) {
    const m = typeof e.field === 'string' ? /^personalizations\.(\d+)\.(to|cc|bcc)\.(\d+)\.email$/.exec(e.field) : null;
    if (!m) continue;
    const p = body.personalizations[Number(m[1])];
    const list = p?.[m[2] as 'to' | 'cc' | 'bcc'];
    const address = list?.[Number(m[3])]?.email;
    if (address) out.push(address);
  }
  return out;
}
