export type { SesCredentialProvider, SesCredentials, SesRouteOptions } from './config.js';
export { emailTags, sanitizeTag } from './convert.js';
export { SES_ERROR_RULES } from './errors.js';
export { sesRoute } from './route.js';
export { ses } from './transport.js';
