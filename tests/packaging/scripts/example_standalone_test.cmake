# cmake -P script run by the example_standalone test (tests/packaging/example_standalone.cmake):
# examples/sample as a user gets it when copying the folder out of the tree — its own project,
# Tessera found with find_package in an installed tree — configured, built and run.
set(_root "${TESSERA_BINARY_DIR}/packaging/example_standalone")
set(_prefix "${_root}/install")
set(_build "${_root}/sample")

set(TEST_NAME example_standalone)
include("${CMAKE_CURRENT_LIST_DIR}/common.cmake")
file(REMOVE_RECURSE "${_root}")
install_tessera("${_prefix}")
# Copied, as a user would: the folder must not reach outside itself.
file(COPY "${TESSERA_SOURCE_DIR}/examples/sample" DESTINATION "${_root}/source")
run_step("configuring examples/sample on its own"
         ${CMAKE_COMMAND} -S "${_root}/source/sample" -B "${_build}"
         ${OUTSIDE_CONFIGURE_OPTIONS} -DCMAKE_PREFIX_PATH=${_prefix})
run_step("building examples/sample on its own" ${OUTSIDE_BUILD_ENV} ${CMAKE_COMMAND} --build "${_build}")
run_step("running it" "${_build}/example_sample"
         "${TESSERA_SOURCE_DIR}/models/var_fashion_mnist.safetensors" "${_build}/samples.png" 1)
