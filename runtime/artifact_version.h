/* The artifact format version shared by the compiler (writer) and runtime. */
#ifndef LATHE_RUNTIME_ARTIFACT_VERSION_H
#define LATHE_RUNTIME_ARTIFACT_VERSION_H

/* Bump on any change that an older runtime would misread; the runtime only
 * accepts artifacts with exactly this version. */
#define LATHE_ARTIFACT_VERSION 1u

#endif /* LATHE_RUNTIME_ARTIFACT_VERSION_H */
