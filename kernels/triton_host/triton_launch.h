// Launching Triton kernels from C++ (see triton_launch.cpp).
#pragma once

#include <torch/extension.h>

#include <array>
#include <cstdint>
#include <vector>

namespace mmvmamba::triton_host {

// One run-time argument of a launch: a tensor (by address: it must outlive the launch call),
// an int or a float.
struct Arg {
  enum Kind { kTensor, kInt, kFloat } kind;
  const at::Tensor* tensor = nullptr;
  int64_t i = 0;
  double f = 0.0;
};

inline Arg arg(const at::Tensor& t) { return {Arg::kTensor, &t}; }
inline Arg arg(int64_t v) { return {Arg::kInt, nullptr, v}; }
inline Arg arg(double v) { return {Arg::kFloat, nullptr, 0, v}; }

// One compile-time argument or launch option (`num_warps`), as Triton's keyword arguments.
struct Meta {
  const char* name;
  int64_t value;
  bool is_bool = false;
};

// `KERNELS[kernel][grid](*args, **meta)` (mmvmamba/ops/triton/host.py) on the device of `args[0]`
// (a tensor; every tensor argument must be on its device) and that device's current stream.
// CUDA tensors: the first launch of a specialisation goes through Triton, later ones straight
// to the driver. CPU tensors (Triton's interpreter): every launch goes through Triton.
void launch(const char* kernel, const std::array<int64_t, 3>& grid, const std::vector<Arg>& args,
            const std::vector<Meta>& meta);

int64_t cdiv(int64_t a, int64_t b);
int64_t next_power_of_2(int64_t n);

// Adds the launcher's set-up functions to the extension module.
void register_launch_functions(pybind11::module_& m);

}  // namespace mmvmamba::triton_host
