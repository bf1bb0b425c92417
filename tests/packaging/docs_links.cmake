# Every relative link in docs/ resolves: the linked file exists and an #anchor names one of its
# headings (GitHub's slugs). Standard-library Python only.
find_package(Python3 COMPONENTS Interpreter QUIET)
if(Python3_Interpreter_FOUND)
  file(GLOB_RECURSE _tessera_doc_pages CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/docs/*.md")
  add_test(NAME docs_links
           COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/scripts/check_doc_links.py
                   ${_tessera_doc_pages})
  set_tests_properties(docs_links PROPERTIES LABELS packaging TIMEOUT 60)
else()
  tessera_add_missing_prerequisite_test(docs_links packaging "Python 3 (scripts/bootstrap installs it)")
endif()

# docs/architecture.md's module table is the include graph of include/, src/ and kernels/, with no
# cycle (scripts/check_module_graph.py).
if(Python3_Interpreter_FOUND)
  add_test(NAME docs_module_graph
           COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/scripts/check_module_graph.py
                   ${PROJECT_SOURCE_DIR})
  set_tests_properties(docs_module_graph PROPERTIES LABELS packaging TIMEOUT 60)
else()
  tessera_add_missing_prerequisite_test(docs_module_graph packaging "Python 3 (scripts/bootstrap installs it)")
endif()
