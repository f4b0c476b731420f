/**
 * The reproduction grid: configs (profiles, zod-validated), the run plan and shards, the
 * train → evaluate pipelines, the runner (resumable runs, one report per run, claimed so that
 * processes can share an output folder), the run report schema and the aggregation the pages show.
 *
 * @module
 */
export {
  type ChoiceAccuracy,
  type ExpressivenessReport,
  ExpressivenessReportSchema,
  type ExpressivenessRow,
  parseReportText,
  parseRunReport,
  parseSelfCheckReport,
  type ReportSchema,
  type RunReport,
  RunReportSchema,
  type SelfCheckReport,
  SelfCheckReportSchema,
  type SelfCheckRow,
  SelfCheckRowSchema,
  type TaskAccuracy,
} from "./schema.ts";
export {
  canonicalJson,
  checkContext,
  FAMILIES,
  type Family,
  type GridConfig,
  GridConfigSchema,
  type GridTrainOptions,
  parseGridConfig,
  parseShard,
  planGrid,
  type PlannedRun,
  profile,
  type ProfileName,
  PROFILES,
  runConfig,
  sha256,
  shardRuns,
} from "./config.ts";
export {
  type ConfigRow,
  configRows,
  type MetricSpec,
  noiseVerdicts,
  type SeedStat,
} from "./aggregate.ts";
export {
  executeRun,
  finishedReport,
  type LoadedModel,
  loadGridModel,
  type RunOptions,
  type RunOutcome,
} from "./runner.ts";
export {
  CLAIM_FILE,
  type ClaimResult,
  claimRun,
  type RunClaim,
  tempPath,
  writeFileAtomic,
} from "./claim.ts";
export {
  collectReports,
  type GridRow,
  gridRows,
  mergeShards,
  writeGridSummary,
} from "./summary.ts";
export {
  type CommonsenseRun,
  commonsenseTrainRecords,
  evaluateHeldOut,
  type InstructionRun,
  runCommonsense,
  runInstructionTuning,
  runMmlu,
  toExamples,
} from "./pipeline.ts";
