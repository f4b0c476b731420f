/**
 * zod, pinned: the one place the library names it, with a full `npm:` specifier, so the modules
 * load by URL without an import map (the version matches deno.json's for the tools).
 *
 * @module
 */
export { z } from "npm:zod@4.6.7";
