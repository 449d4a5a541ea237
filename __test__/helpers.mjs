// Shared by the test files: the GPU probe, the test kernels, seeded random data and error norms.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { Device } from '../dist/index.js'
import { seededRandom } from '../dist/util/random.js'

export { KERNELS } from '../peers/kernels.mjs'

/** Whether a CUDA device is usable; GPU tests skip with this reason when not. */
export const gpu = Device.availability()

/** `test` when a GPU is present, else `test.skip`, after printing why once. */
export function gpuTest() {
  if (!gpu.available) {
    console.log(`# GPU tests skipped: ${gpu.reason}`)
    return test.skip
  }
  return test
}

/** CPU reference of `steps` applications of axpb. */
export function axpbRef(x, steps, a, b) {
  const out = Float32Array.from(x)
  const fa = Math.fround(a)
  const fb = Math.fround(b)
  for (let s = 0; s < steps; s++) {
    for (let i = 0; i < out.length; i++) out[i] = Math.fround(Math.fround(out[i] * fa) + fb)
  }
  return out
}

/** Deterministic PRNG (the package's one seeded generator) so failures reproduce; the seed differs per test. */
export const rng = seededRandom

/** `n` uniform floats in [lo, hi), never all zero. */
export function randomF32(n, seed, lo = -1, hi = 1) {
  const r = rng(seed)
  const a = new Float32Array(n)
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * r()
  return a
}

/** ||out - ref|| / ||ref|| in float64; NaN anywhere gives Infinity. */
export function relError(out, ref) {
  let num = 0
  let den = 0
  for (let i = 0; i < ref.length; i++) {
    const d = out[i] - ref[i]
    if (Number.isNaN(d)) return Infinity
    num += d * d
    den += ref[i] * ref[i]
  }
  return Math.sqrt(num / den)
}

/** Row-major float64 reference of C = alpha * op(A) op(B) + beta * C. */
export function gemmRef({ a, b, c, m, n, k, transA = false, transB = false, alpha = 1, beta = 0 }) {
  const out = new Float64Array(m * n)
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0
      for (let p = 0; p < k; p++) {
        const av = transA ? a[p * m + i] : a[i * k + p]
        const bv = transB ? b[j * k + p] : b[p * n + j]
        s += av * bv
      }
      out[i * n + j] = alpha * s + beta * (c ? c[i * n + j] : 0)
    }
  }
  return out
}

/** IEEE half bits -> number. */
export function halfToNumber(h) {
  const s = h & 0x8000 ? -1 : 1
  const e = (h >> 10) & 0x1f
  const f = h & 0x3ff
  if (e === 0) return s * 2 ** -14 * (f / 1024)
  if (e === 31) return f ? NaN : s * Infinity
  return s * 2 ** (e - 15) * (1 + f / 1024)
}

/** number -> IEEE half bits (round to nearest even, via float32). */
export function numberToHalf(v) {
  const f = new Float32Array([v])
  const x = new Uint32Array(f.buffer)[0]
  const sign = (x >>> 16) & 0x8000
  let e = ((x >>> 23) & 0xff) - 127 + 15
  let m = x & 0x7fffff
  if (e >= 31) return sign | 0x7c00
  if (e <= 0) {
    if (e < -10) return sign
    m = (m | 0x800000) >> (1 - e)
    const r = m & 0x1fff
    m >>= 13
    if (r > 0x1000 || (r === 0x1000 && m & 1)) m++
    return sign | m
  }
  const r = m & 0x1fff
  m >>= 13
  if (r > 0x1000 || (r === 0x1000 && m & 1)) {
    m++
    if (m === 0x400) {
      m = 0
      e++
    }
  }
  return sign | (e << 10) | m
}

/** bf16 bits -> number. */
export function bf16ToNumber(h) {
  return new Float32Array(new Uint32Array([h << 16]).buffer)[0]
}

/** number -> bf16 bits (round to nearest even). */
export function numberToBf16(v) {
  const x = new Uint32Array(new Float32Array([v]).buffer)[0]
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff
}

let sockets = 0
/** A fresh Unix socket path under the temp directory. */
export const socketPath = (tag) => `${process.env.TMPDIR ?? '/tmp'}/cg-${tag}-${process.pid}-${sockets++}.sock`

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Waits until `cond()` holds, polling every 2 ms; throws after `ms`. */
export async function until(cond, ms = 3000) {
  const t0 = Date.now()
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('timed out waiting')
    await sleep(2)
  }
}

/**
 * The transformers-made checkpoints of scripts/make-checkpoints.py, for a GPU test file: registers the
 * hooks that make them (or use CUDAGRAPH_CHECKPOINTS, made once for a whole run) and remove them after.
 * Returns a function that gives their folder (inside a test).
 */
export function useCheckpoints() {
  let root
  test.before(() => {
    if (!gpu.available) return
    root = process.env.CUDAGRAPH_CHECKPOINTS
    if (root && existsSync(join(root, 'mistral-bf16', 'reference.json'))) return
    root = mkdtempSync(join(tmpdir(), 'cudagraph-ckpt-'))
    const r = spawnSync('python3', [new URL('../scripts/make-checkpoints.py', import.meta.url).pathname, root], { encoding: 'utf8' })
    if (r.status !== 0)
      throw new Error(`scripts/make-checkpoints.py failed (the GPU machine has torch, transformers and tokenizers):\n${r.stderr.slice(-3000)}`)
  })
  test.after.always(() => {
    if (root && !process.env.CUDAGRAPH_CHECKPOINTS) rmSync(root, { recursive: true, force: true })
  })
  return () => root
}

/**
 * Points CUDAGRAPH_LIBRARY_PATH at the nvidia-nccl wheel's library folder when python finds it (PyTorch
 * installs the wheel on the device), so Communicator loads libnccl from there.
 */
export function useNccl() {
  const r = spawnSync('python3', ['-c', 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))'], { encoding: 'utf8' })
  if (r.status === 0) process.env.CUDAGRAPH_LIBRARY_PATH = r.stdout.trim()
}
