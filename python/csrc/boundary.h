#pragma once
// How Tessera's errors cross into Python: every operator and class method of the extension runs
// its body through at_python_boundary, which turns a tessera::Error (bad input, named by the
// library's message) into c10::ValueError. PyTorch raises that as Python's ValueError with the
// same text, and the package re-raises it as tessera.Error (a ValueError subclass). Anything else
// (c10::Error from ATen, std::bad_alloc) passes through as PyTorch translates it: a RuntimeError
// or MemoryError, never a crash.

#include <c10/util/Exception.h>

#include <utility>

#include "tessera/core/error.h"

namespace tessera::python {

template <class Body>
decltype(auto) at_python_boundary(Body&& body) {
  try {
    return std::forward<Body>(body)();
  } catch (const Error& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
}

}  // namespace tessera::python
