export type { EximRouteOptions, ResolvedEximRouteOptions } from './config.js';
export { resolveEximOptions } from './config.js';
export { cryptSalt, sha512Crypt } from './crypt.js';
export {
  type DoctorCheck,
  type DoctorOptions,
  type DoctorReport,
  doctorExitCode,
  formatDoctorReport,
  runDoctor,
} from './doctor.js';
export {
  type EximCommandOptions,
  type EximResult,
  type EximVersion,
  eximCheckConfig,
  eximOptions,
  findExim,
  parseEximVersion,
  runExim,
} from './exim.js';
export {
  GENERATED_MARKER,
  type GeneratedFile,
  type GeneratedRelay,
  generateRelay,
  type RelayConfigOptions,
  type RelayTarget,
} from './generate.js';
export {
  type InstalledFile,
  type InstallRelayOptions,
  type InstallReport,
  installRelay,
  RelayValidationError,
} from './install.js';
export {
  type Diagnosis,
  diagnose,
  diagnoseAttempt,
  type EximLogLine,
  LOG_DIAGNOSES,
  mainLogPath,
  parseLogLine,
  readLogTail,
} from './logs.js';
export {
  loadOrganisations,
  OrganisationsError,
  parseOrganisationsText,
  type RelayOrganisation,
  type RelayOrganisationInput,
  type SecretInput,
  type ValidateOrganisationsOptions,
  validateOrganisations,
} from './organisations.js';
export { listQueue, parseQueue, type QueuedMessage } from './queue.js';
export { EXIM_ERROR_RULES } from './rules.js';
export {
  type RelayRecipientStatus,
  type RelayStatus,
  type RelayStatusOptions,
  relayStatus,
  statusFromLog,
} from './status.js';
export { type EximTransport, exim, eximRoute } from './transport.js';
