# cmake -P script run by the packaging_consumer test (tests/packaging/consumer.cmake).
set(_root "${TESSERA_BINARY_DIR}/packaging")
set(_prefix "${_root}/install")
set(_consumer "${_root}/consumer")

set(TEST_NAME packaging_consumer)
include("${CMAKE_CURRENT_LIST_DIR}/common.cmake")
install_tessera("${_prefix}")
foreach(_installed include/tessera/version.h include/tessera/attention/attention.h
                   lib/cmake/tessera/tesseraConfig.cmake lib/cmake/tessera/tesseraConfigVersion.cmake
                   bin/tessera)
  if(NOT EXISTS "${_prefix}/${_installed}")
    message(FATAL_ERROR "packaging_consumer: the install lacks ${_installed}")
  endif()
endforeach()

run_step("configuring examples/consumer"
         ${CMAKE_COMMAND} -S "${TESSERA_SOURCE_DIR}/examples/consumer" -B "${_consumer}"
         ${OUTSIDE_CONFIGURE_OPTIONS} -DCMAKE_PREFIX_PATH=${_prefix})
run_step("building examples/consumer" ${OUTSIDE_BUILD_ENV} ${CMAKE_COMMAND} --build "${_consumer}")
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
