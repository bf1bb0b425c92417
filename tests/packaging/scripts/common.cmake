# Shared by the packaging test scripts (cmake -P): run a step and fail naming it, install this
# build into a fresh prefix, and the options that build an outside project like this build does.
# Expects TESSERA_SOURCE_DIR, TESSERA_BINARY_DIR, CXX_COMPILER, CCACHE_PROGRAM and TEST_NAME.

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
  message("${_out}")
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "${TEST_NAME}: ${what} failed (exit ${_rc})")
  endif()
endfunction()

# A fresh prefix each time: a header removed from the tree must not linger in the installed one.
function(install_tessera prefix)
  file(REMOVE_RECURSE "${prefix}")
  run_step("cmake --install" ${CMAKE_COMMAND} --install "${TESSERA_BINARY_DIR}" --prefix "${prefix}")
endfunction()

# OUTSIDE_CONFIGURE_OPTIONS: the same compiler as this build, with ccache when this build has it.
# OUTSIDE_BUILD_ENV: ccache's base is the source root, so that clones of the repository share the
# outside project's objects.
set(OUTSIDE_CONFIGURE_OPTIONS -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
set(OUTSIDE_BUILD_ENV "")
if(CCACHE_PROGRAM)
  list(APPEND OUTSIDE_CONFIGURE_OPTIONS "-DCMAKE_CXX_COMPILER_LAUNCHER=${CCACHE_PROGRAM}")
  set(OUTSIDE_BUILD_ENV ${CMAKE_COMMAND} -E env CCACHE_BASEDIR=${TESSERA_SOURCE_DIR}
                        CCACHE_NOHASHDIR=true)
endif()
