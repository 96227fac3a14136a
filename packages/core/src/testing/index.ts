export { type ConformanceMail, type ConformanceOptions, transportConformance } from './conformance.js';
export {
  type Cutter,
  type FaultProxy,
  type FaultProxyOptions,
  type HttpExchange,
  type HttpPeer,
  type Prism,
  type PrismLocation,
  type PrismOptions,
  type ProxyAction,
  prismBin,
  type RecordedRequest,
  reply,
  startCutter,
  startFaultProxy,
  startHttpPeer,
  startPrism,
} from './http.js';
export { type HttpFailureConformanceOptions, httpFailureConformance } from './http-conformance.js';
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
