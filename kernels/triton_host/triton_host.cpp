// Launching compiled Triton kernels from C++, and the eager autograd of the Triton LayerNorm2d.
//
// Why: the eager training step at batch 128 is bound by the host's time to issue it, and every
// Python-level torch call, autograd.Function and Triton launch costs tens of microseconds of it
// (docs/benchmarks.md, sessions 10-13). Here a whole forward or backward of an op is one call:
// its ATen ops are issued from C++ and its Triton kernels are launched by handle.
//
// A launch (`launch` below) keys the compiled kernel on what Triton specialises one on: the
// kernel, the device, the compile-time arguments, and per run-time argument a pointer's dtype
// and 16-byte alignment or an int's class (equal to 1, divisible by 16, beyond 32 bits). The
// first launch of a key goes through Python: the resolver handed to `triton_host_init` launches
// the kernel through Triton (compiling it if needed) and returns its handle. Later launches call
// the driver's cuLaunchKernel with the parameters packed as Triton's own launcher packs them:
// the run-time arguments in order, an int equal to 1 left out (Triton makes it a compile-time
// constant), ints as i32 when they fit and i64 otherwise, floats as fp32, pointers as 64-bit
// addresses, then two null pointers (the global and profile scratch of kernels that need none;
// the resolver checks that, and that Triton's parameter count matches this packing).

#include "triton_host.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#ifdef MMVMAMBA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace mmvmamba::triton_host {
namespace {

namespace py = pybind11;
using at::Tensor;

int64_t next_power_of_2(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// Channels and positions per program of the LayerNorm2d kernels; the same arithmetic as
// mmvmamba/ops/triton/layer_norm_2d.py `_blocks` (a CPU test compares the two).
constexpr int64_t kTileElements = 4096;

std::pair<int64_t, int64_t> layer_norm_2d_blocks(int64_t channels, int64_t length) {
  const int64_t block_c = next_power_of_2(channels);
  const int64_t block_p =
      std::max<int64_t>(1, std::min(next_power_of_2(length), kTileElements / block_c));
  return {block_c, block_p};
}

#ifdef MMVMAMBA_WITH_CUDA

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One run-time argument of a launch.
struct Arg {
  enum Kind { kTensor, kInt, kFloat } kind;
  const Tensor* tensor = nullptr;
  int64_t i = 0;
  double f = 0.0;
};

Arg arg(const Tensor& t) { return {Arg::kTensor, &t}; }
Arg arg(int64_t v) { return {Arg::kInt, nullptr, v}; }
Arg arg(double v) { return {Arg::kFloat, nullptr, 0, v}; }

// One compile-time argument or launch option (`num_warps`), as Triton's keyword arguments.
struct Meta {
  const char* name;
  int64_t value;
  bool is_bool = false;
};

struct Compiled {
  void* function;
  unsigned threads;
  unsigned shared;
};

// cuLaunchKernel's signature, spelled without the driver's headers (the resolver hands over the
// address of libcuda's function).
using LaunchFn = int (*)(void* function, unsigned grid_x, unsigned grid_y, unsigned grid_z,
                         unsigned block_x, unsigned block_y, unsigned block_z, unsigned shared,
                         void* stream, void** params, void** extra);

struct State {
  LaunchFn launch = nullptr;
  py::object resolver;
  std::mutex mutex;
  std::unordered_map<std::string, Compiled> compiled;
};

// Never destroyed: the resolver is a Python object, and Python is gone at process exit.
State& state() {
  static State* s = new State();
  return *s;
}

bool fits_i32(int64_t v) { return v >= INT32_MIN && v <= INT32_MAX; }

// Triton's specialisation class of an int argument.
char int_class(int64_t v) {
  if (v == 1) return 'o';
  const bool wide = !fits_i32(v);
  const bool div16 = v % 16 == 0;
  return wide ? (div16 ? 'W' : 'w') : (div16 ? 'N' : 'n');
}

std::string launch_key(const char* kernel, int device, const std::vector<Meta>& meta,
                       const std::vector<Arg>& args) {
  std::string key(kernel);
  key += '@';
  key += std::to_string(device);
  for (const Meta& m : meta) {
    key += ',';
    key += std::to_string(m.value);
  }
  key += '|';
  for (const Arg& a : args) {
    switch (a.kind) {
      case Arg::kTensor: {
        const auto address = reinterpret_cast<uintptr_t>(a.tensor->data_ptr());
        key += static_cast<char>('A' + static_cast<int>(a.tensor->scalar_type()));
        key += address % 16 == 0 ? '+' : '-';
        break;
      }
      case Arg::kInt:
        key += int_class(a.i);
        break;
      case Arg::kFloat:
        key += 'f';
        break;
    }
  }
  return key;
}

// The packed run-time parameters: this many (Triton's count, checked by the resolver).
int packed_count(const std::vector<Arg>& args) {
  int n = 2;  // global and profile scratch
  for (const Arg& a : args) n += !(a.kind == Arg::kInt && a.i == 1);
  return n;
}

// First launch of a key: through Triton, from Python; returns the compiled kernel's handle.
Compiled resolve(const char* kernel, const std::array<int64_t, 3>& grid,
                 const std::vector<Arg>& args, const std::vector<Meta>& meta) {
  py::gil_scoped_acquire gil;
  State& s = state();
  TORCH_CHECK(s.resolver, "mmvmamba._C: triton_host_init was not called");
  py::tuple py_args(args.size());
  for (size_t k = 0; k < args.size(); ++k) {
    const Arg& a = args[k];
    py_args[k] = a.kind == Arg::kTensor ? py::cast(*a.tensor)
                 : a.kind == Arg::kInt  ? py::object(py::int_(a.i))
                                        : py::object(py::float_(a.f));
  }
  py::dict py_meta;
  for (const Meta& m : meta) {
    py_meta[m.name] = m.is_bool ? py::object(py::bool_(m.value != 0))
                                : py::object(py::int_(m.value));
  }
  py::tuple result = s.resolver(kernel, py::make_tuple(grid[0], grid[1], grid[2]), py_args,
                                py_meta);
  const auto params = result[3].cast<int>();
  TORCH_CHECK(params == packed_count(args), "mmvmamba._C: Triton compiled ", kernel, " with ",
              params, " run-time parameters where the C++ launcher packs ", packed_count(args),
              " (this Triton release specialises arguments differently); set "
              "MMVMAMBA_TRITON_HOST=0 to launch from Python");
  return {reinterpret_cast<void*>(result[0].cast<uintptr_t>()),
          32 * result[1].cast<unsigned>(), result[2].cast<unsigned>()};
}

// `kernel[grid](*args, **meta)` on the device of `args[0]` (a tensor) and its current stream.
void launch(const char* kernel, const std::array<int64_t, 3>& grid, const std::vector<Arg>& args,
            const std::vector<Meta>& meta) {
  const Tensor& first = *args.at(0).tensor;
  const int device = first.get_device();
  for (const Arg& a : args) {
    TORCH_CHECK(a.kind != Arg::kTensor || a.tensor->get_device() == device, "launch: ", kernel,
                " got tensors on ", first.device(), " and ", a.tensor->device(),
                "; move them to one device");
  }
  if (grid[0] * grid[1] * grid[2] == 0) return;
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  State& s = state();
  const std::string key = launch_key(kernel, device, meta, args);
  Compiled compiled;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    auto found = s.compiled.find(key);
    if (found == s.compiled.end()) {
      compiled.function = nullptr;
    } else {
      compiled = found->second;
    }
  }
  if (compiled.function == nullptr) {
    compiled = resolve(kernel, grid, args, meta);  // launched by Triton
    std::lock_guard<std::mutex> lock(s.mutex);
    s.compiled.emplace(key, compiled);
    return;
  }
  std::array<uint64_t, 32> slots{};
  std::array<void*, 32> params{};
  size_t n = 0;
  for (const Arg& a : args) {
    TORCH_CHECK(n + 2 < slots.size(), "launch: too many arguments for ", kernel);
    if (a.kind == Arg::kTensor) {
      slots[n] = reinterpret_cast<uintptr_t>(a.tensor->data_ptr());
    } else if (a.kind == Arg::kInt) {
      if (a.i == 1) continue;
      if (fits_i32(a.i)) {
        const auto v = static_cast<int32_t>(a.i);
        std::memcpy(&slots[n], &v, sizeof v);
      } else {
        std::memcpy(&slots[n], &a.i, sizeof a.i);
      }
    } else {
      const auto v = static_cast<float>(a.f);
      std::memcpy(&slots[n], &v, sizeof v);
    }
    params[n] = &slots[n];
    ++n;
  }
  for (int scratch = 0; scratch < 2; ++scratch, ++n) params[n] = &slots[n];  // null pointers
  const auto stream = at::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device));
  const int status = s.launch(compiled.function, static_cast<unsigned>(grid[0]),
                              static_cast<unsigned>(grid[1]), static_cast<unsigned>(grid[2]),
                              compiled.threads, 1, 1, compiled.shared,
                              static_cast<void*>(stream.stream()), params.data(), nullptr);
  TORCH_CHECK(status == 0, "launch: cuLaunchKernel of ", kernel, " failed with CUresult ",
              status);
}

// ``x (B, C, H, W)`` itself if contiguous or channels-last, else a contiguous copy.
Tensor dense_2d(const Tensor& x) {
  if (x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast)) return x;
  return x.contiguous();
}

// The ``(B, C, H*W)`` view of a contiguous or channels-last map.
Tensor flat(const Tensor& x) { return x.view({x.size(0), x.size(1), -1}); }

bool present(const std::optional<Tensor>& t) { return t.has_value() && t->defined(); }

// The eager autograd of mmvmamba.ops.triton.layer_norm_2d (same kernels and arguments as its
// Python `_LayerNorm2d`, which Triton's interpreter and torch.compile use).
struct LayerNorm2d : public torch::autograd::Function<LayerNorm2d> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& input,
                        const std::optional<Tensor>& weight, const std::optional<Tensor>& bias,
                        double eps) {
    const Tensor x = dense_2d(input);
    const Tensor out = at::empty_like(x);
    const Tensor xf = flat(x);
    const Tensor of = flat(out);
    const int64_t batch = xf.size(0), channels = xf.size(1), length = xf.size(2);
    const Tensor stats = at::empty({2, batch, length}, x.options().dtype(at::kFloat));
    const auto [block_c, block_p] = layer_norm_2d_blocks(channels, length);
    const Tensor w = present(weight) ? weight->contiguous() : xf;
    const Tensor b = present(bias) ? bias->contiguous() : xf;
    launch("layer_norm_2d_fwd", {cdiv(length, block_p), batch, 1},
           {arg(xf), arg(w), arg(b), arg(of), arg(stats), arg(channels), arg(length), arg(eps),
            arg(xf.stride(0)), arg(xf.stride(1)), arg(xf.stride(2)), arg(of.stride(0)),
            arg(of.stride(1)), arg(of.stride(2))},
           {{"BC", block_c}, {"BP", block_p}, {"HAS_WEIGHT", present(weight), true},
            {"HAS_BIAS", present(bias), true}, {"num_warps", 4}});
    ctx->save_for_backward({x, present(weight) ? *weight : Tensor(), stats});
    ctx->saved_data["weight_dtype"] = present(weight) ? weight->scalar_type() : at::kFloat;
    ctx->saved_data["bias_dtype"] = present(bias) ? bias->scalar_type() : at::kFloat;
    ctx->saved_data["has_bias"] = present(bias);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& weight = saved[1];
    const Tensor& stats = saved[2];
    const Tensor g = flat(dense_2d(grads[0]));
    const Tensor xf = flat(x);
    const Tensor grad_x = at::empty_like(x);
    const Tensor gf = flat(grad_x);
    const int64_t batch = xf.size(0), channels = xf.size(1), length = xf.size(2);
    const auto [block_c, block_p] = layer_norm_2d_blocks(channels, length);
    const int64_t programs = cdiv(length, block_p);
    const Tensor partial =
        at::empty({batch * programs, 2, channels}, x.options().dtype(at::kFloat));
    const Tensor w = weight.defined() ? weight.contiguous() : xf;
    launch("layer_norm_2d_bwd", {programs, batch, 1},
           {arg(g), arg(xf), arg(w), arg(stats), arg(gf), arg(partial), arg(channels),
            arg(length), arg(g.stride(0)), arg(g.stride(1)), arg(g.stride(2)), arg(xf.stride(0)),
            arg(xf.stride(1)), arg(xf.stride(2)), arg(gf.stride(0)), arg(gf.stride(1)),
            arg(gf.stride(2))},
           {{"BC", block_c}, {"BP", block_p}, {"HAS_WEIGHT", weight.defined(), true},
            {"num_warps", 4}});
    const Tensor affine = partial.sum(0);
    Tensor grad_w, grad_b;
    if (weight.defined()) grad_w = affine[0].to(ctx->saved_data["weight_dtype"].toScalarType());
    if (ctx->saved_data["has_bias"].toBool()) {
      grad_b = affine[1].to(ctx->saved_data["bias_dtype"].toScalarType());
    }
    return {grad_x, grad_w, grad_b, Tensor()};
  }
};

#endif  // MMVMAMBA_WITH_CUDA

}  // namespace

void register_functions(pybind11::module_& m) {
  m.def("layer_norm_2d_blocks", &layer_norm_2d_blocks, py::arg("channels"), py::arg("length"),
        "(BC, BP) of the LayerNorm2d kernels as the C++ launcher picks them (for tests).");
#ifdef MMVMAMBA_WITH_CUDA
  m.def(
      "triton_host_init",
      [](uintptr_t launch_address, py::object resolver) {
        State& s = state();
        s.launch = reinterpret_cast<LaunchFn>(launch_address);
        s.resolver = std::move(resolver);
      },
      py::arg("cu_launch_kernel"), py::arg("resolver"),
      "Set the driver's cuLaunchKernel (its address) and the Python resolver of first launches: "
      "resolver(kernel_name, grid, args, meta) launches through Triton and returns "
      "(function handle, num_warps, shared memory bytes, run-time parameter count).");
  m.def(
      "layer_norm_2d",
      [](const Tensor& x, const std::optional<Tensor>& weight, const std::optional<Tensor>& bias,
         double eps) { return LayerNorm2d::apply(x, weight, bias, eps); },
      py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
      "Channel-first LayerNorm of a CUDA (B, C, H, W) map with autograd, issued from C++.");
#endif
}

}  // namespace mmvmamba::triton_host
