// The extension functions of the C++ issue of mmvmamba's Triton ops: the launcher's set-up
// (triton_launch.cpp), the LayerNorm2d (layer_norm_2d_host.cpp) and the fused SS2D core
// (ss2d_core_host.cpp).

#include "triton_host.h"

#include "layer_norm_2d_host.h"
#include "ss2d_core_host.h"
#include "triton_launch.h"

namespace mmvmamba::triton_host {

void register_functions(pybind11::module_& m) {
  register_launch_functions(m);
  register_layer_norm_2d(m);
  register_ss2d_core(m);
}

}  // namespace mmvmamba::triton_host
