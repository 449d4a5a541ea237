/**
 * The `cudagraph` command (package.json `bin`): `info` (the device and what its driver supports) and
 * `bench` (the built-in decoder benchmark). Bad flags and a machine without a GPU get a message that says
 * what was wrong and what is allowed, and exit code 2.
 */
import { parseArgs } from 'node:util'
import { type BenchOptions, runBench } from './decoder-bench.js'
import { Device } from './device.js'
import { GRAPH_MODES, type GraphMode } from './graph-mode.js'
import { MODEL_PRESETS, type ModelName } from './model-config.js'

const USAGE = `usage: cudagraph <command> [flags]

commands:
  info                 the GPU, its driver and which graph features it supports
  bench                the built-in decoder benchmark: TTFT table, decode step per batch size,
                       launch floor, PyTorch peer; writes results.json and chart.svg

bench flags:
  --model NAME         ${Object.keys(MODEL_PRESETS).join(' | ')} (default small)
  --batch-sizes LIST   decode batch sizes, 1..256 (default 1,2,4,8,16,32,64,128,256)
  --prompt-lengths L   prompt lengths for the TTFT table (default 10,50,100,150,200,250,300,350,400)
  --tokens N           tokens generated per prompt (default 32)
  --mode MODE          ${GRAPH_MODES.join(' | ')} (default FULL)
  --context N          tokens in each request's cache in the per-batch table (default 128)
  --reps N             timed steps per batch size (default 200)
  --seed N             weights and prompts (default 1)
  --out DIR            where results.json and chart.svg go (default ./cudagraph-bench)
  --no-peer            skip the PyTorch peer
  --json               print only the results as JSON on stdout`

/** A flag's value was wrong: the message says which flag, what it got and what is allowed. */
class UsageError extends Error {}

function intList(flag: string, v: string, lo: number, hi: number): number[] {
  const out = v.split(',').map((s) => Number(s.trim()))
  if (v.trim() === '' || out.some((n) => !Number.isInteger(n) || n < lo || n > hi)) throw new UsageError(`--${flag}: expected comma-separated integers in ${lo}..${hi}, got '${v}'`)
  return [...new Set(out)].sort((a, b) => a - b)
}

function int(flag: string, v: string | undefined, dflt: number, lo: number, hi: number): number {
  if (v === undefined) return dflt
  const n = Number(v)
  if (!Number.isInteger(n) || n < lo || n > hi) throw new UsageError(`--${flag}: expected an integer in ${lo}..${hi}, got '${v}'`)
  return n
}

/** Parses `bench` flags into options (throws UsageError). */
export function parseBenchFlags(args: string[]): BenchOptions {
  let parsed
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: 'string' },
        'batch-sizes': { type: 'string' },
        'prompt-lengths': { type: 'string' },
        tokens: { type: 'string' },
        mode: { type: 'string' },
        context: { type: 'string' },
        reps: { type: 'string' },
        seed: { type: 'string' },
        out: { type: 'string' },
        'no-peer': { type: 'boolean' },
        json: { type: 'boolean' },
      },
    }).values
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e))
  }
  const model = parsed.model ?? 'small'
  if (!Object.hasOwn(MODEL_PRESETS, model)) throw new UsageError(`--model: expected one of ${Object.keys(MODEL_PRESETS).join(', ')}, got '${model}'`)
  const mode = parsed.mode ?? 'FULL'
  if (!(GRAPH_MODES as readonly string[]).includes(mode)) throw new UsageError(`--mode: expected one of ${GRAPH_MODES.join(', ')}, got '${mode}'`)
  const tokens = int('tokens', parsed.tokens, 32, 1, 1024)
  const promptLengths = parsed['prompt-lengths'] === undefined ? [10, 50, 100, 150, 200, 250, 300, 350, 400] : intList('prompt-lengths', parsed['prompt-lengths'], 1, 2048)
  const context = int('context', parsed.context, 128, 1, 2048)
  if (Math.max(...promptLengths) + tokens > 4096) throw new UsageError(`--prompt-lengths/--tokens: the longest prompt plus the tokens must be at most 4096, got ${Math.max(...promptLengths) + tokens}`)
  return {
    model: model as ModelName,
    batchSizes: parsed['batch-sizes'] === undefined ? [1, 2, 4, 8, 16, 32, 64, 128, 256] : intList('batch-sizes', parsed['batch-sizes'], 1, 256),
    promptLengths,
    tokens,
    mode: mode as GraphMode,
    context,
    reps: int('reps', parsed.reps, 200, 10, 100000),
    seed: int('seed', parsed.seed, 1, 0, 2 ** 31),
    out: parsed.out ?? 'cudagraph-bench',
    peer: parsed['no-peer'] !== true,
    print: parsed.json !== true,
  }
}

/** `cudagraph info`: the device, the driver and each feature probed by using it. */
function info(): string {
  const dev = Device.open(0)
  const [major, minor] = dev.computeCapability
  const mem = dev.memoryInfo()
  const v = Device.driverVersion()
  const probe = (name: string, fn: () => void) => {
    try {
      fn()
      return `  ${name}: yes`
    } catch (e) {
      return `  ${name}: no (${e instanceof Error ? e.message : String(e)})`
    }
  }
  const s = dev.createStream()
  const lines = [
    `device 0: ${dev.name}, compute capability ${major}.${minor}, ${dev.multiprocessors} SMs`,
    `memory: ${(mem.total / 2 ** 30).toFixed(1)} GiB total, ${(mem.free / 2 ** 30).toFixed(1)} GiB free`,
    `driver: CUDA ${Math.floor(v / 1000)}.${(v % 1000) / 10}, ${Device.count()} device(s)`,
    'features (each one used once):',
    probe('NVRTC run-time compilation', () => dev.compile('extern "C" __global__ void k(float* x) { x[0] = 1.f; }', { name: 'probe' })),
    probe('cuBLAS', () => s.prepareBlas()),
    probe('graph capture, instantiate, upload, launch', () => {
      const b = dev.alloc('f32', 1)
      const g = s.capture(() => s.fill(b, 1))
      g.launch(s)
      s.synchronize()
      g.dispose()
      b.dispose()
    }),
    probe('graph memory nodes (stream-ordered allocation inside capture)', () => {
      const g = s.capture(() => s.freeAsync(s.allocAsync('f32', 1024)))
      g.dispose()
      dev.trimGraphMemory()
    }),
    probe('in-place executable update', () => {
      const b = dev.alloc('f32', 1)
      const g = s.capture(() => s.fill(b, 1))
      const h = s.capture(() => s.fill(b, 2), { instantiate: false })
      const r = g.update(h)
      g.dispose()
      h.dispose()
      b.dispose()
      if (!r.updatedInPlace) throw new Error('the driver re-instantiated instead')
    }),
  ]
  return lines.join('\n')
}

/** Runs the command line `args` (without node and the script); resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    console.log(USAGE)
    return cmd === undefined ? 2 : 0
  }
  if (cmd !== 'info' && cmd !== 'bench') {
    console.error(`cudagraph: unknown command '${cmd}' (expected info or bench)\n\n${USAGE}`)
    return 2
  }
  let options: BenchOptions | undefined
  try {
    if (cmd === 'bench') options = parseBenchFlags(rest)
    else if (rest.length > 0) throw new UsageError(`info takes no flags, got '${rest.join(' ')}'`)
  } catch (e) {
    if (!(e instanceof UsageError)) throw e
    console.error(`cudagraph ${cmd}: ${e.message}\n\n${USAGE}`)
    return 2
  }
  const avail = Device.availability()
  if (!avail.available) {
    console.error(`cudagraph ${cmd}: no usable CUDA GPU here (${avail.reason}). It needs an NVIDIA GPU and its driver (libcuda).`)
    return 2
  }
  if (cmd === 'info') {
    console.log(info())
    return 0
  }
  const results = await runBench(options!)
  if (!options!.print) console.log(JSON.stringify(results, null, 2))
  return 0
}
