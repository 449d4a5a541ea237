// Raw C peer that does exactly what cudagraph does, minus JS and napi: the kernel compiled by NVRTC for the
// device's sm_XY, loaded with cuModuleLoadData, launched with cuLaunchKernel on a non-blocking stream of the
// primary context, captured with cuStreamBeginCapture / cuGraphInstantiateWithFlags, replayed with
// cuGraphLaunch. Beside launch_chain.cu (runtime API, nvcc-compiled kernel) it separates the cost of the
// binding from the cost of the driver path. Prints one JSON line like launch_chain.cu.
// Build: nvcc -O2 -o launch_chain_driver launch_chain_driver.cu -lcuda -lnvrtc
#include <cuda.h>
#include <nvrtc.h>
#include <stdlib.h>
#include <vector>
#include "chain_timing.h"

#define CU(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { const char* s_; cuGetErrorName(r_, &s_); fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, s_); exit(1); } } while (0)
#define RTC(x) do { nvrtcResult r_ = (x); if (r_ != NVRTC_SUCCESS) { fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, nvrtcGetErrorString(r_)); exit(1); } } while (0)

static const char* SRC =
    "extern \"C\" __global__ void axpb(float* x, int n, float a, float b) {\n"
    "  int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
    "  if (i < n) x[i] = __fadd_rn(__fmul_rn(x[i], a), b);\n"
    "}\n";

struct DriverOps {
  int N;
  CUfunction fn;
  CUstream s;
  void** params;
  CUgraphExec exec = nullptr;
  void chain() {
    for (int i = 0; i < N; i++) CU(cuLaunchKernel(fn, 1, 1, 1, 256, 1, 1, 0, s, params, nullptr));
  }
  void sync() { CU(cuStreamSynchronize(s)); }
  void capture() {
    CUgraph g;
    CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    chain();
    CU(cuStreamEndCapture(s, &g));
    CUgraphExec e;
    CU(cuGraphInstantiateWithFlags(&e, g, 0));
    CU(cuGraphDestroy(g));
    if (exec) CU(cuGraphExecDestroy(exec));
    exec = e;
  }
  void upload() { CU(cuGraphUpload(exec, s)); }
  void launch() { CU(cuGraphLaunch(exec, s)); }
};

int main(int argc, char** argv) {
  int N = argc > 1 ? atoi(argv[1]) : 100;
  int reps = argc > 2 ? atoi(argv[2]) : 200;
  CU(cuInit(0));
  CUdevice dev;
  CU(cuDeviceGet(&dev, 0));
  CUcontext ctx;
  CU(cuDevicePrimaryCtxRetain(&ctx, dev));
  CU(cuCtxSetCurrent(ctx));
  int major, minor;
  CU(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
  CU(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
  nvrtcProgram prog;
  RTC(nvrtcCreateProgram(&prog, SRC, "bench", 0, nullptr, nullptr));
  char arch[64];
  snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d%d", major, minor);
  const char* opts[] = {arch};
  RTC(nvrtcCompileProgram(prog, 1, opts));
  size_t size;
  RTC(nvrtcGetCUBINSize(prog, &size));
  std::vector<char> cubin(size);
  RTC(nvrtcGetCUBIN(prog, cubin.data()));
  RTC(nvrtcDestroyProgram(&prog));
  CUmodule mod;
  CU(cuModuleLoadData(&mod, cubin.data()));
  CUfunction fn;
  CU(cuModuleGetFunction(&fn, mod, "axpb"));
  DriverOps ops;
  ops.N = N;
  ops.fn = fn;
  CU(cuStreamCreate(&ops.s, CU_STREAM_NON_BLOCKING));
  CUdeviceptr x;
  const int n = 256;
  CU(cuMemAlloc(&x, n * sizeof(float)));
  CU(cuMemsetD32(x, 0, n));
  float a = 0.999f, b = 0.001f;
  int nn = n;
  void* params[] = {&x, &nn, &a, &b};
  ops.params = params;
  run_chain_benchmark(N, reps, ops);
  CU(cuGraphExecDestroy(ops.exec));
  CU(cuMemFree(x));
  CU(cuModuleUnload(mod));
  return 0;
}
