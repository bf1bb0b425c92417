# cmake -P script run by the packaging_fetchcontent test (tests/packaging/consumer.cmake).
set(TEST_NAME packaging_fetchcontent)
include("${CMAKE_CURRENT_LIST_DIR}/common.cmake")
set(_dir "${TESSERA_BINARY_DIR}/packaging/fetchcontent")
file(REMOVE_RECURSE "${_dir}")
run_step("configuring examples/consumer with FetchContent"
         ${CMAKE_COMMAND} -S "${TESSERA_SOURCE_DIR}/examples/consumer" -B "${_dir}"
         -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
         -DCONSUMER_FETCH_TESSERA=ON -DFETCHCONTENT_SOURCE_DIR_TESSERA=${TESSERA_SOURCE_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} --build "${_dir}" --target help
                RESULT_VARIABLE _rc OUTPUT_VARIABLE _targets ERROR_VARIABLE _targets)
foreach(_wanted consumer tessera tessera_cli)
  if(NOT _targets MATCHES "\\.\\.\\. ${_wanted}\n")
    message(FATAL_ERROR "packaging_fetchcontent: no target ${_wanted} in the FetchContent build:\n${_targets}")
  endif()
endforeach()
foreach(_unwanted tessera_core_tests attention_bench)
  if(_targets MATCHES "\\.\\.\\. ${_unwanted}\n")
    message(FATAL_ERROR "packaging_fetchcontent: ${_unwanted} is built in a sub-project; tests, "
                        "benchmarks and examples should default to off there")
  endif()
endforeach()
message("FetchContent: consumer, tessera and tessera_cli configured; no tests or benchmarks")
