import {
  failure,
  httpFailure,
  MailError,
  type PreparedMessage,
  type Receipt,
  redact,
  requestAborted,
  type SendOptions,
  type Transport,
} from '@mailvia/core';
import Mailgun from 'mailgun.js';
import type { Interfaces, MailgunMessageData } from 'mailgun.js/definitions';
import { type MailgunConfig, type MailgunOptions, resolveConfig } from './config.js';
import { MAILGUN_API_RULES, NOT_THE_API } from './errors.js';
import { HttpExchangeError, NodeHttpProvider } from './http.js';
import { type MailgunMessageFields, toMailgunFields } from './message.js';

/**
 * A route that sends through Mailgun's messages API (`POST /v3/{domain}/messages`, HTTPS on
 * port 443) with `mailgun.js`, in the US or EU region. Tags become `o:tag`, metadata and the
 * Message-ID become `v:` variables (and the Message-ID is sent as `h:Message-Id`); the receipt's
 * `providerMessageId` is the id Mailgun answers with.
 *
 * @example
 * ```ts
 * const route = mailgun({ apiKey: process.env.MAILGUN_API_KEY!, domain: 'mg.example.org', region: 'eu' });
 * ```
 */
export function mailgun(options: MailgunOptions): Transport {
  return new MailgunTransport(resolveConfig(options));
}

class MailgunTransport implements Transport {
  readonly specificationVersion = 'v1' as const;
  readonly name: string;
  private readonly mailgun = new Mailgun(FormData);

  constructor(private readonly config: MailgunConfig) {
    this.name = config.name;
  }

  /** A client per request: the abort signal travels with the request, not a shared object. */
  private client(signal: AbortSignal | undefined): Interfaces.IMailgunClient {
    const { apiKey, baseUrl, agent, timeout, headers } = this.config;
    const client = this.mailgun.client({ username: 'api', key: apiKey, url: baseUrl, timeout });
    // mailgun.js's own provider takes no agent or signal and loses what a failure was (see http.ts)
    client.request.requestProvider = new NodeHttpProvider({
      apiKey,
      timeout,
      headers,
      ...(agent ? { agent } : {}),
      ...(signal ? { signal } : {}),
    });
    return client;
  }

  async send(message: PreparedMessage, options: SendOptions = {}): Promise<Receipt> {
    const { signal } = options;
    const startedAt = Date.now();
    if (signal?.aborted) throw this.aborted(signal, false);
    if (message.to.length === 0) {
      // Mailgun requires `to`; another route (SMTP) can send a Cc/Bcc-only mail
      throw new MailError(`${this.name}: Mailgun needs at least one To recipient; this message has only Cc/Bcc`, {
        kind: 'unavailable',
        phase: 'envelope',
        route: this.name,
        code: 'ENOTO',
      });
    }
    let fields: MailgunMessageFields;
    try {
      fields = await toMailgunFields(message, { testMode: this.config.testMode, ...(signal ? { signal } : {}) });
    } catch (err) {
      if (signal?.aborted) throw this.aborted(signal, false);
      throw new MailError(`${this.name}: an attachment could not be read: ${this.clean(err)}`, {
        kind: 'refused',
        phase: 'envelope',
        route: this.name,
        code: 'EATTACHMENT',
      });
    }
    let result: { status?: number; id?: unknown; message?: unknown };
    try {
      result = await this.client(signal).messages.create(
        this.config.domain,
        // mailgun.js's type asks for text, html or a template; a body-less message is Mailgun's to refuse
        fields as unknown as MailgunMessageData,
      );
    } catch (err) {
      throw this.fail(err, signal);
    }
    if (typeof result.id !== 'string') {
      throw this.fail(
        new HttpExchangeError(`HTTP ${result.status ?? 200} without a message id`, {
          ...(result.status !== undefined ? { status: result.status } : {}),
          code: NOT_THE_API,
          sent: true,
        }),
        signal,
      );
    }
    return {
      route: this.name,
      messageId: message.messageId,
      providerMessageId: result.id,
      accepted: [...message.envelope.to],
      rejected: [],
      response: `HTTP ${result.status ?? 200}${typeof result.message === 'string' ? ` ${result.message}` : ''}`,
      acceptedBy: 'provider',
      attempts: [{ route: this.name, ok: true, startedAt, durationMs: Date.now() - startedAt }],
    };
  }

  /**
   * Checks key, region and domain: `GET /v4/domains/{domain}` must answer, and the domain must
   * not be disabled. Sends nothing. (A domain sending key may only send: it fails here.)
   */
  async verify(options: { signal?: AbortSignal } = {}): Promise<void> {
    const { signal } = options;
    if (signal?.aborted) throw this.aborted(signal, false);
    let domain: { state?: unknown; is_disabled?: unknown };
    try {
      domain = await this.client(signal).domains.get(this.config.domain);
    } catch (err) {
      throw this.fail(err, signal);
    }
    if (domain.is_disabled === true || domain.state === 'disabled') {
      throw new MailError(`${this.name}: the domain ${this.config.domain} is disabled in Mailgun`, {
        kind: 'misconfigured',
        phase: 'auth',
        route: this.name,
        code: 'EDOMAINDISABLED',
        rule: 'mailgun-api/domain-disabled',
      });
    }
  }

  async close(): Promise<void> {
    // no connection of its own: the agent (given or global) keeps its sockets
  }

  private clean(err: unknown): string {
    return redact(err instanceof Error ? err.message : String(err), [this.config.apiKey]);
  }

  private aborted(signal: AbortSignal, sent: boolean): MailError {
    return requestAborted({ route: this.name, signal, sent });
  }

  private fail(err: unknown, signal: AbortSignal | undefined): MailError {
    if (MailError.isInstance(err)) return err;
    const secrets = [this.config.apiKey];
    const rules = [...this.config.rules, ...MAILGUN_API_RULES];
    if (!(err instanceof HttpExchangeError)) {
      // mailgun.js refused the input itself (its "user data" errors), before any request
      const text = this.clean(err);
      return failure({ route: this.name, phase: 'envelope', text, message: text, rules });
    }
    const { status, headers, body, code, sent } = err.facts;
    if (status === undefined || code === NOT_THE_API) {
      if (signal?.aborted) return this.aborted(signal, sent);
      const message = redact(err.message, secrets);
      return httpFailure({
        route: this.name,
        sent,
        // a 2xx that is not the API's JSON: an answer, but not one the messages API gives
        ...(code === NOT_THE_API ? { phase: 'response' as const } : {}),
        ...(code ? { errorCode: code } : {}),
        text: message,
        message:
          sent && code !== NOT_THE_API
            ? `${message} (after the whole request was sent: Mailgun may have the mail)`
            : message,
        rules,
        cause: Object.assign(new Error(message), code ? { code } : {}),
      });
    }
    const said = redact(describe(body), secrets);
    const retryAfter = secondsIn(said);
    const hint =
      status === 401
        ? ` (the key is wrong, or it belongs to the other region: this route calls ${new URL(this.config.baseUrl).host})`
        : status === 404
          ? ` (is ${this.config.domain} a domain of this account, in this region?)`
          : '';
    return httpFailure({
      route: this.name,
      status,
      ...(headers ? { headers } : {}),
      sent: true,
      text: said,
      message: `${redact(err.message, secrets)}${said ? `: ${said}` : ''}${hint}`,
      // Mailgun's 429 may say the wait only in words: "try again after 120 seconds"
      ...(retryAfter !== undefined ? { retryAfter } : {}),
      rules,
      cause: new Error(`HTTP ${status}`),
    });
  }
}

/** Mailgun's answer in words: `{"message": …}` JSON, or a plain text body such as `Forbidden`. */
function describe(body: unknown): string {
  if (typeof body === 'string') return body.trim().slice(0, 500);
  if (body && typeof body === 'object') {
    const { message, error } = body as { message?: unknown; error?: unknown };
    const parts = [message, error].filter((x): x is string => typeof x === 'string' && x !== '');
    return (parts.length ? parts.join('; ') : JSON.stringify(body)).slice(0, 500);
  }
  return '';
}

/** "try again after 120 seconds", as Mailgun's 429 answers say it. */
function secondsIn(text: string): number | undefined {
  const m = /after (\d+) seconds?/i.exec(text);
  return m ? Number(m[1]) * 1000 : undefined;
}
