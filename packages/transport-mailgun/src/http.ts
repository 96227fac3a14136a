import { type Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Interfaces, RequestProviderData } from 'mailgun.js/definitions';

type APIResponse = Awaited<ReturnType<Interfaces.IRequestProvider['makeRequest']>>;

/** How an HTTP exchange with Mailgun failed, before it is classified. */
export class HttpExchangeError extends Error {
  constructor(
    message: string,
    readonly facts: {
      /** The HTTP status, when Mailgun answered. */
      status?: number;
      headers?: IncomingHttpHeaders;
      /** The answer's body: parsed JSON, or the text as it came (Mailgun's 401 is plain `Forbidden`). */
      body?: unknown;
      /** A system or library code (`ECONNREFUSED`, `ETIMEDOUT`, `ABORT_ERR`). */
      code?: string;
      /** True when the whole request, body included, was written before the failure. */
      sent: boolean;
    },
  ) {
    super(message);
    this.name = 'HttpExchangeError';
  }
}

/** What the provider needs for its requests. */
export interface NodeHttpProviderOptions {
  apiKey: string;
  agent?: Agent;
  timeout: number;
  headers: Record<string, string>;
  signal?: AbortSignal;
}

/** Parses a body as JSON when it is JSON, else keeps the text. */
function parseBody(text: string, contentType: string | undefined): unknown {
  const t = text.trim();
  if (/json/i.test(contentType ?? '') || t.startsWith('{') || t.startsWith('[') || t.startsWith('"')) {
    try {
      return JSON.parse(t);
    } catch {
      // not JSON after all: keep the text
    }
  }
  return text;
}

/**
 * A `mailgun.js` request provider on `node:http(s)`: the library builds the form and the URL,
 * this sends it with the route's agent, timeout and abort signal, and tells a failure before the
 * request was written apart from one after (which `mailgun.js`'s own axios provider cannot: it
 * turns a refused connection into a 400 and drops the answer's headers).
 */
export class NodeHttpProvider implements Interfaces.IRequestProvider {
  private readonly headers: Record<string, string>;

  constructor(private readonly options: NodeHttpProviderOptions) {
    this.headers = { ...options.headers };
  }

  setSubAccountHeader(subAccountId: string): void {
    this.headers['X-Mailgun-On-Behalf-Of'] = subAccountId;
  }

  resetSubAccountHeader(): void {
    delete this.headers['X-Mailgun-On-Behalf-Of'];
  }

  async makeRequest(url: string, method: string, data: unknown): Promise<APIResponse> {
    const { params, data: payload } = (data ?? {}) as RequestProviderData;
    const target = new URL(url);
    if (params) for (const [k, v] of new URLSearchParams(params)) target.searchParams.append(k, v);
    let body: Buffer | undefined;
    let contentType: string | undefined;
    if (payload instanceof FormData) {
      const encoded = new Response(payload);
      body = Buffer.from(await encoded.arrayBuffer());
      contentType = encoded.headers.get('content-type') ?? undefined;
    } else if (typeof payload === 'string') {
      body = Buffer.from(payload);
      contentType = 'application/x-www-form-urlencoded';
    } else if (payload !== undefined && payload !== null) {
      body = Buffer.from(JSON.stringify(payload));
      contentType = 'application/json';
    }
    const { apiKey, agent, timeout, signal } = this.options;
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<APIResponse>((resolve, reject) => {
      const req = send(
        target,
        {
          method,
          ...(agent ? { agent } : {}),
          ...(signal ? { signal } : {}),
          timeout,
          headers: {
            ...this.headers,
            Authorization: `Basic ${Buffer.from(`api:${apiKey}`).toString('base64')}`,
            Accept: 'application/json',
            'User-Agent': 'mailvia-transport-mailgun',
            ...(contentType ? { 'Content-Type': contentType } : {}),
            ...(body ? { 'Content-Length': String(body.length) } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err: Error & { code?: string }) =>
            reject(new HttpExchangeError(err.message, { code: err.code ?? 'ECONNRESET', sent: true })),
          );
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            const parsed = parseBody(Buffer.concat(chunks).toString('utf8'), res.headers['content-type']);
            if (status >= 200 && status < 300) return resolve({ status, body: parsed });
            reject(
              new HttpExchangeError(`HTTP ${status} ${res.statusMessage ?? ''}`.trim(), {
                status,
                headers: res.headers,
                body: parsed,
                sent: true,
              }),
            );
          });
        },
      );
      req.on('timeout', () => {
        req.destroy(Object.assign(new Error(`no activity for ${timeout} ms`), { code: 'ETIMEDOUT' }));
      });
      req.on('error', (err: Error & { code?: string }) => {
        reject(
          new HttpExchangeError(err.message, { ...(err.code ? { code: err.code } : {}), sent: req.writableFinished }),
        );
      });
      req.end(body);
    });
  }
}
