import type { ErrorRule, FailureFacts } from '@mailvia/core';

/** The reply text on one line: Exim wraps long replies (`550-5.7.1 …\n550 5.7.1 …`). */
const oneLine = (f: FailureFacts) => (f.text ?? '').replace(/\s*\n\d{3}[ -](?:\d\.\d{1,3}\.\d{1,3}\s+)?/g, ' ');

/**
 * Classification rows for what a mailvia Exim relay answers, tried before core's generic rows.
 * Core already maps the relay's "relay not permitted" and a refused AUTH (535) to `misconfigured`.
 */
export const EXIM_ERROR_RULES: readonly ErrorRule[] = [
  {
    source: 'exim-relay',
    id: 'sender-not-allowed',
    kind: 'misconfigured',
    match: (f) =>
      f.smtpCode !== undefined && f.smtpCode >= 500 && /is not an allowed sender of organisation/i.test(oneLine(f)),
    meaning:
      "The relay refuses this sender for this organisation: send as one of the organisation's senders, or add it to the organisations file",
    reference: 'mailvia-exim generated ACL (acl_smtp_mail / acl_smtp_data)',
  },
  {
    source: 'exim-relay',
    id: 'auth-unavailable',
    kind: 'misconfigured',
    match: (f) => f.smtpCode === 435 || (f.smtpCode === 454 && /Temporary authentication failure/i.test(f.text ?? '')),
    meaning:
      'The relay could not check the credentials (its credentials file is missing or unreadable by the Exim user?): run mailvia-exim doctor',
    reference: 'Exim spec ch. 33 (authenticators: a deferred server_condition answers 435)',
  },
  {
    source: 'exim-relay',
    id: 'too-many-connections',
    kind: 'unavailable',
    match: (f) => f.smtpCode === 421 && /Too many concurrent SMTP connections/i.test(oneLine(f)),
    meaning: 'The relay has reached smtp_accept_max connections: lower maxConnections or raise the relay limit',
    reference: 'Exim spec: smtp_accept_max',
  },
  {
    source: 'exim-relay',
    id: 'loopback-only',
    kind: 'misconfigured',
    match: (f) => /serves loopback clients only/i.test(oneLine(f)),
    meaning: 'The relay accepts only clients on loopback: connect to it on 127.0.0.1 from the same machine',
    reference: 'mailvia-exim generated ACL (acl_smtp_connect)',
  },
];
