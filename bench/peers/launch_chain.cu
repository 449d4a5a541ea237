// Raw CUDA C peer of bench/launch.mjs: the same chain of N tiny kernels, eager and as a graph, timed the
// same way (host clock around each enqueue; launch + synchronize for the replay). Prints one JSON line.
// Build: nvcc -O2 -arch=sm_90 -o launch_chain launch_chain.cu
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <vector>
#include <algorithm>

#define CK(x) do { cudaError_t err_ = (x); if (err_ != cudaSuccess) { fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(err_)); exit(1); } } while (0)

extern "C" __global__ void axpb(float* x, int n, float a, float b) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = __fadd_rn(__fmul_rn(x[i], a), b);
}

static double now_us() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, (size_t)(p * (v.size() - 1) + 0.5))];
}

int main(int argc, char** argv) {
  int N = argc > 1 ? atoi(argv[1]) : 100;
  int reps = argc > 2 ? atoi(argv[2]) : 200;
  const int n = 256;
  float* x;
  CK(cudaMalloc(&x, n * sizeof(float)));
  CK(cudaMemset(x, 0, n * sizeof(float)));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  auto chain = [&]() { for (int i = 0; i < N; i++) axpb<<<1, 256, 0, s>>>(x, n, 0.999f, 0.001f); };
  // warm-up
  chain();
  CK(cudaGetLastError());
  CK(cudaStreamSynchronize(s));
  std::vector<double> eager, eagerEnq, capInst, enq, replay;
  for (int r = 0; r < reps; r++) {
    double t0 = now_us();
    chain();
    double t1 = now_us();
    CK(cudaStreamSynchronize(s));
    double t2 = now_us();
    eagerEnq.push_back(t1 - t0);
    eager.push_back(t2 - t0);
  }
  CK(cudaGetLastError());
  cudaGraphExec_t exec = nullptr;
  for (int r = 0; r < 20; r++) {
    double t0 = now_us();
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    chain();
    CK(cudaStreamEndCapture(s, &g));
    cudaGraphExec_t e;
    CK(cudaGraphInstantiate(&e, g, 0));
    capInst.push_back(now_us() - t0);
    CK(cudaGraphDestroy(g));
    if (exec) CK(cudaGraphExecDestroy(exec));
    exec = e;
  }
  CK(cudaGraphUpload(exec, s));
  CK(cudaStreamSynchronize(s));
  for (int r = 0; r < 20; r++) { CK(cudaGraphLaunch(exec, s)); CK(cudaStreamSynchronize(s)); }
  int samples = reps * 10;
  std::vector<double> timer, batched;
  for (int r = 0; r < samples; r++) {
    double t0 = now_us();
    timer.push_back(now_us() - t0);
  }
  for (int r = 0; r < reps; r++) {
    double t0 = now_us();
    for (int j = 0; j < 8; j++) CK(cudaGraphLaunch(exec, s));
    batched.push_back((now_us() - t0) / 8);
    CK(cudaStreamSynchronize(s));
  }
  for (int r = 0; r < samples; r++) {
    double t0 = now_us();
    CK(cudaGraphLaunch(exec, s));
    enq.push_back(now_us() - t0);
    CK(cudaStreamSynchronize(s));
  }
  for (int r = 0; r < reps; r++) {
    double t0 = now_us();
    CK(cudaGraphLaunch(exec, s));
    CK(cudaStreamSynchronize(s));
    replay.push_back(now_us() - t0);
  }
  float host[4];
  CK(cudaMemcpy(host, x, sizeof(host), cudaMemcpyDeviceToHost));
  printf("{\"n\":%d,\"eagerUs\":%.3f,\"eagerP99Us\":%.3f,\"eagerEnqueueUs\":%.3f,\"captureInstantiateUs\":%.3f,"
         "\"timerUs\":%.4f,\"enqueueP50Us\":%.4f,\"enqueueP99Us\":%.4f,\"enqueueBatchedUs\":%.4f,\"replayUs\":%.3f,\"replayP99Us\":%.3f,\"check\":%.6f}\n",
         N, pct(eager, 0.5), pct(eager, 0.99), pct(eagerEnq, 0.5), pct(capInst, 0.5), pct(timer, 0.5), pct(enq, 0.5), pct(enq, 0.99), pct(batched, 0.5),
         pct(replay, 0.5), pct(replay, 0.99), host[0]);
  CK(cudaGraphExecDestroy(exec));
  CK(cudaFree(x));
  return 0;
}
