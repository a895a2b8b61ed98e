/* The artifact file's integrity trailer, shared by writers and the runtime.
 *
 * An artifact file is the flatbuffer followed by 12 bytes: the FNV-1a 64-bit
 * hash of the flatbuffer (little endian) and the magic "LSUM". The
 * flatbuffers verifier catches truncation and malformed tables, but not a
 * flipped byte that leaves a launch argument or an arena offset in range,
 * which would make a kernel write to the wrong place; the hash does. */
#ifndef LATHE_RUNTIME_ARTIFACT_CHECKSUM_H
#define LATHE_RUNTIME_ARTIFACT_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define LATHE_ARTIFACT_TRAILER_BYTES 12u

static inline uint64_t lathe_artifact_hash(const uint8_t *data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= data[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

/* Writes the trailer for the `size`-byte flatbuffer at `data` into `out`. */
static inline void lathe_artifact_trailer(const uint8_t *data, size_t size,
                                          uint8_t out[LATHE_ARTIFACT_TRAILER_BYTES]) {
  uint64_t h = lathe_artifact_hash(data, size);
  for (int i = 0; i < 8; ++i)
    out[i] = (uint8_t)(h >> (8 * i));
  memcpy(out + 8, "LSUM", 4);
}

/* True when the file of `size` bytes ends with a trailer that matches. */
static inline int lathe_artifact_trailer_ok(const uint8_t *data, size_t size) {
  if (size < LATHE_ARTIFACT_TRAILER_BYTES)
    return 0;
  size_t body = size - LATHE_ARTIFACT_TRAILER_BYTES;
  uint8_t want[LATHE_ARTIFACT_TRAILER_BYTES];
  lathe_artifact_trailer(data, body, want);
  return memcmp(want, data + body, LATHE_ARTIFACT_TRAILER_BYTES) == 0;
}

#endif /* LATHE_RUNTIME_ARTIFACT_CHECKSUM_H */
