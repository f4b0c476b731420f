/**
 * The part of a zod schema the public API promises. Our exported schemas are zod objects; typing
 * them this way keeps zod's internal types out of the documented surface.
 */
export interface Schema<T> {
  /** Parse or throw a zod error listing the failing fields. */
  parse(data: unknown): T;
  /** Parse without throwing. */
  safeParse(
    data: unknown,
  ):
    | { success: true; data: T }
    | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } };
}
