/**
 * Hono, pinned: the one place the library names it, with a full `npm:` specifier, so the modules
 * load by URL without an import map.
 *
 * @module
 */
export { Hono } from "npm:hono@4.13.19";
export { HTTPException } from "npm:hono@4.13.19/http-exception";
export { timeout } from "npm:hono@4.13.19/timeout";
