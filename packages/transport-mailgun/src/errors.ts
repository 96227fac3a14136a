import type { ErrorRule } from '@mailvia/core';

const RESPONSES = 'https://documentation.mailgun.com/docs/mailgun/quickstart-guide/responses';

/** The error code a route gives a 2xx answer that is not the messages API's JSON. */
export const NOT_THE_API = 'ENOTAPI';

/**
 * How Mailgun's API answers map to failure kinds (from shared/reference/error-classes.json,
 * sources `mailgun-api`). Tried before core's generic HTTP rows.
 */
export const MAILGUN_API_RULES: readonly ErrorRule[] = [
  {
    source: 'mailgun-api',
    id: 'forbidden',
    kind: 'misconfigured',
    match: (f) => f.httpStatus === 401,
    meaning:
      'Mailgun refused the API key: a wrong or revoked key, or a key of the other region (a US key on api.eu.mailgun.net, or the reverse). Not transient',
    reference: 'github mailgun/mailgun.js#393 ; github mailgun/mailgun-js-boland#268',
  },
  {
    source: 'mailgun-api',
    id: 'access-denied',
    kind: 'misconfigured',
    match: (f) => f.httpStatus === 403,
    meaning: 'Access denied (e.g. a sandbox domain sending to a recipient that is not authorised)',
    reference: `${RESPONSES} ; https://help.mailgun.com/hc/en-us/articles/217531258-Authorized-Recipients`,
  },
  {
    source: 'mailgun-api',
    id: 'domain-not-found',
    kind: 'misconfigured',
    match: (f) => f.httpStatus === 404,
    meaning: 'The sending domain is not found in this account (or in this region)',
    reference: RESPONSES,
  },
  {
    source: 'mailgun-api',
    id: 'bad-request',
    kind: 'refused',
    match: (f) => f.httpStatus === 400,
    meaning: 'Mailgun refused the message as invalid (see its message); it is not sent unchanged',
    reference: RESPONSES,
  },
  {
    source: 'mailgun-api',
    id: 'rate-limit',
    kind: 'limited',
    match: (f) => f.httpStatus === 429,
    meaning: 'Mailgun rate limit reached: back off',
    reference: RESPONSES,
  },
  {
    source: 'mailgun-api',
    id: 'server-error',
    kind: 'unavailable',
    match: (f) => f.httpStatus !== undefined && f.httpStatus >= 500,
    meaning: 'Mailgun is failing or unavailable: another route may serve now',
    reference: RESPONSES,
  },
  {
    source: 'mailgun-api',
    id: 'not-the-api',
    kind: 'misconfigured',
    match: (f) => f.errorCode === NOT_THE_API,
    meaning: "The base URL answered, but not as Mailgun's messages API: check baseUrl / region",
    reference: RESPONSES,
  },
];
