/**
 * `cudagraph serve` (the generator process: model, graphs, socket, metrics; a Hugging Face model
 * directory also gets text requests) and `cudagraph client` (one prompt, its tokens or text printed as
 * they come).
 */

import { Device } from '../cuda/device.js'
import { CudaGraphError } from '../errors.js'
import { GraphManager } from '../manager/graph-manager.js'
import { loadDecoder } from '../model/checkpoint.js'
import { DecoderModel, type PrefillAttention } from '../model/decoder-model.js'
import { DecoderRunner } from '../model/decoder-runner.js'
import { endOfSequenceIds, readGenerationConfig } from '../model/generation-config.js'
import { type ModelName, parameterCount } from '../model/model-config.js'
import { TextTokenizer } from '../model/tokenizer.js'
import type { GraphMode } from '../policy/graph-mode.js'
import { Client } from '../serve/client.js'
import { GeneratorServer } from '../serve/generator-server.js'
import type { TextSetup } from '../serve/text.js'
import { loadProgress, loadSummary } from './load-progress.js'

/** What `cudagraph serve` runs. */
export interface ServeOptions {
  socket: string
  /** A preset (random weights, token requests only), or a Hugging Face model directory (text too). */
  model: ModelName | { dir: string }
  /** Requests decoded together at most (KV slots). */
  maxBatch: number
  /** Longest sequence per request, tokens. */
  maxSeqLen: number
  /** Tokens one prefill step takes at most. */
  maxPrefillTokens: number
  maxQueue: number
  /** Port of /metrics and /healthz (0: any free one). */
  metricsPort: number
  /** Graph memory budget, bytes (null: none). */
  graphMemory: number | null
  mode: GraphMode
  seed: number
  /** How long running requests may finish after SIGTERM, ms. */
  drainMs: number
  /** Open connections at most. */
  maxConnections: number
  /** Idle connections are closed after this long, ms. */
  idleTimeoutMs: number
  /** The OpenAI HTTP endpoint's host and port (undefined: none; needs a model directory). */
  http: { host: string; port: number } | undefined
  /** Prefill attention's kernel (undefined: the model's default). */
  prefillAttention: PrefillAttention | undefined
}

/**
 * Loads the model, captures the graph ladder (progress on stderr), serves until SIGTERM or SIGINT, then
 * drains, releases the GPU and removes the socket. Prints one `ready` line on stdout when it accepts
 * clients. Resolves to the exit code.
 */
export async function serve(o: ServeOptions): Promise<number> {
  const say = (s: string) => process.stderr.write(`cudagraph serve: ${s}\n`)
  const dev = Device.open(0)
  const stream = dev.createStream()
  stream.prepareBlas()
  const name = typeof o.model === 'string' ? o.model : o.model.dir
  let model: DecoderModel
  let text: TextSetup | undefined
  if (typeof o.model === 'string') {
    model = DecoderModel.create(dev, stream, {
      model: o.model,
      seed: o.seed,
      slots: o.maxBatch,
      maxSeqLen: o.maxSeqLen,
      prefillAttention: o.prefillAttention,
    })
  } else {
    const tokenizer = TextTokenizer.fromDirectory(o.model.dir)
    const defaults = readGenerationConfig(o.model.dir)
    const progress = loadProgress(true)
    const loaded = loadDecoder(dev, stream, o.model.dir, {
      slots: o.maxBatch,
      maxSeqLen: o.maxSeqLen,
      prefillAttention: o.prefillAttention,
      onProgress: progress.onProgress,
    })
    progress.finish(`cudagraph serve: ${loadSummary(o.model.dir, loaded.stats)}`)
    model = loaded.model
    text = { codec: tokenizer, eosTokenIds: endOfSequenceIds(loaded.checkpoint.config.eosTokenIds, defaults, tokenizer.eosTokenId) }
  }
  say(
    `${dev.name}: model ${name} (${(parameterCount(model.config) / 1e6).toFixed(1)}M parameters, ${model.dtype}), ${o.maxBatch} KV slots x ${o.maxSeqLen} tokens${text ? '; text requests' : ''}`,
  )
  const maxCapture = Math.max(o.maxBatch, o.maxPrefillTokens)
  const manager = new GraphManager(dev, {
    stream,
    config: { mode: o.mode, maxNumSeqs: o.maxBatch, maxCaptureSize: maxCapture, maxMemoryBytes: o.graphMemory },
    log: say,
  })
  // The server does not know its next batch, so its decode steps never arm: no gate (DecoderRunnerOptions.armable).
  const runner = new DecoderRunner(model, manager, { maxBatch: o.maxBatch, maxPrefillTokens: o.maxPrefillTokens, armable: false })
  let server: GeneratorServer | undefined
  try {
    await runner.warmup({ progress: true })
    server = await GeneratorServer.listen({
      socketPath: o.socket,
      engine: runner,
      model: name,
      ...(text && { text }),
      maxQueue: o.maxQueue,
      metricsPort: o.metricsPort,
      maxConnections: o.maxConnections,
      idleTimeoutMs: o.idleTimeoutMs,
      ...(o.http && { http: { ...o.http, maxConnections: o.maxConnections, idleTimeoutMs: o.idleTimeoutMs } }),
      log: say,
    })
    process.stdout.write(
      `cudagraph serve: ready on ${o.socket} (model ${name}, max batch ${o.maxBatch}, metrics http://127.0.0.1:${server.metricsPort}/metrics${server.httpPort === undefined ? '' : `, OpenAI API http://${o.http!.host}:${server.httpPort}/v1`})\n`,
    )
    const signal = await new Promise<string>((resolve) => {
      process.once('SIGTERM', () => resolve('SIGTERM'))
      process.once('SIGINT', () => resolve('SIGINT'))
    })
    say(`${signal}: no new connections; running requests get ${o.drainMs} ms to finish`)
    await server.close({ drainMs: o.drainMs })
    const s = manager.stats()
    say(`stopped: ${s.replays} graph replays, ${s.eagerRuns} eager steps, ${s.captures} captures, ${s.evictions} evictions`)
    return 0
  } finally {
    await server?.close()
    runner.dispose()
    manager.dispose()
    model.dispose()
  }
}

/** What `cudagraph client` sends. */
export interface ClientOptions {
  socket: string
  /** Token ids, or text (a user message when `chat`). */
  prompt: number[] | string
  chat: boolean
  maxNewTokens: number
  /** See ConnectOptions.busyPoll. */
  busyPoll: boolean
}

/** Sends one prompt and prints its tokens as they arrive; a summary goes to stderr. */
export async function client(o: ClientOptions): Promise<number> {
  let c: Client | undefined
  try {
    c = await Client.connect(o.socket, { busyPoll: o.busyPoll })
    const t0 = performance.now()
    let first = 0
    const p = o.prompt
    const g =
      typeof p === 'string'
        ? c.generateText(o.chat ? [{ role: 'user', content: p }] : p, { maxNewTokens: o.maxNewTokens })
        : c.generate(p, { maxNewTokens: o.maxNewTokens })
    const stop = () => g.cancel()
    process.once('SIGINT', stop)
    let pieces = 0
    for await (const piece of g) {
      if (++pieces === 1) first = performance.now() - t0
      process.stdout.write(typeof piece === 'string' ? piece : pieces === 1 ? `${piece}` : ` ${piece}`)
    }
    process.off('SIGINT', stop)
    const ms = performance.now() - t0
    process.stdout.write('\n')
    process.stderr.write(
      `cudagraph client: ${g.received} tokens (${g.finishReason}), first after ${first.toFixed(2)} ms, ${((g.received * 1000) / ms).toFixed(0)} tokens/s\n`,
    )
    return 0
  } catch (e) {
    const name = e instanceof CudaGraphError || e instanceof DOMException ? `${e.name}: ` : ''
    process.stderr.write(`\ncudagraph client: ${name}${e instanceof Error ? e.message : String(e)}\n`)
    return 1
  } finally {
    c?.close()
  }
}
