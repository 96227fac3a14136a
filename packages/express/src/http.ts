import type { IncomingMessage, ServerResponse } from 'node:http';
import { MailError } from '@mailvia/core';
import type { NextFunction, Request, Response } from 'express';
import { MailviaHttpError, toHttpError } from './errors.js';

/**
 * Small HTTP helpers on the request/response API that Express 4 and 5 share. The handlers of this
 * package route by themselves (no `express.Router`), so they behave the same under both versions
 * and need no runtime import of `express`.
 */

/** The path of the request below the mount point, and its query. */
export function requestUrl(req: Request): URL {
  // req.url is relative to the mount point in Express 4 and 5.
  return new URL(req.url || '/', 'http://mailvia.invalid');
}

/** The path segments below the mount point, percent-decoded. */
export function pathSegments(req: Request): string[] {
  const path = requestUrl(req).pathname;
  try {
    return path
      .split('/')
      .filter((s) => s !== '')
      .map((s) => decodeURIComponent(s));
  } catch {
    throw new MailviaHttpError('bad_request', 'The path is not valid percent-encoding.');
  }
}

/** Matches segments against a pattern such as `['organisations', ':org', 'health']`. */
export function match(segments: readonly string[], pattern: readonly string[]): Record<string, string> | undefined {
  if (segments.length !== pattern.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    const s = segments[i]!;
    if (p.startsWith(':')) params[p.slice(1)] = s;
    else if (p !== s) return undefined;
  }
  return params;
}

/** Security headers sent with every answer of this package. */
export function baseHeaders(res: ServerResponse): void {
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Referrer-Policy', 'no-referrer');
}

/** Sends a JSON answer. */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  baseHeaders(res);
  const text = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}

/**
 * Answers a known error as JSON; hands an unexpected one to Express (`next(err)`) so the
 * application's error handler logs it.
 */
export function fail(res: Response, next: NextFunction, err: unknown): void {
  const known = err instanceof MailviaHttpError || MailError.isInstance(err);
  if (!known) {
    next(err);
    return;
  }
  const e = toHttpError(err);
  if (res.headersSent) {
    res.end();
    return;
  }
  if (e.code === 'method_not_allowed' && e.details?.allow) res.setHeader('Allow', String(e.details.allow));
  sendJson(res, e.statusCode, e.toJSON());
}

/** True when something before us (a body parser) already read the request body. */
export function bodyConsumed(req: IncomingMessage): boolean {
  const r = req as IncomingMessage & { _body?: boolean };
  return r._body === true || r.readableEnded || (r.complete && !r.readable);
}

/** Reads the request body (at most `limit` bytes) as a Buffer. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      reject(new MailviaHttpError('payload_too_large', `The body is larger than ${limit} bytes.`));
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const onData = (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        done = true;
        cleanup();
        req.resume();
        reject(new MailviaHttpError('payload_too_large', `The body is larger than ${limit} bytes.`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      if (done) return;
      done = true;
      cleanup();
      resolve(Buffer.concat(chunks));
    };
    const onError = (err: Error) => {
      if (done) return;
      done = true;
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

/**
 * The JSON body of a request: the one a body parser already made (`req.body`), or read here.
 * Empty body → `{}`.
 */
export async function jsonBody(req: Request, limit = 1_000_000): Promise<Record<string, unknown>> {
  const existing: unknown = req.body;
  if (bodyConsumed(req)) {
    if (existing && typeof existing === 'object' && !Buffer.isBuffer(existing))
      return existing as Record<string, unknown>;
    if (Buffer.isBuffer(existing)) return parseJsonObject(existing.toString('utf8'));
    if (typeof existing === 'string') return parseJsonObject(existing);
    return {};
  }
  const raw = await readBody(req, limit);
  if (raw.length === 0) return {};
  return parseJsonObject(raw.toString('utf8'));
}

function parseJsonObject(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new MailviaHttpError('bad_request', 'The body is not valid JSON.');
  }
  if (!value || typeof value !== 'object' || Array.isArray(value))
    throw new MailviaHttpError('bad_request', 'The body must be a JSON object.');
  return value as Record<string, unknown>;
}

/** Runs an async handler, sending known errors as JSON. */
export function handle(
  fn: (req: Request, res: Response, next: NextFunction) => Promise<void>,
): (req: Request, res: Response, next: NextFunction) => void {
  return (req, res, next) => {
    fn(req, res, next).catch((err: unknown) => fail(res, next, err));
  };
}
