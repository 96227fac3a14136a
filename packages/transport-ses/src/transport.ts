import { GetAccountCommand, SESv2Client, SendEmailCommand } from '@aws-sdk/client-sesv2';
import {
  combineSignals,
  MailError,
  type PreparedMessage,
  type Receipt,
  requestAborted,
  routeAgents,
  type SendOptions,
  type Transport,
  withRequestProgress,
} from '@mailvia/core';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { type ResolvedSesOptions, resolveSesOptions, type SesRouteOptions, sdkCredentials } from './config.js';
import { toSendEmailInput } from './convert.js';
import { SES_ERROR_RULES, toMailError } from './errors.js';

/**
 * A route that sends through Amazon SES v2 `SendEmail` (HTTPS, port 443), raw MIME by default.
 * The SDK makes exactly one attempt per send: retrying, falling over and resting are the
 * engine's decisions, made from the kind of the {@link MailError} this route raises.
 *
 * @example
 * ```ts
 * const route = ses({
 *   region: 'eu-west-1',
 *   credentials: { accessKeyId: process.env.SES_KEY_ID!, secretAccessKey: process.env.SES_SECRET! },
 *   configurationSet: 'transactional',
 * });
 * ```
 */
export function ses(options: SesRouteOptions): Transport {
  return new SesTransport(options);
}

class SesTransport implements Transport {
  readonly specificationVersion = 'v1' as const;
  readonly name: string;
  private readonly o: ResolvedSesOptions;
  private client: SESv2Client | undefined;

  constructor(options: SesRouteOptions) {
    this.o = resolveSesOptions(options);
    this.name = this.o.name;
  }

  private sdk(): SESv2Client {
    if (this.client) return this.client;
    const agents = routeAgents(this.o.agent, { maxSockets: 50 });
    const credentials = sdkCredentials(this.o.credentials);
    this.client = new SESv2Client({
      region: this.o.region,
      ...(this.o.endpoint ? { endpoint: this.o.endpoint } : {}),
      ...(credentials ? { credentials } : {}),
      // one attempt: decisions (retry, fall over, rest) are the engine's
      maxAttempts: 1,
      requestHandler: new NodeHttpHandler({
        httpAgent: agents.http,
        httpsAgent: agents.https,
        connectionTimeout: this.o.connectionTimeout,
      }),
    });
    return this.client;
  }

  private rules() {
    return [...this.o.rules, ...SES_ERROR_RULES];
  }

  async send(message: PreparedMessage, options: SendOptions = {}): Promise<Receipt> {
    const { signal } = options;
    const startedAt = Date.now();
    if (signal?.aborted) throw this.abortedBeforeStart(signal);
    const input = await toSendEmailInput(message, {
      content: this.o.content,
      tags: this.o.emailTags,
      ...(this.o.configurationSet ? { configurationSet: this.o.configurationSet } : {}),
      ...(this.o.fromArn ? { fromArn: this.o.fromArn } : {}),
    });
    const deadline = combineSignals([signal], this.o.timeout);
    const out = await withRequestProgress(async (progress) => {
      try {
        return await this.sdk().send(new SendEmailCommand(input), deadline ? { abortSignal: deadline } : {});
      } catch (err) {
        throw toMailError(err, {
          route: this.name,
          action: 'SendEmail',
          progress,
          secrets: this.o.secrets,
          rules: this.rules(),
          signal,
          deadline,
        });
      }
    });
    return {
      route: this.name,
      messageId: message.messageId,
      ...(out.MessageId ? { providerMessageId: out.MessageId } : {}),
      accepted: [...message.envelope.to],
      rejected: [],
      response: `SES accepted the message: MessageId ${out.MessageId ?? '(none)'}`,
      acceptedBy: 'provider',
      attempts: [{ route: this.name, ok: true, startedAt, durationMs: Date.now() - startedAt }],
    };
  }

  /** Calls `GetAccount`: the credentials work and the account may send. Needs `ses:GetAccount`. */
  async verify(options: { signal?: AbortSignal } = {}): Promise<void> {
    const { signal } = options;
    if (signal?.aborted) throw this.abortedBeforeStart(signal);
    const deadline = combineSignals([signal], this.o.timeout);
    const account = await withRequestProgress(async (progress) => {
      try {
        return await this.sdk().send(new GetAccountCommand({}), deadline ? { abortSignal: deadline } : {});
      } catch (err) {
        const e = toMailError(err, {
          route: this.name,
          action: 'GetAccount',
          progress,
          secrets: this.o.secrets,
          rules: this.rules(),
          signal,
          deadline,
        });
        // GetAccount changes nothing: a lost answer is no unknown outcome, and a refused
        // request says the route, not a message, is wrong
        const kind = e.kind === 'unknown' ? 'unavailable' : e.kind === 'refused' ? 'misconfigured' : undefined;
        if (kind) {
          throw new MailError(e.message, {
            kind,
            phase: e.phase,
            route: this.name,
            ...(e.code ? { code: e.code } : {}),
            ...(e.status !== undefined ? { status: e.status } : {}),
          });
        }
        throw e;
      }
    });
    if (account.SendingEnabled === false) {
      throw new MailError(`${this.name}: sending is paused for this SES account (GetAccount: SendingEnabled false)`, {
        kind: 'misconfigured',
        phase: 'auth',
        route: this.name,
        code: 'SendingPaused',
      });
    }
  }

  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    // destroys the route's own agents; an injected agent is left alone (see routeAgents)
    client?.destroy();
  }

  private abortedBeforeStart(signal: AbortSignal): MailError {
    return requestAborted({ route: this.name, signal, sent: false });
  }
}
