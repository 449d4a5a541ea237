/**
 * What a generation may be asked, checked in one place (no GPU needed): sampling settings, stop strings,
 * and a prompt as token ids through a tokenizer. The model's `generate`, the server's text requests (socket
 * and HTTP) and the client use these. A failure is an ArgumentError whose `argument` is the parameter, named
 * as the caller's API names it, and whose message starts with it.
 */
import { ArgumentError, describe } from '../errors.js'
import type { StreamDecoder } from './text-output.js'

/** One chat message, as chat templates take them. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | (string & {})
  content: string
}

/** A tokenizer as generation needs it (the model's TextTokenizer is one). */
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

/** How a request picks its tokens: temperature (0: greedy), top-p ((0, 1]; 1: off), top-k (0: off), seed. */
export interface SamplingSettings {
  readonly temperature: number
  readonly topP: number
  readonly topK: number
  readonly seed: number
}

/** Most stop strings a request may carry. */
export const MAX_STOPS = 16
/** Longest stop string, characters. */
export const MAX_STOP_LENGTH = 256

/** An ArgumentError for `param` whose message is `param: what`. */
export function requestError(param: string, what: string, got?: unknown): ArgumentError {
  return new ArgumentError(param, what, got, { message: `${param}: ${what}` })
}

const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v)

/** Checks sampling settings; `names` are the parameters' names in the caller's API. */
export function checkSampling(
  s: SamplingSettings,
  names: { temperature: string; topP: string; topK: string; seed: string } = { temperature: 'temperature', topP: 'topP', topK: 'topK', seed: 'seed' },
): SamplingSettings {
  const { temperature, topP, topK, seed } = s
  if (!(isNumber(temperature) && temperature >= 0 && temperature <= 100))
    throw requestError(names.temperature, `expected a number in 0..100, got ${describe(temperature)}`, temperature)
  if (!(isNumber(topP) && topP > 0 && topP <= 1)) throw requestError(names.topP, `expected a number in (0, 1], got ${describe(topP)}`, topP)
  if (!(Number.isInteger(topK) && topK >= 0 && topK < 2 ** 24)) throw requestError(names.topK, `expected an integer >= 0, got ${describe(topK)}`, topK)
  if (!(Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff))
    throw requestError(names.seed, `expected an integer in 0..4294967295, got ${describe(seed)}`, seed)
  return { temperature, topP, topK, seed }
}

/** Checks stop strings: at most 16, each of 1..256 characters. */
export function checkStops(stop: readonly string[], param = 'stop'): readonly string[] {
  if (!Array.isArray(stop)) throw requestError(param, 'expected an array of strings', stop)
  if (stop.length > MAX_STOPS) throw requestError(param, `at most ${MAX_STOPS} stop strings, got ${stop.length}`, stop.length)
  for (const [i, x] of stop.entries())
    if (typeof x !== 'string' || x.length === 0 || x.length > MAX_STOP_LENGTH)
      throw requestError(`${param}[${i}]`, `expected a string of 1..${MAX_STOP_LENGTH} characters, got ${describe(x)}`, x)
  return stop
}

/**
 * The prompt's token ids as transformers builds them: a string is encoded with the tokenizer's special
 * tokens (BOS); chat messages are rendered with the chat template and encoded as rendered; token ids are
 * taken as they are.
 */
export function promptTokens(codec: TextCodec, prompt: string | readonly ChatMessage[] | Int32Array, param = 'prompt'): Int32Array {
  if (prompt instanceof Int32Array) return prompt
  if (typeof prompt === 'string') return codec.encode(prompt, { addSpecialTokens: true })
  if (!Array.isArray(prompt) || prompt.length === 0) throw requestError(param, 'expected a string or a non-empty array of messages', prompt)
  if (!codec.hasChatTemplate) throw requestError(param, "the model's tokenizer has no chat template")
  for (const [i, m] of prompt.entries()) {
    if (m === null || typeof m !== 'object' || typeof m.role !== 'string' || typeof m.content !== 'string')
      throw requestError(`${param}[${i}]`, 'expected a message { role, content } of strings', m)
  }
  let rendered: string
  try {
    rendered = codec.renderChat(prompt)
  } catch (e) {
    throw requestError(param, `the chat template failed: ${e instanceof Error ? e.message : String(e)}`)
  }
  return codec.encode(rendered, { addSpecialTokens: false })
}
