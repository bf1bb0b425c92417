# cmake -P script run by the example_standalone test (tests/packaging/example_standalone.cmake):
# examples/sample as a user gets it when copying the folder out of the tree — its own project,
# Tessera found with find_package in an installed tree — configured, built and run.
set(_root "${TESSERA_BINARY_DIR}/packaging/example_standalone")
set(_prefix "${_root}/install")
set(_build "${_root}/sample")

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
  message("${_out}")
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "example_standalone: ${what} failed (exit ${_rc})")
  endif()
endfunction()

file(REMOVE_RECURSE "${_root}")
run_step("cmake --install" ${CMAKE_COMMAND} --install "${TESSERA_BINARY_DIR}" --prefix "${_prefix}")
set(_launcher "")
set(_env "")
if(CCACHE_PROGRAM)
  set(_launcher "-DCMAKE_CXX_COMPILER_LAUNCHER=${CCACHE_PROGRAM}")
  set(_env ${CMAKE_COMMAND} -E env CCACHE_BASEDIR=${TESSERA_SOURCE_DIR} CCACHE_NOHASHDIR=true)
endif()
# Copied, as a user would: the folder must not reach outside itself.
file(COPY "${TESSERA_SOURCE_DIR}/examples/sample" DESTINATION "${_root}/source")
run_step("configuring examples/sample on its own"
         ${CMAKE_COMMAND} -S "${_root}/source/sample" -B "${_build}" -DCMAKE_BUILD_TYPE=Release
         -DCMAKE_CXX_COMPILER=${CXX_COMPILER} ${_launcher} -DCMAKE_PREFIX_PATH=${_prefix})
run_step("building examples/sample on its own" ${_env} ${CMAKE_COMMAND} --build "${_build}")
run_step("running it" "${_build}/example_sample"
         "${TESSERA_SOURCE_DIR}/models/var_fashion_mnist.safetensors" "${_build}/samples.png" 1)
