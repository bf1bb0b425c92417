# examples/sample copied out of the tree and built against the installed package, as its
# CMakeLists.txt tells users to (every example folder is written the same way).
if(TESSERA_INSTALL AND TARGET example_sample)
  add_test(NAME example_standalone
           COMMAND ${CMAKE_COMMAND}
                   -DTESSERA_SOURCE_DIR=${PROJECT_SOURCE_DIR}
                   -DTESSERA_BINARY_DIR=${PROJECT_BINARY_DIR}
                   -DCXX_COMPILER=${CMAKE_CXX_COMPILER}
                   -DCCACHE_PROGRAM=${CCACHE_PROGRAM}
                   -P ${CMAKE_CURRENT_LIST_DIR}/scripts/example_standalone_test.cmake)
  set_tests_properties(example_standalone PROPERTIES LABELS packaging TIMEOUT 900
                       ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=PASSIVE")
endif()
