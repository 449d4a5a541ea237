/**
 * Streaming text for byte-level BPE tokenizers (GPT-2's alphabet: Llama 3, Qwen2, Mistral's newer ones),
 * without a tokenizer decode per token. Each token stands for fixed bytes (its characters through the
 * byte-level alphabet; an added token for its own text), so a stream of ids is a stream of bytes, and a
 * streaming UTF-8 decoder gives exactly the complete characters. The same text as the tokenizer's decode
 * of all the ids (tests hold it to that), at a table lookup per token.
 */

/** The byte each character of the byte-level alphabet stands for (GPT-2's `bytes_to_unicode`, inverted). */
function alphabet(): Map<string, number> {
  const printable: number[] = []
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b)
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b)
  for (let b = 0xae; b <= 0xff; b++) printable.push(b)
  const map = new Map<string, number>()
  for (const b of printable) map.set(String.fromCodePoint(b), b)
  let n = 0
  for (let b = 0; b < 256; b++) if (!printable.includes(b)) map.set(String.fromCodePoint(256 + n++), b)
  return map
}

/** The bytes of each token id of a byte-level tokenizer, made on first use. */
export class ByteLevelTable {
  readonly #tokens: (string | undefined)[]
  readonly #added: ReadonlyMap<number, string>
  readonly #bytes: (Uint8Array | undefined)[] = []
  static readonly #alphabet = alphabet()
  static readonly #utf8 = new TextEncoder()

  private constructor(tokens: (string | undefined)[], added: ReadonlyMap<number, string>) {
    this.#tokens = tokens
    this.#added = added
  }

  /**
   * The table of `tokenizerJson` when its decoder is plain byte-level and decoding applies no clean-up
   * (tokenizer_config's `clean_up_tokenization_spaces`); otherwise undefined (decode per token instead).
   */
  static of(tokenizerJson: Record<string, unknown>, config: Record<string, unknown>): ByteLevelTable | undefined {
    const decoder = tokenizerJson.decoder as { type?: unknown } | null | undefined
    const model = tokenizerJson.model as { type?: unknown; vocab?: unknown } | undefined
    if (decoder?.type !== 'ByteLevel' || config.clean_up_tokenization_spaces === true) return undefined
    if (model?.type !== 'BPE' || model.vocab === null || typeof model.vocab !== 'object') return undefined
    const tokens: (string | undefined)[] = []
    for (const [token, id] of Object.entries(model.vocab as Record<string, unknown>)) if (Number.isSafeInteger(id)) tokens[id as number] = token
    const added = new Map<number, string>()
    for (const a of (tokenizerJson.added_tokens as { id?: unknown; content?: unknown }[] | undefined) ?? []) {
      if (Number.isSafeInteger(a.id) && typeof a.content === 'string') added.set(a.id as number, a.content)
    }
    return new ByteLevelTable(tokens, added)
  }

  /** Whether `id` is an added token (its text is its content, not byte-level characters). */
  isAdded(id: number): boolean {
    return this.#added.has(id)
  }

  /** The bytes token `id` stands for (none for an id outside the vocabulary). */
  bytes(id: number): Uint8Array {
    const cached = this.#bytes[id]
    if (cached !== undefined) return cached
    const added = this.#added.get(id)
    let out: Uint8Array
    if (added !== undefined) out = ByteLevelTable.#utf8.encode(added)
    else {
      const chars = [...(this.#tokens[id] ?? '')]
      out = Uint8Array.from(chars, (c) => ByteLevelTable.#alphabet.get(c) ?? 0x3f)
    }
    if (Number.isSafeInteger(id) && id >= 0) this.#bytes[id] = out
    return out
  }

  /** A stream decoder over this table. */
  stream(): ByteLevelStream {
    return new ByteLevelStream(this)
  }
}

/** Token ids in, complete characters out (see the module comment). */
export class ByteLevelStream {
  readonly #table: ByteLevelTable
  #utf8 = new TextDecoder('utf-8')

  constructor(table: ByteLevelTable) {
    this.#table = table
  }

  /** Adds `id`; returns the characters it completes. */
  push(id: number): string {
    if (this.#table.isAdded(id)) {
      // An added token ends the byte run before it, as the tokenizer decodes them: an incomplete
      // character there decodes to U+FFFD.
      return this.#utf8.decode() + new TextDecoder('utf-8').decode(this.#table.bytes(id))
    }
    return this.#utf8.decode(this.#table.bytes(id), { stream: true })
  }

  /** The end: an incomplete character left over decodes to U+FFFD. */
  flush(): string {
    return this.#utf8.decode()
  }
}
