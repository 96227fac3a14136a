export type { GmailApiRouteOptions, GmailOAuth2Credentials, GmailServiceAccount } from './config.js';
export { GMAIL_SEND_SCOPE } from './config.js';
export { GMAIL_ERROR_RULES, needsReconsent } from './errors.js';
export { gmailApiRoute, maskGmailUrl } from './route.js';
export { gmailApi } from './transport.js';
