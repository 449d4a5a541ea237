// Raw CUDA C peer of bench/launch.mjs through the runtime API: the same chain of N tiny kernels, compiled by
// nvcc, eager and as a graph, timed by chain_timing.h exactly as our side is. Prints one JSON line.
// Build: nvcc -O2 -arch=sm_90 -o launch_chain launch_chain.cu
#include <cuda_runtime.h>
#include <stdlib.h>
#include "chain_timing.h"

#define CK(x) do { cudaError_t err_ = (x); if (err_ != cudaSuccess) { fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(err_)); exit(1); } } while (0)

extern "C" __global__ void axpb(float* x, int n, float a, float b) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = __fadd_rn(__fmul_rn(x[i], a), b);
}

struct RuntimeOps {
  int N;
  float* x;
  cudaStream_t s;
  cudaGraphExec_t exec = nullptr;
  void chain() {
    for (int i = 0; i < N; i++) axpb<<<1, 256, 0, s>>>(x, 256, 0.999f, 0.001f);
    CK(cudaGetLastError());
  }
  void sync() { CK(cudaStreamSynchronize(s)); }
  void capture() {
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    chain();
    CK(cudaStreamEndCapture(s, &g));
    cudaGraphExec_t e;
    CK(cudaGraphInstantiate(&e, g, 0));
    CK(cudaGraphDestroy(g));
    if (exec) CK(cudaGraphExecDestroy(exec));
    exec = e;
  }
  void upload() { CK(cudaGraphUpload(exec, s)); }
  void launch() { CK(cudaGraphLaunch(exec, s)); }
};

int main(int argc, char** argv) {
  RuntimeOps ops;
  ops.N = argc > 1 ? atoi(argv[1]) : 100;
  int reps = argc > 2 ? atoi(argv[2]) : 200;
  CK(cudaMalloc(&ops.x, 256 * sizeof(float)));
  CK(cudaMemset(ops.x, 0, 256 * sizeof(float)));
  CK(cudaStreamCreateWithFlags(&ops.s, cudaStreamNonBlocking));
  run_chain_benchmark(ops.N, reps, ops);
  CK(cudaGraphExecDestroy(ops.exec));
  CK(cudaFree(ops.x));
  return 0;
}
