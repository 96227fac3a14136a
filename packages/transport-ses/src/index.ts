export type { SesCredentialProvider, SesCredentials, SesRouteOptions } from './config.js';
export { emailTags, sanitizeTag } from './convert.js';
export { SES_ERROR_RULES } from './errors.js';
export { sesRoute } from './route.js';
export { ses } from './transport.js';
export {
  normaliseSesNotification,
  type SesWebhookOptions,
  SNS_URL_PATTERN,
  type SnsMessage,
  sesWebhook,
  snsStringToSign,
} from './webhooks.js';
