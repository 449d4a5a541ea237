// The built-in decoder's kernels (lib/decoder-model.ts), compiled at run time by NVRTC. f16 storage, f32
// arithmetic. No CUDA headers: f16 conversions are inline PTX, so NVRTC needs no include path.
//
// Shapes: T token rows, R request rows, H hidden, nh query heads, nkv key/value heads, hd head size.
// The KV cache of one layer is [slots][maxSeq][nkv][hd]; a token row t belongs to slot slots[t] at
// position pos[t] and attends to positions 0..pos[t] of its slot. Lengths live in device memory, so one
// graph serves every step of any length.

typedef unsigned short half_t;
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float h2f(half_t h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ half_t f2h(float f) {
  half_t h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ float block_sum(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = lane < warps ? part[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}

__device__ float block_max(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = lane < warps ? part[lane] : NEG_INF;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  return v;
}

// Weights from a seed: w[i] = offset + scale * u, u uniform in [-1, 1) from splitmix64(seed, i). The same
// numbers on every GPU, so a seed names a model.
extern "C" __global__ void init_uniform(half_t* w, long long n, unsigned long long seed, float scale, float offset) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    unsigned long long z = seed * 0x9e3779b97f4a7c15ull + (unsigned long long)i * 0xbf58476d1ce4e5b9ull + 0x94d049bb133111ebull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = (float)(z >> 40) * (1.0f / 16777216.0f) * 2.f - 1.f;
    w[i] = f2h(offset + scale * u);
  }
}

// resid[t] = table[tokens[t]] in f32 (an id outside 0..V-1 reads row 0; the SDK rejects such ids first).
extern "C" __global__ void embed(float* resid, const int* tokens, const half_t* table, int H, int V) {
  const int t = blockIdx.x;
  int id = tokens[t];
  if (id < 0 || id >= V) id = 0;
  for (int i = threadIdx.x; i < H; i += blockDim.x) resid[(long long)t * H + i] = h2f(table[(long long)id * H + i]);
}

// resid[t] += delta[t] (when add is non-zero); out[t] = f16(resid[t] / rms(resid[t]) * w).
extern "C" __global__ void add_rmsnorm(float* resid, const half_t* delta, const half_t* w, half_t* out, int H, float eps, int add) {
  const long long row = (long long)blockIdx.x * H;
  float ss = 0.f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    float r = resid[row + i];
    if (add) {
      r += h2f(delta[row + i]);
      resid[row + i] = r;
    }
    ss += r * r;
  }
  const float inv = rsqrtf(block_sum(ss) / H + eps);
  for (int i = threadIdx.x; i < H; i += blockDim.x) out[row + i] = f2h(resid[row + i] * inv * h2f(w[i]));
}

// The last layer's residual add and the final norm, for each request's last token row only:
// out[r] = f16(norm(resid[last[r]] + delta[last[r]]) * w).
extern "C" __global__ void final_norm(half_t* out, const float* resid, const half_t* delta, const int* last, const half_t* w, int H, float eps) {
  const long long row = (long long)last[blockIdx.x] * H;
  float ss = 0.f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float r = resid[row + i] + h2f(delta[row + i]);
    ss += r * r;
  }
  const float inv = rsqrtf(block_sum(ss) / H + eps);
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float r = resid[row + i] + h2f(delta[row + i]);
    out[(long long)blockIdx.x * H + i] = f2h(r * inv * h2f(w[i]));
  }
}

// Rotary positions (pairs i and i + hd/2, angle pos * theta^(-2i/hd)) on q and k in place in the qkv rows
// ([q heads | k heads | v heads]); k and v then go into the cache at (slots[t], pos[t]).
extern "C" __global__ void rope_store(half_t* qkv, half_t* kc, half_t* vc, const int* pos, const int* slots, int nh, int nkv, int hd, int maxSeq, float theta) {
  const int t = blockIdx.x;
  const int p = pos[t];
  const int half = hd / 2;
  const int width = (nh + 2 * nkv) * hd;
  half_t* row = qkv + (long long)t * width;
  const long long at = (((long long)slots[t] * maxSeq + p) * nkv) * hd;
  for (int j = threadIdx.x; j < (nh + nkv) * half; j += blockDim.x) {
    const int head = j / half, i = j % half;
    const float ang = (float)p * powf(theta, -2.f * (float)i / (float)hd);
    float s, c;
    sincosf(ang, &s, &c);
    half_t* x = row + head * hd;
    const float a = h2f(x[i]), b = h2f(x[i + half]);
    const half_t ra = f2h(a * c - b * s), rb = f2h(b * c + a * s);
    if (head < nh) {
      x[i] = ra;
      x[i + half] = rb;
    } else {
      half_t* k = kc + at + (long long)(head - nh) * hd;
      k[i] = ra;
      k[i + half] = rb;
    }
  }
  const half_t* v = row + (nh + nkv) * hd;
  for (int j = threadIdx.x; j < nkv * hd; j += blockDim.x) vc[at + j] = v[j];
}

#define MAX_SEQ 4096
#define MAX_GROUPS 16

// One block per (token row, query head): softmax(q k^T / sqrt(hd)) v over positions 0..pos[t] of the
// row's slot. blockDim.x is a multiple of 32 and at least hd (hd <= 128, a multiple of 8); maxSeq <= MAX_SEQ.
extern "C" __global__ void attention(half_t* out, const half_t* qkv, const half_t* kc, const half_t* vc, const int* pos, const int* slots, int nh, int nkv, int hd, int maxSeq, float scale) {
  __shared__ float q[128];
  __shared__ float p[MAX_SEQ];
  __shared__ float acc[MAX_GROUPS][128];
  const int t = blockIdx.x, h = blockIdx.y;
  const int len = pos[t] + 1;
  const int kvh = h / (nh / nkv);
  const int width = (nh + 2 * nkv) * hd;
  const half_t* qrow = qkv + (long long)t * width + h * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) q[d] = h2f(qrow[d]);
  __syncthreads();
  const long long base = (long long)slots[t] * maxSeq * nkv * hd + (long long)kvh * hd;
  const long long stride = (long long)nkv * hd;

  float mx = NEG_INF;
  for (int j = threadIdx.x; j < len; j += blockDim.x) {
    const uint4* k = (const uint4*)(kc + base + j * stride);
    float dot = 0.f;
    for (int d8 = 0; d8 < hd / 8; d8++) {
      const uint4 u = k[d8];
      const unsigned int w[4] = {u.x, u.y, u.z, u.w};
      for (int e = 0; e < 4; e++) {
        dot += q[d8 * 8 + 2 * e] * h2f((half_t)(w[e] & 0xffff)) + q[d8 * 8 + 2 * e + 1] * h2f((half_t)(w[e] >> 16));
      }
    }
    dot *= scale;
    p[j] = dot;
    mx = fmaxf(mx, dot);
  }
  mx = block_max(mx);
  float sum = 0.f;
  for (int j = threadIdx.x; j < len; j += blockDim.x) {
    const float e = __expf(p[j] - mx);
    p[j] = e;
    sum += e;
  }
  sum = block_sum(sum);  // its barriers also publish p[]

  // softmax(.) v: each thread takes 8 adjacent dims of one position (one 16-byte load), so a block of
  // 128 threads covers 16 positions per pass (hd 64) where one dim per thread covered 2: the loop over
  // the context, which bounds a long decode step, runs 8x fewer dependent passes.
  const int lanes = hd / 8;
  const int groups = min(blockDim.x / lanes, MAX_GROUPS);
  const int g = threadIdx.x / lanes, d0 = (threadIdx.x % lanes) * 8;
  if (g < groups) {
    float a[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int j = g; j < len; j += groups) {
      const uint4 u = *(const uint4*)(vc + base + j * stride + d0);
      const unsigned int w[4] = {u.x, u.y, u.z, u.w};
      const float pj = p[j];
      for (int e = 0; e < 4; e++) {
        a[2 * e] += pj * h2f((half_t)(w[e] & 0xffff));
        a[2 * e + 1] += pj * h2f((half_t)(w[e] >> 16));
      }
    }
    for (int e = 0; e < 8; e++) acc[g][d0 + e] = a[e];
  }
  __syncthreads();
  if (threadIdx.x < hd) {
    float a = 0.f;
    for (int i = 0; i < groups; i++) a += acc[i][threadIdx.x];
    out[(long long)t * nh * hd + h * hd + threadIdx.x] = f2h(a / sum);
  }
}

// out[t][i] = f16(silu(gu[t][i]) * gu[t][F + i]).
extern "C" __global__ void silu_mul(half_t* out, const half_t* gu, int F, int T) {
  const long long n = (long long)T * F;
  for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; k += (long long)gridDim.x * blockDim.x) {
    const long long t = k / F, i = k % F;
    const float g = h2f(gu[t * 2 * F + i]), u = h2f(gu[t * 2 * F + F + i]);
    out[k] = f2h(g / (1.f + __expf(-g)) * u);
  }
}

// The warp's largest v and, among equal maxima, its lowest idx; every lane gets them.
__device__ void warp_argmax(float& v, int& idx) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffff, v, o);
    const int oi = __shfl_xor_sync(0xffffffff, idx, o);
    if (ov > v || (ov == v && oi < idx)) {
      v = ov;
      idx = oi;
    }
  }
}

// next[r] = argmax of logits row r (the lowest index among equal maxima).
extern "C" __global__ void argmax(int* next, const float* logits, int V) {
  __shared__ float bv[32];
  __shared__ int bi[32];
  const float* row = logits + (long long)blockIdx.x * V;
  float v = NEG_INF;
  int idx = 0x7fffffff;
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const float x = row[i];
    if (x > v) {
      v = x;
      idx = i;
    }
  }
  warp_argmax(v, idx);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    bv[warp] = v;
    bi[warp] = idx;
  }
  __syncthreads();
  if (warp == 0) {
    v = lane < (int)(blockDim.x >> 5) ? bv[lane] : NEG_INF;
    idx = lane < (int)(blockDim.x >> 5) ? bi[lane] : 0x7fffffff;
    warp_argmax(v, idx);
    if (lane == 0) next[blockIdx.x] = idx;
  }
}
