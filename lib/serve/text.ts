/**
 * Text requests for the server (no GPU needed): the tokenizer it is given (a model's TextTokenizer, or
 * anything with the same shape), a request's checked settings and its prompt as token ids (its output
 * goes through util/text-output.ts).
 */
import type { StreamDecoder } from '../util/text-output.js'
import type { RequestSampling } from './batch-scheduler.js'

/** One chat message. */
export interface ChatMessage {
  role: string
  content: string
}

/** What the server needs to speak text (the model's TextTokenizer is one). */
export interface TextCodec {
  /** Token ids of `text`, with the tokenizer's special tokens (BOS) when `addSpecialTokens`. */
  encode(text: string, options: { addSpecialTokens?: boolean }): Int32Array
  /** Whether {@link TextCodec.renderChat} can render. */
  readonly hasChatTemplate: boolean
  /** `messages` through the chat template, the assistant's turn opened. */
  renderChat(messages: readonly ChatMessage[]): string
  /** A streaming decoder of ids: text only once its characters are complete. */
  detokenizer(): StreamDecoder
}

/** The server's text setup: the codec and the ids that end generation. */
export interface TextSetup {
  readonly codec: TextCodec
  readonly eosTokenIds: ReadonlySet<number>
}

/** A text request's settings, checked. */
export interface TextRequest {
  /** A string (encoded with special tokens), chat messages (rendered with the template), or token ids as they are. */
  readonly prompt: string | readonly ChatMessage[] | Int32Array
  /** Most tokens to generate; undefined: as many as the context leaves. */
  readonly maxNewTokens: number | undefined
  readonly sampling: RequestSampling
  readonly stop: readonly string[]
  readonly ignoreEos: boolean
}

/** Why a text request is refused: the parameter at fault and what was expected. */
export class TextRequestError extends Error {
  readonly param: string
  constructor(param: string, message: string) {
    super(`${param}: ${message}`)
    this.name = 'TextRequestError'
    this.param = param
  }
}

/** Most stop strings a request may carry. */
export const MAX_STOPS = 16
/** Longest stop string, characters. */
export const MAX_STOP_LENGTH = 256

/** Checks sampling settings (each a TextRequestError naming its parameter `names` gives). */
export function checkSampling(
  s: { temperature: number; topP: number; topK: number; seed: number },
  names = { temperature: 'temperature', topP: 'top_p', topK: 'top_k', seed: 'seed' },
): RequestSampling {
  if (!(Number.isFinite(s.temperature) && s.temperature >= 0 && s.temperature <= 100))
    throw new TextRequestError(names.temperature, `expected a number in 0..100, got ${s.temperature}`)
  if (!(s.topP > 0 && s.topP <= 1)) throw new TextRequestError(names.topP, `expected a number in (0, 1], got ${s.topP}`)
  if (!(Number.isInteger(s.topK) && s.topK >= 0 && s.topK < 2 ** 24)) throw new TextRequestError(names.topK, `expected an integer >= 0, got ${s.topK}`)
  if (!(Number.isInteger(s.seed) && s.seed >= 0 && s.seed <= 0xffffffff))
    throw new TextRequestError(names.seed, `expected an integer in 0..4294967295, got ${s.seed}`)
  return s
}

/** Checks stop strings (at most 16 of 1..256 characters). */
export function checkStops(stop: readonly string[], param = 'stop'): readonly string[] {
  if (stop.length > MAX_STOPS) throw new TextRequestError(param, `at most ${MAX_STOPS} stop strings, got ${stop.length}`)
  for (const [i, x] of stop.entries())
    if (typeof x !== 'string' || x.length === 0 || x.length > MAX_STOP_LENGTH)
      throw new TextRequestError(param, `stop string ${i} must have 1..${MAX_STOP_LENGTH} characters`)
  return stop
}

/** The prompt's token ids as transformers builds them (throws TextRequestError for `param`). */
export function promptTokens(codec: TextCodec, prompt: string | readonly ChatMessage[] | Int32Array, param = 'prompt'): Int32Array {
  if (prompt instanceof Int32Array) return prompt
  if (typeof prompt === 'string') return codec.encode(prompt, { addSpecialTokens: true })
  if (!codec.hasChatTemplate) throw new TextRequestError(param, "the model's tokenizer has no chat template")
  if (!Array.isArray(prompt) || prompt.length === 0) throw new TextRequestError(param, 'expected a non-empty array of messages')
  for (const [i, m] of prompt.entries()) {
    if (m === null || typeof m !== 'object' || typeof m.role !== 'string' || typeof m.content !== 'string')
      throw new TextRequestError(`${param}[${i}]`, 'expected a message { role, content } of strings')
  }
  let rendered: string
  try {
    rendered = codec.renderChat(prompt)
  } catch (e) {
    throw new TextRequestError(param, `the chat template failed: ${e instanceof Error ? e.message : String(e)}`)
  }
  return codec.encode(rendered, { addSpecialTokens: false })
}
