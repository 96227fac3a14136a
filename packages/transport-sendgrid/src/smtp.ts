import { smtp, type Transport } from '@mailvia/core';
import { resolveSmtpConfig, type SendgridSmtpOptions } from './config.js';
import { SENDGRID_SMTP_RULES } from './errors.js';

/**
 * A route that sends through SendGrid's SMTP relay: core's `smtp()` route to
 * `smtp.sendgrid.net`, user `apikey`, the API key as password, on port 2525 unless told
 * otherwise (STARTTLS required). SendGrid's replies (e.g. `451 Authentication failed: Maximum
 * credits exceeded`) are classified with {@link SENDGRID_SMTP_RULES}.
 *
 * @example
 * ```ts
 * const route = sendgridSmtp({ apiKey: process.env.SENDGRID_API_KEY! }); // smtp.sendgrid.net:2525
 * ```
 */
export function sendgridSmtp(options: SendgridSmtpOptions): Transport {
  const config = resolveSmtpConfig(options);
  return smtp({ ...config, rules: [...(config.rules ?? []), ...SENDGRID_SMTP_RULES] });
}
