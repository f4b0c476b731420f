/**
 * yaml, pinned: YAML 1.2 parsing (multi-document files, duplicate keys rejected) for the
 * Kubernetes manifest test.
 *
 * @module
 */
export { parseAllDocuments } from "npm:yaml@2.9.1";
