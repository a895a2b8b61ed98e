# lit configuration for lathe: dialect, pass, importer, target, runtime and
# end-to-end tests. Test files mirror the source tree.
import os
import shutil

import lit.formats
from lit.llvm import llvm_config

config.name = "lathe"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test", ".yaml"]
config.excludes = ["reference", "inputs", "utils", "CMakeLists.txt", "lit.cfg.py",
                   "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.lathe_obj_root, "test")

llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.lathe_tools_dir, append_path=True)
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

# Debian's numpy belongs to /usr/bin/python3, not to whatever python3 is first
# on PATH.
config.substitutions.append(("%python", "/usr/bin/python3"))
config.substitutions.append(("%reference", os.path.join(config.test_source_root, "reference")))
# `%expect_exit N cmd...` passes only if cmd exits with exactly N (a crash
# never does): bad input must give exit code 1, not an abort.
config.substitutions.append(("%expect_exit", "/usr/bin/python3 " + os.path.join(config.test_source_root, "utils", "expect_exit.py")))
config.substitutions.append(("%examples", os.path.join(config.lathe_src_root, "examples")))

ptxas = shutil.which("ptxas") or (
    "/usr/local/cuda/bin/ptxas" if os.path.exists("/usr/local/cuda/bin/ptxas") else None)
if ptxas:
    config.available_features.add("ptxas")
    config.substitutions.append(("%ptxas", ptxas))
else:
    lit_config.note("ptxas not found: PTX assembly tests are UNSUPPORTED")

cuda_include = "/usr/local/cuda/include"
if os.path.exists(os.path.join(cuda_include, "cuda.h")):
    config.available_features.add("cuda-headers")
    config.substitutions.append(("%cuda_include", cuda_include))

# The toolkit's stub driver: links like libcuda.so, but cuInit fails with
# CUDA_ERROR_STUB_LIBRARY, which is what a machine without a GPU looks like.
cuda_stub = "/usr/local/cuda/lib64/stubs/libcuda.so"
if os.path.exists(cuda_stub):
    config.available_features.add("cuda-stub")
    config.substitutions.append(("%cuda_stub", cuda_stub))

tools = ["lathec", "lathe-opt", "lathe-run"]
llvm_config.add_tool_substitutions(tools, [config.lathe_tools_dir])
