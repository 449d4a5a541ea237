/**
 * A Hugging Face model directory ready to generate text: the decoder loaded from its checkpoint, its
 * graphs captured, its tokenizer and chat template, its end-of-sequence ids and sampling defaults.
 * `generate` streams text chunks that are always complete characters, then a final record.
 */
import { Communicator } from '../cuda/communicator.js'
import { Device } from '../cuda/device.js'
import type { Stream } from '../cuda/stream.js'
import { ArgumentError, check, InUseError } from '../errors.js'
import { GraphManager, type WarmupResult } from '../manager/graph-manager.js'
import { TextOutput } from '../util/text-output.js'
import { promptTokens } from '../util/text-request.js'
import { type LoadOptions, type LoadStats, loadDecoder } from './checkpoint.js'
import type { DecoderModel } from './decoder-model.js'
import { DecoderRunner } from './decoder-runner.js'
import { endOfSequenceIds, type GenerationDefaults, readGenerationConfig } from './generation-config.js'
import type { CheckpointConfig } from './hf-config.js'
import { type SamplingParams, type SamplingRows, samplingRows, setSampling } from './sampling.js'
import { type ChatMessage, TextTokenizer } from './tokenizer.js'

/** Options of {@link loadModel}. */
export interface LoadModelOptions extends LoadOptions {
  /** The GPU (default device 0). */
  device?: Device
  /** Capture CUDA graphs for prefill and decode (default true); false runs every step eagerly. */
  graphs?: boolean | undefined
  /** Most prompt tokens one prefill step takes; longer prompts run in several (default min(512, maxSeqLen)). */
  maxPrefillTokens?: number
  /**
   * Tensor-parallel ranks in this process: 1 runs the tensor-parallel path (sharded load, all-reduce after
   * o and down, gathered logits) on a one-rank NCCL communicator it creates and owns. More ranks need one
   * process per GPU: start them yourself, give each its `communicator` (rank r of n, one id), and make the
   * same calls on every rank; the gathered logits give every rank the same tokens, so they stay in step.
   */
  tensorParallel?: 1 | undefined
}

/** Options of {@link LanguageModel.generate}. */
export interface GenerateOptions extends SamplingParams {
  /** Most tokens to generate (default: as many as the context holds after the prompt, at most 256). */
  maxNewTokens?: number | undefined
  /** Strings that end generation (not part of the output); at most 16. */
  stop?: readonly string[]
  /** Ends generation early (finish reason `'abort'`). */
  signal?: AbortSignal
  /** Keep generating past end-of-sequence tokens (default false). */
  ignoreEos?: boolean
}

/** Why generation ended. */
export type FinishReason = 'stop' | 'length' | 'abort'

/** The record that ends a generation. */
export interface GenerationResult {
  /** The generated token ids (an end-of-sequence token that stopped it included). */
  tokens: Int32Array
  /** Tokens of the prompt as the model saw it (chat template applied). */
  promptTokens: number
  /** The whole generated text (without a matched stop string). */
  text: string
  finishReason: FinishReason
  /** The stop string that ended it, if one did. */
  stop: string | undefined
  /** Time to the first token (prompt encoding, prefill, first token on the host), ms. */
  ttftMs: number
  /** Time of each decode step after the first token, ms. */
  tokenMs: number[]
}

/** One piece of a generation: new text (maybe empty), and on the last piece the result. */
export interface TextChunk {
  text: string
  result?: GenerationResult
}

/** Give the event loop a turn at least this often while generating (an abort signal, other I/O), ms. */
const YIELD_MS = 5

/** A loaded model that turns prompts into text. Dispose it to free the GPU memory. */
export class LanguageModel {
  readonly model: DecoderModel
  readonly tokenizer: TextTokenizer
  readonly runner: DecoderRunner
  readonly manager: GraphManager
  readonly stream: Stream
  readonly config: CheckpointConfig
  /** The model directory's generation defaults (generation_config.json). */
  readonly defaults: GenerationDefaults
  /** Token ids that end generation: config.json's, generation_config.json's, else the tokenizer's. */
  readonly eosTokenIds: ReadonlySet<number>
  readonly loadStats: LoadStats
  readonly warmup: WarmupResult
  readonly #rows: SamplingRows = samplingRows(1)
  /** The communicator `tensorParallel: 1` created (disposed with the model). */
  readonly #ownComm: Communicator | undefined
  #busy = false
  #disposed = false

  private constructor(init: {
    model: DecoderModel
    tokenizer: TextTokenizer
    runner: DecoderRunner
    manager: GraphManager
    stream: Stream
    config: CheckpointConfig
    defaults: GenerationDefaults
    loadStats: LoadStats
    warmup: WarmupResult
    ownComm: Communicator | undefined
  }) {
    this.#ownComm = init.ownComm
    this.model = init.model
    this.tokenizer = init.tokenizer
    this.runner = init.runner
    this.manager = init.manager
    this.stream = init.stream
    this.config = init.config
    this.defaults = init.defaults
    this.loadStats = init.loadStats
    this.warmup = init.warmup
    this.eosTokenIds = endOfSequenceIds(init.config.eosTokenIds, init.defaults, init.tokenizer.eosTokenId)
  }

  /** Loads model directory `dir` (see {@link loadModel}). */
  static async load(dir: string, options: LoadModelOptions = {}): Promise<LanguageModel> {
    const tokenizer = TextTokenizer.fromDirectory(dir)
    const defaults = readGenerationConfig(dir)
    const tp = options.tensorParallel
    check(
      tp === undefined || (tp === 1 && options.communicator === undefined),
      'tensorParallel',
      "1, without a communicator (more ranks: one process per GPU, each given its rank's `communicator`)",
      tp,
    )
    const device = options.device ?? Device.open(0)
    const stream = device.createStream()
    stream.prepareBlas()
    const ownComm = tp === 1 ? Communicator.create(device, { id: Communicator.uniqueId(), rank: 0, size: 1 }) : undefined
    let loaded: ReturnType<typeof loadDecoder>
    try {
      loaded = loadDecoder(device, stream, dir, { ...options, communicator: options.communicator ?? ownComm })
    } catch (e) {
      ownComm?.dispose()
      throw e
    }
    const { model, checkpoint, stats } = loaded
    let manager: GraphManager | undefined
    let runner: DecoderRunner | undefined
    try {
      const maxPrefill = options.maxPrefillTokens ?? Math.min(512, model.maxSeqLen)
      manager = new GraphManager(device, {
        stream,
        config: { mode: options.graphs === false ? 'NONE' : 'FULL', maxNumSeqs: model.slots, maxCaptureSize: Math.max(model.slots, maxPrefill) },
      })
      runner = new DecoderRunner(model, manager, { maxPrefillTokens: maxPrefill })
      const warmup = await runner.warmup()
      return new LanguageModel({ model, tokenizer, runner, manager, stream, config: checkpoint.config, defaults, loadStats: stats, warmup, ownComm })
    } catch (e) {
      runner?.dispose()
      manager?.dispose()
      model.dispose()
      ownComm?.dispose()
      throw e
    }
  }

  /**
   * The prompt's token ids as transformers would build them: a string is encoded with the tokenizer's
   * special tokens (BOS); chat messages are rendered with the chat template and encoded as rendered.
   */
  encodePrompt(prompt: string | readonly ChatMessage[]): Int32Array {
    return promptTokens(this.tokenizer, prompt)
  }

  /**
   * Generates text for `prompt` (a string, or chat messages rendered with the chat template): an async
   * iterator of text chunks, each only complete characters, the last carrying the {@link GenerationResult}.
   * Greedy unless `temperature` > 0 (then top-k, top-p and the seed apply, on the device). One generation
   * runs at a time per model (another is an InUseError); the serve layer batches many.
   */
  async *generate(prompt: string | readonly ChatMessage[], options: GenerateOptions = {}): AsyncGenerator<TextChunk, void, undefined> {
    if (this.#disposed) throw new ArgumentError('model', 'a model not disposed', 'a disposed model')
    if (this.#busy) throw new InUseError('this model is generating already; wait for that generation to finish (or batch requests through cudagraph/serve)')
    const t0 = performance.now()
    const ids = this.encodePrompt(prompt)
    const room = this.model.maxSeqLen - ids.length
    if (ids.length === 0) throw new ArgumentError('prompt', 'a prompt of at least one token', 'an empty prompt')
    if (room < 1) throw new ArgumentError('prompt', `at most ${this.model.maxSeqLen - 1} tokens (maxSeqLen ${this.model.maxSeqLen})`, `${ids.length} tokens`)
    const maxNew = options.maxNewTokens ?? Math.min(256, room)
    check(
      Number.isInteger(maxNew) && maxNew >= 1 && maxNew <= room,
      'maxNewTokens',
      `an integer in 1..${room} (the context left after a ${ids.length}-token prompt)`,
      maxNew,
    )
    check(options.signal === undefined || options.signal instanceof AbortSignal, 'signal', 'an AbortSignal', options.signal)
    const output = new TextOutput(this.tokenizer.detokenizer(), options.stop ?? [], options.ignoreEos ? new Set() : this.eosTokenIds)
    setSampling(this.#rows, 0, this.#sampling(options))
    this.#busy = true
    try {
      const runner = this.runner
      const tokens: number[] = []
      const tokenMs: number[] = []
      let text = ''
      let finishReason: FinishReason
      let next = runner.prefillPrompt(0, ids, this.#rows)
      const ttftMs = performance.now() - t0
      const one = { slot: Int32Array.of(0), token: new Int32Array(1), pos: new Int32Array(1) }
      let lastYield = performance.now()
      for (;;) {
        tokens.push(next)
        let out = output.push(next).text
        if (output.ended) finishReason = 'stop'
        else if (tokens.length >= maxNew) finishReason = 'length'
        else {
          if (out !== '') {
            text += out
            yield { text: out }
            out = ''
          }
          if (performance.now() - lastYield > YIELD_MS) {
            await new Promise<void>((resolve) => setImmediate(resolve))
            lastYield = performance.now()
          }
          if (!options.signal?.aborted) {
            one.token[0] = next
            one.pos[0] = ids.length + tokens.length - 1
            const t = performance.now()
            // Every step but the last arms the next (RunOptions.armNext): a stop string or end-of-sequence
            // token found after it costs that replay once, run on the same inputs (the same cache entry).
            next = runner.decode(1, one.slot, one.token, one.pos, this.#rows, undefined, tokens.length + 1 < maxNew)[0]!
            tokenMs.push(performance.now() - t)
            continue
          }
          finishReason = 'abort'
        }
        // Ending: what this token completed, and anything held back (nothing after a stop string).
        const tail = out + output.flush().text
        text += tail
        const result: GenerationResult = {
          tokens: Int32Array.from(tokens),
          promptTokens: ids.length,
          text,
          finishReason,
          stop: output.stopped,
          ttftMs,
          tokenMs,
        }
        yield { text: tail, result }
        return
      }
    } finally {
      this.#busy = false
    }
  }

  /** The request's sampling settings over the model's defaults (greedy unless the model samples by default). */
  #sampling(o: GenerateOptions): SamplingParams {
    const d = this.defaults
    const sample = d.doSample && o.temperature === undefined
    return {
      temperature: o.temperature ?? (sample ? (d.temperature ?? 1) : 0),
      topP: o.topP ?? d.topP ?? 1,
      topK: o.topK ?? d.topK ?? 0,
      seed: o.seed ?? 0,
    }
  }

  /** Frees the graphs, the weights and the KV cache. */
  dispose(): void {
    if (this.#disposed) return
    this.#disposed = true
    this.runner.dispose()
    this.manager.dispose()
    this.model.dispose()
    this.#ownComm?.dispose()
  }
}

/**
 * Loads a Hugging Face model directory (config.json, safetensors, tokenizer.json, tokenizer_config.json,
 * generation_config.json) onto the GPU and captures its graphs: `const m = await loadModel(dir)`, then
 * `for await (const c of m.generate('Hello')) process.stdout.write(c.text)`.
 */
export function loadModel(dir: string, options: LoadModelOptions = {}): Promise<LanguageModel> {
  return LanguageModel.load(dir, options)
}
