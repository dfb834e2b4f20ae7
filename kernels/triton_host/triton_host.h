// Host-side C++ for mmvmamba's Triton kernels: launching compiled kernels by handle, and the
// eager autograd of the ops built on them (see triton_host.cpp).
#pragma once

#include <torch/extension.h>

namespace mmvmamba::triton_host {

// Adds `triton_host_init`, `triton_host_ready` and `layer_norm_2d` to the extension module.
void register_functions(pybind11::module_& m);

}  // namespace mmvmamba::triton_host
