export { type ConformanceMail, type ConformanceOptions, transportConformance } from './conformance.js';
export {
  freePort,
  type ReceivedMail,
  refusedPort,
  type SinkAction,
  type SinkReply,
  type SinkStage,
  type SmtpSink,
  type SmtpSinkOptions,
  startSilentListener,
  startSmtpSink,
  type TestCertificate,
  testCertificate,
} from './peers.js';
export { type StoreConformanceOptions, type StoreSet, storeConformance } from './stores.js';
