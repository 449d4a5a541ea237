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

struct GateInput {
  unsigned long long dst;  // the device buffer
  unsigned offset;         // bytes into a staging area
  unsigned bytes;          // bytes to copy for the graph's padded rows
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
  __shared__ unsigned word;
  if (threadIdx.x == 0) {
    volatile unsigned* bell = (volatile unsigned*)p.bell;
    unsigned v;
    // Each read crosses the bus (about a microsecond): no sleep between them.
    while ((v = *bell) == 0) {
    }
    *bell = 0;
    word = v;
  }
  __syncthreads();
  const unsigned code = word & 3, mask = word >> 8;
  if (code != 1 && code != 2) return;
  const char* area = (const char*)p.area + (size_t)(code - 1) * p.area_bytes;
  for (unsigned i = 0; i < p.n; i++) {
    if (!(mask >> i & 1)) continue;
    const GateInput in = p.in[i];
    const char* src = area + in.offset;
    char* dst = (char*)in.dst;
    // 16-byte words where both ends are aligned (staging offsets and allocations are), then bytes.
    const unsigned words = ((in.dst | in.offset) & 15) == 0 ? in.bytes / 16 : 0;
    for (unsigned w = threadIdx.x; w < words; w += blockDim.x) {
      uint4 x;
      asm volatile("ld.volatile.global.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(x.x), "=r"(x.y), "=r"(x.z), "=r"(x.w) : "l"(src + 16 * w));
      ((uint4*)dst)[w] = x;
    }
    for (unsigned b = 16 * words + threadIdx.x; b < in.bytes; b += blockDim.x) dst[b] = ((const volatile char*)src)[b];
  }
}
