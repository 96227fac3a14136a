import { MailError, WebhookRefusal } from '@mailvia/core';
import type { ErrorRequestHandler } from 'express';

/** Where every error code of this package is explained. */
export const ERROR_HELP_URL = 'https://www.npmjs.com/package/@mailvia/express#error-codes';

/**
 * The stable codes of the JSON errors this package answers with. A client may switch on them;
 * the message next to a code may change between versions, the code does not.
 */
export const HTTP_ERROR_CODES = {
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  conflict: 409,
  resend_unavailable: 409,
  bad_request: 400,
  invalid_message: 422,
  no_organisation: 400,
  unknown_organisation: 404,
  delivery_failed: 502,
  not_supported: 501,
  payload_too_large: 413,
  internal: 500,
  webhook_unknown_provider: 404,
  webhook_unknown_organisation: 404,
  webhook_malformed: 400,
  webhook_signature_invalid: 401,
  webhook_stale: 401,
  webhook_replayed: 409,
  webhook_topic_not_allowed: 403,
  webhook_subscription_refused: 403,
  webhook_body_already_parsed: 500,
} as const;

/** One of {@link HTTP_ERROR_CODES}. */
export type HttpErrorCode = keyof typeof HTTP_ERROR_CODES;

/** The body of every error answer: `{ error: { code, message, help, … } }`. */
export interface HttpErrorBody {
  error: {
    code: HttpErrorCode;
    message: string;
    /** A link to the explanation of the code. */
    help: string;
    /** Facts that help, e.g. the field of an invalid message or the kind of a failed delivery. */
    details?: Record<string, unknown>;
  };
}

/**
 * An error this package answers with as JSON. Never carries a secret: messages are written here,
 * not copied from a request.
 */
export class MailviaHttpError extends Error {
  readonly code: HttpErrorCode;
  /** The HTTP status sent with it. */
  readonly statusCode: number;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: HttpErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'MailviaHttpError';
    this.code = code;
    this.statusCode = HTTP_ERROR_CODES[code];
    this.details = details;
  }

  toJSON(): HttpErrorBody {
    return {
      error: {
        code: this.code,
        message: this.message,
        help: `${ERROR_HELP_URL}`,
        ...(this.details ? { details: this.details } : {}),
      },
    };
  }
}

/**
 * Raised by `req.mail.send()` / `enqueue()` when the request has no organisation: Mailvia never
 * falls back to another account. A {@link MailError} of kind `misconfigured`, code `ENOORGANISATION`.
 */
export class NoOrganisationError extends MailError {
  constructor() {
    super(
      "This request has no organisation: the mailvia() middleware's organisation(req) found none, so nothing was sent (Mailvia never sends with another organisation's account).",
      { kind: 'misconfigured', phase: 'validate', code: 'ENOORGANISATION' },
    );
    this.name = 'NoOrganisationError';
  }
}

/** Raised at setup time for options that cannot work (a missing `authorize`, a page in production). */
export class MailviaSetupError extends TypeError {
  /** The option at fault. */
  readonly option: string;
  constructor(option: string, problem: string) {
    super(`@mailvia/express: ${option}: ${problem}`);
    this.name = 'MailviaSetupError';
    this.option = option;
  }
}

/** Turns anything thrown while answering into a {@link MailviaHttpError}. */
export function toHttpError(err: unknown): MailviaHttpError {
  if (err instanceof MailviaHttpError) return err;
  if (WebhookRefusal.isInstance(err)) return new MailviaHttpError(err.code, err.message);
  if (MailError.isInstance(err)) {
    if (err.code === 'EINVALID' && err.phase === 'validate') {
      const field = (err as MailError & { field?: string }).field;
      return new MailviaHttpError('invalid_message', err.message, field ? { field } : undefined);
    }
    if (err.code === 'ENOORGANISATION') return new MailviaHttpError('no_organisation', err.message);
    if (err.code === 'EROUTECONFIG' && /organisation/.test(err.message)) {
      return new MailviaHttpError('unknown_organisation', err.message);
    }
    return new MailviaHttpError('delivery_failed', err.message, {
      kind: err.kind,
      phase: err.phase,
      ...(err.route !== undefined ? { route: err.route } : {}),
      ...(err.code !== undefined ? { providerCode: err.code } : {}),
      ...('attempts' in err ? { attempts: (err as MailError & { attempts: unknown }).attempts } : {}),
    });
  }
  return new MailviaHttpError('internal', 'An unexpected error happened; see the server log.');
}

/**
 * An Express error handler for what `req.mail` raises: a request without an organisation
 * (`400 no_organisation`), a message refused at the door (`422 invalid_message`, naming the
 * field) and a failed delivery (`502 delivery_failed`, with the kind and every attempt) are
 * answered as JSON errors with a stable code; anything else goes on to the next error handler.
 *
 * @example
 * ```ts
 * app.use(mailviaErrorHandler());
 * ```
 */
export function mailviaErrorHandler(): ErrorRequestHandler {
  return (err, _req, res, next) => {
    if (!(err instanceof MailviaHttpError) && !MailError.isInstance(err) && !WebhookRefusal.isInstance(err)) {
      next(err);
      return;
    }
    if (res.headersSent) {
      next(err);
      return;
    }
    const e = toHttpError(err);
    res.status(e.statusCode).json(e.toJSON());
  };
}
