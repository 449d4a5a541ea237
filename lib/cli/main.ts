/**
 * The `cudagraph` command (package.json `bin`): `info` (the device and what its driver supports), `bench`
 * (the decoder benchmark; `--serve` for the generator's), `generate` (text from a Hugging Face model
 * directory), `serve` (the generator) and `client`.
 *
 * Exit codes: 0 done; 1 a runtime failure, or no usable GPU; 2 a usage error (a bad or misspelt command
 * or flag: one line that names it and what is allowed, then where the help is).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { Device } from '../cuda/device.js'
import { kernelCacheDir } from '../cuda/module.js'
import { CudaGraphError } from '../errors.js'
import type { PrefillAttention } from '../model/decoder-model.js'
import { MODEL_PRESETS, type ModelName } from '../model/model-config.js'
import { GRAPH_MODES, type GraphMode } from '../policy/graph-mode.js'
import { PACKAGE_ROOT } from '../util/package-root.js'
import { type BenchOptions, runBench } from './decoder-bench.js'
import { UsageError } from './errors.js'
import { type FlagSpec, int, intList, modelDir, modelFlag, num, oneOf, parseFlags, required, socketPathUsable, suggest, writableDir } from './flags.js'
import { type GenerateCommandOptions, generate } from './generate-command.js'
import { runServeBench, type ServeBenchOptions } from './serve-bench.js'
import { type ClientOptions, client, type ServeOptions, serve } from './serve-command.js'

const MODELS = Object.keys(MODEL_PRESETS) as ModelName[]
// bench, serve and generate take it alike.
const PREFILL_ATTENTION_HELP = `  --prefill-attention K
                       flash | rows: prefill attention's kernel (default flash from sm_80: tensor cores; else rows)`

const HELP: Record<string, string> = {
  main: `usage: cudagraph <command> [flags]     (cudagraph <command> --help for its flags)

commands:
  info      the GPU, its driver and which graph features work there
  bench     the decoder benchmark on a preset or a checkpoint (--serve: the generator's benchmark)
  generate  text from a Hugging Face model directory, streamed as it is made
  serve     the generator: model and graphs on the GPU, clients on a Unix socket
  client    one prompt to a running generator, its tokens printed as they come

  --version   the package version

exit codes: 0 done, 1 runtime failure or no usable GPU, 2 usage error`,
  info: `usage: cudagraph info

The device, driver, compute capability and memory, and each graph feature probed by using it once.
No GPU: a message on stderr and exit code 1.`,
  bench: `usage: cudagraph bench [flags]

The decoder: TTFT and decode P50/P99 per prompt length, decode step per batch size (eager and graph),
the launch floor against raw CUDA C, and the transformers peer (its own model class on the same
directory: eager, static cache, static cache in a CUDA graph). Tables on stdout, progress on stderr;
results.json and chart.svg in --out.

  --model NAME|DIR     ${MODELS.join(' | ')} (random weights), or a Hugging Face model directory (default small)
  --dtype TYPE         f16 | bf16 (default: the checkpoint's; f16 for presets)
${PREFILL_ATTENTION_HELP}
  --batch-sizes LIST   decode batch sizes, 1..256 (default 1,2,4,8,16,32,64,128,256)
  --prompt-lengths L   prompt lengths for the TTFT table, 1..2048 (default 10,50,100,150,200,250,300,350,400)
  --tokens N           tokens generated per prompt, 1..1024 (default 32)
  --mode MODE          ${GRAPH_MODES.join(' | ')} (default FULL)
  --context N          tokens in each request's cache in the per-batch table, 1..2048 (default 128)
  --reps N             timed steps per batch size, 10..100000 (default 200)
  --seed N             weights and prompts (default 1)
  --out DIR            where results.json and chart.svg go (default ./cudagraph-bench)
  --no-peer            skip the transformers peer
  --peer-compile       the peer also runs its static-cache step through torch.compile (tens of seconds a batch size)
  --json               print only the results, as JSON on stdout
  --serve              the generator's benchmark instead (cudagraph bench --serve --help)`,
  'bench --serve': `usage: cudagraph bench --serve [flags]

Starts cudagraph serve and measures 1, 8 and 64 concurrent clients: TTFT, inter-token time, tokens/s and
the socket's cost per token; serve-results.json and serve-chart.svg in --out.

  --model NAME|DIR     ${MODELS.join(' | ')}, or a Hugging Face model directory (default small)
  --http               also stream through the OpenAI endpoint (HTTP, SSE) beside the socket (needs a directory)
  --clients LIST       concurrent clients, 1..256 (default 1,8,64)
  --requests N         timed requests per client, in turn, 1..10000 (default 4)
  --tokens N           tokens per request, 1..2048 (default 64)
  --prompt-length N    prompt tokens per request, 1..2048 (default 32)
  --seed N, --out DIR, --json   as for bench`,
  serve: `usage: cudagraph serve --socket PATH [flags]

The generator: loads the model, captures its graphs, prints 'ready', and serves clients on a Unix socket
with continuous batching. GET /metrics and /healthz on 127.0.0.1. SIGTERM or SIGINT drains and exits 0.
A Hugging Face model directory is served with its tokenizer: text and chat requests as well as token ids.

  --socket PATH        Unix socket to listen on (required)
  --model NAME|DIR     ${MODELS.join(' | ')} (random weights), or a Hugging Face model directory (default small)
  --max-batch N        requests decoded together, 1..256 (default 64)
  --max-seq-len N      tokens per request, prompt included, 2..4096 (default 1024)
  --max-prefill N      tokens per prefill step (default 256)
  --max-queue N        requests waiting for a slot before BUSY, 0..1048576 (default 1024)
  --metrics-port N     port of /metrics and /healthz, 0..65535 (default 9400; 0: any free port)
  --graph-memory MIB   graph memory budget; missing graphs run eagerly and are captured when idle
  --mode MODE          ${GRAPH_MODES.join(' | ')} (default FULL)
  --seed N             weights (default 1)
${PREFILL_ATTENTION_HELP}
  --drain-ms N         after SIGTERM, how long running requests may finish (default 5000)
  --max-connections N  open connections at most; more are refused, 1..65536 (default 1024)
  --idle-timeout-ms N  a connection with nothing running that sends nothing this long is closed (default 60000)
  --http HOST:PORT     also serve the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models) over
                       HTTP there, on the same batch (needs a model directory; port 0: any free one)`,
  generate: `usage: cudagraph generate --model DIR --prompt TEXT [flags]

Loads a Hugging Face model directory (Llama, Mistral, Qwen2; safetensors), captures its graphs and streams
the generated text to stdout; the load and the figures go to stderr. Ctrl-C stops the generation.

  --model DIR          the model directory (config.json, *.safetensors, tokenizer.json) (required)
  --prompt TEXT        the prompt (required)
  --chat               send the prompt as a user message through the chat template
  --system TEXT        a system message before it (with --chat)
  --max-new-tokens N   at most N tokens (default: up to 256, as the context allows)
  --temperature T      0 is greedy (default: the model's generation_config, else 0)
  --top-p P            nucleus cut in (0, 1]
  --top-k K            keep the K most likely tokens (0: off)
  --seed N             seed of the draws, 0..4294967295 (default 0)
  --stop TEXT          a string that ends the generation (repeatable with commas: --stop "a,b")
  --dtype TYPE         f16 | bf16 (default: the checkpoint's)
  --max-seq-len N      context of the model, 2..4096 (default min(2048, the model's))
${PREFILL_ATTENTION_HELP}
  --no-graphs          run every step eagerly`,
  client: `usage: cudagraph client --socket PATH (--prompt TEXT | --prompt-tokens 1,2,3) [flags]

  --socket PATH        the Unix socket of a running generator (required)
  --prompt TEXT        a text prompt (the server needs a model directory); its text is printed
  --chat               send --prompt as a user message through the chat template
  --prompt-tokens L    comma-separated token ids; the tokens are printed
  --max-new-tokens N   default 32
  --busy-poll          spin instead of sleeping between tokens (one core busy)`,
}

const str = { type: 'string' } as const
const bool = { type: 'boolean' } as const

const BENCH_FLAGS: FlagSpec = {
  model: str,
  dtype: str,
  'prefill-attention': str,
  'batch-sizes': str,
  'prompt-lengths': str,
  tokens: str,
  mode: str,
  context: str,
  reps: str,
  seed: str,
  out: str,
  'no-peer': bool,
  'peer-compile': bool,
  json: bool,
}

/** Parses `bench` flags into options (throws UsageError). */
export function parseBenchFlags(args: readonly string[]): BenchOptions {
  const f = parseFlags(args, BENCH_FLAGS)
  const s = (k: string) => f[k] as string | undefined
  const tokens = int('tokens', s('tokens'), 32, 1, 1024)
  const promptLengths =
    s('prompt-lengths') === undefined ? [10, 50, 100, 150, 200, 250, 300, 350, 400] : intList('prompt-lengths', s('prompt-lengths')!, 1, 2048)
  if (Math.max(...promptLengths) + tokens > 4096) {
    throw new UsageError(`--prompt-lengths/--tokens: the longest prompt plus the tokens must be at most 4096, got ${Math.max(...promptLengths) + tokens}`)
  }
  return {
    model: modelFlag('model', f.model, MODELS, 'small'),
    dtype: f.dtype === undefined ? undefined : oneOf('dtype', f.dtype, ['f16', 'bf16'] as const, 'f16'),
    prefillAttention: prefillAttentionFlag(f['prefill-attention']),
    batchSizes: s('batch-sizes') === undefined ? [1, 2, 4, 8, 16, 32, 64, 128, 256] : intList('batch-sizes', s('batch-sizes')!, 1, 256),
    promptLengths,
    tokens,
    mode: oneOf<GraphMode>('mode', f.mode, GRAPH_MODES, 'FULL'),
    context: int('context', s('context'), 128, 1, 2048),
    reps: int('reps', s('reps'), 200, 10, 100000),
    seed: int('seed', s('seed'), 1, 0, 2 ** 31),
    out: s('out') ?? 'cudagraph-bench',
    peer: f['no-peer'] !== true,
    peerCompile: f['peer-compile'] === true,
    print: f.json !== true,
  }
}

/** Parses `bench --serve` flags (throws UsageError). */
export function parseServeBenchFlags(args: readonly string[]): ServeBenchOptions {
  const f = parseFlags(args, {
    serve: bool,
    http: bool,
    model: str,
    clients: str,
    requests: str,
    tokens: str,
    'prompt-length': str,
    seed: str,
    out: str,
    json: bool,
  })
  const s = (k: string) => f[k] as string | undefined
  const model = modelFlag('model', f.model, MODELS, 'small')
  if (f.http === true && typeof model === 'string')
    throw new UsageError(`--http: needs --model DIR, a Hugging Face model directory (the API speaks text), got the preset '${model}'`)
  return {
    model,
    http: f.http === true,
    clients: s('clients') === undefined ? [1, 8, 64] : intList('clients', s('clients')!, 1, 256),
    requests: int('requests', s('requests'), 4, 1, 10000),
    tokens: int('tokens', s('tokens'), 64, 1, 2048),
    promptLength: int('prompt-length', s('prompt-length'), 32, 1, 2048),
    seed: int('seed', s('seed'), 1, 0, 2 ** 31),
    out: s('out') ?? 'cudagraph-bench',
    print: f.json !== true,
  }
}

/** Parses `serve` flags (throws UsageError). */
export function parseServeFlags(args: readonly string[]): ServeOptions {
  const f = parseFlags(args, {
    socket: str,
    model: str,
    'max-batch': str,
    'max-seq-len': str,
    'max-prefill': str,
    'max-queue': str,
    'metrics-port': str,
    'graph-memory': str,
    mode: str,
    seed: str,
    'drain-ms': str,
    'max-connections': str,
    'idle-timeout-ms': str,
    http: str,
    'prefill-attention': str,
  })
  const s = (k: string) => f[k] as string | undefined
  const socket = required('socket', f.socket, 'the Unix socket path to listen on')
  const model = modelFlag('model', f.model, MODELS, 'small')
  let http: ServeOptions['http']
  if (s('http') !== undefined) {
    const m = /^(.+):(\d+)$/.exec(s('http')!)
    if (m === null) throw new UsageError(`--http: expected HOST:PORT (e.g. 127.0.0.1:8000), got '${s('http')}'`)
    http = { host: m[1]!, port: int('http', m[2], 0, 0, 65535) }
    if (typeof model === 'string')
      throw new UsageError(`--http: needs --model DIR, a Hugging Face model directory (the API speaks text), got the preset '${model}'`)
  }
  const maxSeqLen = int('max-seq-len', s('max-seq-len'), 1024, 2, 4096)
  const mib = s('graph-memory') === undefined ? null : int('graph-memory', s('graph-memory'), 0, 1, 2 ** 30)
  return {
    socket,
    model,
    maxBatch: int('max-batch', s('max-batch'), 64, 1, 256),
    maxSeqLen,
    maxPrefillTokens: int('max-prefill', s('max-prefill'), Math.min(256, maxSeqLen), 1, maxSeqLen),
    maxQueue: int('max-queue', s('max-queue'), 1024, 0, 1 << 20),
    metricsPort: int('metrics-port', s('metrics-port'), 9400, 0, 65535),
    graphMemory: mib === null ? null : mib * 2 ** 20,
    mode: oneOf<GraphMode>('mode', f.mode, GRAPH_MODES, 'FULL'),
    seed: int('seed', s('seed'), 1, 0, 2 ** 31),
    drainMs: int('drain-ms', s('drain-ms'), 5000, 0, 3600_000),
    maxConnections: int('max-connections', s('max-connections'), 1024, 1, 65536),
    idleTimeoutMs: int('idle-timeout-ms', s('idle-timeout-ms'), 60_000, 1, 0x7fffffff),
    http,
    prefillAttention: prefillAttentionFlag(f['prefill-attention']),
  }
}

/** Parses `generate` flags (throws UsageError). */
export function parseGenerateFlags(args: readonly string[]): GenerateCommandOptions {
  const f = parseFlags(args, {
    model: str,
    prompt: str,
    chat: bool,
    system: str,
    'max-new-tokens': str,
    temperature: str,
    'top-p': str,
    'top-k': str,
    seed: str,
    stop: str,
    dtype: str,
    'max-seq-len': str,
    'no-graphs': bool,
    'prefill-attention': str,
  })
  const s = (k: string) => f[k] as string | undefined
  const opt = <T>(k: string, parse: (v: string) => T): T | undefined => (s(k) === undefined ? undefined : parse(s(k)!))
  if (f.system !== undefined && f.chat !== true) throw new UsageError('--system: needs --chat (a system message goes through the chat template)')
  return {
    dir: modelDir('model', f.model),
    prompt: required('prompt', f.prompt, 'the prompt text'),
    chat: f.chat === true,
    system: s('system'),
    maxNewTokens: opt('max-new-tokens', (v) => int('max-new-tokens', v, 0, 1, 4095)),
    temperature: opt('temperature', (v) => num('temperature', v, 0, 0, 100)),
    topP: opt('top-p', (v) => num('top-p', v, 1, 1e-6, 1)),
    topK: opt('top-k', (v) => int('top-k', v, 0, 0, 1 << 24)),
    seed: int('seed', s('seed'), 0, 0, 0xffffffff),
    stop:
      s('stop') === undefined
        ? []
        : s('stop')!
            .split(',')
            .filter((x) => x !== ''),
    dtype: f.dtype === undefined ? undefined : oneOf('dtype', f.dtype, ['f16', 'bf16'] as const, 'f16'),
    maxSeqLen: opt('max-seq-len', (v) => int('max-seq-len', v, 0, 2, 4096)),
    graphs: f['no-graphs'] !== true,
    prefillAttention: prefillAttentionFlag(f['prefill-attention']),
  }
}

/** `--prefill-attention`, or undefined for the model's default (flash from compute capability 8.0). */
function prefillAttentionFlag(v: string | boolean | undefined): PrefillAttention | undefined {
  return v === undefined ? undefined : oneOf('prefill-attention', v, ['flash', 'rows'] as const, 'flash')
}

/** Parses `client` flags (throws UsageError). */
export function parseClientFlags(args: readonly string[]): ClientOptions {
  const f = parseFlags(args, { socket: str, prompt: str, chat: bool, 'prompt-tokens': str, 'max-new-tokens': str, 'busy-poll': bool })
  const socket = required('socket', f.socket, 'the Unix socket path of a running generator')
  const common = {
    socket,
    chat: f.chat === true,
    maxNewTokens: int('max-new-tokens', f['max-new-tokens'] as string | undefined, 32, 1, 0xffffffff),
    busyPoll: f['busy-poll'] === true,
  }
  if (f.prompt !== undefined) {
    if (f['prompt-tokens'] !== undefined) throw new UsageError('--prompt and --prompt-tokens: give one of them')
    return { ...common, prompt: required('prompt', f.prompt, 'the prompt text') }
  }
  if (f.chat === true) throw new UsageError('--chat: needs --prompt (a text prompt)')
  const p = required('prompt-tokens', f['prompt-tokens'], 'a comma-separated list of token ids (e.g. 1,2,3), or --prompt TEXT,')
  const prompt = p.split(',').map((t) => (/^\s*\d+\s*$/.test(t) ? Number(t) : Number.NaN))
  if (prompt.some((t) => !(Number.isSafeInteger(t) && t <= 0x7fffffff)))
    throw new UsageError(`--prompt-tokens: expected comma-separated token ids (integers 0..2147483647), got '${p}'`)
  return { ...common, prompt }
}

/** Where NVRTC's output is kept, and how much is there. */
function kernelCacheLine(): string {
  const dir = kernelCacheDir()
  if (dir === undefined) return 'kernel cache: off'
  let entries: string[] = []
  try {
    entries = readdirSync(dir).filter((f) => f.endsWith('.bin'))
  } catch {
    // Not created yet: the first compile creates it.
  }
  // A file another process replaces meanwhile counts as nothing.
  const bytes = entries.reduce((n, f) => n + (statSync(join(dir, f), { throwIfNoEntry: false })?.size ?? 0), 0)
  return `kernel cache: ${dir} (${entries.length} modules, ${(bytes / 2 ** 20).toFixed(1)} MiB; CUDAGRAPH_KERNEL_CACHE=off turns it off)`
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
    kernelCacheLine(),
    'features (each one used once):',
    // A real compile, not a load from the kernel cache.
    probe('NVRTC run-time compilation', () => dev.compile('extern "C" __global__ void k(float* x) { x[0] = 1.f; }', { name: 'probe', cache: false })),
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
      if (!r.updatedInPlace) throw new CudaGraphError('PROBE_FAILED', `the driver re-instantiated instead (${r.reason ?? 'no reason given'})`)
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

/** The package version. */
function version(): string {
  return (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version
}

const COMMANDS = ['info', 'bench', 'generate', 'serve', 'client']

/** Runs the command line `args` (without node and the script); resolves to the exit code. */
export async function main(args: readonly string[]): Promise<number> {
  const [cmd, ...rest] = args
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    ;(cmd === undefined ? console.error : console.log)(HELP.main)
    return cmd === undefined ? 2 : 0
  }
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
    console.log(version())
    return 0
  }
  if (!COMMANDS.includes(cmd)) {
    console.error(`cudagraph: unknown command '${cmd}'${suggest(cmd, COMMANDS)} (commands: ${COMMANDS.join(', ')})\nrun 'cudagraph --help'`)
    return 2
  }
  const name = cmd === 'bench' && rest.includes('--serve') ? 'bench --serve' : cmd
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(HELP[name])
    return 0
  }
  let run: () => Promise<number>
  try {
    if (cmd === 'client') {
      // A client needs no GPU here: the generator has it.
      const o = parseClientFlags(rest)
      return await client(o)
    } else if (name === 'bench --serve') {
      const o = parseServeBenchFlags(rest)
      writableDir('out', o.out)
      run = benchmark(o.print, () => runServeBench(o))
    } else if (cmd === 'bench') {
      const o = parseBenchFlags(rest)
      writableDir('out', o.out)
      run = benchmark(o.print, () => runBench(o))
    } else if (cmd === 'generate') {
      const o = parseGenerateFlags(rest)
      run = () => generate(o)
    } else if (cmd === 'serve') {
      const o = parseServeFlags(rest)
      socketPathUsable('socket', o.socket)
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
    console.error(`cudagraph ${name}: ${e.message}\nrun 'cudagraph ${name} --help'`)
    return 2
  }
  const avail = Device.availability()
  if (!avail.available) {
    console.error(`cudagraph ${name}: no usable CUDA GPU here (${avail.reason}). It needs an NVIDIA GPU and its driver (libcuda).`)
    return 1
  }
  return run()
}
