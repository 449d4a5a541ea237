// The doorbell a step's graph begins with when its stage has one (crates/cudagraph-core/src/host_stage.rs,
// which embeds this file and compiles it once per device): a replay can then be launched before its inputs
// are staged, and waits here until the host rings.
//
// The doorbell is one word of pinned host memory mapped for the device: 0 while nobody has rung, else
// code | mask << 8, where code 1 or 2 says to copy the inputs in `mask` (bit i: input i) from staging area 0
// or 1 (pinned, mapped) into their device buffers, and code 3 to run with the device buffers as they are. The
// gate clears the word as it takes it: the host rings the next replay only after this one's outputs are back.
//
// It lets the next kernel launch first thing (programmatic dependent launch, sm_90+): that kernel's blocks
// are then resident, and may start on what does not depend on the inputs, while this one waits; they wait
// (griddepcontrol.wait) for this grid to end before they read an input.

// Inputs a gate copies at most (the word's mask bits 8..31).
#define GATE_INPUTS 24
// 16-byte words a thread has in flight at once: a GPU thread issues in order, so a load whose store follows
// at once would hold the next load back a round trip over the bus (about a microsecond) each.
#define GATE_UNROLL 4

struct GateInput {
  unsigned long long dst;  // the device buffer
  unsigned offset;         // bytes into a staging area
  unsigned words;          // 16-byte words to copy (the graph's padded rows, rounded up within the buffer)
  unsigned tail;           // bytes after them, where the buffer or an address does not allow rounding up
  unsigned pad;
};

struct GateParams {
  unsigned long long bell;  // the doorbell's device address
  unsigned long long area;  // staging area 0's device address; area 1 follows at area_bytes
  unsigned area_bytes;
  unsigned n;
  GateInput in[GATE_INPUTS];
};

extern "C" __global__ void stage_gate(const GateParams p) {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
  // first[i]: the run's words before input i's (only the inputs the ring names count), then the total.
  __shared__ unsigned word, first[GATE_INPUTS + 1];
  if (threadIdx.x == 0) {
    volatile unsigned* bell = (volatile unsigned*)p.bell;
    unsigned v;
    // Each read crosses the bus (about a microsecond): no sleep between them.
    while ((v = *bell) == 0) {
    }
    *bell = 0;
    word = v;
    unsigned at = 0;
    for (unsigned i = 0; i < p.n; i++) {
      first[i] = at;
      if (v >> (8 + i) & 1) at += p.in[i].words;
    }
    first[p.n] = at;
  }
  __syncthreads();
  const unsigned code = word & 3, mask = word >> 8;
  if (code != 1 && code != 2) return;
  const char* area = (const char*)p.area + (size_t)(code - 1) * p.area_bytes;
  const unsigned total = first[p.n];
  // Word w of the run: input i's word w - first[i], for the masked i whose range holds it.
  auto where = [&](unsigned w, unsigned& i) {
    i = 0;
    while (!(mask >> i & 1) || w >= first[i] + p.in[i].words) i++;
    return w - first[i];
  };
  for (unsigned base = 0; base < total; base += GATE_UNROLL * blockDim.x) {
    uint4 x[GATE_UNROLL];
    uint4* d[GATE_UNROLL];
#pragma unroll
    for (int k = 0; k < GATE_UNROLL; k++) {
      const unsigned w = base + k * blockDim.x + threadIdx.x;
      d[k] = nullptr;
      if (w < total) {
        unsigned i;
        const unsigned j = where(w, i);
        const uint4* src = (const uint4*)(area + p.in[i].offset) + j;
        asm volatile("ld.volatile.global.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(x[k].x), "=r"(x[k].y), "=r"(x[k].z), "=r"(x[k].w) : "l"(src));
        d[k] = (uint4*)p.in[i].dst + j;
      }
    }
#pragma unroll
    for (int k = 0; k < GATE_UNROLL; k++)
      if (d[k] != nullptr) *d[k] = x[k];
  }
  // Tails, a byte a thread (only where a buffer ends off a 16-byte boundary or an address is unaligned).
  for (unsigned i = 0; i < p.n; i++) {
    if (!(mask >> i & 1)) continue;
    const unsigned skip = 16 * p.in[i].words;
    const volatile char* src = (const volatile char*)(area + p.in[i].offset) + skip;
    char* dst = (char*)p.in[i].dst + skip;
    for (unsigned b = threadIdx.x; b < p.in[i].tail; b += blockDim.x) dst[b] = src[b];
  }
}
