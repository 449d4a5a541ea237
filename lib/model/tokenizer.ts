/**
 * Text for a Hugging Face model directory: `tokenizer.json` through tokenizers.js (`@huggingface/tokenizers`,
 * Hugging Face's own JS port of `tokenizers`), the chat template of `tokenizer_config.json` through
 * `@huggingface/jinja`, and {@link Detokenizer}, which turns a stream of token ids into text only once the
 * text is complete (no broken UTF-8 from a character split across tokens).
 */
import { join } from 'node:path'
import { Template } from '@huggingface/jinja'
import { Tokenizer } from '@huggingface/tokenizers'
import { CheckpointError } from '../errors.js'
import type { ChatMessage } from '../util/text-request.js'
import { ByteLevelTable } from './byte-level.js'
import { readJsonObject } from './json-file.js'

export type { ChatMessage } from '../util/text-request.js'

/** A special token as tokenizer_config.json names it: a string, or an AddedToken object with `content`. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v
  if (v !== null && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content
  return undefined
}

/** A model's tokenizer and chat template. */
export class TextTokenizer {
  readonly #tok: Tokenizer
  readonly #template: Template | undefined
  readonly #config: Record<string, unknown>
  /** Byte-level tokenizers stream through a byte table; others decode a window per token. */
  readonly #byteLevel: ByteLevelTable | undefined
  /** The begin-of-sequence token's id, if the tokenizer has one. */
  readonly bosTokenId: number | undefined
  /** The end-of-sequence token's id (tokenizer_config.json's `eos_token`), if any. */
  readonly eosTokenId: number | undefined

  private constructor(tokenizerJson: Record<string, unknown>, config: Record<string, unknown>, configFile: string) {
    this.#tok = new Tokenizer(tokenizerJson, config)
    this.#config = config
    this.#byteLevel = ByteLevelTable.of(tokenizerJson, config)
    const template = config.chat_template
    if (template !== undefined && template !== null && typeof template !== 'string') {
      throw new CheckpointError(configFile, 'chat_template is not a string (named templates are not supported)', { field: 'chat_template' })
    }
    try {
      this.#template = typeof template === 'string' ? new Template(template) : undefined
    } catch (e) {
      throw new CheckpointError(configFile, `chat_template does not parse: ${e instanceof Error ? e.message : String(e)}`, { field: 'chat_template', cause: e })
    }
    const id = (field: string) => {
      const t = tokenText(config[field])
      return t === undefined ? undefined : this.#tok.token_to_id(t)
    }
    this.bosTokenId = id('bos_token')
    this.eosTokenId = id('eos_token')
  }

  /** Reads `tokenizer.json` and `tokenizer_config.json` from model directory `dir`. */
  static fromDirectory(dir: string): TextTokenizer {
    const configFile = join(dir, 'tokenizer_config.json')
    return new TextTokenizer(readJsonObject(join(dir, 'tokenizer.json')), readJsonObject(configFile), configFile)
  }

  /** The token ids of `text` (with the tokenizer's own special tokens, such as BOS, when `addSpecialTokens`). */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): Int32Array {
    return Int32Array.from(this.#tok.encode(text, { add_special_tokens: options.addSpecialTokens ?? false }).ids)
  }

  /**
   * The text of `ids` (special tokens included unless `skipSpecialTokens`). Spaces before punctuation are
   * cleaned up only when tokenizer_config.json asks (`clean_up_tokenization_spaces: true`), as transformers
   * does since 4.45; tokenizers.js alone would default to cleaning up.
   */
  decode(ids: ArrayLike<number>, options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return ''
    return this.#tok.decode(Array.from(ids), {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: this.#config.clean_up_tokenization_spaces === true,
    })
  }

  /** The id of token `token`, if it is in the vocabulary. */
  tokenId(token: string): number | undefined {
    return this.#tok.token_to_id(token)
  }

  /** Whether the tokenizer has a chat template. */
  get hasChatTemplate(): boolean {
    return this.#template !== undefined
  }

  /**
   * `messages` rendered with the chat template, as transformers' `apply_chat_template(tokenize=False)`
   * does: the special tokens of tokenizer_config.json are in scope, and `addGenerationPrompt` (default
   * true) opens the assistant's turn.
   */
  renderChat(messages: readonly ChatMessage[], options: { addGenerationPrompt?: boolean } = {}): string {
    if (this.#template === undefined) throw new CheckpointError('tokenizer_config.json', 'this tokenizer has no chat_template', { field: 'chat_template' })
    const special: Record<string, string> = {}
    for (const k of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
      const t = tokenText(this.#config[k])
      if (t !== undefined) special[k] = t
    }
    return this.#template.render({ ...special, messages, add_generation_prompt: options.addGenerationPrompt ?? true })
  }

  /**
   * A streaming decoder of this tokenizer's ids: text out only once its characters are complete. A
   * byte-level tokenizer's is a byte table and a UTF-8 stream (no decode per token); others decode a
   * window of recent ids per token ({@link Detokenizer}).
   */
  detokenizer(): { push(id: number): string; flush(): string } {
    return this.#byteLevel?.stream() ?? new Detokenizer(this)
  }
}

/** Tokens of context decoded before the new ones, so that merges across the boundary decode as they would whole. */
const PREFIX_TOKENS = 6
/** The decoded window is cut back to PREFIX_TOKENS once it holds this many: one decode per token, mostly. */
const WINDOW_TOKENS = 24

/**
 * Turns token ids, one at a time, into text chunks that are complete: a character whose bytes span
 * several tokens (byte-level BPE, byte fallback) comes out whole once its last byte arrives, never as a
 * replacement character. The chunks concatenate to the decoding of all the ids.
 *
 * Each push decodes the window of ids from `#prefix` on once; the text of the window up to what was
 * already emitted is the previous push's decoding, kept, so a token costs one decode (and one more each
 * time the window is cut back).
 */
export class Detokenizer {
  readonly #tok: TextTokenizer
  readonly #ids: number[] = []
  /** Tokens before #read that are decoded only as context. */
  #prefix = 0
  /** Tokens before this are already out as text. */
  #read = 0
  /** The decoding of ids[#prefix..#read]. */
  #readText = ''

  /** @internal use {@link TextTokenizer.detokenizer} */
  constructor(tok: TextTokenizer) {
    this.#tok = tok
  }

  /** Adds `id`; returns the text it completes ('' while a character is still incomplete). */
  push(id: number): string {
    this.#ids.push(id)
    const ids = this.#ids
    const now = this.#tok.decode(ids.slice(this.#prefix))
    const before = this.#readText
    if (now.length <= before.length || now.endsWith('\uFFFD')) return ''
    this.#read = ids.length
    this.#readText = now
    if (this.#read - this.#prefix >= WINDOW_TOKENS) {
      // Keep a few tokens as context for the next decode; the older ones are done with.
      this.#prefix = this.#read - PREFIX_TOKENS
      this.#readText = this.#tok.decode(ids.slice(this.#prefix, this.#read))
    }
    return now.slice(before.length)
  }

  /** The text still held back (an incomplete character at the end), once the stream ends. */
  flush(): string {
    const ids = this.#ids
    const now = this.#tok.decode(ids.slice(this.#prefix))
    const out = now.slice(this.#readText.length)
    this.#read = ids.length
    this.#readText = now
    return out
  }
}
