import type { Agent } from 'node:http';
import { gmail, type gmail_v1 } from '@googleapis/gmail';
import {
  combineSignals,
  type MailError,
  type PreparedMessage,
  type Receipt,
  type RequestProgress,
  type RouteAgents,
  requestAborted,
  routeAgents,
  type SendOptions,
  type Transport,
  withRequestProgress,
} from '@mailvia/core';
import { TokenSource } from './auth.js';
import { type GmailApiRouteOptions, type ResolvedGmailOptions, resolveGmailOptions } from './config.js';
import { base64urlPadded, gmailMime } from './convert.js';
import { GMAIL_ERROR_RULES, statusOf, toMailError } from './errors.js';

/**
 * A route that sends through the Gmail API, `users.messages.send` (HTTPS, port 443), with the
 * raw MIME of core's `composeMime`. It authenticates with an OAuth refresh token or a service
 * account with domain-wide delegation; the access token is cached and renewed once when it is
 * about to expire, not per send. A 401 makes it renew the token and try once more (the request
 * was refused, nothing was sent); every other decision is the engine's.
 *
 * @example
 * ```ts
 * const route = gmailApi({
 *   user: 'school-a@example.org',
 *   oauth2: { clientId: process.env.GOOGLE_CLIENT_ID!, clientSecret: process.env.GOOGLE_CLIENT_SECRET!, refreshToken: tokenFromYourDb },
 * });
 * ```
 */
export function gmailApi(options: GmailApiRouteOptions): Transport {
  return new GmailApiTransport(options);
}

class GmailApiTransport implements Transport {
  readonly specificationVersion = 'v1' as const;
  readonly name: string;
  private readonly o: ResolvedGmailOptions;
  private readonly api: gmail_v1.Gmail;
  private readonly tokens: TokenSource;
  private readonly agents: RouteAgents;

  constructor(options: GmailApiRouteOptions) {
    this.o = resolveGmailOptions(options);
    this.name = this.o.name;
    this.agents = routeAgents(this.o.agent);
    this.tokens = new TokenSource(this.o, (url) => this.agentFor(url));
    this.api = gmail({ version: 'v1' });
  }

  private agentFor(url: URL): Agent {
    return this.agents.for(url);
  }

  private rules() {
    return [...this.o.rules, ...GMAIL_ERROR_RULES];
  }

  private aborted(signal: AbortSignal, phase: 'connect' | 'auth'): MailError {
    return requestAborted({ route: this.name, signal, sent: false, phase });
  }

  /** An access token, or a MailError (phase `auth`) saying why there is none. */
  private async token(signal: AbortSignal | undefined, deadline: AbortSignal | undefined): Promise<string> {
    let onAbort: (() => void) | undefined;
    const abort = new Promise<never>((_, reject) => {
      if (!deadline) return;
      onAbort = () => reject(this.aborted(signal?.aborted ? signal : deadline, 'auth'));
      deadline.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([this.tokens.token(), abort]);
    } catch (err) {
      throw toMailError(err, {
        route: this.name,
        action: 'token endpoint',
        secrets: this.o.secrets,
        rules: this.rules(),
        signal,
        deadline,
      });
    } finally {
      if (onAbort) deadline?.removeEventListener('abort', onAbort);
    }
  }

  private async post(
    raw: Buffer,
    token: string,
    deadline: AbortSignal | undefined,
  ): Promise<{ data: gmail_v1.Schema$Message; status: number }> {
    const options = {
      rootUrl: this.o.rootUrl,
      agent: (url: URL) => this.agentFor(url),
      retry: false,
      headers: { Authorization: `Bearer ${token}` },
      ...(deadline ? { signal: deadline } : {}),
    };
    const upload = raw.length > this.o.uploadThreshold;
    const res = upload
      ? await this.api.users.messages.send(
          { userId: this.o.userId, media: { mimeType: 'message/rfc822', body: raw } },
          options,
        )
      : await this.api.users.messages.send(
          { userId: this.o.userId, requestBody: { raw: base64urlPadded(raw) } },
          options,
        );
    return { data: res.data, status: res.status };
  }

  async send(message: PreparedMessage, options: SendOptions = {}): Promise<Receipt> {
    const { signal } = options;
    const startedAt = Date.now();
    if (signal?.aborted) throw this.aborted(signal, 'connect');
    const raw = await gmailMime(message);
    const deadline = combineSignals([signal], this.o.timeout);
    let token = await this.token(signal, deadline);
    const attempt = (t: string) =>
      withRequestProgress(async (progress: RequestProgress) => {
        try {
          return await this.post(raw, t, deadline);
        } catch (err) {
          return { err, progress };
        }
      });
    let result = await attempt(token);
    if ('err' in result && statusOf(result.err) === 401) {
      // the access token was refused before anything was sent: renew it once and try again
      this.tokens.invalidate();
      token = await this.token(signal, deadline);
      result = await attempt(token);
    }
    if ('err' in result) {
      throw toMailError(result.err, {
        route: this.name,
        action: 'users.messages.send',
        progress: result.progress,
        secrets: [...this.o.secrets, token],
        rules: this.rules(),
        signal,
        deadline,
      });
    }
    const id = result.data.id ?? undefined;
    return {
      route: this.name,
      messageId: message.messageId,
      ...(id ? { providerMessageId: id } : {}),
      accepted: [...message.envelope.to],
      rejected: [],
      response: `Gmail accepted the message: HTTP ${result.status}, id ${id ?? '(none)'}`,
      acceptedBy: 'provider',
      attempts: [{ route: this.name, ok: true, startedAt, durationMs: Date.now() - startedAt }],
    };
  }

  /**
   * Gets an access token and reads the mailbox profile (`users.getProfile`): the credentials
   * work and the API is reachable (through the agent). A token with only the gmail.send scope is
   * refused the profile with `403 insufficientPermissions`, which also proves it valid.
   */
  async verify(options: { signal?: AbortSignal } = {}): Promise<void> {
    const { signal } = options;
    if (signal?.aborted) throw this.aborted(signal, 'auth');
    const deadline = combineSignals([signal], this.o.timeout);
    const probe = async (token: string) => {
      try {
        await this.api.users.getProfile(
          { userId: this.o.userId },
          {
            rootUrl: this.o.rootUrl,
            agent: (url: URL) => this.agentFor(url),
            retry: false,
            headers: { Authorization: `Bearer ${token}` },
            ...(deadline ? { signal: deadline } : {}),
          },
        );
        return undefined;
      } catch (err) {
        return err;
      }
    };
    let token = await this.token(signal, deadline);
    let err = await probe(token);
    if (err !== undefined && statusOf(err) === 401) {
      this.tokens.invalidate();
      token = await this.token(signal, deadline);
      err = await probe(token);
    }
    if (err === undefined) return;
    const e = toMailError(err, {
      route: this.name,
      action: 'users.getProfile',
      progress: { started: true, sent: false },
      secrets: [...this.o.secrets, token],
      rules: this.rules(),
      signal,
      deadline,
    });
    if (e.status === 403 && /insufficientPermissions|ACCESS_TOKEN_SCOPE_INSUFFICIENT/.test(e.code ?? '')) return;
    throw e;
  }

  async close(): Promise<void> {
    // the route's own agents close their sockets (and open new ones on the next send);
    // an injected agent is left alone (see routeAgents)
    this.agents.destroy();
  }
}
