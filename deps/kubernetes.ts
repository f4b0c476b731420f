/**
 * Kubernetes schemas, pinned: `kubernetes-models` (npm), whose validators are generated from the
 * Kubernetes OpenAPI schema (types, enums, required fields and formats of every built-in kind,
 * Job's `backoffLimitPerIndex`, `podFailurePolicy` and `podReplacementPolicy` included), run under
 * Deno as plain ES modules. Chosen over `kubernetes-types` (TypeScript types only: nothing to
 * run on parsed YAML) and the JSON-schema collections (not on the npm registry). The OpenAPI
 * schema does not forbid unknown fields, which the API server rejects (strict field validation),
 * so the manifest test adds that check on top of these validators. Used by the manifest test of
 * deploy/kubernetes/ only; the library never loads it.
 *
 * @module
 */
export { runValidateFunc, type ValidateFunc } from "npm:@kubernetes-models/validate@5.0.2";
// One schema validator per kind that deploy/kubernetes/ uses (`validate(doc)`: boolean, `.errors`).
export { validate as validateJob } from "npm:kubernetes-models@5.1.0/_schemas/IoK8sApiBatchV1Job";
export { validate as validateDeployment } from "npm:kubernetes-models@5.1.0/_schemas/IoK8sApiAppsV1Deployment";
export { validate as validateService } from "npm:kubernetes-models@5.1.0/_schemas/IoK8sApiCoreV1Service";
export { validate as validateSecret } from "npm:kubernetes-models@5.1.0/_schemas/IoK8sApiCoreV1Secret";
export { validate as validatePersistentVolumeClaim } from "npm:kubernetes-models@5.1.0/_schemas/IoK8sApiCoreV1PersistentVolumeClaim";
