import { storeConformance } from '@mailvia/core/testing';
import { beforeAll } from 'vitest';
import { freshStores, requireRedis } from './helpers.js';

beforeAll(() => requireRedis());

storeConformance({ name: 'redis', create: () => freshStores() });
