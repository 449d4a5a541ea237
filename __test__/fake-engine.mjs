// A CPU GenerationEngine for the scheduler and server tests (no GPU claims rest on it): like a KV cache,
// it keeps per slot and position a hash of the slot's history up to there (each from the one before), and
// the next token is that hash, so a wrong slot, position or chunk boundary changes every token after it.

export class FakeEngine {
  constructor({
    vocab = 97,
    maxSeqLen = 64,
    slots = 8,
    maxBatch = 8,
    maxPrefillTokens = 16,
    maxPrefillReqs = 4,
    failOn,
    recordSampling = false,
    stepDelayMs = 0,
  } = {}) {
    Object.assign(this, { vocab, maxSeqLen, slots, maxBatch, maxPrefillTokens, maxPrefillReqs })
    this.cache = Array.from({ length: slots }, () => new Int32Array(maxSeqLen).fill(-1))
    this.out = new Int32Array(Math.max(maxBatch, maxPrefillReqs))
    this.failOn = failOn
    this.decodeSizes = []
    this.prefillSizes = []
    /** With recordSampling: the sampling rows of every step, as [temperature, topP, topK, seed] per request. */
    this.samplingSeen = recordSampling ? [] : undefined
    /** Each decode step takes at least this long (a slow model, for queue and shutdown tests), ms. */
    this.stepDelayMs = stepDelayMs
  }

  #sampling(n, s) {
    if (this.samplingSeen === undefined) return
    for (let i = 0; i < n; i++) this.samplingSeen.push([s.params[3 * i], s.params[3 * i + 1], s.params[3 * i + 2], s.seeds[i]])
  }

  /** Writes `tok` at `pos` of `slot`; returns the next token. */
  #write(slot, pos, tok) {
    const c = this.cache[slot]
    if (pos > 0 && c[pos - 1] < 0) throw new Error(`slot ${slot} position ${pos - 1} was never written`)
    c[pos] = ((pos > 0 ? c[pos - 1] : 17) * 31 + tok + 1) % 1000003
    return c[pos] % this.vocab
  }

  prefillBatch(n, slots, starts, lengths, tokens, sampling) {
    if (this.failOn?.('prefill', n)) throw new Error('injected prefill failure')
    this.#sampling(n, sampling)
    this.prefillSizes.push(n)
    let t = 0
    for (let r = 0; r < n; r++) {
      if (starts[r] > 0) this.chunked = true
      for (let i = 0; i < lengths[r]; i++) this.out[r] = this.#write(slots[r], starts[r] + i, tokens[t++])
    }
    return this.out.subarray(0, n)
  }

  decode(n, slots, tokens, positions, sampling) {
    if (this.failOn?.('decode', n)) throw new Error('injected decode failure')
    this.#sampling(n, sampling)
    this.decodeSizes.push(n)
    for (const end = performance.now() + this.stepDelayMs; performance.now() < end; );
    for (let i = 0; i < n; i++) {
      if (positions[i] >= this.maxSeqLen) throw new Error(`position ${positions[i]} outside the context`)
      this.out[i] = this.#write(slots[i], positions[i], tokens[i])
    }
    return this.out.subarray(0, n)
  }

  /** What a request gets alone: the same hash over prompt + generated tokens. */
  reference(prompt, maxNewTokens) {
    const seq = [...prompt]
    const out = []
    const next = () => {
      let h = 17
      for (const t of seq) h = (h * 31 + t + 1) % 1000003
      return h % this.vocab
    }
    while (out.length < maxNewTokens) {
      const t = next()
      out.push(t)
      if (out.length === maxNewTokens || seq.length >= this.maxSeqLen) break
      seq.push(t)
    }
    return out
  }
}
