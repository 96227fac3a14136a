import type { Agent } from 'node:http';
import { gaxios, JWT, OAuth2Client } from 'google-auth-library';
import { GOOGLE_TOKEN_URL, type ResolvedGmailOptions } from './config.js';

type AuthClient = OAuth2Client | JWT;

/**
 * Access tokens for one route: fetched from the token endpoint when none is cached or the cached
 * one is about to expire (google-auth-library's cache), at most one fetch at a time, and thrown
 * away after the API said 401 so the next call fetches a fresh one.
 */
export class TokenSource {
  private readonly client: AuthClient;
  private inflight: Promise<string> | undefined;

  constructor(o: ResolvedGmailOptions, agentFor: (url: URL) => Agent) {
    // the transporter of the token requests: our token URL, our agent, no retries (the engine decides)
    const transporter = new gaxios.Gaxios();
    transporter.interceptors.request.add({
      resolved: async (config) => {
        const url = config.url instanceof URL ? config.url.href : String(config.url);
        const target = new URL(url === GOOGLE_TOKEN_URL ? o.tokenUrl : url);
        config.url = target;
        config.agent = agentFor(target);
        config.retry = false;
        config.retryConfig = { retry: 0, noResponseRetries: 0, shouldRetry: async () => false };
        config.timeout = o.timeout;
        return config;
      },
    });
    // useAuthRequestParameters: false keeps the library's debug logging (which prints token bodies) out
    const common = { transporter, useAuthRequestParameters: false };
    if (o.auth.kind === 'oauth2') {
      const client = new OAuth2Client({
        ...common,
        clientId: o.auth.clientId,
        clientSecret: o.auth.clientSecret,
        endpoints: { oauth2TokenUrl: o.tokenUrl },
      });
      client.setCredentials({ refresh_token: o.auth.refreshToken });
      this.client = client;
    } else {
      this.client = new JWT({
        ...common,
        email: o.auth.clientEmail,
        key: o.auth.privateKey,
        ...(o.auth.privateKeyId ? { keyId: o.auth.privateKeyId } : {}),
        scopes: o.scopes,
        subject: o.auth.subject,
      });
    }
    // set after construction: the constructor ignores 0
    this.client.eagerRefreshThresholdMillis = o.refreshMargin;
  }

  /** A valid access token: the cached one, or a fresh one (one fetch shared by concurrent sends). */
  token(): Promise<string> {
    this.inflight ??= this.client
      .getAccessToken()
      .then((r) => {
        if (!r.token) throw new Error('the token endpoint answered without an access_token');
        return r.token;
      })
      .finally(() => {
        this.inflight = undefined;
      });
    return this.inflight;
  }

  /** Forgets the cached access token (the API refused it); the refresh token or key stays. */
  invalidate(): void {
    const refresh = this.client.credentials.refresh_token;
    this.client.credentials = { ...(refresh ? { refresh_token: refresh } : {}), expiry_date: 1 };
  }
}
