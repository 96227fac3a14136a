export { type SocksAgentOptions, socksAgent } from './agent.js';
export { type ResolvedProxy, resolveProxy, type SocksProxy, type SocksProxyOptions } from './config.js';
export { type SocksConnectOptions, type SocksConnector, type SocksTarget, socksConnect } from './connect.js';
export { SOCKS_CODES, socksErrorCode, socksErrorRules } from './errors.js';
export { type SocksRouteConfig, socksRoute, socksRoutes, socksSmtpRoute } from './routes.js';
export { createSocksTransport, type SocksTransportOptions } from './transport.js';
