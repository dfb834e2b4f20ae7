// Host-side C++ for mmvmamba's Triton ops: their eager passes issued from C++, with the Triton
// kernels launched by handle (triton_launch.h).
#pragma once

#include <torch/extension.h>

namespace mmvmamba::triton_host {

// Adds the launcher's set-up, `layer_norm_2d` and `ss2d_core` to the extension module.
void register_functions(pybind11::module_& m);

}  // namespace mmvmamba::triton_host
