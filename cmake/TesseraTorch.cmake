# Finds LibTorch. Order of precedence:
#   1. the user's own LibTorch: -DTorch_DIR=... or a CMAKE_PREFIX_PATH that holds TorchConfig.cmake;
#   2. the project venv made by scripts/bootstrap (TESSERA_VENV, or the per-user cache default).
# The venv's torch wheel carries headers, libraries and TorchConfig.cmake.

set(TESSERA_TORCH_VERSION "2.11.0" CACHE STRING "torch version the bootstrap venv holds")

# Caffe2Config otherwise compiles and runs a probe to detect installed GPUs at configure time.
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0a")
endif()
# `pip install .` (scikit-build-core, SKBUILD): the LibTorch of the torch beside which the package
# is installed, i.e. the one the building Python imports (docs/python.md).
if(SKBUILD AND NOT DEFINED Torch_DIR)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _tessera_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _status)
  if(NOT _status EQUAL 0)
    message(FATAL_ERROR "Tessera's Python package builds against the installed torch, but "
                        "${Python_EXECUTABLE} cannot import torch: pip install torch==${TESSERA_TORCH_VERSION} "
                        "first, then pip install --no-build-isolation . (docs/python.md)")
  endif()
  list(PREPEND CMAKE_PREFIX_PATH "${_tessera_torch_prefix}")
endif()
find_package(Torch QUIET CONFIG)
if(NOT Torch_FOUND)
  if(DEFINED ENV{TESSERA_VENV})
    set(_tessera_venv "$ENV{TESSERA_VENV}")
  elseif(DEFINED ENV{XDG_CACHE_HOME})
    set(_tessera_venv "$ENV{XDG_CACHE_HOME}/tessera/venv-torch-${TESSERA_TORCH_VERSION}")
  else()
    set(_tessera_venv "$ENV{HOME}/.cache/tessera/venv-torch-${TESSERA_TORCH_VERSION}")
  endif()
  file(GLOB _tessera_torch_cmake "${_tessera_venv}/lib/python3*/site-packages/torch/share/cmake")
  if(NOT _tessera_torch_cmake)
    message(FATAL_ERROR
      "LibTorch not found. Run scripts/bootstrap (it installs torch==${TESSERA_TORCH_VERSION} into "
      "${_tessera_venv}), or pass -DTorch_DIR=<libtorch>/share/cmake/Torch.")
  endif()
  list(GET _tessera_torch_cmake 0 _tessera_torch_cmake)
  find_package(Torch REQUIRED CONFIG PATHS "${_tessera_torch_cmake}" NO_DEFAULT_PATH)
endif()
message(STATUS "Tessera: LibTorch ${Torch_VERSION} from ${Torch_DIR}")
