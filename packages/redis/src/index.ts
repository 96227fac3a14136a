export { type RedisStoreOptions, type ResolvedRedisOptions, resolveOptions } from './config.js';
export { RedisDeliveryLog } from './log.js';
export { RedisQueue } from './queue.js';
export { RedisRouteState } from './state.js';
export { type RedisStores, redisStores } from './stores.js';
export { RedisSuppressionList } from './suppression.js';
