// The fused SS2D core's eager forward and backward in C++ (see ss2d_core_host.cpp).
#pragma once

#include <torch/extension.h>

namespace mmvmamba::triton_host {

// Adds `ss2d_core` to the extension module.
void register_ss2d_core(pybind11::module_& m);

}  // namespace mmvmamba::triton_host
