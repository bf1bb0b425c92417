# cmake -P script run by the packaging_consumer test (tests/packaging/consumer.cmake).
set(_root "${TESSERA_BINARY_DIR}/packaging")
set(_prefix "${_root}/install")
set(_consumer "${_root}/consumer")

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
  message("${_out}")
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "packaging_consumer: ${what} failed (exit ${_rc})")
  endif()
endfunction()

# A fresh prefix each time: a header removed from the tree must not linger in the installed one.
file(REMOVE_RECURSE "${_prefix}")
run_step("cmake --install" ${CMAKE_COMMAND} --install "${TESSERA_BINARY_DIR}" --prefix "${_prefix}")
foreach(_installed include/tessera/version.h include/tessera/attention/attention.h
                   lib/cmake/tessera/tesseraConfig.cmake lib/cmake/tessera/tesseraConfigVersion.cmake
                   bin/tessera)
  if(NOT EXISTS "${_prefix}/${_installed}")
    message(FATAL_ERROR "packaging_consumer: the install lacks ${_installed}")
  endif()
endforeach()

# Same compiler as this build; ccache with the source root as its base, so that clones of the
# repository share the consumer's object.
set(_launcher "")
set(_env "")
if(CCACHE_PROGRAM)
  set(_launcher "-DCMAKE_CXX_COMPILER_LAUNCHER=${CCACHE_PROGRAM}")
  set(_env ${CMAKE_COMMAND} -E env CCACHE_BASEDIR=${TESSERA_SOURCE_DIR} CCACHE_NOHASHDIR=true)
endif()
run_step("configuring examples/consumer"
         ${CMAKE_COMMAND} -S "${TESSERA_SOURCE_DIR}/examples/consumer" -B "${_consumer}"
         -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=${CXX_COMPILER} ${_launcher}
         -DCMAKE_PREFIX_PATH=${_prefix})
run_step("building examples/consumer" ${_env} ${CMAKE_COMMAND} --build "${_consumer}")
run_step("running the consumer" "${_consumer}/consumer" "${_consumer}")
# The installed command runs from the prefix (its RPATH finds the installed library and LibTorch).
execute_process(COMMAND "${_prefix}/bin/tessera" --version RESULT_VARIABLE _rc OUTPUT_VARIABLE _version
                ERROR_VARIABLE _version)
string(STRIP "${_version}" _version)
if(NOT _rc EQUAL 0 OR NOT _version STREQUAL "tessera ${TESSERA_VERSION}")
  message(FATAL_ERROR "packaging_consumer: the installed tessera --version said '${_version}' "
                      "(exit ${_rc}), expected 'tessera ${TESSERA_VERSION}'")
endif()
message("installed command: ${_version}")

# A consumer asking for a version this is not compatible with is refused at configure time.
execute_process(COMMAND ${CMAKE_COMMAND} -S "${TESSERA_SOURCE_DIR}/examples/consumer"
                        -B "${_root}/consumer-wrong-version" -DCONSUMER_TESSERA_VERSION=99.0
                        -DCMAKE_PREFIX_PATH=${_prefix}
                RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
if(_rc EQUAL 0 OR NOT _out MATCHES "tessera")
  message(FATAL_ERROR "packaging_consumer: find_package(tessera 99.0) was accepted:\n${_out}")
endif()
