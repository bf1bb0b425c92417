# The example programs (examples/), each run once in its quickest meaningful setting: few training
# steps, small grids. They write into the build tree (their folder under <build>/examples) and
# read the shipped models and Fashion-MNIST ($TESSERA_FASHION_MNIST_DIR, else the Debian folder).
# Registered here rather than in examples/CMakeLists.txt: that folder is added before
# enable_testing(), where add_test is ignored.
function(tessera_add_example_test example)
  if(NOT TARGET example_${example})  # TESSERA_BUILD_EXAMPLES=OFF
    return()
  endif()
  set(_dir "${PROJECT_BINARY_DIR}/examples/${example}")
  add_test(NAME example_${example} COMMAND example_${example} ${ARGN} WORKING_DIRECTORY "${_dir}")
  # As the suites: idle OpenMP workers must not spin on the 2-core machine ctest shares.
  set_tests_properties(example_${example} PROPERTIES LABELS packaging TIMEOUT 300
                       ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=PASSIVE")
endfunction()

set(_models "${PROJECT_SOURCE_DIR}/models")
tessera_add_example_test(sample "${_models}/maskgit_fashion_mnist.safetensors" samples.png 4)
tessera_add_example_test(attention 1 2)
tessera_add_example_test(custom_head "${_models}/maskgit_fashion_mnist.safetensors" custom_head.png 0.1)
# steps, output folder, tokenizer, training images
tessera_add_example_test(train_tokenizer 10 out)
tessera_add_example_test(train_generator 20 out "${_models}/tokenizers/vq_vae_fashion_mnist.safetensors" 1000)
tessera_add_example_test(custom_schedule 20 out "${_models}/tokenizers/vq_vae_fashion_mnist.safetensors" 1000)
unset(_models)
