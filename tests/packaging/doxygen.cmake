# The API reference (docs/api.md): doxygen over include/tessera/ with docs/Doxyfile, whose
# WARN_AS_ERROR turns any warning (an undocumented public entity, a malformed comment) into a
# failure; the test also fails on any "warning:" line, should that setting ever be dropped.
# Where doxygen is missing (`scripts/bootstrap --docs` installs it; `make test` does) the test is
# still registered, and reports itself skipped with the reason (a failure under
# TESSERA_REQUIRE_ALL).
find_program(TESSERA_DOXYGEN doxygen)
if(TESSERA_DOXYGEN)
  add_test(NAME packaging_doxygen
           COMMAND ${CMAKE_COMMAND} -E env
                   TESSERA_DOCS_DIR=${CMAKE_CURRENT_BINARY_DIR}/doxygen
                   TESSERA_VERSION=${PROJECT_VERSION}
                   ${TESSERA_DOXYGEN} docs/Doxyfile
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(packaging_doxygen PROPERTIES LABELS packaging TIMEOUT 300
                       FAIL_REGULAR_EXPRESSION "warning:")
else()
  tessera_add_missing_prerequisite_test(
    packaging_doxygen packaging "doxygen (`scripts/bootstrap --docs` installs it; then re-run cmake)")
endif()
