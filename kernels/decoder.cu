// The built-in decoder's kernels (lib/model/decoder-model.ts), compiled at run time by NVRTC. f16 or bf16 storage, f32
// arithmetic. No CUDA headers: conversions are inline PTX, so NVRTC needs no include path.
//
// Shapes: T token rows, R request rows, H hidden, nh query heads, nkv key/value heads, hd head size.
// The KV cache of one layer is [slots][maxSeq][nkv][hd]; a token row t belongs to slot slots[t] at
// position pos[t] and attends to positions 0..pos[t] of its slot. Lengths live in device memory, so one
// graph serves every step of any length.

// Storage is f16, or bf16 when compiled with -DCG_BF16; arithmetic is f32. Wherever transformers' model
// classes round to the model's dtype (every op of a bf16 model does), these kernels round too (round_e),
// so a checkpoint gives transformers' tokens, not merely close logits.
//
// The constants the host also reads (the GEMV_*, GM_*, GC_*, ATT_* and FA_* ones and SAMPLE_SPLIT) come as
// -D options: lib/model/decoder-kernels.ts is the one place they are written. A compile without the options
// stops here with that hint; one left out on its own fails where it is used, by name.
#ifndef GEMV_WARPS
#error "compile kernels/decoder.cu with decoderCompileOptions (lib/model/decoder-kernels.ts): its constants are -D options"
#endif
typedef unsigned short elem_t;
#define NEG_INF __int_as_float(0xff800000)

#ifdef CG_BF16
__device__ __forceinline__ float to_f(elem_t h) { return __uint_as_float((unsigned)h << 16); }
__device__ __forceinline__ elem_t from_f(float f) {
  elem_t h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
#else
__device__ __forceinline__ float to_f(elem_t h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ elem_t from_f(float f) {
  elem_t h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
#endif
// Two elements in one 32-bit word, lo first (memory order); lo_f and hi_f read them back as floats.
__device__ __forceinline__ unsigned pack2(elem_t lo, elem_t hi) { return (unsigned)lo | ((unsigned)hi << 16); }
__device__ __forceinline__ float lo_f(unsigned u) { return to_f((elem_t)(u & 0xffff)); }
__device__ __forceinline__ float hi_f(unsigned u) { return to_f((elem_t)(u >> 16)); }
// f rounded to the storage type and back.
__device__ __forceinline__ float round_e(float f) { return to_f(from_f(f)); }

// An L2 prefetch of the 128-byte line holding p (a hint: no fault, nothing waits for it).
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// Programmatic dependent launch (the SDK's `programmaticDependentLaunch`, sm_90+): each kernel here waits
// for the previous kernel on the stream before it reads anything that kernel wrote, then lets the next one
// launch (decode attention first thing when a layer chain follows: ATT_EARLY), so the next kernel's blocks
// are resident and its launch latency is spent while this one runs.
// Both are no-ops when a kernel is launched without the attribute.
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_next() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// The warp's sum; every lane gets it.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}

// Sums over the block of a[0..N-1] in place, every thread getting them (blockDim.x a multiple of 32, at
// most 1024).
template <int N>
__device__ void block_sums(float (&a)[N]) {
  __shared__ float part[N][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int j = 0; j < N; j++) a[j] = warp_sum(a[j]);
  __syncthreads();
  if (lane == 0)
#pragma unroll
    for (int j = 0; j < N; j++) part[j][warp] = a[j];
  __syncthreads();
#pragma unroll
  for (int j = 0; j < N; j++) a[j] = warp_sum(lane < warps ? part[j][lane] : 0.f);
}

// Sum over the block; every thread gets the result.
__device__ float block_sum(float v) {
  float a[1] = {v};
  block_sums(a);
  return a[0];
}

// Weights from a seed: w[i] = offset + scale * u, u uniform in [-1, 1) from splitmix64(seed, i). The same
// numbers on every GPU, so a seed names a model.
extern "C" __global__ void init_uniform(elem_t* w, long long n, unsigned long long seed, float scale, float offset) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    unsigned long long z = seed * 0x9e3779b97f4a7c15ull + (unsigned long long)i * 0xbf58476d1ce4e5b9ull + 0x94d049bb133111ebull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = (float)(z >> 40) * (1.0f / 16777216.0f) * 2.f - 1.f;
    w[i] = from_f(offset + scale * u);
  }
}

// out[i] = in[i] rounded to the storage type (an f32 checkpoint's tensor, uploaded as is).
extern "C" __global__ void convert_f32(elem_t* out, const float* in, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) out[i] = from_f(in[i]);
}

// W[i] = round_e(W[i] * g[i % K]) for the n elements of rows of K: an RMSNorm's weights folded into the
// projection that reads its output (DecoderModel.build), so the projection can read the raw residual rows
// and the kernel after it scale each output row by the row's 1/rms (row_inv_rms): (s x g) W^T = s x (g W^T).
extern "C" __global__ void fold_norm(elem_t* W, const elem_t* g, long long n, int K) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    W[i] = from_f(to_f(W[i]) * to_f(g[i % K]));
}

// Row t's token: an id outside 0..V-1 reads the embedding's row 0 (the SDK rejects such ids first; a
// graph's padding rows hold anything).
__device__ __forceinline__ int token_row(const int* tokens, int t, int V) {
  const int id = tokens[t];
  return id < 0 || id >= V ? 0 : id;
}

// Spins for `ns` nanoseconds of the global timer (one block): a profiling pass queues a whole step behind it,
// so the step's kernels then run back to back, with no wait for the host between them timed.
extern "C" __global__ void gate(long long ns) {
  long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

// Eight elements (16 bytes of the dtype) to floats and back.
__device__ __forceinline__ void unpack8(float (&f)[8], uint4 v) {
  const unsigned u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int e = 0; e < 4; e++) {
    f[2 * e] = lo_f(u[e]);
    f[2 * e + 1] = hi_f(u[e]);
  }
}
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
  return make_uint4(pack2(from_f(f[0]), from_f(f[1])), pack2(from_f(f[2]), from_f(f[3])), pack2(from_f(f[4]), from_f(f[5])), pack2(from_f(f[6]), from_f(f[7])));
}

// 1/rms of a residual row of H elements (H a multiple of 8), for the kernels that scale the output of a
// projection whose norm weights are folded in (fold_norm): the block's first warp sums it, lane l the
// squares of 16-byte chunks l, l + 32, ... in order, then a shuffle tree; so every block size, and every
// kernel that calls it, gets the same bits. Every thread of the block calls it (a barrier).
__device__ float row_inv_rms(const elem_t* row, int H, float eps) {
  __shared__ float inv;
  if (threadIdx.x < 32) {
    float ss = 0.f;
#pragma unroll 4
    for (int j = threadIdx.x; j < H / 8; j += 32) {
      float v[8];
      unpack8(v, ((const uint4*)row)[j]);
#pragma unroll
      for (int e = 0; e < 8; e++) ss += v[e] * v[e];
    }
    ss = warp_sum(ss);
    if (threadIdx.x == 0) inv = rsqrtf(ss / H + eps);
  }
  __syncthreads();
  return inv;
}
// x scaled by s, rounded to the storage type.
__device__ __forceinline__ elem_t scale_e(elem_t x, float s) { return from_f(to_f(x) * s); }

// resid[t] = round_e(resid[t] + delta[t]) (the residual stream stored in the model's dtype, as transformers'
// is: see DecoderModel.forward), or with `embed` (the first layer's norm) resid[t] = delta[tokens[t]], delta
// then the embedding table [V][H]; out[t] = round_e(round_e(resid[t] / rms(resid[t])) * w), the two roundings
// of transformers' RMSNorm (normalise in f32, cast, multiply by the weight in the dtype). A block per row, H
// a multiple of 8: thread i takes the 8 adjacent elements of chunk i in registers, 16-byte loads and stores
// (a row of more than 8 * blockDim.x elements streams its chunks i + blockDim.x, ... through resid), and sums
// their squares in order before the block's sum. With a thread's elements strided across the row (2- and
// 4-byte accesses), on an H200, 1b's batch-64 decode step took 1136 µs against 1076, and its prefill of 512
// tokens 2401 against 2349 (same run). Every load is issued before any store (a store to resid or out might
// alias the next load, so the compiler would hold each load back behind it). The weights, which no kernel of
// the step writes, load before griddepcontrol.wait.
extern "C" __global__ void add_rmsnorm(elem_t* resid, const elem_t* delta, const elem_t* w, elem_t* out, int H, float eps, const int* tokens, int V, int embed) {
  const long long row = (long long)blockIdx.x * H;
  const int n = blockDim.x, chunks = H / 8, c = threadIdx.x;
  const bool mine = c < chunks;
  float r[8], wf[8];
  if (mine) unpack8(wf, ((const uint4*)w)[c]);
  pdl_wait();
  pdl_launch_next();
  // The row added to resid's, or (embed) the row that replaces it.
  const uint4* src = (const uint4*)(embed ? delta + (long long)token_row(tokens, blockIdx.x, V) * H : delta + row);
  uint4* rrow = (uint4*)(resid + row);
  // Chunk j: resid's 8 elements updated (returned in v) and stored; the sum of their squares added to ss.
  float ss = 0.f;
  auto add = [&](int j, float(&v)[8]) {
    const uint4 d = src[j];
    float o[8];
    if (!embed) unpack8(o, rrow[j]);
    unpack8(v, d);
    if (!embed) {
#pragma unroll
      for (int e = 0; e < 8; e++) v[e] = round_e(o[e] + v[e]);
    }
#pragma unroll
    for (int e = 0; e < 8; e++) ss += v[e] * v[e];
    rrow[j] = pack8(v);
  };
  if (mine) add(c, r);
  for (int j = c + n; j < chunks; j += n) {
    float v[8];
    add(j, v);
  }
  const float inv = rsqrtf(block_sum(ss) / H + eps);
  uint4* orow = (uint4*)(out + row);
  // Chunk j's output from its resid values v and weights f.
  auto norm = [&](int j, const float(&v)[8], const float(&f)[8]) {
    float y[8];
#pragma unroll
    for (int e = 0; e < 8; e++) y[e] = round_e(v[e] * inv) * f[e];
    orow[j] = pack8(y);
  };
  if (mine) norm(c, r, wf);
  for (int j = c + n; j < chunks; j += n) {
    float v[8], f[8];
    unpack8(v, rrow[j]);
    unpack8(f, ((const uint4*)w)[j]);
    norm(j, v, f);
  }
}

// resid[i] = round_e(resid[i] + delta[i]) for n elements: the residual add of a tensor-parallel decode
// step, whose o and down GEMVs leave partial sums to all-reduce first (a whole model's GEMVs add in their
// epilogue, with the same rounding).
extern "C" __global__ void add_residual(float* resid, const elem_t* delta, int n) {
  pdl_wait();
  pdl_launch_next();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) resid[i] = round_e(resid[i] + to_f(delta[i]));
}

// The last layer's residual add and the final norm, for each request's last token row only:
// out[r] = norm(round_e(resid[last[r]] + delta[last[r]])) * w, rounded as add_rmsnorm rounds.
extern "C" __global__ void final_norm(elem_t* out, const elem_t* resid, const elem_t* delta, const int* last, const elem_t* w, int H, float eps) {
  pdl_wait();
  pdl_launch_next();
  const long long row = (long long)last[blockIdx.x] * H;
  float ss = 0.f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float r = round_e(to_f(resid[row + i]) + to_f(delta[row + i]));
    ss += r * r;
  }
  const float inv = rsqrtf(block_sum(ss) / H + eps);
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float r = round_e(to_f(resid[row + i]) + to_f(delta[row + i]));
    out[(long long)blockIdx.x * H + i] = from_f(round_e(r * inv) * to_f(w[i]));
  }
}

// Rotary embedding, transformers' rotate_half with cos and sin rounded to the model's dtype and each
// product rounded: rope_cs gives pair i's cos and sin at position p, rope_rot rotates a pair by them.
// rope_store and a decode step's attention (which rotates its row's new query and key itself) give the
// same bits.
__device__ __forceinline__ void rope_cs(int p, float inv_freq, float& c, float& s) {
  const float ang = (float)p * inv_freq;
  c = round_e(cosf(ang));
  s = round_e(sinf(ang));
}
__device__ __forceinline__ void rope_rot(elem_t xa, elem_t xb, float c, float s, elem_t& ra, elem_t& rb) {
  const float a = to_f(xa), b = to_f(xb);
  ra = from_f(round_e(a * c) - round_e(b * s));
  rb = from_f(round_e(b * c) + round_e(a * s));
}

// Rotary positions on q and k in place in the qkv rows ([q heads | k heads | v heads]): pairs i and
// i + hd/2 turn by pos * inv_freq[i] (the frequency table carries the checkpoint's rope scaling). cos and
// sin are rounded to the dtype and each product and sum too, as transformers' apply_rotary_pos_emb does.
// k and v then go into the cache at (slots[t], pos[t]). A block per row (grid T), hd <= 128: the row's
// cos and sin, which depend on its position alone, are made once, before griddepcontrol.wait (positions
// and frequencies are inputs); then a thread takes 8 adjacent pairs of a head (16-byte loads and stores,
// when hd % 16 == 0, as every real model's is), or one pair, and v goes across in 16-byte pieces.
// With `norm`, qkv's weights hold the attention norm's (fold_norm) and qkv was computed from the raw
// residual rows: each of q, k and v is first scaled by its resid row's 1/rms and rounded, in place of the
// add_rmsnorm launch before qkv. Prefill only: a decode step's attention does this for its rows.
extern "C" __global__ void rope_store(elem_t* qkv, elem_t* kc, elem_t* vc, const int* pos, const int* slots, const float* inv_freq, int nh, int nkv, int hd, int maxSeq, const elem_t* resid, int H, float eps, int norm) {
  __shared__ float cs[64], sn[64];
  const int t = blockIdx.x;
  const int p = pos[t];
  const int half = hd / 2;
  for (int i = threadIdx.x; i < half; i += blockDim.x) rope_cs(p, inv_freq[i], cs[i], sn[i]);
  const long long at = (((long long)slots[t] * maxSeq + p) * nkv) * hd;
  pdl_wait();
  pdl_launch_next();
  const float inv = norm ? row_inv_rms(resid + (long long)t * H, H, eps) : 1.f;
  __syncthreads();
  elem_t* row = qkv + (long long)t * (nh + 2 * nkv) * hd;
  // Head `head`'s rotated pairs go back into the row (q) or into the cache (k).
  auto dst = [&](int head) { return head < nh ? row + head * hd : kc + at + (long long)(head - nh) * hd; };
  if (half % 8 == 0) {
    const int per = half / 8;
    for (int j = threadIdx.x; j < (nh + nkv) * per; j += blockDim.x) {
      const int head = j / per, i = (j % per) * 8;
      const elem_t* x = row + head * hd;
      const uint4 a = *(const uint4*)(x + i), b = *(const uint4*)(x + i + half);
      unsigned wa[4] = {a.x, a.y, a.z, a.w}, wb[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int e = 0; e < 4; e++) {
        elem_t a0, a1, b0, b1;
        rope_rot(scale_e(wa[e] & 0xffff, inv), scale_e(wb[e] & 0xffff, inv), cs[i + 2 * e], sn[i + 2 * e], a0, b0);
        rope_rot(scale_e(wa[e] >> 16, inv), scale_e(wb[e] >> 16, inv), cs[i + 2 * e + 1], sn[i + 2 * e + 1], a1, b1);
        wa[e] = pack2(a0, a1);
        wb[e] = pack2(b0, b1);
      }
      elem_t* y = dst(head);
      *(uint4*)(y + i) = make_uint4(wa[0], wa[1], wa[2], wa[3]);
      *(uint4*)(y + i + half) = make_uint4(wb[0], wb[1], wb[2], wb[3]);
    }
    const uint4* v = (const uint4*)(row + (nh + nkv) * hd);
    for (int j = threadIdx.x; j < nkv * hd / 8; j += blockDim.x) {
      float f[8];
      unpack8(f, v[j]);
#pragma unroll
      for (int e = 0; e < 8; e++) f[e] *= inv;
      ((uint4*)(vc + at))[j] = pack8(f);
    }
    return;
  }
  for (int j = threadIdx.x; j < (nh + nkv) * half; j += blockDim.x) {
    const int head = j / half, i = j % half;
    elem_t ra, rb;
    const elem_t* x = row + head * hd;
    rope_rot(scale_e(x[i], inv), scale_e(x[i + half], inv), cs[i], sn[i], ra, rb);
    elem_t* y = dst(head);
    y[i] = ra;
    y[i + half] = rb;
  }
  const elem_t* v = row + (nh + nkv) * hd;
  for (int j = threadIdx.x; j < nkv * hd; j += blockDim.x) vc[at + j] = scale_e(v[j], inv);
}

// Tensor-core and asynchronous-copy helpers (sm_80+; ldmatrix sm_75+), for the MMA kernels below.
#ifdef CG_BF16
#define MMA_ELEM "bf16"
#else
#define MMA_ELEM "f16"
#endif

// d += a b: a 16x16 row-major fragment, b 16x8 column-major, d 16x8 f32 (the PTX ISA's m16n8k16 layouts).
__device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#if __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32." MMA_ELEM "." MMA_ELEM ".f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
// pack2(from_f(lo), from_f(hi)) in one instruction (cvt's packed form, sm_80+: the same rounding).
__device__ __forceinline__ unsigned pack2f(float lo, float hi) {
#if __CUDA_ARCH__ >= 800
  unsigned r;
#ifdef CG_BF16
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#else
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#endif
  return r;
#else
  return pack2(from_f(lo), from_f(hi));
#endif
}
// 2^x on the MUFU (what __expf computes e^x with, after a product by log2 e) without the fix-up
// instructions that make results below 2^-126 denormal: those are 0 here. For softmax's p = e^(s - max)
// that changes no sum of p (at least 1), no f16 p (its smallest is 2^-24), and in bf16 only a p v term
// below 2^-126.
__device__ __forceinline__ float ex2_ftz(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
// 16 bytes global -> shared-memory address s (32 bits) without registers, or 16 zero bytes when !valid (src is
// then not read).
__device__ __forceinline__ void cp_async16_to(unsigned s, const void* src, bool valid = true) {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(src), "r"(valid ? 16 : 0) : "memory");
#endif
}
// The same to a generic pointer into shared memory.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) { cp_async16_to((unsigned)__cvta_generic_to_shared(dst), src, valid); }
__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
// Waits until at most the newest N of this thread's commit groups are in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
// cp_async_wait_group with the next copies' 4 source addresses and 4 shared-memory offsets as operands, so that
// they are computed before the wait rather than after it.
template <int N>
__device__ __forceinline__ void cp_async_wait_group_ready(const char* const (&p)[4], const unsigned (&d)[4]) {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(N), "l"(p[0]), "l"(p[1]), "l"(p[2]), "l"(p[3]), "r"(d[0]), "r"(d[1]), "r"(d[2]), "r"(d[3]) : "memory");
#endif
}
// Waits until every copy this thread issued has landed, committed or not (cp.async.wait_all: a commit, then
// wait_group 0; a wait_group alone does not wait for copies not yet committed).
__device__ __forceinline__ void cp_async_wait_all() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}
// Four 8x8 matrices of 16-bit elements from shared memory (ldmatrix, sm_75+), lane l giving the address of
// row l % 8 of matrix l / 8 (16 bytes, 16-byte aligned): r[i] gets matrix i's elements (row lane / 4,
// columns 2 (lane % 4) and + 1), the m16n8k16 B fragment of a [n][k] tile; ldmatrix4t gets its transpose's
// (rows 2 (lane % 4) and + 1 of column lane / 4), the B fragment of a [k][n] tile.
__device__ __forceinline__ void ldmatrix4(unsigned (&r)[4], const elem_t* row) {
#if __CUDA_ARCH__ >= 750
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"((unsigned)__cvta_generic_to_shared(row)) : "memory");
#endif
}
__device__ __forceinline__ void ldmatrix4t(unsigned (&r)[4], const elem_t* row) {
#if __CUDA_ARCH__ >= 750
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"((unsigned)__cvta_generic_to_shared(row)) : "memory");
#endif
}
__device__ __forceinline__ unsigned ld2(const elem_t* p) { return *(const unsigned*)p; }

// Query heads one attention block takes at most (1, 2 or 4, a divisor of the group: heads per key/value head).
#define MAX_GH 4
// An attention block has ATT_WARPS warps; each walks its own chunks of ATT_KEYS positions.

// q k^T for 8 keys (the tensor-core attention kernels' score tile): s += the m16n8k16 products of the
// query fragments qf (KC 16-wide chunks of a head) and keys k8[0..7] ([key][dim] in shared memory), the B
// fragments of chunks c and c + 1 in one ldmatrix (matrix i: chunk c + i / 2, dims (i % 2) * 8 .. + 7).
template <int KC, int DP>
__device__ __forceinline__ void qk_tile(float (&s)[4], const unsigned (&qf)[KC][4], const elem_t (*k8)[DP]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int c = 0; c < KC; c += 2) {
    unsigned b[4];
    ldmatrix4(b, &k8[lane & 7][(c + (lane >> 4)) * 16 + ((lane >> 3) & 1) * 8]);
    mma16816(s, qf[c], b[0], b[1]);
    mma16816(s, qf[c + 1], b[2], b[3]);
  }
}
// p v for 16 keys: o[n] += p times values v16[0..15] ([key][dim] in shared memory) for the dim tiles below
// hd, p the A fragment pf; v's B fragments (keys 2 (lane % 4), + 1 and + 8 of dim n * 8 + lane / 4) of dim
// tiles n and n + 1 in one transposing ldmatrix (matrix i: dims (n + i / 2) * 8 .. + 7, keys (i % 2) * 8 ..
// + 7 of the 16).
template <int NT, int DP>
__device__ __forceinline__ void pv_tile(float (&o)[NT][4], const unsigned (&pf)[4], const elem_t (*v16)[DP], int hd) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int n = 0; n < NT; n += 2)
    if (n * 8 < hd) {
      unsigned b[4];
      ldmatrix4t(b, &v16[((lane >> 3) & 1) * 8 + (lane & 7)][(n + (lane >> 4)) * 8]);
      mma16816(o[n], pf, b[0], b[1]);
      if ((n + 1) * 8 < hd) mma16816(o[n + 1], pf, b[2], b[3]);
    }
}

// What an attention block keeps in shared memory, for head sizes up to D.
template <int D>
struct AttentionShared {
  __align__(16) float q[MAX_GH][D];             // the heads' queries (rotated), f32
  __align__(16) float o[ATT_WARPS][MAX_GH][D];  // each warp's p v over its positions, unnormalised
  float m[ATT_WARPS][MAX_GH], l[ATT_WARPS][MAX_GH];  // each warp's running maximum and sum of p
  __align__(16) elem_t knew[D], vnew[D];         // a decode row's new key and value (rope != 0)
  float cs[D / 2], sn[D / 2];                    // its rotary cos and sin, pair by pair
};

// Decode attention's flags: ATT_ROPE, a decode step (every row a different request's one new token): the
// block rotates its row's queries and new key and stores the key and value (below); ATT_PREFETCH, pull the
// row's cached keys and values past the first chunks into L2 before griddepcontrol.wait. The host sets
// ATT_PREFETCH for attention_heads on grids of at most half the multiprocessors, where a warp walking its
// chunks one load latency at a time leaves the memory idle; on fuller grids the prefetches only add
// requests (on an H200, 1b's batch-64 step at context 1024 took 2294 µs with them, 2098 without; batch 1,
// 978 with, 990 without). attention_mma_heads was slower with them at every size measured (1b batch 1 at
// context 1024: 1058 against 1012 µs), and runs without.
// ATT_DOUBLE (attention_mma_heads): two buffers a warp, the next chunk's copies in flight while the warp
// works on this one (twice the dynamic shared memory); the same bits as one buffer. The host sets it on the
// same small grids: on an H200, 1b's batch 1 / 2 at context 1024 took 963 / 969 µs a step with it, 1052 /
// 1065 with one buffer, and 1004 / 1017 with one buffer in twice the shared memory (fewer blocks share a
// multiprocessor); on a full grid (batch 64) the larger buffers alone cost 3.4%.
// ATT_NORM (with ATT_ROPE): qkv's weights hold the attention norm's (fold_norm) and qkv was computed from
// the raw residual rows `resid` (H wide), so the row's q, k and v scale by its 1/rms before the rotation,
// in place of an add_rmsnorm launch before qkv (the cuBLAS path's decode steps), with rope_store's bits.

// One block per (token row, key/value head, chunk of GH of the query heads that share it):
// softmax(q k^T / sqrt(hd)) v over positions 0..pos[t] of the row's slot, for each of the chunk's heads.
// Grouped-query attention shares keys and values between heads, so a block reads them once for all its
// heads. Flash-decoding inside the block: warp w takes the chunks of ATT_KEYS positions w, w + 4, ... with
// an online softmax, and the four warps' states merge at the end in warp order (attention_merge). No
// scores array, so no context limit from shared memory. Every order (a lane's positions, the shuffle
// trees, the warps) depends on the row's length alone, never on GH or the batch: a row gets the same bits
// however many heads its block takes and whatever else the step holds. blockDim.x is 32 * ATT_WARPS;
// hd <= D, a multiple of 8. Two ways through a chunk: attention_heads on the CUDA cores (scores a position
// a lane, then p v with a lane taking 8 dims of every fourth position, all in f32), and
// attention_mma_heads on tensor cores (sm_80+).
//
// With ATT_ROPE the block also does rope_store's work for its row: it rotates its heads' queries and its
// key/value head's new key, the blocks with blockIdx.z == 0 store the key and value at the row's position,
// and every block takes that position's key and value from shared memory, never from the cache another
// block is writing. The bits are rope_store's, so the launch it saves changes no result.

// The row's position, slot and cache offsets, and (with ATT_ROPE) its rotary angles into sh.cs, sh.sn
// and, with ATT_PREFETCH, its cached keys and values pulled into L2 (past the warps' first chunks with
// ATT_ROPE, which load those before the wait themselves): what the previous kernel does not write, so all
// before griddepcontrol.wait (L2 is coherent, so a line the previous kernel is still writing is read after
// the wait as written).
struct AttentionRow {
  int t, kvh, h0, len, p0, width;
  long long stride, base;  // one position of the cache; the row's first position of its key/value head
};
template <int D>
__device__ __forceinline__ AttentionRow attention_row(const elem_t* kc, const elem_t* vc, const int* pos, const int* slots, const float* inv_freq, int flags, int nh, int nkv, int hd, int maxSeq, int GH, AttentionShared<D>& sh) {
  AttentionRow r;
  r.t = blockIdx.x;
  r.kvh = blockIdx.y;
  r.h0 = r.kvh * (nh / nkv) + blockIdx.z * GH;
  r.len = pos[r.t] + 1;
  r.p0 = r.len - 1;
  r.width = (nh + 2 * nkv) * hd;
  r.stride = (long long)nkv * hd;
  r.base = (long long)slots[r.t] * maxSeq * r.stride + (long long)r.kvh * hd;
  if (flags & ATT_ROPE)
    for (int j = threadIdx.x; j < hd / 2; j += blockDim.x) rope_cs(r.p0, inv_freq[j], sh.cs[j], sh.sn[j]);
  if (flags & ATT_PREFETCH)
    for (int j = (flags & ATT_ROPE ? ATT_WARPS * ATT_KEYS : 0) + threadIdx.x; j < r.len; j += blockDim.x)
      for (int d = 0; d < hd; d += 64) {
        prefetch_l2(kc + r.base + j * r.stride + d);
        prefetch_l2(vc + r.base + j * r.stride + d);
      }
  return r;
}

// After griddepcontrol.wait and a barrier (the angles): the block's GH query heads into sh.q (f32, rotated
// with ATT_ROPE), and with ATT_ROPE the row's new key (rotated) and value into sh.knew, sh.vnew, stored
// into the cache by the blocks with blockIdx.z == 0. Ends with a barrier.
template <int GH, int D>
__device__ __forceinline__ void attention_queries(const AttentionRow& r, const elem_t* qkv, elem_t* kc, elem_t* vc, int flags, int nh, int nkv, int hd, const elem_t* resid, int H, float eps, AttentionShared<D>& sh) {
  // The chunk's heads are adjacent in the row: one copy.
  const elem_t* qrow = qkv + (long long)r.t * r.width + r.h0 * hd;
  const int half = hd / 2;
  if (flags & ATT_ROPE) {
    // With ATT_NORM, qkv came from the raw residual rows (fold_norm): q, k and v scale by the row's 1/rms
    // first, as rope_store's `norm` does.
    const float inv = flags & ATT_NORM ? row_inv_rms(resid + (long long)r.t * H, H, eps) : 1.f;
    // Every load of the row first (its queries' pairs, a key pair and a value element a thread: hd <= D <=
    // 128 threads), so their latencies overlap; a store between them would hold up the loads after it.
    constexpr int QP = (GH * D / 2 + 32 * ATT_WARPS - 1) / (32 * ATT_WARPS);  // query pairs a thread
    const elem_t* krow = qkv + (long long)r.t * r.width + (nh + r.kvh) * hd;
    const elem_t* vrow = krow + nkv * hd;
    const int j = threadIdx.x;
    elem_t qa[QP], qb[QP], ka = 0, kb = 0, v = 0;
#pragma unroll
    for (int p = 0; p < QP; p++) {
      const int i = j + p * blockDim.x, g = i / half;
      if (i < GH * half) {
        qa[p] = qrow[g * hd + i % half];
        qb[p] = qrow[g * hd + i % half + half];
      }
    }
    if (j < half) {
      ka = krow[j];
      kb = krow[j + half];
    }
    if (j < hd) v = vrow[j];
#pragma unroll
    for (int p = 0; p < QP; p++) {
      const int i = j + p * blockDim.x, g = i / half, jq = i % half;
      if (i < GH * half) {
        elem_t ra, rb;
        rope_rot(scale_e(qa[p], inv), scale_e(qb[p], inv), sh.cs[jq], sh.sn[jq], ra, rb);
        sh.q[g][jq] = to_f(ra);
        sh.q[g][jq + half] = to_f(rb);
      }
    }
    const bool store = blockIdx.z == 0;
    const long long at = r.base + r.p0 * r.stride;
    if (j < half) {
      elem_t ra, rb;
      rope_rot(scale_e(ka, inv), scale_e(kb, inv), sh.cs[j], sh.sn[j], ra, rb);
      sh.knew[j] = ra;
      sh.knew[j + half] = rb;
      if (store) {
        kc[at + j] = ra;
        kc[at + j + half] = rb;
      }
    }
    if (j < hd) {
      v = scale_e(v, inv);
      sh.vnew[j] = v;
      if (store) vc[at + j] = v;
    }
  } else {
    for (int i = threadIdx.x; i < GH * hd; i += blockDim.x) sh.q[i / hd][i % hd] = to_f(qrow[i]);
  }
  __syncthreads();
}

// The warps' states, in shared memory (sh.o: p v unnormalised; sh.m: the running maximum; sh.l: the sum of
// p), merged in warp order after a barrier: out = sum_w o_w exp(m_w - M) / sum_w l_w exp(m_w - M), M the
// largest m_w (warp 0's chunk always holds position 0, so M is finite; a warp without positions weighs
// exp(-inf) = 0).
template <int GH, int D>
__device__ __forceinline__ void attention_merge(elem_t* out, const AttentionRow& r, int nh, int hd, AttentionShared<D>& sh) {
  __syncthreads();
  for (int i = threadIdx.x; i < GH * hd; i += blockDim.x) {
    const int g = i / hd, d = i % hd;
    float M = NEG_INF;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, sh.m[w][g]);
    float L = 0.f, O = 0.f;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) {
      const float f = __expf(sh.m[w][g] - M);
      L += sh.l[w][g] * f;
      O += sh.o[w][g][d] * f;
    }
    out[(long long)r.t * nh * hd + (r.h0 + g) * hd + d] = from_f(O / L);
  }
}

template <int GH, int D>
__device__ __forceinline__ void attention_heads(elem_t* out, const elem_t* qkv, elem_t* kc, elem_t* vc, const int* pos, const int* slots, const float* inv_freq, int flags, int nh, int nkv, int hd, int maxSeq, float scale, const elem_t* resid, int H, float eps, AttentionShared<D>& sh) {
  constexpr int DS = D / 64;  // a lane's 8-dim slices of p v: dq and dq + 8 (D = 128)
  const bool rope = flags & ATT_ROPE;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int first = warp * ATT_KEYS;
  const AttentionRow r = attention_row<D>(kc, vc, pos, slots, inv_freq, flags, nh, nkv, hd, maxSeq, GH, sh);
  const int len = r.len, p0 = r.p0;
  const long long stride = r.stride, base = r.base;
  // A chunk's loads, all in flight together (each depends on the row alone): the lane's key row for the
  // scores, and the value rows of its p v positions c0 + 4i + kq, dims (dq + 8 ds) * 8 .. + 7 (16-byte
  // loads, each used for every head); parts past len stay unloaded and unused. `cached` takes the
  // positions already in the cache, `fresh` a decode row's new key and value (p0, from shared memory).
  const int kq = lane >> 3, dq = lane & 7;
  uint4 kr[D / 8], vr[ATT_KEYS / 4][DS];
  auto load = [&](int c0, bool cached, bool fresh) {
    const int j = c0 + lane;
    if (j < len && (rope && j == p0 ? fresh : cached)) {
      const uint4* k = rope && j == p0 ? (const uint4*)sh.knew : (const uint4*)(kc + base + j * stride);
#pragma unroll
      for (int d8 = 0; d8 < D / 8; d8++)
        if (d8 < hd / 8) kr[d8] = k[d8];
    }
#pragma unroll
    for (int i = 0; i < ATT_KEYS / 4; i++) {
      const int jv = c0 + 4 * i + kq;
      if (jv < len && (rope && jv == p0 ? fresh : cached)) {
        const elem_t* v = rope && jv == p0 ? sh.vnew : vc + base + jv * stride;
#pragma unroll
        for (int ds = 0; ds < DS; ds++)
          if ((dq + 8 * ds) * 8 < hd) vr[i][ds] = *(const uint4*)(v + (dq + 8 * ds) * 8);
      }
    }
  };
  // A decode step's cached positions were written by earlier steps, never by the kernel this one waits
  // for, so the warp's first chunk is loaded before griddepcontrol.wait, its loads overlapping that
  // kernel's tail. A prefill step's were just written by rope_store: they wait. With ATT_EARLY the next
  // kernel, a layer chain, launches before this one waits: its blocks wait in turn, and meanwhile take the
  // multiprocessors this small grid leaves free, where its producers start on its weights (on an H200, 1b's
  // decode step 1.0-1.5% faster at batch 1, 0-1.3% at 2 and 4). Separate GEMVs launched early made a step
  // 0.4-1.0% slower (then at batch 8), so any other next kernel launches after the wait, as everywhere else.
  if (flags & ATT_EARLY) pdl_launch_next();
  if (rope) load(first, true, false);
  pdl_wait();
  if (!(flags & ATT_EARLY)) pdl_launch_next();
  __syncthreads();  // the angles
  attention_queries<GH, D>(r, qkv, kc, vc, flags, nh, nkv, hd, resid, H, eps, sh);

  // The warp's running state: per head its maximum (the same on every lane), the lane's share of the sum
  // of p (its positions), and p v for the lane's dims over its positions.
  float m[GH], l[GH], o[GH][DS][8];
#pragma unroll
  for (int g = 0; g < GH; g++) {
    m[g] = NEG_INF;
    l[g] = 0.f;
#pragma unroll
    for (int ds = 0; ds < DS; ds++)
#pragma unroll
      for (int e = 0; e < 8; e++) o[g][ds][e] = 0.f;
  }
  for (int c0 = first; c0 < len; c0 += ATT_WARPS * ATT_KEYS) {
    // (A decode step's first chunk has its cached positions already: only the new one, if it holds it.)
    load(c0, c0 != first || !rope, true);
    // Scores: a lane per position; the queries in 16-byte shared loads.
    const int j = c0 + lane;
    float s[GH];
    if (j < len) {
      float dot[GH];
#pragma unroll
      for (int g = 0; g < GH; g++) dot[g] = 0.f;
#pragma unroll
      for (int d8 = 0; d8 < D / 8; d8++) {
        if (d8 >= hd / 8) break;
        const unsigned int w[4] = {kr[d8].x, kr[d8].y, kr[d8].z, kr[d8].w};
        float k[8];
#pragma unroll
        for (int e = 0; e < 4; e++) {
          k[2 * e] = lo_f(w[e]);
          k[2 * e + 1] = hi_f(w[e]);
        }
#pragma unroll
        for (int g = 0; g < GH; g++) {
          const float4 qa = *(const float4*)&sh.q[g][d8 * 8], qb = *(const float4*)&sh.q[g][d8 * 8 + 4];
          dot[g] += qa.x * k[0] + qa.y * k[1];
          dot[g] += qa.z * k[2] + qa.w * k[3];
          dot[g] += qb.x * k[4] + qb.y * k[5];
          dot[g] += qb.z * k[6] + qb.w * k[7];
        }
      }
#pragma unroll
      for (int g = 0; g < GH; g++) s[g] = dot[g] * scale;
    } else {
#pragma unroll
      for (int g = 0; g < GH; g++) s[g] = NEG_INF;
    }
    // The chunk's maximum joins the running one (finite: the chunk's first position is < len); p = exp(s -
    // max), 0 past len; the running sums and p v rescale by exp(old max - new), exactly 1 when unchanged.
#pragma unroll
    for (int g = 0; g < GH; g++) {
      float cm = s[g];
      for (int off = 16; off > 0; off >>= 1) cm = fmaxf(cm, __shfl_xor_sync(0xffffffff, cm, off));
      const float mn = fmaxf(m[g], cm);
      const float alpha = mn == m[g] ? 1.f : __expf(m[g] - mn);
      m[g] = mn;
      s[g] = __expf(s[g] - mn);
      l[g] = l[g] * alpha + s[g];
#pragma unroll
      for (int ds = 0; ds < DS; ds++)
#pragma unroll
        for (int e = 0; e < 8; e++) o[g][ds][e] *= alpha;
    }
    // p v: each position's p from the lane that scored it.
#pragma unroll
    for (int i = 0; i < ATT_KEYS / 4; i++) {
      const int jj = 4 * i + kq;
      float pj[GH];
#pragma unroll
      for (int g = 0; g < GH; g++) pj[g] = __shfl_sync(0xffffffff, s[g], jj);
      if (c0 + jj < len) {
#pragma unroll
        for (int ds = 0; ds < DS; ds++) {
          if ((dq + 8 * ds) * 8 >= hd) continue;
          const unsigned int w[4] = {vr[i][ds].x, vr[i][ds].y, vr[i][ds].z, vr[i][ds].w};
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const float v0 = lo_f(w[e]), v1 = hi_f(w[e]);
#pragma unroll
            for (int g = 0; g < GH; g++) {
              o[g][ds][2 * e] += pj[g] * v0;
              o[g][ds][2 * e + 1] += pj[g] * v1;
            }
          }
        }
      }
    }
  }
  // The warp's state into shared memory: p v summed over the four position lanes of each dim (kq), the sum
  // of p over all lanes, each by a fixed shuffle tree. A warp with no chunk leaves max -inf, sums 0.
#pragma unroll
  for (int g = 0; g < GH; g++) {
#pragma unroll
    for (int ds = 0; ds < DS; ds++)
#pragma unroll
      for (int e = 0; e < 8; e++) {
        float v = o[g][ds][e];
        v += __shfl_xor_sync(0xffffffff, v, 8);
        v += __shfl_xor_sync(0xffffffff, v, 16);
        const int d = (dq + 8 * ds) * 8 + e;
        if (kq == 0 && d < hd) sh.o[warp][g][d] = v;
      }
    const float lw = warp_sum(l[g]);
    if (lane == 0) {
      sh.m[warp][g] = m[g];
      sh.l[warp][g] = lw;
    }
  }
  attention_merge<GH, D>(out, r, nh, hd, sh);
}

// attention_heads with a chunk's q k^T and p v on m16n8k16 MMAs (sm_80+), as the flash prefill kernel does
// them: the A rows are the block's heads (GH of the 16; the others' queries are zeros and their results
// unused), a score tile is 8 of the chunk's positions, p is rounded to the dtype as p v's operand and
// summed unrounded into l. The chunk's keys and values come through the warp's shared buffers (`kv`:
// dynamic shared memory, ATT_WARPS * 2 * ATT_KEYS rows of D + 8 elements, twice that with ATT_DOUBLE) by
// cp.async, zeros past the row's length (p v multiplies them by 0, and the cache there may hold any bits,
// NaN too) and past hd.
// A head's scores, maximum, p and p v read only its own query row: its bits do not depend on GH.
template <int GH, int D>
__device__ __forceinline__ void attention_mma_heads(elem_t* out, const elem_t* qkv, elem_t* kc, elem_t* vc, const int* pos, const int* slots, const float* inv_freq, int flags, int nh, int nkv, int hd, int maxSeq, float scale, const elem_t* resid, int H, float eps, AttentionShared<D>& sh, elem_t* kv) {
  constexpr int DP = D + 8;          // a shared row, padded: no bank conflicts in the fragment loads
  constexpr int KC = D / 16;         // 16-wide chunks of a head: q k^T's reduction
  constexpr int NT = D / 8;          // 8-wide tiles of a head: p v's outputs
  constexpr int SN = ATT_KEYS / 8;   // a chunk's score tiles
  constexpr int PIECES = ATT_KEYS * (D / 8) / 32;  // 16-byte pieces of a chunk's keys a lane copies
  const bool rope = flags & ATT_ROPE;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tig = lane & 3;
  const int first = warp * ATT_KEYS;
  const int nb = flags & ATT_DOUBLE ? 2 : 1;  // buffers
  // Buffer b's keys (rows 0 .. ATT_KEYS - 1) and values (the next ATT_KEYS rows).
  auto kbuf = [&](int b) { return (elem_t(*)[DP])(kv + (warp * nb + b) * 2 * ATT_KEYS * DP); };
  // Dims past hd, which no copy writes, are zeros (the rows of every buffer).
  for (int i = lane; i < nb * 2 * ATT_KEYS * (D - hd); i += 32) kbuf(0)[i / (D - hd)][hd + i % (D - hd)] = 0;
  const AttentionRow r = attention_row<D>(kc, vc, pos, slots, inv_freq, flags, nh, nkv, hd, maxSeq, GH, sh);
  const int len = r.len, p0 = r.p0;
  // Positions c0 .. c0 + ATT_KEYS - 1 into the buffers: piece lane + 32 p is row (lane + 32 p) / (D / 8),
  // dims ((lane + 32 p) % (D / 8)) * 8 .. + 7. A decode row's new position is left for its key and value
  // from shared memory (fresh, below).
  auto copy = [&](int c0, int b) {
    elem_t(*ks)[DP] = kbuf(b);
    elem_t(*vs)[DP] = ks + ATT_KEYS;
#pragma unroll
    for (int p = 0; p < PIECES; p++) {
      const int i = lane + 32 * p, row = i / (D / 8), d = (i % (D / 8)) * 8, j = c0 + row;
      if (d >= hd || (rope && j == p0)) continue;
      const bool ok = j < len;
      const long long c = ok ? r.base + j * r.stride + d : 0;
      cp_async16(&ks[row][d], kc + c, ok);
      cp_async16(&vs[row][d], vc + c, ok);
    }
    cp_async_commit();
  };
  // As attention_heads: a layer chain launches at once (ATT_EARLY), and a decode step's first chunk is copied
  // before griddepcontrol.wait (a warp with no chunk copies nothing, so no copy of its is in flight when the
  // block ends).
  if (flags & ATT_EARLY) pdl_launch_next();
  if (rope && first < len) copy(first, 0);
  pdl_wait();
  if (!(flags & ATT_EARLY)) pdl_launch_next();
  __syncthreads();  // the angles
  attention_queries<GH, D>(r, qkv, kc, vc, flags, nh, nkv, hd, resid, H, eps, sh);
  // The queries as A fragments (row g: head g, zeros past GH and hd; rows g + 8 zeros), exact: sh.q holds
  // values of the dtype.
  unsigned qf[KC][4];
#pragma unroll
  for (int c = 0; c < KC; c++) {
    const int d0 = c * 16 + 2 * tig, d1 = d0 + 8;
    qf[c][0] = g < GH && d0 < hd ? pack2(from_f(sh.q[g][d0]), from_f(sh.q[g][d0 + 1])) : 0u;
    qf[c][2] = g < GH && d1 < hd ? pack2(from_f(sh.q[g][d1]), from_f(sh.q[g][d1 + 1])) : 0u;
    qf[c][1] = qf[c][3] = 0u;
  }
  // Row g's state (the same on the lane's 4 lanes of the row but l, the lane's share of the sum of p).
  float o[NT][4], m = NEG_INF, l = 0.f;
#pragma unroll
  for (int n = 0; n < NT; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  if (!rope && first < len) copy(first, 0);
  constexpr int STEP = ATT_WARPS * ATT_KEYS;  // a warp's chunks are this far apart
  for (int i = 0, c0 = first; c0 < len; i++, c0 += STEP) {
    const int b = i % nb;
    elem_t(*ks)[DP] = kbuf(b);
    elem_t(*vs)[DP] = ks + ATT_KEYS;
    // The next chunk's copies: into the other buffer, now (ATT_DOUBLE); else into this one, at its turn.
    const bool ahead = nb == 2 && c0 + STEP < len;
    if (ahead) copy(c0 + STEP, b ^ 1);
    else if (nb == 1 && i > 0) copy(c0, 0);
    if (rope && p0 >= c0 && p0 < c0 + ATT_KEYS)
      for (int d = lane; d < hd; d += 32) {
        ks[p0 - c0][d] = sh.knew[d];
        vs[p0 - c0][d] = sh.vnew[d];
      }
    if (ahead) cp_async_wait_group<1>();
    else cp_async_wait_all();
    __syncwarp();
    // Scores: tile n is positions c0 + 8n .. + 7.
    float s[SN][4];
#pragma unroll
    for (int n = 0; n < SN; n++) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
      qk_tile(s[n], qf, ks + n * 8);
    }
    // Scale, positions past len -inf, the chunk's maximum (the row's on its 4 lanes; finite: position c0 <
    // len), and the running state rescaled by exp(old max - new), exactly 1 when unchanged.
    float mx = NEG_INF;
#pragma unroll
    for (int n = 0; n < SN; n++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        s[n][e] = c0 + n * 8 + 2 * tig + e < len ? s[n][e] * scale : NEG_INF;
        mx = fmaxf(mx, s[n][e]);
      }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
    const float mn = fmaxf(m, mx);
    const float alpha = mn == m ? 1.f : __expf(m - mn);
    m = mn;
    // p = exp(s - max): score tiles 2kk and 2kk + 1 are p v's A fragment for positions 16kk .. + 15.
    unsigned pf[SN / 2][4];
    float rs = 0.f;
#pragma unroll
    for (int n = 0; n < SN; n++) {
      const float pa = __expf(s[n][0] - mn), pb = __expf(s[n][1] - mn);
      rs += pa;
      rs += pb;
      pf[n >> 1][(n & 1) * 2] = pack2f(pa, pb);
      pf[n >> 1][(n & 1) * 2 + 1] = 0u;
    }
    l = l * alpha + rs;
#pragma unroll
    for (int n = 0; n < NT; n++) {
      o[n][0] *= alpha;
      o[n][1] *= alpha;
    }
#pragma unroll
    for (int kk = 0; kk < SN / 2; kk++) pv_tile(o, pf[kk], vs + kk * 16, hd);
    __syncwarp();  // the buffers are free for the next chunk's copies
  }
  // The row's sum of p over its 4 lanes; the warp's state into shared memory. A warp with no chunk leaves
  // max -inf, sums 0.
  l += __shfl_xor_sync(0xffffffff, l, 1);
  l += __shfl_xor_sync(0xffffffff, l, 2);
  if (g < GH) {
#pragma unroll
    for (int n = 0; n < NT; n++) {
      const int d = n * 8 + 2 * tig;
      if (d < hd) {
        sh.o[warp][g][d] = o[n][0];
        sh.o[warp][g][d + 1] = o[n][1];
      }
    }
    if (tig == 0) {
      sh.m[warp][g] = m;
      sh.l[warp][g] = l;
    }
  }
  attention_merge<GH, D>(out, r, nh, hd, sh);
}

// A kernel per head-size bound D (64 or 128: a lane's p v registers) and query heads a block GH (1, 2 or 4),
// each with its own register count, so a block of one head is not sized for four (ptxas,
// sm_90, no spills: 112 to 128 registers up to 64, four blocks a multiprocessor; 179 to 245 up to 128, two,
// as a chunk's loads are all in flight at once): grid [T, nkv, group / GH], block 32 * ATT_WARPS. The
// heads are a template parameter, so every loop over them unrolls without a guard.
#define ATTENTION_KERNEL(D, GH, MINB)                                                                                                  \
  extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS, MINB)                                                                  \
      attention_##D##x##GH(elem_t* out, const elem_t* qkv, elem_t* kc, elem_t* vc, const int* pos, const int* slots, const float* inv_freq, \
                            int flags, int nh, int nkv, int hd, int maxSeq, float scale, const elem_t* resid, int H, float eps) {     \
    __shared__ AttentionShared<D> sh;                                                                                                  \
    attention_heads<GH, D>(out, qkv, kc, vc, pos, slots, inv_freq, flags, nh, nkv, hd, maxSeq, scale, resid, H, eps, sh);             \
  }
// Each kernel's instances (D, GH, blocks a multiprocessor), for both ways through a chunk.
#define ATTENTION_INSTANCES(KERNEL) KERNEL(64, 1, 4) KERNEL(64, 2, 4) KERNEL(64, 4, 4) KERNEL(128, 1, 2) KERNEL(128, 2, 2) KERNEL(128, 4, 2)
ATTENTION_INSTANCES(ATTENTION_KERNEL)
// The tensor-core kernels: the same grid, block and arguments, and dynamic shared memory for the warps'
// key and value buffers, ATT_WARPS * 2 * ATT_KEYS * (D + 8) elements.
#define ATTENTION_MMA_KERNEL(D, GH, MINB)                                                                                              \
  extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS, MINB)                                                                  \
      attention_mma_##D##x##GH(elem_t* out, const elem_t* qkv, elem_t* kc, elem_t* vc, const int* pos, const int* slots, const float* inv_freq, \
                                int flags, int nh, int nkv, int hd, int maxSeq, float scale, const elem_t* resid, int H, float eps) { \
    __shared__ AttentionShared<D> sh;                                                                                                  \
    extern __shared__ __align__(16) uint4 att_kv[];                                                                                    \
    attention_mma_heads<GH, D>(out, qkv, kc, vc, pos, slots, inv_freq, flags, nh, nkv, hd, maxSeq, scale, resid, H, eps, sh,          \
                               (elem_t*)att_kv);                                                                                       \
  }
ATTENTION_INSTANCES(ATTENTION_MMA_KERNEL)

// Prefill attention on tensor cores (flash attention): softmax(q k^T / sqrt(hd)) v for every token row of a
// prefill step, key tile by key tile with an online softmax, so no scores array and no context limit from
// shared memory. One block per (FA_ROWS consecutive token rows, query head), FA_WARPS groups of 16 rows,
// FA_SPLIT warps a group, each taking its own part of every key tile (their states merge in order at the
// end, through shared memory); q k^T and p v are m16n8k16 MMAs on the dtype with f32 accumulators, p rounded to the dtype for the second
// (as the flash-attention kernels behind transformers' sdpa do), its sum kept in f32. The next key tile
// streams into shared memory (cp.async, two buffers) while the warps work on this one.
//
// A row's result depends on nothing but its slot, its position and the cache: key tiles start at positions
// that are multiples of the tile size, whichever rows share the block, a tile's parts are fixed, and a part
// whose keys a row does not see leaves its state bit for bit unchanged. So a prompt gives the same bits whole or in chunks, alone or
// beside other requests. Rows of different slots in one block run in turn (a pass per run of equal slots).
// Keys and values come from the cache, where rope_store has put this step's. Registers and shared memory
// are sized for head sizes up to D (64 or 128; hd a multiple of 8): the q k^T reduction runs over 16-wide
// chunks, the q and key dims past hd zero.
// Groups of 16 rows a block (FA_ROWS rows). A causal prompt's last rows see every key, and their blocks
// set the kernel's time: at 32 rows a block they carry half the work of 64-row blocks, and twice as many
// blocks, started heaviest first, leave the multiprocessors finishing closer together.
#define FA_ROWS (16 * FA_WARPS)
static_assert(FA_ROWS <= 32, "a pass's rows are a warp's lanes");
// FA_SPLIT warps per 16 rows, each taking its part of every key tile: two halve the heavy blocks' path (on an H200,
// four made a 512-token prompt's attention slower: 33.1 against 24.5 µs a layer, and 25.7 against 19.2
// with the tile loop as it is now).
// What bounds the kernel (ncu on an H200, a 512-token prompt, 17.7 µs a layer): its instructions, not the
// heaviest blocks' path. Capping every row's keys at 256 or 128 cut the instructions by 21% / 45% and the
// time by 27% / 40%, while the heaviest blocks' tiles fell by a half / three quarters; splitting each
// group's tiles between the two blocks of a thread block cluster made it slower (24.4 against 19.5 µs). A
// warp issues every 7.9 cycles with 3.1 of the 4 that fit a scheduler active (128 registers; at 5 blocks a
// multiprocessor the spills made a prefill 2-3.5% slower).

template <int D>
__device__ __forceinline__ void flash_prefill(elem_t* out, const elem_t* qkv, const elem_t* kc, const elem_t* vc, const int* pos, const int* slots, int T, int nh, int nkv, int hd, int maxSeq, float scale) {
  constexpr int KC = D / 16;                 // 16-wide chunks of a head: q k^T's reduction
  constexpr int NT = D / 8;                  // 8-wide tiles of a head: p v's outputs
  constexpr int KEYS = D == 128 ? 32 : 64;   // a key tile: two buffers of keys and values in 48 KiB
  constexpr int SN = KEYS / 8;               // its 8-wide score tiles
  constexpr int DP = D + 8;                  // a shared row, padded: no bank conflicts in the fragment loads
  constexpr int WSN = SN / FA_SPLIT;         // a warp's score tiles of a key tile
  // Keys and values [buffer][key][dim], in one array that the end's merge reuses.
  __shared__ __align__(16) elem_t kvs[2][2][KEYS][DP];
  auto ks = [&](int buf) -> elem_t(*)[DP] { return kvs[buf][0]; };
  auto vs = [&](int buf) -> elem_t(*)[DP] { return kvs[buf][1]; };
  __shared__ int rslot[FA_ROWS], rpos[FA_ROWS];
  const int lane = threadIdx.x & 31;
  const int warp = (threadIdx.x >> 5) % FA_WARPS;  // the warp's 16 rows
  const int part = (threadIdx.x >> 5) / FA_WARPS;  // its part of each key tile: keys part * KEYS / FA_SPLIT ..
  const int g = lane >> 2, tig = lane & 3;         // the fragments' row group and thread in group
  // The last rows first: causal rows see the most keys at the end of a prompt, and their blocks start first,
  // every head's before any lighter row block (blocks start in blockIdx order, x fastest; on an H200 this
  // took a 512-token prompt's attention from 19.2 to 17.7 µs, and 2048 tokens' from 148 to 128).
  const int r0 = (gridDim.y - 1 - blockIdx.y) * FA_ROWS, h = blockIdx.x, kvh = h / (nh / nkv);
  const int rows = min(FA_ROWS, T - r0);
  const int width = (nh + 2 * nkv) * hd;
  // Before griddepcontrol.wait, what no kernel of the step writes: the rows' slots and positions (inputs),
  // and zeros in the key dims past hd (the copies below write dims < hd only).
  for (int i = threadIdx.x; i < FA_ROWS; i += blockDim.x) {
    rslot[i] = i < rows ? slots[r0 + i] : -1;
    rpos[i] = i < rows ? pos[r0 + i] : -1;
  }
  for (int i = threadIdx.x; i < 2 * KEYS * (D - hd); i += blockDim.x) {
    const int r = i / (D - hd);  // a key row of either buffer
    ks(r / KEYS)[r % KEYS][hd + i % (D - hd)] = 0;
  }
  pdl_wait();
  pdl_launch_next();
  __syncthreads();

  // The lane's rows of its warp's 16 (the m16n8k16 row layout): ra and ra + 8.
  const int ra = warp * 16 + g, rb = ra + 8;
  unsigned qf[KC][4];
  {
    const elem_t* qa = qkv + (long long)(r0 + ra) * width + h * hd;
    const elem_t* qb = qkv + (long long)(r0 + rb) * width + h * hd;
#pragma unroll
    for (int c = 0; c < KC; c++) {
      const int d0 = c * 16 + 2 * tig, d1 = d0 + 8;
      qf[c][0] = ra < rows && d0 < hd ? ld2(qa + d0) : 0u;
      qf[c][1] = rb < rows && d0 < hd ? ld2(qb + d0) : 0u;
      qf[c][2] = ra < rows && d1 < hd ? ld2(qa + d1) : 0u;
      qf[c][3] = rb < rows && d1 < hd ? ld2(qb + d1) : 0u;
    }
  }
  float o[NT][4];
#pragma unroll
  for (int n = 0; n < NT; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  // The rows' running maxima m are of scores times sl2 (the scale in base-2 units), so each p is one FFMA
  // and a MUFU ex2.
  const float sl2 = scale * 1.4426950408889634f;
  float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};
  const long long stride = (long long)nkv * hd;  // one position of the cache
  // The thread's pieces of a key tile, fixed for the kernel (so a tile's copies cost no index arithmetic):
  // piece i = threadIdx.x + p * THREADS is 16 bytes of key i / (hd / 8), dims (i % (hd / 8)) * 8 .. + 7,
  // in shared memory at row offset soff and in the cache at coff from the tile's first key; key -1 when
  // the piece is past hd (hd < D: those dims are never copied).
  constexpr int THREADS = 32 * FA_WARPS * FA_SPLIT;
  constexpr int PIECES = KEYS * (D / 8) / THREADS;
  static_assert(PIECES * THREADS == KEYS * (D / 8), "a tile's pieces divide among the threads");
  int pkey[PIECES], soff[PIECES], coff[PIECES];
#pragma unroll
  for (int p = 0; p < PIECES; p++) {
    const int i = threadIdx.x + p * THREADS, chunks = hd / 8;
    const int j = i / chunks, d = (i % chunks) * 8;
    pkey[p] = i < KEYS * chunks ? j : -1;
    soff[p] = j * DP + d;
    coff[p] = j * (int)stride + d;
  }

  for (int start = 0; start < rows;) {
    // A pass: the run of rows from `start` that share its slot, over keys 0..kmax of that slot. Found with a
    // lane per row (FA_ROWS <= 32): the run ends at the first row of another slot, or at `rows`; kmax is its
    // rows' last position, wmax that of the warp's rows (-1: none).
    const int slot = rslot[start];
    const unsigned other = __ballot_sync(0xffffffff, lane >= start && (lane >= rows || rslot[lane] != slot));
    const int stop = min(rows, other ? __ffs(other) - 1 : 32);
    const int lp = lane >= start && lane < stop ? rpos[lane] : -1;
    int kmax = max(lp, 0), wmax = (lane >> 4) == warp ? lp : -1;
#pragma unroll
    for (int x = 16; x > 0; x >>= 1) {
      kmax = max(kmax, __shfl_xor_sync(0xffffffff, kmax, x));
      wmax = max(wmax, __shfl_xor_sync(0xffffffff, wmax, x));
    }
    const int pa = ra >= start && ra < stop ? rpos[ra] : -1;  // -1: not this pass's row
    const int pb = rb >= start && rb < stop ? rpos[rb] : -1;
    const elem_t* kbase = kc + (long long)slot * maxSeq * stride + (long long)kvh * hd;
    const elem_t* vbase = vc + (long long)slot * maxSeq * stride + (long long)kvh * hd;
    // Keys past kmax may never have been written (any bits, NaN too): zeros, as p v multiplies them by 0.
    // A piece past kmax reads nothing (its source is then the tile's first key: k0 <= kmax).
    auto load = [&](int buf, int k0) {
      const elem_t* kt = kbase + k0 * stride;
      const elem_t* vt = vbase + k0 * stride;
#pragma unroll
      for (int p = 0; p < PIECES; p++) {
        if (pkey[p] < 0) continue;
        const bool valid = k0 + pkey[p] <= kmax;
        const int c = valid ? coff[p] : 0;
        cp_async16(&ks(buf)[0][0] + soff[p], kt + c, valid);
        cp_async16(&vs(buf)[0][0] + soff[p], vt + c, valid);
      }
      cp_async_commit();
    };
    load(0, 0);
    for (int k0 = 0, buf = 0; k0 <= kmax; k0 += KEYS, buf ^= 1) {
      cp_async_wait_all();
      // Every thread's copies of this tile have landed, and every warp is done with the other buffer (the
      // last tile's): the next tile streams into it while the warps work on this one. One barrier a tile.
      __syncthreads();
      if (k0 + KEYS <= kmax) load(buf ^ 1, k0 + KEYS);
      // A warp whose rows see none of its part of the tile skips it: for them it would change nothing.
      const int kp = part * WSN * 8;  // the part's first key in the tile
      if (wmax >= k0 + kp) {
        float s[WSN][4];
#pragma unroll
        for (int n = 0; n < WSN; n++) {
          s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
          qk_tile(s[n], qf, ks(buf) + kp + n * 8);  // keys n * 8 .. + 7 of the part
        }
        // The causal mask where some row of the warp does not see the part's last key (rows outside the
        // pass see none); then the rows' maxima over the tile (a row's keys are on its 4 lanes), as a tree.
        // The scale comes after (it is positive: the largest score scaled is the largest scaled score).
        const int last = k0 + kp + WSN * 8 - 1;
        const bool masked = !__all_sync(0xffffffff, last <= pa && last <= pb);
        float ma[WSN], mb[WSN];
#pragma unroll
        for (int n = 0; n < WSN; n++) {
          if (masked)
#pragma unroll
            for (int e = 0; e < 2; e++) {
              const int key = k0 + kp + n * 8 + 2 * tig + e;
              if (key > pa) s[n][e] = NEG_INF;
              if (key > pb) s[n][2 + e] = NEG_INF;
            }
          ma[n] = fmaxf(s[n][0], s[n][1]);
          mb[n] = fmaxf(s[n][2], s[n][3]);
        }
#pragma unroll
        for (int w = WSN / 2; w > 0; w /= 2)
#pragma unroll
          for (int n = 0; n < w; n++) {
            ma[n] = fmaxf(ma[n], ma[n + w]);
            mb[n] = fmaxf(mb[n], mb[n + w]);
          }
        float mx[2] = {ma[0], mb[0]};
        float alpha[2], ref[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
          mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 1));
          mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 2));
          const float mn = fmaxf(m[i], mx[i] * sl2);
          // The running maximum unchanged: exactly 1, so a tile a row does not see changes none of its bits.
          alpha[i] = mn == m[i] ? 1.f : ex2_ftz(m[i] - mn);
          ref[i] = mn == NEG_INF ? 0.f : mn;  // a row with no key yet: p = exp(-inf) = 0, not NaN
          m[i] = mn;
        }
        // p = exp(scale s - max) = 2^(s sl2 - max), one FFMA and the MUFU: rounded to the dtype as p v's
        // operand, summed unrounded into l. Score tiles 2kk and 2kk + 1 are p v's A fragment for the part's
        // keys 16kk..16kk+15.
        unsigned pf[WSN / 2][4];
        float rs[2] = {0.f, 0.f};
#pragma unroll
        for (int n = 0; n < WSN; n++) {
          float p[4];
#pragma unroll
          for (int e = 0; e < 4; e++) {
            p[e] = ex2_ftz(fmaf(s[n][e], sl2, -ref[e >> 1]));
            rs[e >> 1] += p[e];
          }
          pf[n >> 1][(n & 1) * 2] = pack2f(p[0], p[1]);
          pf[n >> 1][(n & 1) * 2 + 1] = pack2f(p[2], p[3]);
        }
#pragma unroll
        for (int i = 0; i < 2; i++) l[i] = l[i] * alpha[i] + rs[i];
        // p v rescales only where a row's maximum moved (alpha is exactly 1 elsewhere).
        if (__any_sync(0xffffffff, alpha[0] != 1.f || alpha[1] != 1.f))
#pragma unroll
          for (int n = 0; n < NT; n++) {
            o[n][0] *= alpha[0];
            o[n][1] *= alpha[0];
            o[n][2] *= alpha[1];
            o[n][3] *= alpha[1];
          }
#pragma unroll
        for (int kk = 0; kk < WSN / 2; kk++) pv_tile(o, pf[kk], vs(buf) + kp + kk * 16, hd);
      }
    }
    __syncthreads();  // every warp is done with the buffers before the next pass (or the merge) refills them
    start = stop;
  }
  // The rows' sums over their 4 lanes; then the other parts' states merge into part 0's, in part order,
  // through the key buffers (free now: each pass ends with a barrier): o = sum_p o_p exp(m_p - M), l
  // likewise, M the largest m_p (part 0 always holds key 0, which every row sees: M is finite).
#pragma unroll
  for (int i = 0; i < 2; i++) {
    l[i] += __shfl_xor_sync(0xffffffff, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffff, l[i], 2);
  }
  float* merge = (float*)&kvs[0][0][0][0];  // [part - 1][warp][lane][4 NT + 4]
  constexpr int MS = 4 * NT + 4;
  static_assert((FA_SPLIT - 1) * FA_WARPS * 32 * MS * 4 <= (int)sizeof(kvs), "the merge fits in the key buffers");
  if (part > 0) {
    float* me = merge + (((part - 1) * FA_WARPS + warp) * 32 + lane) * MS;
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) me[4 * n + e] = o[n][e];
    me[4 * NT] = m[0];
    me[4 * NT + 1] = m[1];
    me[4 * NT + 2] = l[0];
    me[4 * NT + 3] = l[1];
  }
  __syncthreads();
  if (part > 0) return;
#pragma unroll
  for (int q = 1; q < FA_SPLIT; q++) {
    const float* it = merge + (((q - 1) * FA_WARPS + warp) * 32 + lane) * MS;
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const float mq = it[4 * NT + i], M = fmaxf(m[i], mq);
      const float a = m[i] == M ? 1.f : ex2_ftz(m[i] - M), b = mq == M ? 1.f : ex2_ftz(mq - M);
      l[i] = l[i] * a + it[4 * NT + 2 + i] * b;
#pragma unroll
      for (int n = 0; n < NT; n++) {
        o[n][2 * i] = o[n][2 * i] * a + it[4 * n + 2 * i] * b;
        o[n][2 * i + 1] = o[n][2 * i + 1] * a + it[4 * n + 2 * i + 1] * b;
      }
      m[i] = M;
    }
  }
  elem_t* oa = out + ((long long)(r0 + ra) * nh + h) * hd;
  elem_t* ob = out + ((long long)(r0 + rb) * nh + h) * hd;
  // o / l as o times 1 / l: two divisions a lane, not 2 NT (an IEEE division is a dozen instructions and a
  // branch: the 2 NT of them were half the kernel's code after its tile loop); within an ulp of f32 before
  // the rounding.
  const float ia = 1.f / l[0], ib = 1.f / l[1];
#pragma unroll
  for (int n = 0; n < NT; n++) {
    const int d = n * 8 + 2 * tig;
    if (d >= hd) continue;
    if (ra < rows) *(unsigned*)(oa + d) = pack2f(o[n][0] * ia, o[n][1] * ia);
    if (rb < rows) *(unsigned*)(ob + d) = pack2f(o[n][2] * ib, o[n][3] * ib);
  }
}

// grid [nh, ceil(T / FA_ROWS)], block 32 * FA_WARPS * FA_SPLIT; one kernel per head-size bound, each with its
// own static shared memory (sm_80+: the MMAs), four blocks a multiprocessor up to 64.
extern "C" __global__ void __launch_bounds__(32 * FA_WARPS * FA_SPLIT, 4) attention_prefill_64(elem_t* out, const elem_t* qkv, const elem_t* kc, const elem_t* vc, const int* pos, const int* slots, int T, int nh, int nkv, int hd, int maxSeq, float scale) {
  flash_prefill<64>(out, qkv, kc, vc, pos, slots, T, nh, nkv, hd, maxSeq, scale);
}
extern "C" __global__ void __launch_bounds__(32 * FA_WARPS * FA_SPLIT) attention_prefill_128(elem_t* out, const elem_t* qkv, const elem_t* kc, const elem_t* vc, const int* pos, const int* slots, int T, int nh, int nkv, int hd, int maxSeq, float scale) {
  flash_prefill<128>(out, qkv, kc, vc, pos, slots, T, nh, nkv, hd, maxSeq, scale);
}

// Prefill attention on Hopper's warpgroup MMAs (sm_90a, where NVRTC compiles for it; hd 64 or 128):
// flash_prefill's math, rows and keys, with one warpgroup a block taking FA_WG_ROWS (64) token rows of a
// query head, and each key tile (FA_WG_KEYS keys) whole. s = q k^T is wgmma from shared memory (q and the
// key tile K-major, 128-byte swizzled rows of 64 dims); the online softmax runs on s's accumulators, which
// are, a warp's 16 rows at a time, m16n8k16's fragments; p, rounded to the dtype, is p v's A operand from
// registers as it stands, and the value tile is its B operand read transposed (its rows are keys), so
// neither moves. The next FA_WG_STAGES - 1 key tiles stream in (cp.async) while the warpgroup works on
// this one. Why: flash_prefill is bound by the instructions that feed its m16n8k16 MMAs (fragment loads,
// a warp's 16 rows a tile), and one m64n64k16 wgmma does 32 of those MMAs from shared memory with no
// fragment loads. On an H200, 1b's 512-token prefill took 0.969x its time with flash_prefill (bf16, the
// same process; 0.989x with two 128-key stages, 0.979x with four of 64, 1.021x with two of 64).
//
// flash_prefill's promise holds: key tiles start at multiples of the tile, a row's pass covers its slot's
// keys up to the pass's last position, and a tile a row does not see leaves its state bit for bit
// unchanged; so a row's bits depend on its slot, its position and the cache alone. Rows of other slots in
// the block run in their own passes (all 64 rows take part in every MMA: a row outside the pass sees no
// key).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// d (+)= A B^T, m64nNk16 (N from d's size), both operands K-major in shared memory (descriptors a and b);
// d's previous value is kept when `acc`, else ignored.
__device__ __forceinline__ void wgmma_ss(float (&d)[32], unsigned long long a, unsigned long long b, int acc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." MMA_ELEM "." MMA_ELEM " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b), "r"(acc));
}
__device__ __forceinline__ void wgmma_ss(float (&d)[64], unsigned long long a, unsigned long long b, int acc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." MMA_ELEM "." MMA_ELEM " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(a), "l"(b), "r"(acc));
}
// d += A B, m64nNk16 (N from d's size): A from registers (the m16n8k16 A fragments of the thread's warp's 16
// rows), B in shared memory MN-major (its rows are K, N contiguous: the transposed form).
__device__ __forceinline__ void wgmma_rs(float (&d)[32], const unsigned (&a)[4], unsigned long long b) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32." MMA_ELEM "." MMA_ELEM " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, 1, 1, 1, 1;"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
__device__ __forceinline__ void wgmma_rs(float (&d)[64], const unsigned (&a)[4], unsigned long long b) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32." MMA_ELEM "." MMA_ELEM " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, 1, 1, 1, 1;"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
static_assert(FA_WG_ROWS == 64, "a warpgroup MMA's rows");
static_assert(FA_WG_KEYS == 64 || FA_WG_KEYS == 128, "a key tile: one or two MMAs' width");
static_assert(FA_WG_STAGES >= 2, "a tile in flight while the warpgroup works on another");
// A K-major (or, read transposed, MN-major) tile of rows of 128 bytes, 8-row groups 1024 bytes apart, 128-byte
// swizzle; `lbo`: bytes between 64-wide column blocks (MN-major with N over 64); the tile 1024-byte aligned.
__device__ __forceinline__ unsigned long long wg_desc(unsigned addr, unsigned lbo) {
  return (unsigned long long)((addr & 0x3FFFF) >> 4) | ((unsigned long long)(lbo >> 4) << 16) | ((unsigned long long)(1024 >> 4) << 32) | (1ull << 62);
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit_wait() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
}
template <int D>
__device__ __forceinline__ void flash_prefill_wg(elem_t* out, const elem_t* qkv, const elem_t* kc, const elem_t* vc, const int* pos, const int* slots, int T, int nh, int nkv, int maxSeq, float scale) {
  constexpr int KEYS = D == 128 ? 64 : FA_WG_KEYS;  // a key tile (at head size 128, 64: registers)
  constexpr int SUB = D / 64;            // 64-dim column blocks of a head: a 128-byte swizzled row each
  constexpr int QBLK = 64 * 128, KBLK = KEYS * 128;  // bytes of a column block of q, of a key or value tile
  constexpr int QTILE = SUB * QBLK, TILE = SUB * KBLK;
  constexpr int QP = 64 * 8 * SUB / 128, PIECES = KEYS * 8 * SUB / 128;  // 16-byte pieces a thread copies
  extern __shared__ __align__(16) unsigned char fa_smem[];
  __shared__ int rslot[FA_WG_ROWS], rpos[FA_WG_ROWS];
  // q, then keys [FA_WG_STAGES], then values [FA_WG_STAGES], from a 1024-byte aligned base.
  const unsigned base = ((unsigned)__cvta_generic_to_shared(fa_smem) + 1023) & ~1023u;
  const unsigned qs = base, ks = base + QTILE, vs = ks + FA_WG_STAGES * TILE;
  const int t = threadIdx.x, warp = t >> 5, lane = t & 31, g = lane >> 2, tig = lane & 3;
  // The last rows first, as flash_prefill.
  const int r0 = (gridDim.y - 1 - blockIdx.y) * FA_WG_ROWS, h = blockIdx.x, kvh = h / (nh / nkv);
  const int rows = min(FA_WG_ROWS, T - r0);
  const int width = (nh + 2 * nkv) * D;
  for (int i = t; i < FA_WG_ROWS; i += blockDim.x) {
    rslot[i] = i < rows ? slots[r0 + i] : -1;
    rpos[i] = i < rows ? pos[r0 + i] : -1;
  }
  // Piece i = t + 128 p of a tile of R rows: row (i / 8) % R of column block i / (8 R), 16-byte chunk i % 8,
  // stored at chunk i % 8 ^ row % 8 (the swizzle); doff its dims' offset in a row.
  unsigned soff[PIECES];
  int doff[PIECES], prow[PIECES];
#pragma unroll
  for (int p = 0; p < PIECES; p++) {
    const int i = t + 128 * p, blk = i / (8 * KEYS), row = (i / 8) % KEYS, c = i % 8;
    soff[p] = blk * KBLK + row * 128 + ((c ^ (row & 7)) << 4);
    doff[p] = blk * 64 + c * 8;
    prow[p] = row;
  }
  pdl_wait();
  pdl_launch_next();
  const elem_t* q = qkv + (long long)r0 * width + h * D;
#pragma unroll
  for (int p = 0; p < QP; p++) {
    const int i = t + 128 * p, blk = i / 512, row = (i / 8) % 64, c = i % 8;
    const bool ok = row < rows;
    cp_async16_to(qs + blk * QBLK + row * 128 + ((c ^ (row & 7)) << 4), ok ? q + (long long)row * width + blk * 64 + c * 8 : q, ok);
  }
  __syncthreads();  // rslot and rpos

  // The thread's rows of its warp's 16 (the fragments' rows g and g + 8).
  const int ra = warp * 16 + g, rb = ra + 8;
  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; i++) o[i] = 0.f;
  const float sl2 = scale * 1.4426950408889634f;
  float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};
  const long long stride = (long long)nkv * D;
  for (int start = 0; start < rows;) {
    // A pass: the run of rows from `start` of one slot, over that slot's keys 0..kmax (the run's last position).
    const int slot = rslot[start];
    int stop = start + 1, kmax = rpos[start];
    for (; stop < rows && rslot[stop] == slot; stop++) kmax = max(kmax, rpos[stop]);
    const int pa = ra >= start && ra < stop ? rpos[ra] : -1;  // -1: not this pass's row
    const int pb = rb >= start && rb < stop ? rpos[rb] : -1;
    const elem_t* kbase = kc + (long long)slot * maxSeq * stride + (long long)kvh * D;
    const elem_t* vbase = vc + (long long)slot * maxSeq * stride + (long long)kvh * D;
    // Tile i into buffer i % FA_WG_STAGES, a commit group each (empty past kmax, so that a wait counts
    // tiles). Keys past kmax may never have been written (any bits, NaN too): zeros, as p v multiplies them
    // by 0.
    auto load = [&](int i) {
      const int k0 = i * KEYS, buf = i % FA_WG_STAGES;
      if (k0 <= kmax)
#pragma unroll
        for (int p = 0; p < PIECES; p++) {
          const bool ok = k0 + prow[p] <= kmax;
          const long long c = ok ? (long long)(k0 + prow[p]) * stride + doff[p] : 0;
          cp_async16_to(ks + buf * TILE + soff[p], kbase + c, ok);
          cp_async16_to(vs + buf * TILE + soff[p], vbase + c, ok);
        }
      cp_async_commit();
    };
#pragma unroll
    for (int i = 0; i < FA_WG_STAGES - 1; i++) load(i);
    for (int i = 0, k0 = 0; k0 <= kmax; i++, k0 += KEYS) {
      const int buf = i % FA_WG_STAGES;
      // This tile (and q) landed for every thread, made visible to the MMAs' (async) proxy; every thread is
      // done with the last tile's buffer, which tile i + FA_WG_STAGES - 1 now streams into.
      cp_async_wait_group<FA_WG_STAGES - 2>();
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      __syncthreads();
      load(i + FA_WG_STAGES - 1);
      float s[KEYS / 2];
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < 4 * SUB; kk++) {
        // 16 dims: 32 bytes along a swizzled row, or the next column block.
        wgmma_ss(s, wg_desc(qs + (kk / 4) * QBLK + (kk % 4) * 32, 16), wg_desc(ks + buf * TILE + (kk / 4) * KBLK + (kk % 4) * 32, 16), kk);
      }
      wg_commit_wait();
      // The causal mask where a row of the thread does not see the tile's last key (rows outside the pass
      // see none); the rows' maxima over the tile, on their 4 lanes; the scale after (it is positive).
      if (k0 + KEYS - 1 > pa || k0 + KEYS - 1 > pb)
#pragma unroll
        for (int j = 0; j < KEYS / 8; j++)
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const int key = k0 + 8 * j + 2 * tig + e;
            if (key > pa) s[4 * j + e] = NEG_INF;
            if (key > pb) s[4 * j + 2 + e] = NEG_INF;
          }
      float mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
      for (int j = 0; j < KEYS / 8; j++) {
        mx[0] = fmaxf(mx[0], fmaxf(s[4 * j], s[4 * j + 1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[4 * j + 2], s[4 * j + 3]));
      }
      float alpha[2], ref[2];
#pragma unroll
      for (int i = 0; i < 2; i++) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 2));
        const float mn = fmaxf(m[i], mx[i] * sl2);
        alpha[i] = mn == m[i] ? 1.f : ex2_ftz(m[i] - mn);
        ref[i] = mn == NEG_INF ? 0.f : mn;
        m[i] = mn;
      }
      // p = 2^(s sl2 - max), rounded to the dtype as p v's A fragments (keys 16 kk .. + 15: score blocks 2 kk
      // and 2 kk + 1), summed unrounded into l.
      unsigned pf[KEYS / 16][4];
      float rs[2] = {0.f, 0.f};
#pragma unroll
      for (int j = 0; j < KEYS / 8; j++) {
        float p[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
          p[e] = ex2_ftz(fmaf(s[4 * j + e], sl2, -ref[e >> 1]));
          rs[e >> 1] += p[e];
        }
        pf[j >> 1][(j & 1) * 2] = pack2f(p[0], p[1]);
        pf[j >> 1][(j & 1) * 2 + 1] = pack2f(p[2], p[3]);
      }
#pragma unroll
      for (int i = 0; i < 2; i++) l[i] = l[i] * alpha[i] + rs[i];
      if (__any_sync(0xffffffff, alpha[0] != 1.f || alpha[1] != 1.f))
#pragma unroll
        for (int j = 0; j < D / 8; j++) {
          o[4 * j] *= alpha[0];
          o[4 * j + 1] *= alpha[0];
          o[4 * j + 2] *= alpha[1];
          o[4 * j + 3] *= alpha[1];
        }
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < KEYS / 16; kk++) wgmma_rs(o, pf[kk], wg_desc(vs + buf * TILE + kk * 16 * 128, KBLK));
      wg_commit_wait();
    }
    cp_async_wait_all();  // the empty groups past kmax
    __syncthreads();  // every thread is done with the buffers before the next pass refills them
    start = stop;
  }
#pragma unroll
  for (int i = 0; i < 2; i++) {
    l[i] += __shfl_xor_sync(0xffffffff, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffff, l[i], 2);
  }
  elem_t* oa = out + ((long long)(r0 + ra) * nh + h) * D;
  elem_t* ob = out + ((long long)(r0 + rb) * nh + h) * D;
  const float ia = 1.f / l[0], ib = 1.f / l[1];
#pragma unroll
  for (int j = 0; j < D / 8; j++) {
    const int d = j * 8 + 2 * tig;
    if (ra < rows) *(unsigned*)(oa + d) = pack2f(o[4 * j] * ia, o[4 * j + 1] * ia);
    if (rb < rows) *(unsigned*)(ob + d) = pack2f(o[4 * j + 2] * ib, o[4 * j + 3] * ib);
  }
}
#endif
// grid [nh, ceil(T / FA_WG_ROWS)], block 128, dynamic shared memory for q, FA_WG_STAGES key and value tiles
// (FA_WG_KEYS keys, 64 at head size 128) and 1 KiB to align them (flashPrefill in
// lib/model/decoder-model.ts); the arguments of attention_prefill_*, hd fixed by the kernel. Empty where
// NVRTC did not compile for sm_90a (the host launches them only where it did).
extern "C" __global__ void __launch_bounds__(128) attention_prefill_wg_64(elem_t* out, const elem_t* qkv, const elem_t* kc, const elem_t* vc, const int* pos, const int* slots, int T, int nh, int nkv, int hd, int maxSeq, float scale) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  flash_prefill_wg<64>(out, qkv, kc, vc, pos, slots, T, nh, nkv, maxSeq, scale);
#endif
}
extern "C" __global__ void __launch_bounds__(128) attention_prefill_wg_128(elem_t* out, const elem_t* qkv, const elem_t* kc, const elem_t* vc, const int* pos, const int* slots, int T, int nh, int nkv, int hd, int maxSeq, float scale) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  flash_prefill_wg<128>(out, qkv, kc, vc, pos, slots, T, nh, nkv, maxSeq, scale);
#endif
}

// out[t][i] = round_e(silu(gu[t][i])) * gu[t][F + i], rounded: transformers applies the activation in
// the dtype, then multiplies. With `norm`, gate/up's weights hold the MLP norm's (fold_norm) and gu was
// computed from the raw residual rows: gate and up are first scaled by resid's row's 1/rms and rounded, in
// place of the add_rmsnorm launch before gate/up. Grid [ceil(F / (8 * blockDim.x)), T]: a thread takes 8 adjacent elements of
// a row (16-byte loads and a store when F % 8 == 0, as every real model's is), with no index division.
// x / (1 + e^-x) as __fdividef: a reciprocal and a product, within 2 ulp, and 0 where e^-x passes 2^126
// (x below -87, where silu is under 1e-36 in magnitude). IEEE division's slow-path branch kept each
// element's 25 instructions in sequence (ptxas, sm_90); without it a thread's 8 elements interleave.
__device__ __forceinline__ elem_t silu_mul1(elem_t g, elem_t u) {
  const float x = to_f(g);
  return from_f(round_e(__fdividef(x, 1.f + expf(-x))) * to_f(u));
}
extern "C" __global__ void silu_mul(elem_t* out, const elem_t* gu, int F, int T, const elem_t* resid, int H, float eps, int norm) {
  pdl_wait();
  pdl_launch_next();
  const int t = blockIdx.y, i = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
  const float inv = norm ? row_inv_rms(resid + (long long)t * H, H, eps) : 1.f;
  if (i >= F) return;
  const elem_t* g = gu + (long long)t * 2 * F + i;
  const elem_t* u = g + F;
  elem_t* o = out + (long long)t * F + i;
  if (F % 8 == 0) {
    const uint4 a = *(const uint4*)g, b = *(const uint4*)u;
    const unsigned int ga[4] = {a.x, a.y, a.z, a.w}, ub[4] = {b.x, b.y, b.z, b.w};
    unsigned int r[4];
#pragma unroll
    for (int e = 0; e < 4; e++)
      r[e] = silu_mul1(scale_e(ga[e] & 0xffff, inv), scale_e(ub[e] & 0xffff, inv)) | ((unsigned int)silu_mul1(scale_e(ga[e] >> 16, inv), scale_e(ub[e] >> 16, inv)) << 16);
    uint4 v;
    v.x = r[0];
    v.y = r[1];
    v.z = r[2];
    v.w = r[3];
    *(uint4*)o = v;
  } else {
    for (int e = 0; e < 8 && i + e < F; e++) o[e] = silu_mul1(scale_e(g[e], inv), scale_e(u[e], inv));
  }
}

// Decode GEMVs, for models whose decode steps are launch-bound (DecoderModel's `decodeGemvFits` rule): a
// decode step's projections x W^T for M token rows, W [N][K] as transformers stores it (each output
// column's weights one contiguous row), K <= 2048. Block (bx, by) takes output columns bx * GEMV_WARPS ..
// and rows by * GEMV_ROWS ..: one warp a column, whose lane l holds 16-byte chunks l, l + 32, ... of its
// weight row (at most GEMV_CHUNKS), loaded before griddepcontrol.wait (weights are never written by a step,
// so with programmatic dependent launch they stream in while the previous kernel runs). A row sums its
// lane's chunks in order, then a fixed shuffle tree: its bits depend on neither M nor the other rows, so a
// request gets the same tokens alone or in any decode batch.
//
// What cuBLAS and the kernels around it did is fused in (flags), with the same roundings (a norm's sum of
// squares in its own fixed order):
//   GEMV_NORM   x = rmsnorm(resid) * norm_w, the block's rows into shared memory, a warp a row (the
//               residual add is in the producing GEMV's epilogue);
//   GEMV_BIAS   + bias[n] before rounding (cuBLASLt's bias epilogue);
//   GEMV_RESID  resid[m][n] = round_e(resid[m][n] + round_e(dot)) instead of a store (o and down);
//   GEMV_F32    out is float, the dot stored unrounded (the LM head: sample rounds, as after cuBLAS);
//   GEMV_EMBED  with GEMV_NORM, the first layer's: the residual rows are the embedding's rows of the
//               tokens (x is the table [V][K]), which the blocks of the first columns also store into resid;
//   GEMV_ARGMAX with GEMV_F32, the layer chain's LM head only: the logits stored rounded (as sample leaves
//               them) and each row's greedy token left as an argmax key (argmax_key) for sample;
//   GEMV_PUBLISH with GEMV_ARGMAX: an all-greedy step's tokens stored and its ready flag set (chain_publish);
//   gemv_silu   columns n and N + n (gate and up) give out[m][n] = silu_mul1 of the two rounded dots.

// A 16-byte weight load that bypasses L1 (the activations stay there); volatile keeps it before the wait.
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// acc plus the dot product of 8 packed elements of w and x, in element order.
__device__ __forceinline__ float dot8(float acc, const uint4 w, const uint4 x) {
  float a[8], b[8];
  unpack8(a, w);
  unpack8(b, x);
#pragma unroll
  for (int e = 0; e < 8; e++) acc = fmaf(a[e], b[e], acc);
  return acc;
}

// The warp's sums of R values a lane (R a power of two, at most 32), v[j] for row j: warp_sum's butterfly
// for each row (lanes paired at distance 16, 8, 4, 2, 1, so each row's sum has its bits), but while a lane
// carries more than one row a pairing step also halves them: at distance 16 a lane keeps half the rows and
// sends its partner the other half, and so on. For 4 rows, 6 shuffles instead of 20. Returns the sum of
// row gemv_row_of_lane<R>(lane).
template <int R>
__device__ __forceinline__ float warp_sum_rows(const float (&v)[R]) {
  const int lane = threadIdx.x & 31;
  float c[R];
#pragma unroll
  for (int i = 0; i < R; i++) c[i] = v[i];
  int o = 16;
#pragma unroll
  for (int n = R; n > 1; n >>= 1, o >>= 1) {
    const bool hi = lane & o;
#pragma unroll
    for (int i = 0; i < n / 2; i++) c[i] = (hi ? c[i + n / 2] : c[i]) + __shfl_xor_sync(0xffffffff, hi ? c[i] : c[i + n / 2], o);
  }
  for (; o > 0; o >>= 1) c[0] += __shfl_xor_sync(0xffffffff, c[0], o);
  return c[0];
}
// The row whose sum warp_sum_rows<R> leaves in `lane`: the lane's bits 4, 3, ... read as a number.
template <int R>
__device__ __forceinline__ int gemv_row_of_lane(int lane) {
  int r = 0;
#pragma unroll
  for (int n = R, o = 16; n > 1; n >>= 1, o >>= 1) r = 2 * r + ((lane & o) ? 1 : 0);
  return r;
}

// A 4-element slice's squares, summed as every norm here sums them (the order is the bits').
__device__ __forceinline__ float norm_sq(float4 v) { return v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w; }
// Slice i of a normalized row into dst: each element of v times f, rounded to the dtype, times its weight
// (w: the slice's 4 weights).
__device__ __forceinline__ void norm_slice(elem_t* dst, int i, float4 v, uint2 w, float f) {
  const unsigned a[2] = {w.x, w.y};
  const float x[4] = {v.x, v.y, v.z, v.w};
  float y[4];
#pragma unroll
  for (int e = 0; e < 4; e++) y[e] = round_e(x[e] * f) * (e & 1 ? hi_f(a[e >> 1]) : lo_f(a[e >> 1]));
  *(uint2*)(dst + 4 * i) = make_uint2(pack2(from_f(y[0]), from_f(y[1])), pack2(from_f(y[2]), from_f(y[3])));
}

// GEMV_NORM's prologue for token row m, by one warp: dst[0..K) = rmsnorm(row) * norm_w, the row being the
// residual stream's (resid_row) or, with GEMV_EMBED, the embedding's row of token m (emb: the table [V][K];
// with `store`, it is also stored into resid_row). Lane l sums the squares of 4-element slices l, l + 32,
// ... in order, then the shuffle tree; the second pass reads the row again from L1. Each pass has B of a
// lane's slices in flight at once (the sums keep their order), so a row costs a load latency or two, not
// one a slice.
template <int B>
__device__ __forceinline__ void gemv_norm_row(elem_t* dst, float* resid_row, const elem_t* emb, const int* tokens, int m, int V, int K, float eps, const elem_t* norm_w, int flags, bool store) {
  const int lane = threadIdx.x & 31, n4 = K / 4;
  float4* r = (float4*)resid_row;
  const bool embed = flags & GEMV_EMBED;
  const uint2* e = (const uint2*)(emb + (long long)(embed ? token_row(tokens, m, V) : 0) * K);
  // Slice i of the row: the residual stream's, or the embedding's.
  auto slice = [&](int i) {
    if (!embed) return r[i];
    const uint2 v = e[i];
    return make_float4(lo_f(v.x), hi_f(v.x), lo_f(v.y), hi_f(v.y));
  };
  float ss = 0.f;
  for (int i0 = lane; i0 < n4; i0 += 32 * B) {
    float4 v[B];
#pragma unroll
    for (int u = 0; u < B; u++)
      if (i0 + 32 * u < n4) v[u] = slice(i0 + 32 * u);
#pragma unroll
    for (int u = 0; u < B; u++)
      if (i0 + 32 * u < n4) ss += norm_sq(v[u]);
  }
  const float f = rsqrtf(warp_sum(ss) / K + eps);
  for (int i0 = lane; i0 < n4; i0 += 32 * B) {
    float4 v[B];
    uint2 w[B];
#pragma unroll
    for (int u = 0; u < B; u++)
      if (i0 + 32 * u < n4) {
        v[u] = slice(i0 + 32 * u);
        w[u] = *(const uint2*)(norm_w + 4 * (i0 + 32 * u));
      }
#pragma unroll
    for (int u = 0; u < B; u++) {
      const int i = i0 + 32 * u;
      if (i >= n4) continue;
      if (embed && store) r[i] = v[u];
      norm_slice(dst, i, v[u], w[u], f);
    }
  }
}

// A GEMV's epilogue for output (m, n): s0 the dot (s1 the up column's, gemv_silu's), per the flags; r is
// resid[m][n] as it was before (read only with GEMV_RESID, which the tensor-core GEMVs load early).
template <bool SILU>
__device__ __forceinline__ void gemv_store(elem_t* out, float* resid, const elem_t* bias, int flags, int m, int n, int N, float s0, float s1, float r) {
  const long long o = (long long)m * N + n;
  if (SILU) out[o] = silu_mul1(from_f(s0), from_f(s1));
  else if (flags & GEMV_RESID) resid[o] = round_e(r + round_e(s0));
  else if (flags & GEMV_F32) ((float*)out)[o] = flags & GEMV_ARGMAX ? round_e(s0) : s0;
  else out[o] = from_f(flags & GEMV_BIAS ? s0 + to_f(bias[n]) : s0);
}

template <bool SILU>
__device__ __forceinline__ void gemv_rows(elem_t* out, float* resid, const elem_t* x, const elem_t* W, const elem_t* norm_w, const elem_t* bias, const int* tokens, int V, int N, int K, int M, float eps, int flags) {
  __shared__ __align__(16) elem_t xs[GEMV_ROWS * 256 * GEMV_CHUNKS];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n = blockIdx.x * GEMV_WARPS + warp, m0 = blockIdx.y * GEMV_ROWS;
  const bool live = n < N;
  const int chunks = K >> 3;
  const uint4* w0 = (const uint4*)(W + (long long)(live ? n : 0) * K);
  const uint4* w1 = (const uint4*)(W + (long long)(live ? N + n : 0) * K);
  uint4 r0[GEMV_CHUNKS], r1[GEMV_CHUNKS];
#pragma unroll
  for (int u = 0; u < GEMV_CHUNKS; u++) {
    const int c = lane + 32 * u;
    if (live && c < chunks) {
      r0[u] = ld_stream(w0 + c);
      if (SILU) r1[u] = ld_stream(w1 + c);
    }
  }
  pdl_wait();
  pdl_launch_next();
  if (flags & GEMV_NORM) {
    const int m = m0 + warp;
    if (warp < GEMV_ROWS && m < M) gemv_norm_row<2>(xs + warp * K, resid + (long long)m * K, x, tokens, m, V, K, eps, norm_w, flags, blockIdx.x == 0);
    __syncthreads();
  }
  if (!live) return;
  // x row j of the block: the normalized rows in shared memory, or the input's row m0 + j.
  const elem_t* xr = flags & GEMV_NORM ? xs : x + (long long)m0 * K;
  float a0[GEMV_ROWS], a1[GEMV_ROWS];
#pragma unroll
  for (int j = 0; j < GEMV_ROWS; j++) a0[j] = a1[j] = 0.f;
#pragma unroll
  for (int u = 0; u < GEMV_CHUNKS; u++) {
    const int c = lane + 32 * u;
    if (c < chunks) {
#pragma unroll
      for (int j = 0; j < GEMV_ROWS; j++) {
        if (m0 + j < M) {
          const uint4 xv = ((const uint4*)(xr + j * K))[c];
          a0[j] = dot8(a0[j], r0[u], xv);
          if (SILU) a1[j] = dot8(a1[j], r1[u], xv);
        }
      }
    }
  }
  // The rows' sums (rows past M sum zeros); lane 32 / GEMV_ROWS * j holds row j's.
  const float s0 = warp_sum_rows<GEMV_ROWS>(a0);
  const float s1 = SILU ? warp_sum_rows<GEMV_ROWS>(a1) : 0.f;
  const int m = m0 + gemv_row_of_lane<GEMV_ROWS>(lane);
  if ((lane & (32 / GEMV_ROWS - 1)) == 0 && m < M) gemv_store<SILU>(out, resid, bias, flags, m, n, N, s0, s1, flags & GEMV_RESID ? resid[(long long)m * N + n] : 0.f);
}

// grid [ceil(N / GEMV_WARPS), ceil(M / GEMV_ROWS)], block 32 * GEMV_WARPS. x, W and their rows 16-byte
// aligned; K % 8 == 0 and K <= 256 * GEMV_CHUNKS. Two entry points, so the plain GEMV is not allocated the
// second column's registers.
extern "C" __global__ void __launch_bounds__(32 * GEMV_WARPS) gemv(elem_t* out, float* resid, const elem_t* x, const elem_t* W, const elem_t* norm_w, const elem_t* bias, const int* tokens, int V, int N, int K, int M, float eps, int flags) {
  gemv_rows<false>(out, resid, x, W, norm_w, bias, tokens, V, N, K, M, eps, flags);
}
// W is [2N][K] (gate rows, then up rows); out [M][N] gets silu(gate) * up.
extern "C" __global__ void __launch_bounds__(32 * GEMV_WARPS) gemv_silu(elem_t* out, float* resid, const elem_t* x, const elem_t* W, const elem_t* norm_w, const elem_t* bias, const int* tokens, int V, int N, int K, int M, float eps, int flags) {
  gemv_rows<true>(out, resid, x, W, norm_w, bias, tokens, V, N, K, M, eps, flags);
}

// Tensor-core decode GEMVs, for models whose decode steps are bandwidth-bound (DecoderModel's
// 'tensor-cores' decode GEMVs): the same call as gemv (flags, fusions, roundings of the epilogue), for at
// most 8 * MG token rows and any K % 64 == 0, on m16n8k16 MMAs with the weights as the A operand (16
// output columns) and the token rows as B (8 a group). A block of GM_WARPS warps takes tiles of 16 output
// columns (gemv_mma_silu: 16 gate and the 16 matching up columns), tile blockIdx.x, + gridDim.x, ...;
// each warp takes the tile's 64-wide chunks warp, warp + GM_WARPS, ... of K, a chunk a step. Lane (g, t) =
// (lane / 4, lane % 4) takes the 16 bytes at offsets 8 t and 32 + 8 t of a chunk from weight rows g and g + 8
// and from token row g (8 j + g for group j): MMA k index 2 i (+ 1) of lane i is the lane's element 2 i (+ 1)
// of its 16 bytes, in A and B alike, so the MMAs sum every product of the chunk, with no shuffles. The copies
// are cp.async into a ring of GM_SLOTS / A steps a warp in shared memory, made by the warp as whole 128-byte
// lines (a copy instruction takes 4 rows' chunks, 8 lanes a row), not by each lane for its own fragments:
// lanes copying their own 16-byte pieces ask for each line in two halves, and on an H200 that cost 1b's whole
// decode step 1.3% at batch 1 and 2.1% at batch 8 (762.7 against 772.6, 807.3 against 824.5 µs, the same run,
// the same bits). A warp barrier makes the lines its lanes copied visible to all (cp.async's wait covers the
// thread's own copies only), and one before each step's copies keeps them off a slot still being read. The
// first steps' weights are issued before griddepcontrol.wait (they stream in while the previous kernel
// finishes, where its blocks leave room for this one's), their x after it, each step's in its own commit
// group in that order, so waiting for all but the newest S - 1 groups finds step q whole. With GEMV_NORM, x
// is the block's normalized rows in shared memory instead (a warp a row, gemv_norm_row). The warps' partial
// sums meet in shared memory and are summed in warp order. Every order depends on K alone, and a token row's
// MMAs read only that row: a row's bits depend on neither M nor the other rows (nor MG, nor the grid), so a
// request gets the same tokens alone or in any decode batch of at most 8 * MG rows.
// Dynamic shared memory: the rings, GM_WARPS * S * (4 A + (GEMV_NORM ? 0 : 2 MG)) 16-byte pieces a lane,
// then with GEMV_NORM 8 MG rows of K + 32 elements (the pad puts a warp's fragment loads in distinct banks).
// Rings of 6 steps and a block a multiprocessor: on an H200 a 1B model's batch-1 decode step took 820 µs
// so, against 844 with rings of 4 and two blocks a multiprocessor (which leaves room for the next kernel's
// block to be resident, copying its first steps' weights, while this one finishes); remeasured with 128
// registers and rings of 3, 872.5 against 761.5: the block scheduler then puts two blocks of one kernel (o,
// down) on some multiprocessors, which run them 40-45% longer (docs/architecture.md).

// Where a weight row's 16-byte unit sits in a 16 x 64 tile in shared memory: row-major, 8 units (a 128-byte
// chunk) a row, the halves of odd rows swapped, so the 8 lanes of a quarter-warp reading rows g, g + 1 at
// units t (or t + 4) hit distinct banks.
__device__ __forceinline__ int gm_unit(int r, int u) { return 8 * r + (u ^ ((r & 1) << 2)); }

template <int MG, bool SILU>
__device__ __forceinline__ void gemv_mma_rows(elem_t* out, float* resid, const elem_t* x, const elem_t* W, const elem_t* norm_w, const elem_t* bias, const int* tokens, int V, int N, int K, int M, float eps, int flags) {
  constexpr int A = SILU ? 2 : 1;  // weight tiles: gate and up
  constexpr int S = GM_SLOTS / A;  // steps in flight a warp
  constexpr int EI = (128 * MG + 32 * GM_WARPS - 1) / (32 * GM_WARPS);  // a thread's epilogue items a tile
  extern __shared__ __align__(16) uint4 smem[];
  __shared__ float red[GM_WARPS][A][4 * MG][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const bool norm = flags & GEMV_NORM;
  const int per = 4 * A + (norm ? 0 : 2 * MG);  // 16-byte pieces a lane copies a step
  uint4* const wring = smem + warp * S * per * 32;  // this warp's ring
  elem_t* xs = (elem_t*)(smem + GM_WARPS * S * per * 32);
  const int chunks = K >> 6, tiles = (N + 15) >> 4, steps = (chunks + GM_WARPS - 1) / GM_WARPS;
  const int total = (blockIdx.x < tiles ? (tiles - 1 - blockIdx.x) / gridDim.x + 1 : 0) * steps;
  // Step q's tile's first column and chunk (the chunk past the end when the warp has none there).
  auto where = [&](int q, int& n0, int& c) {
    n0 = (blockIdx.x + q / steps * gridDim.x) * 16;
    c = warp + GM_WARPS * (q % steps);
  };
  // Step q's weights into its slot (units 0 .. 128 A), none past the last step: copy i takes rows 4 i + lane / 8,
  // unit lane % 8 of the chunk, unit u of row r landing at gm_unit(r, u).
  auto issue_w = [&](int q) {
    if (q >= total) return;
    int n0, c;
    where(q, n0, c);
    const bool ok = c < chunks;
    uint4* d = wring + (q % S) * per * 32;
#pragma unroll
    for (int a = 0; a < A; a++)
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int r = 4 * i + (lane >> 3), u = lane & 7, n = n0 + r < N ? n0 + r : 0;
        cp_async16(d + 128 * a + gm_unit(r, u), W + (long long)(n + a * N) * K + (ok ? 64 * c + 8 * u : 0), ok);
      }
  };
  // Step q's token rows (units 128 A ..: group j's 8 rows as the weights' first 8), zeros past M; none with
  // GEMV_NORM.
  auto issue_x = [&](int q) {
    if (q >= total || norm) return;
    int n0, c;
    where(q, n0, c);
    uint4* d = wring + (q % S) * per * 32 + 128 * A;
#pragma unroll
    for (int j = 0; j < MG; j++)
#pragma unroll
      for (int i = 0; i < 2; i++) {
        const int r = 4 * i + (lane >> 3), u = lane & 7, m = 8 * j + r;
        const bool ok = c < chunks && m < M;
        cp_async16(d + 64 * j + gm_unit(r, u), x + (ok ? (long long)m * K + 64 * c + 8 * u : 0), ok);
      }
  };
#pragma unroll
  for (int q = 0; q < S - 1; q++) {
    issue_w(q);
    cp_async_commit();
  }
  pdl_wait();
  pdl_launch_next();
#pragma unroll
  for (int q = 0; q < S - 1; q++) {
    issue_x(q);
    cp_async_commit();
  }
  if (norm) {
    for (int m = warp; m < M && m < 8 * MG; m += GM_WARPS) gemv_norm_row<16>(xs + m * (K + 32), resid + (long long)m * K, x, tokens, m, V, K, eps, norm_w, flags, blockIdx.x == 0);
    __syncthreads();
  }
  // This thread's epilogue item e of the tile at column n0, i = threadIdx.x + e blockDim.x: lane l = i % 32's
  // accumulator j = i / 32 (token row group j / 4, element j % 4), whose output is column n0 + l / 4 (+ 8
  // for elements 2 and 3) of token row 8 (j / 4) + 2 (l % 4) + j % 2. False past 128 MG, N or M.
  auto item = [&](int e, int n0, int& l, int& j, int& n, int& m) {
    const int i = threadIdx.x + e * 32 * GM_WARPS;
    l = i & 31;
    j = i >> 5;
    n = n0 + (l >> 2) + (j & 2) * 4;
    m = 8 * (j >> 2) + 2 * (l & 3) + (j & 1);
    return i < 128 * MG && n < N && m < M;
  };
  // GEMV_RESID (o, down): the residual stream's values under the tile's items, loaded as the tile's first
  // step starts, so the epilogue (the kernel's last work, which the next kernel waits on) does not wait for
  // them. On an H200, 1b's decode step took 773.9 µs so at batch 1 against 788.2 with the load in the
  // epilogue, 825.9 against 833.5 at batch 8 (same run).
  float rv[EI];
  float acc[A][MG][4];
#pragma unroll
  for (int a = 0; a < A; a++)
#pragma unroll
    for (int j = 0; j < MG; j++) acc[a][j][0] = acc[a][j][1] = acc[a][j][2] = acc[a][j][3] = 0.f;
  for (int q = 0; q < total; q++) {
    __syncwarp();  // every lane is done reading the slot step q + S - 1 takes
    issue_w(q + S - 1);
    issue_x(q + S - 1);
    cp_async_commit();
    cp_async_wait_group<S - 1>();
    __syncwarp();  // step q's weights, copied by the warp's other lanes too, are visible to all
    int n0, c;
    where(q, n0, c);
    if ((flags & GEMV_RESID) && q % steps == 0) {
#pragma unroll
      for (int e = 0; e < EI; e++) {
        int l, j, n, m;
        if (item(e, n0, l, j, n, m)) rv[e] = resid[(long long)m * N + n];
      }
    }
    if (c < chunks) {
      const uint4* d = wring + (q % S) * per * 32;
#pragma unroll
      for (int j = 0; j < MG; j++) {
        uint4 x0 = make_uint4(0, 0, 0, 0), x1 = x0;
        if (!norm) {
          x0 = d[128 * A + 64 * j + gm_unit(g, t)];
          x1 = d[128 * A + 64 * j + gm_unit(g, t + 4)];
        } else if (8 * j + g < M) {
          const uint4* p = (const uint4*)(xs + (8 * j + g) * (K + 32) + 64 * c + 8 * t);
          x0 = p[0];
          x1 = p[4];
        }
#pragma unroll
        for (int a = 0; a < A; a++) {
          const uint4* wa = d + 128 * a;
          const uint4 w0 = wa[gm_unit(g, t)], w1 = wa[gm_unit(g, t + 4)], w2 = wa[gm_unit(g + 8, t)], w3 = wa[gm_unit(g + 8, t + 4)];
          mma16816(acc[a][j], {w0.x, w2.x, w0.y, w2.y}, x0.x, x0.y);
          mma16816(acc[a][j], {w0.z, w2.z, w0.w, w2.w}, x0.z, x0.w);
          mma16816(acc[a][j], {w1.x, w3.x, w1.y, w3.y}, x1.x, x1.y);
          mma16816(acc[a][j], {w1.z, w3.z, w1.w, w3.w}, x1.z, x1.w);
        }
      }
    }
    if (q % steps != steps - 1) continue;
    // The tile's epilogue: the warps' sums through shared memory.
#pragma unroll
    for (int a = 0; a < A; a++)
#pragma unroll
      for (int j = 0; j < MG; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
          red[warp][a][4 * j + i][lane] = acc[a][j][i];
          acc[a][j][i] = 0.f;
        }
    __syncthreads();
#pragma unroll
    for (int e = 0; e < EI; e++) {
      int l, j, n, m;
      if (!item(e, n0, l, j, n, m)) continue;
      float s0 = red[0][0][j][l], s1 = SILU ? red[0][A - 1][j][l] : 0.f;
#pragma unroll
      for (int w = 1; w < GM_WARPS; w++) {
        s0 += red[w][0][j][l];
        if (SILU) s1 += red[w][A - 1][j][l];
      }
      gemv_store<SILU>(out, resid, bias, flags, m, n, N, s0, s1, rv[e]);
    }
    __syncthreads();
  }
  cp_async_wait_all();
}

// grid: any size (the host: as few blocks as take the ceil(N / 16) tiles in rounds of at most a block a
// multiprocessor), block 32 * GM_WARPS, dynamic shared memory as above. x and W 16-byte aligned,
// K % 64 == 0, M <= 8 MG.
#define GEMV_MMA_KERNEL(NAME, MG, SILU)                                                                                                          \
  extern "C" __global__ void __launch_bounds__(32 * GM_WARPS, 1)                                                                             \
      NAME(elem_t* out, float* resid, const elem_t* x, const elem_t* W, const elem_t* norm_w, const elem_t* bias, const int* tokens, int V, int N, int K, int M, float eps, int flags) { \
    gemv_mma_rows<MG, SILU>(out, resid, x, W, norm_w, bias, tokens, V, N, K, M, eps, flags);                                                  \
  }
GEMV_MMA_KERNEL(gemv_mma_8, 1, false)
GEMV_MMA_KERNEL(gemv_mma_16, 2, false)
GEMV_MMA_KERNEL(gemv_mma_silu_8, 1, true)
GEMV_MMA_KERNEL(gemv_mma_silu_16, 2, true)

// The layer chain (DecoderModel's decode steps of at most CHAIN_MAX_ROWS rows on tensor-core GEMVs,
// compute capability 9.0+): a layer's o, gate/up, down and the next layer's q/k/v (the last layer's: the LM
// head) as one kernel of a block a multiprocessor, the ops meeting at grid barriers. Each op is
// gemv_mma_8's math, tile for tile and warp for warp (the same chunks a warp, the same MMAs in the same
// order, the same norm, epilogue and roundings), so the logits have the same bits. What differs is who
// copies the weights: GC_PRODUCERS warps of the block copy every op's weights, op after op, into a ring of
// R stages (a stage: one 16 x 64 unit, 2 KiB, for each of the GM_WARPS consumer warps; producer warp p
// copies units p, p + GC_PRODUCERS, ...) and never wait for an op's inputs, so the weights keep streaming
// while the consumers meet at a barrier, stage an op's input rows or finish another block's share of
// tiles. Stage s is full when mbarrier full[s] completes (each producer lane arrives when its copies land:
// cp.async.mbarrier.arrive.noinc) and free when empty[s] does (each consumer warp arrives once it has read
// its unit). Only the consumers meet at the grid barriers (named barrier 1): a barrier's release fence
// waits for the arriving thread's copies in flight, and the consumers' have landed by then. After each
// barrier the op's input rows go into shared memory, K + 32 elements apart, by cp.async with every piece
// in flight at once: o's and down's copied from attn and act, gate/up's and the next q/k/v's normalized
// from the residual stream (chain_norm_rows, a warp a row, gemv_norm_row's bits). On an H200 a 1b decode
// step took 0.888-0.895x the separate GEMVs' time at batch 1, 0.95-0.96x at 4 and 0.97x at 8 (same runs;
// docs/architecture.md has what bounds it).
// ctr: four zeroed counters, left zeroed (the last block past the last barrier resets them).
// Dynamic shared memory: R stages of GM_WARPS * 2 KiB, the warps' partial sums (GM_WARPS * 2 * M rows of
// GC_RED_PITCH floats), then M rows of W + 32 elements (a normalized op stages its f32 rows' elements past a
// lane's registers and its weights past its own rows there).
#define GC_UNIT 128  // 16-byte pieces of a unit (16 rows x 64 elements)

// A shared-memory address as the 32-bit operand mbarrier and cp.async take.
__device__ __forceinline__ unsigned smem_u32(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(unsigned long long* b, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(b)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned long long* b) { asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(b)) : "memory"); }
// Arrives on b when every cp.async this thread issued before has landed (the arrival is not counted in
// advance: b's count includes it).
__device__ __forceinline__ void mbar_arrive_copies(unsigned long long* b) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_u32(b)) : "memory");
}
// Waits until the phase of b with this parity has completed; traps after GC_POLLS polls (a hang would
// otherwise hold the device: the launch fails with an illegal-instruction error instead).
__device__ __forceinline__ void mbar_wait(unsigned long long* b, unsigned parity) {
  for (unsigned polls = 0;; polls++) {
    unsigned done;
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(smem_u32(b)), "r"(parity)
        : "memory");
    if (done) return;
    if (polls == GC_POLLS) __trap();
  }
}
// Whether the phase of b with this parity has completed (a test: no wait).
__device__ __forceinline__ bool mbar_test(unsigned long long* b, unsigned parity) {
  unsigned done;
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
      : "=r"(done)
      : "r"(smem_u32(b)), "r"(parity)
      : "memory");
  return done;
}
// The consumer warps' barrier (the producer warps never take part).
__device__ __forceinline__ void chain_sync() { asm volatile("bar.sync 1, %0;" ::"n"(32 * GM_WARPS) : "memory"); }
// Every block's consumers meet: each block's thread 0 adds 1 to ctr (release: the block's stores before
// it, ordered by the named barrier, are visible to whoever acquires the sum) and polls it (acquire, which
// also invalidates the multiprocessor's L1, so the rows read next are the other blocks').
__device__ __forceinline__ void chain_grid_barrier(unsigned* ctr) {
  chain_sync();
  if (threadIdx.x == 0) {
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(ctr) : "memory");
    for (unsigned polls = 0;; polls++) {
      unsigned v;
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(ctr) : "memory");
      if (v >= gridDim.x) break;
      if (polls == GC_POLLS) __trap();
    }
  }
  chain_sync();
}

// The normalized ops' M rows of K into xs (rows ld elements apart; M <= GM_WARPS, a warp a row). A lane's
// first GC_NORM_SLICES 4-element slices of its row (lane, lane + 32, ...) come into its registers; the rest of
// the rows (f32, `rest` slices a row) and then the norm weights into shared memory past xs's M rows by
// cp.async; all of it in flight at once. Then gemv_norm_row's arithmetic in its order (the same bits). On an H200 (1b,
// batch 1) staging every row took a layer chain's gate/up and q/k/v 2.0 µs each from release to their first
// tile, against 3.1 for a warp a row reading its row from L2 (its loads in two rounds, the weights' in a
// third); 16 slices hold a whole row of 2048 (1b's), so its norms stage only their weights: 13 / 12 / 12 / 11 ring
// stages at 1 / 2 / 4 / 8 rows (168 registers, the most a 320-thread block gets, no spill).
__device__ __forceinline__ void chain_norm_rows(elem_t* xs, int ld, const float* resid, const elem_t* norm_w, int M, int K, float eps) {
  const int lane = threadIdx.x & 31, m = threadIdx.x >> 5, n4 = K / 4;
  const int kept = min(n4, 32 * GC_NORM_SLICES), rest = n4 - kept, left = kept - lane;  // the lane's kept slices: 32 u < left
  float* const rows = (float*)(xs + M * ld);
  elem_t* const nw = (elem_t*)(rows + 4 * M * rest);
  for (int i = threadIdx.x; i < M * rest + K / 8; i += 32 * GM_WARPS)
    if (i < M * rest) cp_async16((float4*)rows + i, (const float4*)resid + (i / rest) * n4 + kept + i % rest, true);
    else cp_async16((uint4*)nw + i - M * rest, (const uint4*)norm_w + i - M * rest, true);
  float4 v[GC_NORM_SLICES];
  if (m < M) {
    const float4* r = (const float4*)(resid + (long long)m * K) + lane;
#pragma unroll
    for (int u = 0; u < GC_NORM_SLICES; u++)
      if (32 * u < left) v[u] = r[32 * u];
  }
  cp_async_wait_all();
  chain_sync();
  if (m >= M) return;
  const float4* const sr = (const float4*)rows + m * rest;  // the row's staged slices: slice kept + i is sr[i]
  const uint2* const w = (const uint2*)nw;
  float ss = 0.f;
#pragma unroll
  for (int u = 0; u < GC_NORM_SLICES; u++)
    if (32 * u < left) ss += norm_sq(v[u]);
  for (int i = lane; i < rest; i += 32) ss += norm_sq(sr[i]);
  const float f = rsqrtf(warp_sum(ss) / K + eps);
  elem_t* const d = xs + m * ld;
#pragma unroll
  for (int u = 0; u < GC_NORM_SLICES; u++)
    if (32 * u < left) norm_slice(d, lane + 32 * u, v[u], w[lane + 32 * u], f);
  for (int i = lane; i < rest; i += 32) norm_slice(d, kept + i, sr[i], w[kept + i], f);
}

// The layer chain's scratch words past its four grid barriers' counters (GC_COUNTERS in all): the LM head's
// blocks done (chain_publish's count) and its published mark (sample stores nothing where it is set).
#define GC_DONE (GC_COUNTERS - 2)
#define GC_PUBLISHED (GC_COUNTERS - 1)

// GEMV_ARGMAX's key of logit x (rounded) in column n: the larger key is the larger logit, and of equal ones
// the lower column, so the largest key of a row is sample's greedy token (torch.argmax: the lowest index among
// equal maxima; -0 equals +0). 0, below every key, for what sample's sweep never takes: NaN and -inf.
__device__ __forceinline__ unsigned long long argmax_key(float x, int n) {
  if (!(x > NEG_INF)) return 0;
  const unsigned b = __float_as_uint(x == 0.f ? 0.f : x), ord = b & 0x80000000u ? ~b : b | 0x80000000u;
  return (unsigned long long)ord << 32 | (0xffffffffu - (unsigned)n);
}
// The column of a row's largest key.
__device__ __forceinline__ int argmax_column(unsigned long long key) { return (int)(0xffffffffu - (unsigned)key); }

// One op of the chain: out = x W^T per the GEMV flags (gemv_store), W [N][K] ([2N][K], gate then up, with silu).
struct ChainOp {
  const elem_t* W;
  const elem_t* x;
  const elem_t* norm_w;
  const elem_t* bias;
  elem_t* out;
  int N, K, flags;
  bool silu;
};

// A layer chain's ring of weights as its consumer warps see it: the next stage to read, st, of parity par.
struct ChainRing {
  const uint4* ring;
  unsigned long long *full, *empty;
  int R, st;
  unsigned par;
};
// One op's tiles on a block's consumer warps (gemv_chain): the ring's stages in order from q's (left where
// the op ends), the token rows staged in xs or, STREAMED, copied by each warp as it goes (below); each tile's
// epilogue as gemv_mma_rows's. With GEMV_ARGMAX each row's largest argmax_key of the block's tiles goes into
// keys[row] (atomicMax: one a row and warp pair, the epilogue's threads of a row being a warp's 8 lanes g in two
// warps), which the chain zeroed before its first barrier.
template <bool STREAMED>
__device__ __forceinline__ void chain_tiles(const ChainOp& o, ChainRing& q, elem_t* xs, float* red, float* resid, unsigned long long* keys, int M) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int A = o.silu ? 2 : 1, chunks = o.K >> 6, tiles = (o.N + 15) >> 4, steps = (chunks + GM_WARPS - 1) / GM_WARPS;
  // STREAMED (an input wider than xs's rows: down's, where the host stages narrower rows): each lane copies
  // the two pieces of its token row it reads at a step, GC_XSTEPS steps ahead, into its warp's own ring in
  // xs (M rows of 64 elements a step, gm_unit's swizzle), and reads back only its own copies, so no barrier
  // guards the ring; every thread commits a group a step, copies or none.
  elem_t* const xw = xs + warp * GC_XSTEPS * M * 64;
  auto fetch = [&](int s) {
    const int c = warp + GM_WARPS * s;
    if (c < chunks && g < M) {
      elem_t* d = xw + (s % GC_XSTEPS) * M * 64;
      const elem_t* x = o.x + (long long)g * o.K + 64 * c + 8 * t;
      cp_async16(d + 8 * gm_unit(g, t), x, true);
      cp_async16(d + 8 * gm_unit(g, t + 4), x + 32, true);
    }
    cp_async_commit();
  };
  float acc[2][4];
  unsigned long long key = 0;  // GEMV_ARGMAX: the largest of the thread's row so far
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int n0 = 16 * tile;
    if constexpr (STREAMED)
      for (int s = 0; s < GC_XSTEPS; s++) fetch(s);
    // gemv_mma_rows's epilogue item (MG = 1: one a thread): the lane's accumulator `warp`, column n, row m.
    const int n = n0 + g + (warp & 2) * 4, m = 2 * t + (warp & 1);
    const bool mine = threadIdx.x < 128 && n < o.N && m < M;
    float rv = 0.f;
    if ((o.flags & GEMV_RESID) && mine) rv = resid[(long long)m * o.N + n];
#pragma unroll
    for (int a = 0; a < 2; a++) acc[a][0] = acc[a][1] = acc[a][2] = acc[a][3] = 0.f;
    for (int s = 0; s < steps; s++) {
      const int c = warp + GM_WARPS * s;
      // Lane (g, t)'s 16-byte pieces of token row g in the step's chunk (zeros past M and K).
      uint4 x0 = make_uint4(0, 0, 0, 0), x1 = x0;
      if constexpr (STREAMED) cp_async_wait_group<GC_XSTEPS - 1>();
      if (c < chunks && g < M) {
        if constexpr (STREAMED) {
          const uint4* px = (const uint4*)(xw + (s % GC_XSTEPS) * M * 64);
          x0 = px[gm_unit(g, t)];
          x1 = px[gm_unit(g, t + 4)];
        } else {
          const uint4* px = (const uint4*)(xs + g * (o.K + 32) + 64 * c + 8 * t);
          x0 = px[0];
          x1 = px[4];
        }
      }
#pragma unroll
      for (int a = 0; a < 2; a++) {
        if (a == A) break;
        mbar_wait(q.full + q.st, q.par);
        if (c < chunks) {
          const uint4* wa = q.ring + (q.st * GM_WARPS + warp) * GC_UNIT;
          const uint4 w0 = wa[gm_unit(g, t)], w1 = wa[gm_unit(g, t + 4)], w2 = wa[gm_unit(g + 8, t)], w3 = wa[gm_unit(g + 8, t + 4)];
          mma16816(acc[a], {w0.x, w2.x, w0.y, w2.y}, x0.x, x0.y);
          mma16816(acc[a], {w0.z, w2.z, w0.w, w2.w}, x0.z, x0.w);
          mma16816(acc[a], {w1.x, w3.x, w1.y, w3.y}, x1.x, x1.y);
          mma16816(acc[a], {w1.z, w3.z, w1.w, w3.w}, x1.z, x1.w);
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(q.empty + q.st);
        if (++q.st == q.R) {
          q.st = 0;
          q.par ^= 1;
        }
      }
      // The step's pieces are in the MMAs' registers: their slot takes the copies GC_XSTEPS steps on.
      if constexpr (STREAMED) fetch(s + GC_XSTEPS);
    }
    // The tile's epilogue, as gemv_mma_rows's: the warps' sums in warp order, through red [warp][gate, up]
    // [row][GC_RED_PITCH] (the M rows only; accumulator i of lane (g, t) is column g + 8 (i / 2), row 2 t + i % 2).
#pragma unroll
    for (int a = 0; a < 2; a++)
#pragma unroll
      for (int i = 0; i < 4; i++)
        if (a < A && 2 * t + (i & 1) < M) red[((2 * warp + a) * M + 2 * t + (i & 1)) * GC_RED_PITCH + g + 8 * (i >> 1)] = acc[a][i];
    chain_sync();
    if (mine) {
      const float* rw = red + m * GC_RED_PITCH + n - n0;
      float s0 = rw[0], s1 = o.silu ? rw[M * GC_RED_PITCH] : 0.f;
#pragma unroll
      for (int w = 1; w < GM_WARPS; w++) {
        s0 += rw[2 * w * M * GC_RED_PITCH];
        if (o.silu) s1 += rw[(2 * w + 1) * M * GC_RED_PITCH];
      }
      if (o.silu) gemv_store<true>(o.out, resid, o.bias, o.flags, m, n, o.N, s0, s1, rv);
      else gemv_store<false>(o.out, resid, o.bias, o.flags, m, n, o.N, s0, s1, rv);
      if (o.flags & GEMV_ARGMAX) key = max(key, argmax_key(round_e(s0), n));
    }
    chain_sync();
  }
  if ((o.flags & GEMV_ARGMAX) && threadIdx.x < 128) {
    for (int d = 4; d < 32; d <<= 1) key = max(key, __shfl_xor_sync(0xffffffff, key, d));
    const int m = 2 * t + (warp & 1);
    if (g == 0 && m < M && key != 0) atomicMax(keys + m, key);
  }
}

// After the LM head's tiles (GEMV_ARGMAX with GEMV_PUBLISH): the last block to finish them takes each row's
// token from its key and, when every row is greedy, stores them into next (the step's read-back output, host
// memory), then sets *ready (host memory too) and ctr[GC_PUBLISHED] (sample's mark that it has nothing to
// store). So the host has the tokens while sample's launch still waits for this grid to end: a step returns
// that much earlier (HostStage's ready flag). ctr[GC_DONE] counts the blocks done (the last one
// resets it). A row without a key (no logit above -inf) or with a temperature leaves it all to sample.
__device__ __forceinline__ void chain_publish(unsigned* ctr, const unsigned long long* keys, const float* params, int* next, int* ready, int M) {
  chain_sync();  // the block's atomicMax calls come before its count (the release below covers them)
  if (threadIdx.x >= 32) return;
  const int r = threadIdx.x;
  unsigned done = 0;
  if (r == 0) asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(done) : "l"(ctr + GC_DONE) : "memory");
  if (__shfl_sync(0xffffffff, done, 0) != gridDim.x - 1) return;
  __syncwarp();  // lane 0's acquire before every lane's loads
  // L2's keys (ld.cg, where the atomics are), not this multiprocessor's L1.
  const unsigned long long key = r < M ? __ldcg(keys + r) : 1;
  if (__all_sync(0xffffffff, key != 0 && (r >= M || !(params[3 * r] > 0.f)))) {
    // One thread stores the tokens, then fences (system scope) before the flag: the host reads the flag first.
    const int col = argmax_column(key);
    for (int m = 0; m < M; m++) {
      const int c = __shfl_sync(0xffffffff, col, m);
      if (r == 0) next[m] = c;
    }
    if (r == 0) {
      ctr[GC_PUBLISHED] = 1;
      __threadfence_system();
      *(volatile int*)ready = 1;
    }
  }
  if (r == 0) ctr[GC_DONE] = 0;
}

// gemv_chain's and gemv_chain_streamed's body (STREAM: an op whose K is wider than W streams its rows).
// grid: every block resident at once (the host: a block a multiprocessor); block 32 * (GM_WARPS +
// GC_PRODUCERS).
// resid [M][H] f32; attn [M][Ko]; Wo [H][Ko]; act [M][F]; Wgu [2F][H]; Wd [H][F]; the next op: Wn [Nn][H]
// with its norm, bias (GEMV_BIAS in next_flags) and out (f32 with GEMV_F32); M <= 8; K's % 64 == 0;
// ctr GC_COUNTERS counters (zero between launches; chain_publish's two last), then with GEMV_ARGMAX in next_flags M
// argmax keys (8-byte aligned: GC_COUNTERS even); with GEMV_PUBLISH params (the rows' sampling), next and ready
// (chain_publish); R in 1..GC_STAGES; W the staged rows' width (xs holds M rows of W + 32 elements, and with STREAM at least
// GM_WARPS * GC_XSTEPS * M * 64): with STREAM an op whose K is wider streams its rows; M W >= M K + 2 M
// max(0, K - 128 GC_NORM_SLICES) + K for the norms' K (chain_norm_rows).
template <bool STREAM>
__device__ __forceinline__ void chain_body(float* resid, const elem_t* attn, const elem_t* Wo, elem_t* act, const elem_t* Wgu, const elem_t* mlp_norm, const elem_t* Wd, elem_t* next_out, const elem_t* Wn,
                                           const elem_t* next_norm, const elem_t* next_bias, unsigned* ctr, const float* params, int* next, int* ready, int Ko, int H, int F, int Nn, int M, float eps, int next_flags, int R, int W) {
#if __CUDA_ARCH__ >= 900
  extern __shared__ __align__(16) uint4 chain_smem[];
  __shared__ unsigned long long full[GC_STAGES], empty[GC_STAGES];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint4* const ring = chain_smem;
  float* const red = (float*)(ring + R * GM_WARPS * GC_UNIT);
  elem_t* const xs = (elem_t*)(red + GM_WARPS * 2 * M * GC_RED_PITCH);
  auto op = [&](int p) -> ChainOp {
    if (p == 0) return {Wo, attn, nullptr, nullptr, nullptr, H, Ko, GEMV_RESID, false};
    if (p == 1) return {Wgu, nullptr, mlp_norm, nullptr, act, F, H, GEMV_NORM, true};
    if (p == 2) return {Wd, act, nullptr, nullptr, nullptr, H, F, GEMV_RESID, false};
    return {Wn, nullptr, next_norm, next_bias, next_out, Nn, H, next_flags, false};
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < R; s++) {
      mbar_init(&full[s], 32 * GC_PRODUCERS);
      mbar_init(&empty[s], GM_WARPS);
    }
  }
  __syncthreads();
  if (warp >= GM_WARPS) {
    // The producers: every op's units in the consumers' order (tile, step, gate then up), a stage at a
    // time, producer p the units of consumer warps p, p + GC_PRODUCERS, ...; a chunk past K gets no copy,
    // the stage its arrivals all the same. A lane copies piece u of rows r = 4 i + lane / 8 (i < 4) of a
    // unit: the same 4 shared-memory offsets in every unit, 4 row addresses a tile, and a producer's units of
    // a stage GC_PRODUCERS chunks apart, so a stage's 16 copies take immediate offsets, about 40 instructions
    // against about 190 when each copy did its own index arithmetic. The time from a stage landing to the next
    // one's copies counts: on an H200 (1b, same runs) that took 0.965x the step's time at batch 1 in bf16
    // and 0.950x in f16, 0.985x at 2, 0.997-1.012x at 4 and 8; a variant choosing each copy's row and chunk at
    // run time had taken 1.08x the time of the same copies chosen once an op.
    static_assert(GM_WARPS % GC_PRODUCERS == 0, "a producer's units of a stage");
    const int u = lane & 7, p0 = warp - GM_WARPS;
    unsigned dst[4];
#pragma unroll
    for (int i = 0; i < 4; i++) dst[i] = smem_u32(ring + p0 * GC_UNIT + gm_unit(4 * i + (lane >> 3), u));
    int st = 0;
    unsigned par = 0;
    const bool short_ring = R <= GC_SHORT_RING, adapt = R > GC_BEHIND;
    // The stage GC_BEHIND before the next one to fill: its slot sb and its round's parity pb (stages before
    // the first count as read).
    int sb = adapt ? R - GC_BEHIND : 0;
    unsigned pb = 1;
    for (int p = 0; p < 4; p++) {
      const ChainOp o = op(p);
      const int A = o.silu ? 2 : 1, chunks = o.K >> 6, tiles = (o.N + 15) >> 4, steps = (chunks + GM_WARPS - 1) / GM_WARPS;
      const long long up = 2LL * o.N * o.K;  // bytes from gate's rows to up's
      for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const char* src[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
          const int n = 16 * tile + 4 * i + (lane >> 3);
          src[i] = (const char*)(o.W + (long long)(n < o.N ? n : 0) * o.K + 8 * u);
        }
        for (int s = 0; s < steps; s++)
          for (int a = 0; a < A; a++) {
            mbar_wait(&empty[st], par ^ 1);
            const int c0 = p0 + GM_WARPS * s;  // the producer's first chunk of the stage
            const long long off = (a ? up : 0) + 128LL * c0;
            const unsigned d = st * GM_WARPS * GC_UNIT * 16;
            const char* sp[4];
            unsigned dp[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
              sp[i] = src[i] + off;
              dp[i] = dst[i] + d;
            }
            // At most GC_INFLIGHT stages of a block in flight (the ring holds more, landed): a deeper queue
            // of copies adds no bandwidth and lengthens the wait of every latency-bound load behind it (the
            // grid barriers', the norms', the staged rows'). On an H200, 1b's decode step took 852.3
            // against 867.5 µs at batch 1, 912.9 against 927.1 at 4 with 3 against the whole ring (same run).
            // A ring of at most GC_SHORT_RING stages keeps one more in flight: 8 rows' took 0.972x the time
            // with 4 against 3 at 5 stages (0.971x in bf16) and 0.993-0.994x at 9 (two runs); 1 row's 13 stages
            // 0.986-0.996x (three runs, with the norms' rows in registers; 1.005x at 12 while they were staged).
            // And only GC_LOW while the consumers have not read the stage GC_BEHIND back: they are at a barrier
            // or staging rows, whose loads queue behind the copies, and the ring has landed stages to spare.
            // The wait comes after the empty stage's and the addresses (its operands), just before the copies.
            if (adapt && !mbar_test(&empty[sb], pb)) cp_async_wait_group_ready<GC_LOW - 1>(sp, dp);
            else if (short_ring) cp_async_wait_group_ready<GC_INFLIGHT>(sp, dp);
            else cp_async_wait_group_ready<GC_INFLIGHT - 1>(sp, dp);
#pragma unroll
            for (int j = 0; j < GM_WARPS / GC_PRODUCERS; j++) {
              if (c0 + GC_PRODUCERS * j >= chunks) break;
#pragma unroll
              for (int i = 0; i < 4; i++) cp_async16_to(dp[i] + j * GC_PRODUCERS * GC_UNIT * 16, sp[i] + j * GC_PRODUCERS * 128);
            }
            mbar_arrive_copies(&full[st]);
            cp_async_commit();
            if (++st == R) {
              st = 0;
              par ^= 1;
            }
            if (++sb == R) {
              sb = 0;
              pb ^= 1;
            }
          }
      }
    }
    cp_async_wait_all();
    return;
  }
  ChainRing q{ring, full, empty, R, 0, 0};
  unsigned long long* const keys = (unsigned long long*)(ctr + GC_COUNTERS);  // GEMV_ARGMAX's, a row each
  for (int p = 0; p < 4; p++) {
    const ChainOp o = op(p);
    const int tiles = (o.N + 15) >> 4;
    const bool streams = STREAM && o.K > W;  // the op's rows stream through the warps' rings, not xs
    if (p == 0) {
      pdl_wait();
      pdl_launch_next();
      // The LM head's argmax keys and chain_publish's mark start at 0 (its atomics come after three grid
      // barriers; the last step's sample, which read them, ended before this step's first kernel).
      if ((next_flags & GEMV_ARGMAX) && blockIdx.x == 0) {
        if (threadIdx.x < M) keys[threadIdx.x] = 0;
        if (threadIdx.x == 0) ctr[GC_PUBLISHED] = 0;
      }
    } else {
      chain_grid_barrier(ctr + p - 1);
    }
    // Past the last barrier: the last block past it resets the counters (every block has left its polls).
    if (p == 3 && threadIdx.x == 0 && atomicAdd(ctr + 3, 1) == gridDim.x - 1) ctr[0] = ctr[1] = ctr[2] = ctr[3] = 0;
    // The op's input rows into xs (a block without tiles in the op has no use for them): o's and down's
    // copied from attn and act; gate/up's and the next op's normalized.
    if (blockIdx.x < tiles && (o.flags & GEMV_NORM)) {
      chain_norm_rows(xs, o.K + 32, resid, o.norm_w, M, o.K, eps);
    } else if (blockIdx.x < tiles && !streams) {
      // Copied through L2 (other blocks wrote them) by cp.async: every piece in flight at once, no registers
      // (on an H200, 1b's down at batch 4: 1.7 µs, against 3.2 with 4 loads a thread in flight).
      const int per = o.K >> 3;
      for (int i = threadIdx.x; i < M * per; i += 32 * GM_WARPS) cp_async16(xs + (i / per) * (o.K + 32) + 8 * (i % per), (const uint4*)o.x + i, true);
      cp_async_wait_all();
    }
    chain_sync();
    if (streams) chain_tiles<true>(o, q, xs, red, resid, keys, M);
    else chain_tiles<false>(o, q, xs, red, resid, keys, M);
  }
  if (next_flags & GEMV_PUBLISH) chain_publish(ctr, keys, params, next, ready, M);
#endif
}
// gemv_chain stages every op's rows (W at least the widest input); gemv_chain_streamed streams those of an op
// wider than W. Two kernels, so the first's code is not that of a loop able to do both (on an H200 that cost
// 1b's decode step 0.6-1.7% at batches 1 to 8, one run).
extern "C" __global__ void __launch_bounds__(32 * (GM_WARPS + GC_PRODUCERS), 1)
    gemv_chain(float* resid, const elem_t* attn, const elem_t* Wo, elem_t* act, const elem_t* Wgu, const elem_t* mlp_norm, const elem_t* Wd, elem_t* next_out, const elem_t* Wn,
               const elem_t* next_norm, const elem_t* next_bias, unsigned* ctr, const float* params, int* next, int* ready, int Ko, int H, int F, int Nn, int M, float eps, int next_flags, int R, int W) {
  chain_body<false>(resid, attn, Wo, act, Wgu, mlp_norm, Wd, next_out, Wn, next_norm, next_bias, ctr, params, next, ready, Ko, H, F, Nn, M, eps, next_flags, R, W);
}
extern "C" __global__ void __launch_bounds__(32 * (GM_WARPS + GC_PRODUCERS), 1)
    gemv_chain_streamed(float* resid, const elem_t* attn, const elem_t* Wo, elem_t* act, const elem_t* Wgu, const elem_t* mlp_norm, const elem_t* Wd, elem_t* next_out, const elem_t* Wn,
                        const elem_t* next_norm, const elem_t* next_bias, unsigned* ctr, const float* params, int* next, int* ready, int Ko, int H, int F, int Nn, int M, float eps, int next_flags, int R, int W) {
  chain_body<true>(resid, attn, Wo, act, Wgu, mlp_norm, Wd, next_out, Wn, next_norm, next_bias, ctr, params, next, ready, Ko, H, F, Nn, M, eps, next_flags, R, W);
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

// The order-preserving unsigned key of a float: a < b exactly when key(a) < key(b).
__device__ __forceinline__ unsigned ord_key(float f) {
  const unsigned b = __float_as_uint(f);
  return b ^ ((unsigned)((int)b >> 31) | 0x80000000u);  // a negative value's bits all flip, a positive one's sign
}

// Uniform in [0, 1) from (seed, position): splitmix64, 24 bits.
__device__ __forceinline__ float uniform(unsigned seed, int position) {
  unsigned long long z = ((unsigned long long)seed << 32 | (unsigned)position) * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (float)(z >> 40) * (1.0f / 16777216.0f);
}

// Logits a thread loads before it stores any (a round), in the sweep that rounds and stores the row.
#define SAMPLE_LOADS 8
// A search sweep's 16-byte loads a thread, issued before any is used. More swept no faster and took more
// registers: with float loads, 8 in flight against 4 took 48 registers a thread instead of 39, and greedy
// steps 1.007-1.022x at batches 1 and 8 (H200, same runs).
#define SEARCH_LOADS 2

// The rounded logits have the dtype's precision, so the low bits of a key follow from its high KEY_BITS bits
// (zeros under a positive value, ones under a negative one): ordering and cutting the high bits alone gives
// the same cuts in 16 or 19 bits instead of 32.
#ifdef CG_BF16
#define KEY_BITS 16
#else
#define KEY_BITS 19
#endif
__device__ __forceinline__ unsigned key_hi(float x) { return ord_key(x) >> (32 - KEY_BITS); }

// A kept logit's weight, exp((x - max) / temperature), in base 2: s2 = log2(e) / temperature, off = -max * s2
// (one FFMA and ex2).
__device__ __forceinline__ float key_weight(float x, float s2, float off) { return ex2_ftz(fmaf(x, s2, off)); }

// f(i, x) for each of this thread's elements x = part[i] of a part of n, in the order every sweep takes them:
// 16-byte pieces threadIdx.x, + blockDim.x, ... (SEARCH_LOADS a thread in flight) when vec (n % 4 == 0 and
// part 16-byte aligned), else elements threadIdx.x, + blockDim.x, ...: a warp's loads are consecutive. f
// returns true to stop.
template <typename F>
__device__ __forceinline__ void for_mine(const float* part, int n, bool vec, F f) {
  if (vec) {
    const float4* r4 = (const float4*)part;
    const int n4 = n >> 2;
    for (int i0 = threadIdx.x; i0 < n4; i0 += SEARCH_LOADS * blockDim.x) {
      float4 x[SEARCH_LOADS];
#pragma unroll
      for (int u = 0; u < SEARCH_LOADS; u++)
        if (i0 + u * blockDim.x < n4) x[u] = r4[i0 + u * blockDim.x];
#pragma unroll
      for (int u = 0; u < SEARCH_LOADS; u++) {
        const int j = i0 + u * blockDim.x;
        if (j >= n4 || f(4 * j, x[u].x) || f(4 * j + 1, x[u].y) || f(4 * j + 2, x[u].z) || f(4 * j + 3, x[u].w)) return;
      }
    }
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x)
      if (f(i, part[i])) return;
  }
}

// A request's row split over SPLIT blocks (a thread-block cluster, compute capability 9.0+): each block
// sweeps its part, and the blocks' sums meet in distributed shared memory.
#if __CUDA_ARCH__ >= 900
__device__ __forceinline__ unsigned cluster_rank() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
// A cluster barrier in two halves: arrive releases this thread's memory operations, wait acquires every
// other thread's. Every thread of every block of the cluster takes part.
__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory"); }
// The 32 bits at p in the shared memory of the cluster's block `rank` (p: this block's address of the variable).
__device__ __forceinline__ unsigned ld_cluster(const void* p, unsigned rank) {
  unsigned a = (unsigned)__cvta_generic_to_shared(p), v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(a) : "r"(a), "r"(rank));
  asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(v) : "r"(a) : "memory");
  return v;
}
#else
// No clusters before 9.0: only SPLIT = 1 is instantiated there, and these are never called.
__device__ __forceinline__ unsigned cluster_rank() { return 0; }
__device__ __forceinline__ void cluster_arrive() {}
__device__ __forceinline__ void cluster_wait() {}
__device__ __forceinline__ unsigned ld_cluster(const void*, unsigned) { return 0; }
#endif
// Both halves at once: every block's stores before it are visible to every block after it.
__device__ __forceinline__ void cluster_sync() {
  cluster_arrive();
  cluster_wait();
}
// Lane l < SPLIT gets block l's value at p (stored before a cluster barrier this block has passed); the other
// lanes get `other`.
template <int SPLIT>
__device__ __forceinline__ float cluster_lanes(const float* p, float other) {
  const int lane = threadIdx.x & 31;
  return lane < SPLIT ? __uint_as_float(ld_cluster(p, lane)) : other;
}
template <int SPLIT>
__device__ __forceinline__ int cluster_lanes(const int* p, int other) {
  const int lane = threadIdx.x & 31;
  return lane < SPLIT ? (int)ld_cluster(p, lane) : other;
}

// The cluster's sums of the blocks' a[0..N-1] (every thread holding its block's, as block_sums leaves them),
// added in rank order so that every block gets the same bits. Two slots a block, taken in turn (slot flips):
// a block writes a slot again two calls later, past a barrier every block reaches after reading it.
template <int SPLIT, int N>
__device__ __forceinline__ void cluster_sums(float (&a)[N], int& slot) {
  if (SPLIT == 1) return;
  __shared__ float xs[2][N];
  if (threadIdx.x == 0)
#pragma unroll
    for (int j = 0; j < N; j++) xs[slot][j] = a[j];
  cluster_sync();
#pragma unroll
  for (int j = 0; j < N; j++) {
    const float m = cluster_lanes<SPLIT>(&xs[slot][j], 0.f);
    float sum = 0.f;
#pragma unroll
    for (int q = 0; q < SPLIT; q++) sum += __shfl_sync(0xffffffff, m, q);
    a[j] = sum;
  }
  slot ^= 1;
}

// The largest key t (KEY_BITS bits) at which the row's sum over its keys >= t still reaches the goal (each
// block sweeps its part, the cluster adds the blocks' sums). COUNT (top-k): each key counts 1 and the goal is
// want. Otherwise (top-p) a key x weighs key_weight(x, s2, off) if ord_key(x) >= lowest (top-k's cut) and 0
// if not, and the goal is want times the sum over every key. The sum must not grow with t (true of sums of
// weights >= 0 in a fixed order, float rounding included), so t is found from its top bit down, two bits a
// sweep: one sweep of the row sums the weights at and above t + 1, t + 2 and t + 3 of the digit at once, and
// the largest of them reaching the goal is taken. A part in shared memory is swept at the rate the block
// issues instructions for its elements, not its loads: hence two bits a sweep (8 sweeps a search in bf16, 10
// in f16, where one bit a sweep over 32-bit keys took 32), 16-byte loads, and for each element only its
// key's digit against t's (q), then counts or predicated adds.
template <int SPLIT, bool COUNT>
__device__ unsigned key_search(const float* part, int n, bool vec, float want, unsigned lowest, float s2, float off, int& slot) {
  unsigned t = 0;
  float goal = want;
  for (int sh = KEY_BITS - 2; sh > -2; sh -= 2) {
    const int s = max(sh, 0), digits = sh >= 0 ? 4 : 2;  // an odd KEY_BITS ends on a pass of one bit
    const int L = 32 - KEY_BITS + s, th = (int)(t >> s);
    float a[4] = {0.f, 0.f, 0.f, 0.f};
    unsigned c1 = 0, c2 = 0, c3 = 0;
    // ord_key(x) >> L is x's key down to this digit: x is at or above t + (j << s) exactly when q >= j
    // (t's bits at s and below are still zero).
    auto take = [&](float x) {
      const unsigned ok = ord_key(x);
      const int q = (int)(ok >> L) - th;
      if (COUNT) {
        c1 += q >= 1;
        c2 += q >= 2;
        c3 += q >= 3;
      } else {
        const float w = ok >= lowest ? key_weight(x, s2, off) : 0.f;
        a[0] += w;
        if (q >= 1) a[1] += w;
        if (q >= 2) a[2] += w;
        if (q >= 3) a[3] += w;
      }
    };
    for_mine(part, n, vec, [&](int, float x) {
      take(x);
      return false;
    });
    if (COUNT) {
      a[1] = (float)c1;
      a[2] = (float)c2;
      a[3] = (float)c3;
    }
    block_sums(a);
    cluster_sums<SPLIT>(a, slot);
    if (!COUNT && sh == KEY_BITS - 2) goal = want * a[0];
    int d = 0;
#pragma unroll
    for (int j = 1; j < 4; j++)
      if (j < digits && a[j] >= goal) d = j;
    t |= (unsigned)d << s;
  }
  return t;
}

#define MAX_THREADS 1024

// next[r]: the next token of request r from its logits row. The row is first rounded to the model's dtype
// (transformers' LM head output) into logits[r] from gathered: the LM head's output, which under tensor
// parallelism is each rank's vocabulary block of Vs columns for all R rows, rank after rank (so element v
// of row r is at ((v / Vs) * R + r) * Vs + v % Vs; without it Vs = V and gathered is logits itself).
// params[r] = {temperature, top_p, top_k}: temperature 0 is greedy (argmax, the lowest index among equal
// maxima, as torch.argmax); otherwise the logits are divided by the temperature, cut to the top_k largest (0:
// no cut), then to the fewest largest whose probability reaches top_p (transformers' order: temperature,
// top-k, top-p; ties at a cut are kept), and one token is drawn with u = uniform(seeds[r], position of the
// request's last token): the same seed and position give the same token in any batch. The cuts are exact,
// with no sort: each is a search over the keys, two bits a sweep of the row (key_search); top-p's runs over
// the keys top-k kept, from the lowest.
// fused: the layer chain's LM head (GEMV_ARGMAX) rounded the rows in place (gathered is logits) and left each
// row's greedy token as its largest argmax key in the chain's scratch (chain_body's ctr), so a greedy row takes
// that and sweeps nothing (a key of 0, a row with no logit above -inf, is swept: its token is the sweep's); and
// where the chain published the step (chain_publish), sample stores nothing.
// SPLIT blocks a request (blockIdx.x / SPLIT), each taking a part of ceil(V / 4 / SPLIT) x 4 elements;
// blockDim.x a multiple of 32, at most 1024. With dynamic shared memory for its part a block keeps its
// rounded part there for the sweeps, else it sweeps it in logits.
template <int SPLIT>
__device__ __forceinline__ void sample_rows(int* next, float* logits, const float* gathered, const int* last, const int* pos, const float* params, const unsigned* seeds, int V, int Vs, int R,
                                            const unsigned* chain, int fused) {
  extern __shared__ float4 staged[];
  __shared__ float bv[32];
  __shared__ int bi[32];
  __shared__ float pre[MAX_THREADS];
  pdl_wait();
  pdl_launch_next();
  const int r = blockIdx.x / SPLIT;
  const unsigned rank = SPLIT > 1 ? cluster_rank() : 0;
  const float temperature = params[3 * r];
  // The chain published every row's token (chain_publish): nothing to store.
  if (fused && chain[GC_PUBLISHED]) return;
  if (fused && !(temperature > 0.f)) {
    const unsigned long long key = ((const unsigned long long*)(chain + GC_COUNTERS))[r];
    if (key != 0) {
      if (rank == 0 && threadIdx.x == 0) next[r] = argmax_column(key);
      return;
    }
  }
  const int each = (V + 4 * SPLIT - 1) / (4 * SPLIT) * 4;
  const int lo = rank * each, n = max(0, min(V - lo, each));
  unsigned smem;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(smem));
  float* const row = logits + (long long)r * V + lo;
  float* const part = SPLIT > 1 && smem >= 4u * n ? (float*)staged : row;
  // 16-byte pieces: the part is a multiple of 4 floats when V is, and starts aligned (the step's logits
  // buffer is an allocation of its own, rows of V % 4 == 0 floats and parts of multiples of 4).
  const bool vec = (V & 3) == 0;
  float v = NEG_INF;
  int idx = 0x7fffffff;
  // SAMPLE_LOADS of the thread's elements loaded before any is stored: without tensor parallelism gathered
  // is logits itself, and a store the compiler cannot tell from the next load would wait for it (a 1b
  // model's 32000 logits took 15 µs a row one element at a time). The thread still visits its elements in
  // order, so the argmax is the same.
  for (int i0 = threadIdx.x; i0 < n; i0 += SAMPLE_LOADS * blockDim.x) {
    float x[SAMPLE_LOADS];
#pragma unroll
    for (int u = 0; u < SAMPLE_LOADS; u++) {
      const int i = lo + i0 + u * blockDim.x;
      if (i0 + u * blockDim.x < n) x[u] = round_e(gathered[Vs == V ? (long long)r * V + i : ((long long)(i / Vs) * R + r) * Vs + i % Vs]);
    }
#pragma unroll
    for (int u = 0; u < SAMPLE_LOADS; u++) {
      const int i = i0 + u * blockDim.x;
      if (i >= n) break;
      row[i] = x[u];
      if (part != row) part[i] = x[u];
      if (x[u] > v) {
        v = x[u];
        idx = lo + i;
      }
    }
  }
  warp_argmax(v, idx);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (lane == 0) {
    bv[warp] = v;
    bi[warp] = idx;
  }
  __syncthreads();
  v = lane < warps ? bv[lane] : NEG_INF;
  idx = lane < warps ? bi[lane] : 0x7fffffff;
  warp_argmax(v, idx);  // every warp reduces the same values: every thread has the block's max
  if (SPLIT > 1) {
    // The cluster's max: every block reads every block's (v, idx). The barrier also orders the staged part.
    __shared__ float cv;
    __shared__ int ci;
    if (threadIdx.x == 0) {
      cv = v;
      ci = idx;
    }
    cluster_sync();
    v = cluster_lanes<SPLIT>(&cv, NEG_INF);
    idx = cluster_lanes<SPLIT>(&ci, 0x7fffffff);
    warp_argmax(v, idx);
  }
  // The max is the token of a greedy row, and of a sampled one when no thread's part holds the draw (below):
  // the thread that finds the draw stores its token past a barrier after this store.
  if (rank == 0 && threadIdx.x == 0) next[r] = idx;
  if (!(temperature > 0.f)) {
    if (SPLIT > 1) {
      // A block leaves only once no other block may still read its shared memory.
      cluster_sync();
    }
    return;
  }
  int slot = 0;  // cluster_sums'
  const float top_p = params[3 * r + 1];
  const int top_k = (int)params[3 * r + 2];
  const float s2 = 1.4426950408889634f / temperature, off = -v * s2;  // key_weight's
  // Keep the keys >= thr. Top-k: the largest thr with at least top_k keys >= thr.
  unsigned thr = 0;
  if (top_k > 0 && top_k < V) thr = key_search<SPLIT, true>(part, n, vec, (float)top_k, 0, s2, off, slot);
  // Top-p: the largest thr whose mass (of the keys top-k kept) is at least top_p of what top-k kept.
  if (top_p > 0.f && top_p < 1.f) thr = key_search<SPLIT, false>(part, n, vec, top_p, thr << (32 - KEY_BITS), s2, off, slot);
  // Draw: the kept weights in the sweeps' order (for_mine: a thread's elements, thread after thread; block
  // after block), a prefix sum of each thread's, and the thread whose part holds the draw walks its elements
  // again. Any fixed order draws from the same distribution. A thread once summed a contiguous chunk, so a
  // warp's loads touched 32 cache lines each: with 128256 logits (past L1) a step at temperature alone took
  // 92 µs more than a greedy one (H200, batch 1).
  float s = 0.f;
  for_mine(part, n, vec, [&](int, float x) {
    s += key_hi(x) >= thr ? key_weight(x, s2, off) : 0.f;
    return false;
  });
  float incl = s;
  for (int o = 1; o < 32; o <<= 1) {
    const float y = __shfl_up_sync(0xffffffff, incl, o);
    if (lane >= o) incl += y;
  }
  __syncthreads();  // bv is reused
  if (lane == 31) bv[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const float w = lane < warps ? bv[lane] : 0.f;
    float wi = w;
    for (int o = 1; o < 32; o <<= 1) {
      const float y = __shfl_up_sync(0xffffffff, wi, o);
      if (lane >= o) wi += y;
    }
    bv[lane] = wi - w;
  }
  __syncthreads();
  pre[threadIdx.x] = bv[warp] + incl;
  __syncthreads();
  // The blocks' parts in rank order: block q's starts at the sum of the parts before it, added in rank order
  // in every block (so the parts tile [0, total) with the same bits everywhere).
  float start = 0.f, total = pre[blockDim.x - 1];
  if (SPLIT > 1) {
    __shared__ float ct;
    if (threadIdx.x == 0) ct = total;
    cluster_sync();
    const float m = cluster_lanes<SPLIT>(&ct, 0.f);
    cluster_arrive();  // this block's reads of the others' shared memory are done (waited for before it leaves)
    total = 0.f;
    for (int q = 0; q < SPLIT; q++) {
      if (q == (int)rank) start = total;
      total += __shfl_sync(0xffffffff, m, q);
    }
  }
  const float target = uniform(seeds[r], pos[last[r]]) * total;
  const float before = threadIdx.x == 0 ? start : start + pre[threadIdx.x - 1];
  if (s > 0.f && target >= before && target < start + pre[threadIdx.x]) {
    float acc = before;
    int pick = -1;
    for_mine(part, n, vec, [&](int i, float x) {
      if (key_hi(x) < thr) return false;
      pick = i;
      acc += key_weight(x, s2, off);
      return target < acc;
    });
    next[r] = lo + pick;  // the thread whose part holds the draw (it keeps at least one token)
  }
  // No thread's part holds the draw only when rounding put it at the very top of the sum, or between two
  // threads' parts (the block's prefix sums add in a tree, not one after another): next[r] keeps the max.
  if (SPLIT > 1) cluster_wait();
}

extern "C" __global__ void sample(int* next, float* logits, const float* gathered, const int* last, const int* pos, const float* params, const unsigned* seeds, int V, int Vs, int R,
                                  const unsigned* chain, int fused) {
  sample_rows<1>(next, logits, gathered, last, pos, params, seeds, V, Vs, R, chain, fused);
}
#if __CUDA_ARCH__ >= 900
extern "C" __global__ void __cluster_dims__(SAMPLE_SPLIT, 1, 1) sample_split(int* next, float* logits, const float* gathered, const int* last, const int* pos, const float* params, const unsigned* seeds, int V, int Vs, int R,
                                                                              const unsigned* chain, int fused) {
  sample_rows<SAMPLE_SPLIT>(next, logits, gathered, last, pos, params, seeds, V, Vs, R, chain, fused);
}
#endif
