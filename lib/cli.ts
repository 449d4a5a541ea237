/**
 * The `cudagraph` command (package.json `bin`): `info` (the device and what its driver supports), `bench`
 * (the built-in decoder benchmark; `--serve` for the generator's), `serve` (the generator) and `client`.
 * Bad flags and a machine without a GPU get a message that says
 * what was wrong and what is allowed, and exit code 2.
 */
import { parseArgs } from 'node:util'
import { type BenchOptions, runBench } from './decoder-bench.js'
import { Device } from './device.js'
import { GRAPH_MODES, type GraphMode } from './graph-mode.js'
import { MODEL_PRESETS, type ModelName } from './model-config.js'
import { type ServeBenchOptions, runServeBench } from './serve-bench.js'
import { type ClientOptions, type ServeOptions, client, serve } from './serve-command.js'

const USAGE = `usage: cudagraph <command> [flags]

commands:
  info                 the GPU, its driver and which graph features it supports
  bench                the built-in decoder benchmark: TTFT table, decode step per batch size,
                       launch floor, PyTorch peer; writes results.json and chart.svg
  bench --serve        the generator benchmark: a serve process and 1, 8, 64 concurrent clients;
                       TTFT, inter-token time, tokens/s, IPC per token; serve-results.json
  serve --socket PATH  the generator: model and graphs on the GPU, clients on a Unix socket,
                       continuous batching, Prometheus /metrics; SIGTERM or SIGINT stops it
  client --socket PATH --prompt-tokens 1,2,3 [--max-new-tokens 32] [--busy-poll]
                       one prompt to a running generator; tokens are printed as they come
                       (--busy-poll: spin instead of sleeping between tokens, one core busy)

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
  --json               print only the results as JSON on stdout

bench --serve flags:
  --model NAME         as above (default small)
  --clients LIST       concurrent clients, 1..256 (default 1,8,64)
  --requests N         timed requests per client, in turn (default 4)
  --tokens N           tokens per request (default 64)
  --prompt-length N    prompt tokens per request (default 32)
  --seed N, --out DIR, --json   as above

serve flags:
  --socket PATH        Unix socket to listen on (required)
  --model NAME         as above (default small)
  --max-batch N        requests decoded together, 1..256 (default 64)
  --max-seq-len N      tokens per request, prompt included (default 1024)
  --max-prefill N      tokens per prefill step (default 256)
  --max-queue N        requests waiting for a slot before BUSY (default 1024)
  --metrics-port N     GET /metrics and /healthz on 127.0.0.1 (default 9400; 0: any free port)
  --graph-memory MIB   graph memory budget; missing graphs are padded or run eagerly and
                       captured when idle (default: no budget)
  --mode MODE          as above (default FULL)
  --seed N             weights (default 1)
  --drain-ms N         after SIGTERM, how long running requests may finish (default 5000)`

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
  const model = modelName(parsed.model)
  const mode = graphMode(parsed.mode)
  const tokens = int('tokens', parsed.tokens, 32, 1, 1024)
  const promptLengths = parsed['prompt-lengths'] === undefined ? [10, 50, 100, 150, 200, 250, 300, 350, 400] : intList('prompt-lengths', parsed['prompt-lengths'], 1, 2048)
  const context = int('context', parsed.context, 128, 1, 2048)
  if (Math.max(...promptLengths) + tokens > 4096) throw new UsageError(`--prompt-lengths/--tokens: the longest prompt plus the tokens must be at most 4096, got ${Math.max(...promptLengths) + tokens}`)
  return {
    model,
    batchSizes: parsed['batch-sizes'] === undefined ? [1, 2, 4, 8, 16, 32, 64, 128, 256] : intList('batch-sizes', parsed['batch-sizes'], 1, 256),
    promptLengths,
    tokens,
    mode,
    context,
    reps: int('reps', parsed.reps, 200, 10, 100000),
    seed: int('seed', parsed.seed, 1, 0, 2 ** 31),
    out: parsed.out ?? 'cudagraph-bench',
    peer: parsed['no-peer'] !== true,
    print: parsed.json !== true,
  }
}

function parseFlags(args: string[], options: Record<string, { type: 'string' | 'boolean' }>): Record<string, string | boolean | undefined> {
  try {
    return parseArgs({ args, strict: true, allowPositionals: false, options }).values
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e))
  }
}

function modelName(v: string | boolean | undefined): ModelName {
  const model = (v as string | undefined) ?? 'small'
  if (!Object.hasOwn(MODEL_PRESETS, model)) throw new UsageError(`--model: expected one of ${Object.keys(MODEL_PRESETS).join(', ')}, got '${model}'`)
  return model as ModelName
}

function graphMode(v: string | boolean | undefined): GraphMode {
  const mode = (v as string | undefined) ?? 'FULL'
  if (!(GRAPH_MODES as readonly string[]).includes(mode)) throw new UsageError(`--mode: expected one of ${GRAPH_MODES.join(', ')}, got '${mode}'`)
  return mode as GraphMode
}

/** Parses `bench --serve` flags (throws UsageError). */
export function parseServeBenchFlags(args: string[]): ServeBenchOptions {
  const str = { type: 'string' } as const
  const f = parseFlags(args, { serve: { type: 'boolean' }, model: str, clients: str, requests: str, tokens: str, 'prompt-length': str, seed: str, out: str, json: { type: 'boolean' } })
  const s = (k: string) => f[k] as string | undefined
  const tokens = int('tokens', s('tokens'), 64, 1, 2048)
  const promptLength = int('prompt-length', s('prompt-length'), 32, 1, 2048)
  return {
    model: modelName(f.model),
    clients: s('clients') === undefined ? [1, 8, 64] : intList('clients', s('clients')!, 1, 256),
    requests: int('requests', s('requests'), 4, 1, 10000),
    tokens,
    promptLength,
    seed: int('seed', s('seed'), 1, 0, 2 ** 31),
    out: s('out') ?? 'cudagraph-bench',
    print: f.json !== true,
  }
}

/** Parses `serve` flags (throws UsageError). */
export function parseServeFlags(args: string[]): ServeOptions {
  const str = { type: 'string' } as const
  const f = parseFlags(args, { socket: str, model: str, 'max-batch': str, 'max-seq-len': str, 'max-prefill': str, 'max-queue': str, 'metrics-port': str, 'graph-memory': str, mode: str, seed: str, 'drain-ms': str })
  const s = (k: string) => f[k] as string | undefined
  const socket = s('socket')
  if (socket === undefined || socket === '') throw new UsageError('--socket: the Unix socket path to listen on is required')
  const mode = graphMode(f.mode)
  const maxSeqLen = int('max-seq-len', s('max-seq-len'), 1024, 2, 4096)
  const mib = s('graph-memory') === undefined ? null : int('graph-memory', s('graph-memory'), 0, 1, 2 ** 30)
  return {
    socket,
    model: modelName(f.model),
    maxBatch: int('max-batch', s('max-batch'), 64, 1, 256),
    maxSeqLen,
    maxPrefillTokens: int('max-prefill', s('max-prefill'), Math.min(256, maxSeqLen), 1, maxSeqLen),
    maxQueue: int('max-queue', s('max-queue'), 1024, 0, 1 << 20),
    metricsPort: int('metrics-port', s('metrics-port'), 9400, 0, 65535),
    graphMemory: mib === null ? null : mib * 2 ** 20,
    mode,
    seed: int('seed', s('seed'), 1, 0, 2 ** 31),
    drainMs: int('drain-ms', s('drain-ms'), 5000, 0, 3600_000),
  }
}

/** Parses `client` flags (throws UsageError). */
export function parseClientFlags(args: string[]): ClientOptions {
  const str = { type: 'string' } as const
  const f = parseFlags(args, { socket: str, 'prompt-tokens': str, 'max-new-tokens': str, 'busy-poll': { type: 'boolean' } })
  const s = (k: string) => f[k] as string | undefined
  const socket = s('socket')
  if (socket === undefined || socket === '') throw new UsageError('--socket: the Unix socket path of a running generator is required')
  const p = s('prompt-tokens')
  if (p === undefined) throw new UsageError('--prompt-tokens: a comma-separated list of token ids is required, e.g. 1,2,3')
  const prompt = p.split(',').map((t) => Number(t.trim()))
  if (p.trim() === '' || prompt.some((t) => !Number.isInteger(t) || t < 0 || t > 0x7fffffff)) throw new UsageError(`--prompt-tokens: expected comma-separated non-negative integers, got '${p}'`)
  return { socket, prompt, maxNewTokens: int('max-new-tokens', s('max-new-tokens'), 32, 1, 0xffffffff), busyPoll: f['busy-poll'] === true }
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

/** A benchmark command: it prints its tables, or with --json (print false) only the results. */
function benchmark(print: boolean, go: () => Promise<Record<string, unknown>>): () => Promise<number> {
  return async () => {
    const results = await go()
    if (!print) console.log(JSON.stringify(results, null, 2))
    return 0
  }
}

/** Runs the command line `args` (without node and the script); resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    console.log(USAGE)
    return cmd === undefined ? 2 : 0
  }
  const commands = ['info', 'bench', 'serve', 'client']
  if (!commands.includes(cmd)) {
    console.error(`cudagraph: unknown command '${cmd}' (expected ${commands.join(', ')})\n\n${USAGE}`)
    return 2
  }
  const serveBench = cmd === 'bench' && rest.includes('--serve')
  let run: () => Promise<number>
  try {
    if (cmd === 'client') {
      // A client needs no GPU here: the generator has it.
      const o = parseClientFlags(rest)
      return await client(o)
    } else if (serveBench) {
      const o = parseServeBenchFlags(rest)
      run = benchmark(o.print, () => runServeBench(o))
    } else if (cmd === 'bench') {
      const o = parseBenchFlags(rest)
      run = benchmark(o.print, () => runBench(o))
    } else if (cmd === 'serve') {
      const o = parseServeFlags(rest)
      run = () => serve(o)
    } else {
      if (rest.length > 0) throw new UsageError(`info takes no flags, got '${rest.join(' ')}'`)
      run = async () => {
        console.log(info())
        return 0
      }
    }
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
  return run()
}
