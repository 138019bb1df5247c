/**
 * Errors as one line of text, for logs and the one-line failures users see.
 *
 * @module
 */

/** An error's message (anything thrown, as text). */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
