# Install this build into <build>/packaging/install, then configure, build and run
# examples/consumer/ as an outside project that finds it with find_package(tessera).
if(TESSERA_INSTALL)
  add_test(NAME packaging_consumer
           COMMAND ${CMAKE_COMMAND}
                   -DTESSERA_SOURCE_DIR=${PROJECT_SOURCE_DIR}
                   -DTESSERA_BINARY_DIR=${PROJECT_BINARY_DIR}
                   -DTESSERA_VERSION=${PROJECT_VERSION}
                   -DCXX_COMPILER=${CMAKE_CXX_COMPILER}
                   -DCCACHE_PROGRAM=${CCACHE_PROGRAM}
                   -P ${CMAKE_CURRENT_LIST_DIR}/scripts/consumer_test.cmake)
  set_tests_properties(packaging_consumer PROPERTIES LABELS packaging TIMEOUT 900)
endif()

# examples/consumer taking Tessera with FetchContent (a local checkout, no network): the project
# configures, tessera::tessera and the command are there, Tessera's tests, benchmarks and examples
# are not. Configure only: building would compile the library a second time (docs/install.md says
# how the full build was checked).
add_test(NAME packaging_fetchcontent
         COMMAND ${CMAKE_COMMAND}
                 -DTESSERA_SOURCE_DIR=${PROJECT_SOURCE_DIR}
                 -DTESSERA_BINARY_DIR=${PROJECT_BINARY_DIR}
                 -DCXX_COMPILER=${CMAKE_CXX_COMPILER}
                 -P ${CMAKE_CURRENT_LIST_DIR}/scripts/fetchcontent_test.cmake)
set_tests_properties(packaging_fetchcontent PROPERTIES LABELS packaging TIMEOUT 300)
