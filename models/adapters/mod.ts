/** Adapters in one import: the interface, the registry and the five families. */
export * from "./adapter.ts";
export * from "./registry.ts";
