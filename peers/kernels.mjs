// CUDA C kernels shared by the GPU tests and the launch benchmark (no test runner imported here).

/**
 * Kernels for the tests and the launch benchmark. `axpb` uses explicitly rounded float ops (no FMA
 * contraction), so a CPU reference with Math.fround reproduces it bit for bit.
 */
export const KERNELS = `
extern "C" __global__ void axpb(float* x, int n, float a, float b) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = __fadd_rn(__fmul_rn(x[i], a), b);
}
extern "C" __global__ void add_into(float* dst, const float* src, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = __fadd_rn(dst[i], src[i]);
}
extern "C" __global__ void scale_i64(long long* x, long long k, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = x[i] * k;
}
extern "C" __global__ void tiny(float* x) {
  if (threadIdx.x == 0) x[blockIdx.x] += 1.0f;
}
`
