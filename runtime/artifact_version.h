/* The artifact format version shared by the compiler (writer) and runtime. */
#ifndef LATHE_RUNTIME_ARTIFACT_VERSION_H
#define LATHE_RUNTIME_ARTIFACT_VERSION_H

/* Bump on any change that an older runtime would misread; the runtime only
 * accepts artifacts with exactly this version. */
/* 2: states (the KV cache), prefill/decode entries; Buffer.state was inserted
 * before Buffer.offset, which moves the field ids of version 1. */
/* 3: cuda artifacts have no emulated launch list; their cpu_library holds the
 * GPU kernels themselves (lathe-emulate-gpu), run from the launch list. */
/* 4: a cuda launch may be a GEMM library call (Launch.gemm). */
/* 5: a training pass may pack several sequences (Artifact.train_batch), so
 * the grad entries' length is no longer the window. */
#define LATHE_ARTIFACT_VERSION 5u

#endif /* LATHE_RUNTIME_ARTIFACT_VERSION_H */
