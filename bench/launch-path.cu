// What a synchronous step's host path costs the GPU in raw CUDA C, and what launching the next replay ahead
// of its inputs saves (the reference for StepSpec.armable / RunOptions.armNext, docs/architecture.md).
// Each step is a graph of a spin kernel on every multiprocessor (its last block stores "the token", the
// input plus one, into pinned mapped memory, fences, and sets a flag) and a short kernel after it; the
// host waits for the flag, then (after a delay standing for the caller's own work) stages the next step
// with the token, as a decode loop does. Medians over the steps, the four ways in turn, 50 steps at a time:
//   sync   the input copy and the graph launch after the token is back (the stage's path unarmed)
//   wv     the next step's cuStreamWaitValue32 on a doorbell, copy and launch enqueued ahead; the host rings
//   gate   the next graph launched ahead, its first kernel waiting for the doorbell (mapped memory) and
//          copying the inputs (the armed path)
//   gsync  the gate graph launched after the doorbell rings (the gate without arming)
// Build and run on the GPU machine: nvcc -O2 -arch=sm_90 -o launch-path bench/launch-path.cu -lcuda
//   ./launch-path [work ns = 600000] [host delay µs = 4] [steps a way = 1000]
#include <cuda.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>
#include <ctime>
#include <immintrin.h>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)
#define CU(x) do { CUresult e = (x); if (e != CUDA_SUCCESS) { const char* s; cuGetErrorString(e, &s); printf("%s:%d %s\n", __FILE__, __LINE__, s); exit(1); } } while (0)

__device__ __forceinline__ unsigned long long gtime() { unsigned long long t; asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t)); return t; }
__device__ unsigned gate_seq;

__global__ void gate(const volatile unsigned* bell, const int4* src, int4* dst, int n) {
  __shared__ unsigned want;
  if (threadIdx.x == 0) {
    want = ++gate_seq;
    unsigned long long t0 = gtime();
    while (*bell < want) { if (gtime() - t0 > 2000000000ull) { printf("gate timeout\n"); asm volatile("trap;"); } }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    int4 v; asm volatile("ld.volatile.global.v4.s32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(src + i));
    dst[i] = v;
  }
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

__global__ void work(const int* in, int* out, volatile int* flag, long long ns) {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  unsigned long long t0 = gtime();
  while ((long long)(gtime() - t0) < ns) {}
  __syncthreads();
  __shared__ int last;
  if (threadIdx.x == 0) { __threadfence(); last = atomicAdd((unsigned*)&in[16], 1u) == gridDim.x - 1; }
  __syncthreads();
  if (last && threadIdx.x == 0) {
    atomicExch((unsigned*)&in[16], 0u);
    out[0] = in[0] + 1;
    __threadfence_system();
    *flag = 1;
  }
}
__global__ void tail(const int* in) { asm volatile("griddepcontrol.wait;" ::: "memory"); }

static double now_us() { timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec * 1e-3; }
static void busy(double us) { double t = now_us(); while (now_us() - t < us) {} }

int main(int argc, char** argv) {
  long long ns = argc > 1 ? atoll(argv[1]) : 600000;
  double js = argc > 2 ? atof(argv[2]) : 4.0;
  int reps = argc > 3 ? atoi(argv[3]) : 1000;
  CK(cudaSetDevice(0));
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int *stage, *out, *flag; unsigned *bell, *gbell;
  CK(cudaHostAlloc(&stage, 4096, cudaHostAllocMapped)); CK(cudaHostAlloc(&out, 64, cudaHostAllocMapped));
  CK(cudaHostAlloc(&flag, 64, cudaHostAllocMapped)); CK(cudaHostAlloc(&bell, 64, cudaHostAllocMapped));
  CK(cudaHostAlloc(&gbell, 64, cudaHostAllocMapped)); *gbell = 0;
  unsigned* dgbell; CK(cudaHostGetDevicePointer(&dgbell, gbell, 0));
  int *dstage, *dout, *dflag; unsigned* dbell;
  CK(cudaHostGetDevicePointer(&dstage, stage, 0)); CK(cudaHostGetDevicePointer(&dout, out, 0));
  CK(cudaHostGetDevicePointer(&dflag, flag, 0)); CK(cudaHostGetDevicePointer(&dbell, bell, 0));
  int* din; CK(cudaMalloc(&din, 4096)); CK(cudaMemset(din, 0, 4096));
  *bell = 0; *flag = 0;
  const int inBytes = 64;  // a batch-1 decode step's staged inputs
  cudaLaunchAttribute pdl[1]; pdl[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; pdl[0].val.programmaticStreamSerializationAllowed = 1;
  auto launch_work = [&](bool withPdl) {
    cudaLaunchConfig_t c = {}; c.gridDim = 132; c.blockDim = 128; c.stream = s; c.attrs = pdl; c.numAttrs = withPdl ? 1 : 0;
    CK(cudaLaunchKernelEx(&c, work, (const int*)din, dout, (volatile int*)dflag, ns));
    cudaLaunchConfig_t t = {}; t.gridDim = 1; t.blockDim = 32; t.stream = s; t.attrs = pdl; t.numAttrs = 1;
    CK(cudaLaunchKernelEx(&t, tail, (const int*)din));
  };
  cudaGraph_t g; cudaGraphExec_t plain, gated;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal)); launch_work(false); CK(cudaStreamEndCapture(s, &g));
  CK(cudaGraphInstantiate(&plain, g, 0)); CK(cudaGraphUpload(plain, s));
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  gate<<<1, 128, 0, s>>>((const volatile unsigned*)dgbell, (const int4*)dstage, (int4*)din, inBytes / 16);
  launch_work(true);
  CK(cudaStreamEndCapture(s, &g)); CK(cudaGraphInstantiate(&gated, g, 0)); CK(cudaGraphUpload(gated, s));
  CK(cudaStreamSynchronize(s));
  unsigned seq = 0, gseq = 0;  // the doorbells' last values (gate_seq on the device counts gated graphs run)
  int wrong[4] = {0, 0, 0, 0};
  int tok = 1;
  auto wait_flag = [&]() { while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) == 0) _mm_pause(); };
  auto check = [&](int m, int expect) { int o = __atomic_load_n(out, __ATOMIC_ACQUIRE); if (o != expect) wrong[m]++; };
  auto arm_wv = [&](unsigned want) {
    CU(cuStreamWaitValue32((CUstream)s, (CUdeviceptr)dbell, want, CU_STREAM_WAIT_VALUE_GEQ));
    CK(cudaMemcpyAsync(din, stage, inBytes, cudaMemcpyDefault, s));
    CK(cudaGraphLaunch(plain, s));
  };
  const char* names[] = {"sync", "wv", "gate", "gsync"};
  std::vector<double> t[4];
  const int block = 50;
  for (int round = -1; round * block < reps; round++) {
    for (int m = 0; m < 4; m++) {
      // The armed modes launch their first step ahead.
      if (m == 1) arm_wv(seq + 1);
      if (m == 2) CK(cudaGraphLaunch(gated, s));
      for (int i = 0; i < block; i++) {
        double t0 = now_us();
        stage[0] = tok;
        __atomic_store_n(flag, 0, __ATOMIC_RELAXED);
        if (m == 0) {
          CK(cudaMemcpyAsync(din, stage, inBytes, cudaMemcpyDefault, s));
          CK(cudaGraphLaunch(plain, s));
        } else if (m == 1) {
          __atomic_store_n(bell, ++seq, __ATOMIC_RELEASE);
          arm_wv(seq + 1);
        } else {
          // gate: rings the step launched last time and launches the next; gsync: rings, then launches this one.
          __atomic_store_n(gbell, ++gseq, __ATOMIC_RELEASE);
          CK(cudaGraphLaunch(gated, s));
        }
        wait_flag();
        check(m, tok + 1);
        tok = tok + 1;
        busy(js);  // the JS between a step's return and the next step's inputs
        if (round >= 0) t[m].push_back(now_us() - t0);
      }
      // Drain: an armed step left queued runs with the last inputs.
      stage[0] = tok;
      if (m == 1) __atomic_store_n(bell, ++seq, __ATOMIC_RELEASE);
      if (m == 2) __atomic_store_n(gbell, ++gseq, __ATOMIC_RELEASE);
      CK(cudaStreamSynchronize(s));
      if (m == 1 || m == 2) check(m, tok + 1);
    }
  }
  CK(cudaGetLastError());
  printf("work %lld ns, host delay %.1f us, %d steps a mode (blocks of %d, modes in turn)\n", ns, js, (int)t[0].size(), block);
  double base = 0;
  for (int m = 0; m < 4; m++) {
    auto& v = t[m]; std::sort(v.begin(), v.end());
    double p50 = v[v.size() / 2], p10 = v[v.size() / 10], p90 = v[v.size() * 9 / 10], p99 = v[v.size() * 99 / 100];
    if (m == 0) base = p50;
    printf("%-6s wrong %d  p10 %8.2f  p50 %8.2f  p90 %8.2f  p99 %8.2f us   p50 - sync %+6.2f\n", names[m], wrong[m], p10, p50, p90, p99, p50 - base);
  }
  return 0;
}
