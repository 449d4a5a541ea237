/**
 * Text requests for the server (no GPU needed): the tokenizer it is given (a model's TextTokenizer, or
 * anything with the same shape) and a request's checked settings. The checks and the prompt's encoding
 * are util/text-request.ts, shared with the model's generate; the output goes through util/text-output.ts.
 */
import type { ChatMessage, SamplingSettings, TextCodec } from '../util/text-request.js'

export type { ChatMessage, TextCodec } from '../util/text-request.js'

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
  readonly sampling: SamplingSettings
  readonly stop: readonly string[]
  readonly ignoreEos: boolean
}
