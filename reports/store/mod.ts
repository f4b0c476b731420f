/**
 * Report stores: one interface ({@link ReportStore}) over the reports folder and Deno KV.
 *
 * @module
 */
export {
  canonicalJson,
  CURVE_POINTS,
  downsampleCurve,
  type InvalidEntry,
  isRunId,
  type Listing,
  MAX_ADAPTER_BYTES,
  MAX_ID_LENGTH,
  MAX_REPORT_BYTES,
  type PutResult,
  type ReportStore,
  RUN_ID,
  type RunSummary,
  summarize,
  validateReport,
} from "./store.ts";
export { FolderStore, type FolderStoreOptions, openFolderStore } from "./folder.ts";
export { KvStore, openKvStore } from "./kv.ts";
