// Launching compiled Triton kernels from C++.
//
// A launch keys the compiled kernel on what Triton specialises one on: the kernel, the device,
// the compile-time arguments, and per run-time argument a pointer's dtype and 16-byte alignment
// or an int's class (equal to 1, divisible by 16, beyond 32 bits). The first launch of a key
// goes through Python: the resolver (mmvmamba/ops/triton/host.py `_resolve`) launches the
// kernel through Triton, compiling it if needed, and returns its handle. Later launches call
// the driver's cuLaunchKernel with the parameters packed as Triton's own launcher packs them:
// the run-time arguments in order, an int equal to 1 left out (Triton makes it a compile-time
// constant), ints as i32 when they fit and i64 otherwise, floats as fp32, pointers as 64-bit
// addresses, then two null pointers (the global and profile scratch of kernels that need none;
// the resolver checks that, and that Triton's parameter count matches this packing). Launches
// on CPU tensors (Triton's interpreter, for tests) always go through the resolver.

#include "triton_launch.h"

#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#ifdef MMVMAMBA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace mmvmamba::triton_host {

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t next_power_of_2(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

namespace {

namespace py = pybind11;

struct Compiled {
  void* function;
  unsigned threads;
  unsigned shared;
};

// cuLaunchKernel's signature, spelled without the driver's headers (Python hands over the
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

#ifdef MMVMAMBA_WITH_CUDA
bool fits_i32(int64_t v) { return v >= INT32_MIN && v <= INT32_MAX; }

// Triton's specialisation class of an int argument.
char int_class(int64_t v) {
  if (v == 1) return 'o';
  const bool div16 = v % 16 == 0;
  return fits_i32(v) ? (div16 ? 'N' : 'n') : (div16 ? 'W' : 'w');
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
#endif

// The parameters cuLaunchKernel gets: this many (Triton's count, checked by the resolver).
int packed_count(const std::vector<Arg>& args) {
  int n = 2;  // global and profile scratch
  for (const Arg& a : args) n += !(a.kind == Arg::kInt && a.i == 1);
  return n;
}

// A launch through Triton, from Python. Returns the compiled kernel's handle for CUDA tensors.
Compiled resolve(const char* kernel, const std::array<int64_t, 3>& grid,
                 const std::vector<Arg>& args, const std::vector<Meta>& meta, bool cuda) {
  py::gil_scoped_acquire gil;
  State& s = state();
  TORCH_CHECK(s.resolver, "mmvmamba._C: the Triton launcher has no resolver; use "
                          "mmvmamba.ops.triton.host to set it up");
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
  py::object result = s.resolver(kernel, py::make_tuple(grid[0], grid[1], grid[2]), py_args,
                                 py_meta);
  if (!cuda) return {nullptr, 0, 0};
  py::tuple handle = result.cast<py::tuple>();
  const auto params = handle[3].cast<int>(), packed = packed_count(args);
  TORCH_CHECK(params == packed, "mmvmamba._C: Triton compiled ", kernel, " with ", params,
              " run-time parameters where the C++ launcher packs ", packed,
              " (this Triton release specialises arguments differently); set "
              "MMVMAMBA_TRITON_HOST=0 to launch from Python");
  return {reinterpret_cast<void*>(handle[0].cast<uintptr_t>()), 32 * handle[1].cast<unsigned>(),
          handle[2].cast<unsigned>()};
}

#ifdef MMVMAMBA_WITH_CUDA
// cuLaunchKernel of a compiled kernel with `args` packed as Triton packs them.
void launch_compiled(const char* kernel, const Compiled& compiled, int device,
                     const std::array<int64_t, 3>& grid, const std::vector<Arg>& args) {
  State& s = state();
  TORCH_CHECK(s.launch, "mmvmamba._C: the Triton launcher has no cuLaunchKernel");
  std::array<uint64_t, 40> slots{};
  std::array<void*, 40> params{};
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
#endif

}  // namespace

void launch(const char* kernel, const std::array<int64_t, 3>& grid, const std::vector<Arg>& args,
            const std::vector<Meta>& meta) {
  const at::Tensor& first = *args.at(0).tensor;
  for (const Arg& a : args) {
    TORCH_CHECK(a.kind != Arg::kTensor || a.tensor->device() == first.device(), "launch: ",
                kernel, " got tensors on ", first.device(), " and ", a.tensor->device(),
                "; move them to one device");
  }
  if (grid[0] * grid[1] * grid[2] == 0) return;
  if (!first.is_cuda()) {
    resolve(kernel, grid, args, meta, /*cuda=*/false);
    return;
  }
#ifdef MMVMAMBA_WITH_CUDA
  const int device = first.get_device();
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  State& s = state();
  const std::string key = launch_key(kernel, device, meta, args);
  Compiled compiled{nullptr, 0, 0};
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    const auto found = s.compiled.find(key);
    if (found != s.compiled.end()) compiled = found->second;
  }
  if (compiled.function == nullptr) {
    compiled = resolve(kernel, grid, args, meta, /*cuda=*/true);  // launched by Triton
    std::lock_guard<std::mutex> lock(s.mutex);
    s.compiled.emplace(key, compiled);
    return;
  }
  launch_compiled(kernel, compiled, device, grid, args);
#else
  TORCH_CHECK(false, "launch: mmvmamba._C was built without CUDA; rebuild it with "
                     "MMVMAMBA_CUDA_ARCH_LIST set (e.g. 9.0)");
#endif
}

void register_launch_functions(pybind11::module_& m) {
  m.def(
      "triton_host_set_resolver", [](py::object resolver) { state().resolver = resolver; },
      py::arg("resolver"),
      "Set the Python resolver of launches: resolver(kernel_name, grid, args, meta) launches "
      "through Triton and, for CUDA tensors, returns (function handle, num_warps, shared memory "
      "bytes, run-time parameter count).");
#ifdef MMVMAMBA_WITH_CUDA
  m.def(
      "triton_host_set_launcher",
      [](uintptr_t address) { state().launch = reinterpret_cast<LaunchFn>(address); },
      py::arg("cu_launch_kernel"), "Set the address of the driver's cuLaunchKernel.");
#endif
}

}  // namespace mmvmamba::triton_host
