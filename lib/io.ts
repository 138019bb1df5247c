/**
 * Writing to files and standard streams.
 *
 * @module
 */

/** Writes all of `bytes` to a file, looping over short writes. */
export function writeAllSync(
  file: { writeSync(p: Uint8Array): number },
  bytes: Uint8Array,
) {
  let written = 0;
  while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
}
