/**
 * `cudagraph generate`: one prompt (or one chat turn) through a Hugging Face model directory, the text
 * streamed to stdout as it is made; loading progress and the figures on stderr.
 */
import type { ModelDType, PrefillAttention } from '../model/decoder-model.js'
import { loadModel } from '../model/language-model.js'
import type { ChatMessage } from '../model/tokenizer.js'
import { percentile } from '../util/percentile.js'
import { loadProgress, loadSummary } from './load-progress.js'

/** What `cudagraph generate` runs. */
export interface GenerateCommandOptions {
  dir: string
  prompt: string
  /** Wrap the prompt as a user message (after `system`, if given) in the chat template. */
  chat: boolean
  system: string | undefined
  maxNewTokens: number | undefined
  temperature: number | undefined
  topP: number | undefined
  topK: number | undefined
  seed: number
  stop: string[]
  dtype: ModelDType | undefined
  maxSeqLen: number | undefined
  graphs: boolean
  /** Prefill attention's kernel (undefined: the model's default). */
  prefillAttention: PrefillAttention | undefined
}

/** Runs it; resolves to the exit code. SIGINT stops the generation (finish reason abort). */
export async function generate(o: GenerateCommandOptions): Promise<number> {
  const progress = loadProgress(true)
  const m = await loadModel(o.dir, {
    dtype: o.dtype,
    maxSeqLen: o.maxSeqLen,
    graphs: o.graphs,
    prefillAttention: o.prefillAttention,
    onProgress: progress.onProgress,
  })
  progress.finish(
    `${loadSummary(o.dir, m.loadStats)}; ${m.config.architecture}, ${m.model.dtype}; ${m.warmup.captured} graphs in ${m.warmup.seconds.toFixed(2)} s`,
  )
  const say = (s: string) => process.stderr.write(`${s}\n`)
  const abort = new AbortController()
  const onSigint = () => abort.abort()
  process.once('SIGINT', onSigint)
  try {
    const messages: ChatMessage[] = [...(o.system === undefined ? [] : [{ role: 'system', content: o.system }]), { role: 'user', content: o.prompt }]
    const stream = m.generate(o.chat ? messages : o.prompt, {
      maxNewTokens: o.maxNewTokens,
      temperature: o.temperature,
      topP: o.topP,
      topK: o.topK,
      seed: o.seed,
      stop: o.stop,
      signal: abort.signal,
    })
    for await (const chunk of stream) {
      process.stdout.write(chunk.text)
      const r = chunk.result
      if (r === undefined) continue
      process.stdout.write('\n')
      const p50 = percentile(r.tokenMs, 0.5)
      say(
        `${r.promptTokens} prompt tokens, ${r.tokens.length} generated (${r.finishReason}${r.stop === undefined ? '' : `: ${JSON.stringify(r.stop)}`}); TTFT ${r.ttftMs.toFixed(1)} ms; decode p50 ${p50.toFixed(3)} ms/token (${(1000 / p50).toFixed(0)} tokens/s)`,
      )
    }
    return 0
  } finally {
    process.off('SIGINT', onSigint)
    m.dispose()
  }
}
