// GPU tests against transformers itself. scripts/make-checkpoints.py writes Hugging Face directories with
// transformers' own classes (Llama with llama3 and linear rope scaling, tied and untied; Qwen2 with biases,
// sharded; Mistral with a byte-fallback tokenizer; f32 converted on load) and what transformers and
// tokenizers give for them. Here: our greedy tokens against transformers' greedy generate (teacher-forced,
// so one near-tie cannot hide the rest), first-step logits, the rotary table, token ids, the chat template,
// text streaming, seeded sampling (repeats; frequencies pass a chi-square test) and a failed load's memory.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ArgumentError, Device, roundHalf } from '../dist/index.js'
import { DecoderModel, KERNEL_CONSTANTS, loadDecoder, loadModel, ropeInvFreq, sampleShape } from '../dist/model/index.js'
import { gpuTest, relError, useCheckpoints, useNccl } from './helpers.mjs'

const gtest = gpuTest()
const CHECKPOINTS = ['llama3-bf16', 'llama-f16', 'llama-f32', 'qwen2-bf16', 'mistral-bf16']
const checkpoints = useCheckpoints()

const reference = (name) => JSON.parse(readFileSync(join(checkpoints(), name, 'reference.json'), 'utf8'))

/** bf16 keeps 8 significant bits, f16 11: one unit in the last place at 1.0. */
const ulpAtOne = (dtype) => (dtype === 'bf16' ? 2 ** -7 : 2 ** -10)

for (const name of CHECKPOINTS) {
  gtest(`${name}: tokens, logits, rotary table, token ids and chat template agree with transformers`, async (t) => {
    const dir = join(checkpoints(), name)
    const ref = reference(name)
    const m = await loadModel(dir, { maxSeqLen: 256, slots: 4 })
    t.teardown(() => m.dispose())
    const V = m.config.vocab
    // Text: the tokenizers library's ids (with and without special tokens) and decodings, the chat template.
    for (const h of ref.hard) {
      t.deepEqual([...m.tokenizer.encode(h.text)], h.ids, `ids of ${JSON.stringify(h.text)}`)
      t.deepEqual([...m.encodePrompt(h.text)], h.withSpecial, `ids with special tokens of ${JSON.stringify(h.text)}`)
      t.is(m.tokenizer.decode(h.ids), h.decoded, `decoding of ${JSON.stringify(h.text)}`)
    }
    t.is(m.tokenizer.renderChat(ref.chat.messages), ref.chat.rendered, 'chat template')
    t.deepEqual([...m.encodePrompt(ref.chat.messages)], ref.chat.ids, 'chat ids')
    // The rotary frequencies (llama3 and linear scaling applied) are transformers' table.
    const inv = ropeInvFreq(m.config)
    t.true(relError(inv, ref.invFreq) < 1e-6, `inv_freq rel err ${relError(inv, ref.invFreq)}`)

    const dtype = m.model.dtype
    let same = 0
    let total = 0
    let nearTies = 0
    let freeSame = 0
    const logitErrs = []
    const far = []
    for (const p of ref.prompts) {
      const ids = m.encodePrompt(p.text)
      t.deepEqual([...ids], p.ids, `prompt ids of ${JSON.stringify(p.text)}`)
      // Free-running greedy generation, as transformers' generate ran.
      const free = m.runner.generate(0, ids, p.greedy.length)
      if (free.every((x, i) => x === p.greedy[i])) freeSame++
      // Teacher-forced on transformers' tokens: every position compared on its own.
      const preds = [m.runner.prefill(1, ids)]
      logitErrs.push(relError(m.runner.prefillStep.outputs.logits.view(0, V).download(), p.logits0))
      for (let i = 1; i < p.greedy.length; i++) {
        preds.push(m.runner.decode(1, Int32Array.of(1), Int32Array.of(p.greedy[i - 1]), Int32Array.of(ids.length + i - 1))[0])
      }
      for (const [i, x] of preds.entries()) {
        total++
        if (x === p.greedy[i]) same++
        else if (p.margins[i] <= 4 * ulpAtOne(dtype) * Math.max(1, Math.abs(p.top[i]))) nearTies++
        else far.push(`${JSON.stringify(p.text)}[${i}]: ours ${x}, theirs ${p.greedy[i]}, margin ${p.margins[i]}`)
      }
    }
    const maxLogitErr = Math.max(...logitErrs)
    t.log(
      `${name} (${dtype}, transformers ${ref.transformers}): teacher-forced greedy tokens ${same}/${total} equal, ${nearTies} differ at near-ties (top-2 margin <= 4 ulp); free-running ${freeSame}/${ref.prompts.length} prompts identical over ${ref.prompts[0].greedy.length} tokens; first-step logits rel err max ${maxLogitErr.toExponential(2)}`,
    )
    t.deepEqual(far, [], 'every difference is a near-tie')
    t.true(same / total >= 0.9, `${same}/${total}`)
    t.true(maxLogitErr < (dtype === 'bf16' ? 3e-2 : 1e-2), `logits rel err ${maxLogitErr}`)
  })
}

// Folded norms (the default) round differently from transformers' RMSNorm: the logits above agree within
// rounding. Unfolded, every rounding is transformers' own, so a bf16 prefill gives transformers' logits bit
// for bit wherever cuBLAS runs the same GEMM kernels for both (the references are made on the machine that
// runs the tests). It picks them by shape, and ours are fused (q/k/v, gate/up) and padded to a captured
// size: on an H200 every prompt of llama3 and qwen2 was exact, and 4 of mistral's 5 (the fifth at 4.3e-3
// and 7.3e-3 in two runs). A rounding of ours unlike transformers' would leave no prompt exact.
gtest(
  "foldNorms false keeps transformers' roundings: bf16 checkpoints' prefill logits are transformers' bits but where cuBLAS's GEMM kernels differ",
  async (t) => {
    const errs = []
    for (const name of CHECKPOINTS) {
      const ref = reference(name)
      const m = await loadModel(join(checkpoints(), name), { maxSeqLen: 256, slots: 4, foldNorms: false })
      try {
        t.false(m.model.foldNorms)
        if (m.model.dtype !== 'bf16') continue
        for (const p of ref.prompts) {
          m.runner.prefill(1, m.encodePrompt(p.text))
          errs.push({ name, text: p.text, err: relError(m.runner.prefillStep.outputs.logits.view(0, m.config.vocab).download(), p.logits0) })
        }
      } finally {
        m.dispose()
      }
    }
    const exact = errs.filter((e) => e.err === 0).length
    t.log(
      `prefill logits of ${errs.length} prompts: ${exact} transformers' bits; ${
        errs
          .filter((e) => e.err > 0)
          .map((e) => `${e.name} ${JSON.stringify(e.text)} ${e.err.toExponential(2)}`)
          .join(', ') || 'none other'
      }`,
    )
    t.is(errs.length, 15)
    t.true(exact >= 12, `${exact} of ${errs.length} exact`)
    t.true(
      errs.every((e) => e.err < 1e-2),
      'every prompt within 1e-2',
    )
  },
)

gtest('generate streams whole characters, ends at stop strings and eos, and seeded sampling repeats', async (t) => {
  const dir = join(checkpoints(), 'llama3-bf16')
  const ref = reference('llama3-bf16')
  const m = await loadModel(dir, { maxSeqLen: 256, slots: 4 })
  t.teardown(() => m.dispose())
  const collect = async (prompt, options) => {
    const chunks = []
    let result
    for await (const c of m.generate(prompt, options)) {
      chunks.push(c.text)
      if (c.result) result = c.result
    }
    return { chunks, result }
  }
  const p = ref.prompts[0]
  const g = await collect(p.text, { maxNewTokens: 64, ignoreEos: true })
  t.deepEqual([...g.result.tokens], [...m.runner.generate(0, Int32Array.from(p.ids), 64)], 'generate gives the runner greedy tokens')
  // The chunks add up to the decoding of all the tokens: no character was cut between two chunks (the
  // tokenizer tests stream split characters on their own; random weights also make byte runs that are not
  // UTF-8, which decode to U+FFFD whole or streamed alike).
  t.is(g.chunks.join(''), g.result.text)
  t.is(g.result.text, m.tokenizer.decode(g.result.tokens))
  t.is(g.result.finishReason, 'length')
  t.true(g.result.ttftMs > 0 && g.result.tokenMs.length === 63)
  // A stop string from the middle of that text ends the generation before it.
  const text = g.result.text
  const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3)
  if (stop.trim().length > 0) {
    const s = await collect(p.text, { maxNewTokens: 64, ignoreEos: true, stop: [stop] })
    t.is(s.result.finishReason, 'stop')
    t.is(s.result.text, text.slice(0, text.indexOf(stop)))
  }
  // Seeded sampling repeats exactly; another seed gives another sequence.
  const opts = { maxNewTokens: 48, ignoreEos: true, temperature: 1.2, topK: 100, topP: 0.95 }
  const a = await collect(p.text, { ...opts, seed: 7 })
  const b = await collect(p.text, { ...opts, seed: 7 })
  const c = await collect(p.text, { ...opts, seed: 8 })
  t.deepEqual([...a.result.tokens], [...b.result.tokens])
  t.notDeepEqual([...a.result.tokens], [...c.result.tokens])
  t.notDeepEqual([...a.result.tokens], [...g.result.tokens].slice(0, 48), 'sampling is not greedy')
  // Chat messages go through the template; an abort ends it early.
  const ctl = new AbortController()
  let n = 0
  for await (const ch of m.generate([{ role: 'user', content: 'Hi' }], { maxNewTokens: 200, ignoreEos: true, signal: ctl.signal })) {
    if (++n === 3) ctl.abort()
    if (ch.result) t.is(ch.result.finishReason, 'abort')
  }
  // Each of those ended with its next step armed (a stop string, an abort): the prefill after it rings that
  // replay first, and the greedy text is still the same.
  t.deepEqual([...(await collect(p.text, { maxNewTokens: 64, ignoreEos: true })).result.tokens], [...g.result.tokens], 'greedy after an armed step was left')
  t.log(`greedy text: ${JSON.stringify(text.slice(0, 80))}...; sampled (seed 7): ${JSON.stringify(a.result.text.slice(0, 60))}`)
})

// The kept tokens of a row: softmax(l / T) over the top-k (ties kept), then the fewest largest reaching top-p.
const keptTokens = (row, T, topK, topP) => {
  const max = row.reduce((m, x) => Math.max(m, x), -Infinity)
  const order = [...row.keys()].sort((a, b) => row[b] - row[a])
  const kth = topK > 0 ? row[order[topK - 1]] : -Infinity
  const kept = order.filter((i) => row[i] >= kth)
  if (topP >= 1) return kept
  const w = (i) => Math.exp((row[i] - max) / T)
  const z = kept.reduce((a, i) => a + w(i), 0)
  let mass = 0
  let cut = Infinity
  for (const i of kept) {
    mass += w(i) / z
    if (mass >= topP) {
      cut = row[i]
      break
    }
  }
  return kept.filter((i) => row[i] >= cut)
}

gtest(
  'the sampling kernel (f16 and bf16): greedy ties take the lowest index; draws follow the cut softmax (chi-square) and repeat per seed, with top-k then top-p, each alone, on rows narrower and wider than a round of loads, in 16-byte loads or not, on a block a row and split over a cluster; logits gathered rank after rank give the same draws; a greedy row takes the argmax key a layer chain left',
  (t) => {
    const dev = Device.open(0)
    const s = dev.createStream()
    // Logits exact in f16 and bf16 (quarters), with ties, not sorted by index. The narrow row's cut at top-k 16
    // then top-p 0.8 keeps 10 tokens; a top-p search that only added bits to top-k's cut kept 14.
    const narrow = Float32Array.from({ length: 48 }, (_, i) => roundHalf(((i * 37) % 23) * 0.25 - 2))
    // Wide rows (several rounds of loads a thread of 256, and a part): a few high logits, with ties, among many
    // low. A width that is a multiple of 4 is swept in 16-byte loads, any other one float at a time.
    const wide = (n) => Float32Array.from({ length: n }, (_, i) => (i % 211 === 5 ? ((i * 7) % 13) * 0.25 : -6 + ((i * 29) % 17) * 0.125))
    // Each case runs on a block a row (`sample`) and, on compute capability 9.0+, on a cluster of blocks a row
    // (`sample_split`): the narrow row leaves some of them nothing; Llama 3's 128256 logits take 64 KiB of
    // shared memory a block (past the 48 KiB default), and each case runs again with the parts swept in global
    // memory instead (no dynamic shared memory).
    const cases = [
      { row: narrow, T: 0.8, topK: 16, topP: 0.8, R: 40000, shards: [2, 3] },
      { row: wide(3000), T: 1, topK: 8, topP: 0.9, R: 12000, shards: [] },
      { row: wide(3000), T: 0.7, topK: 0, topP: 0.7, R: 12000, shards: [3] },
      { row: wide(2999), T: 0.7, topK: 0, topP: 0.7, R: 12000, shards: [] },
      { row: wide(2998), T: 1.3, topK: 4, topP: 1, R: 12000, shards: [] },
      { row: wide(128256), T: 0.9, topK: 0, topP: 0.5, R: 1500, shards: [] },
    ]
    const C = KERNEL_CONSTANTS.GC_COUNTERS
    for (const dtype of ['f16', 'bf16']) {
      const module = DecoderModel.module(dev, dtype)
      const signature = ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'ptr', 'i32']
      const kernels = [{ sample: module.kernel('sample', signature), split: 1 }]
      if (dev.computeCapability[0] >= 9) kernels.push({ sample: module.kernel('sample_split', signature), split: KERNEL_CONSTANTS.SAMPLE_SPLIT })
      for (const { row, T, topK, topP, R, shards } of cases)
        for (const { sample, split } of kernels) {
          const V = row.length
          const shape = sampleShape(dev, sample, V, split)
          const what = `${dtype}, ${V} logits, ${split} block(s) a row, T ${T}, top-k ${topK}, top-p ${topP}`
          const logits = new Float32Array(R * V)
          for (let r = 0; r < R; r++) logits.set(row, r * V)
          const params = new Float32Array(3 * R)
          for (let r = 0; r < R; r++) params.set(r < 2 ? [0, 1, 0] : [T, topP, topK], 3 * r)
          const iota = Int32Array.from({ length: R }, (_, i) => i)
          const bufs = {
            next: dev.alloc('i32', R),
            logits: dev.upload(logits),
            last: dev.upload(iota),
            pos: dev.upload(iota),
            params: dev.upload(params),
            seeds: dev.upload(new Uint32Array(R).fill(1234)),
            gathered: dev.alloc('f32', R * V),
            // The layer chain's scratch: GC_COUNTERS words (the last, its published mark, 0), then the argmax
            // keys as its LM head leaves them (8 bytes a row, low word first): row 0's points at the last
            // column, not the max; every other row's is 0.
            chain: dev.upload(Int32Array.from({ length: C + 2 * R }, (_, i) => (i === C ? ~(V - 1) : i === C + 1 ? 0x80000000 | 0 : 0))),
          }
          try {
            // shards > 1: the logits as tensor-parallel ranks gather them, each rank's vocabulary block for all rows.
            const run = (shards = 1, sharedMemBytes = shape.sharedMemBytes, fused = 0) => {
              const Vs = V / shards
              if (shards === 1) bufs.logits.upload(logits)
              else {
                const g = new Float32Array(R * V)
                for (let q = 0; q < shards; q++) for (let r = 0; r < R; r++) g.set(logits.subarray(r * V + q * Vs, r * V + (q + 1) * Vs), (q * R + r) * Vs)
                bufs.gathered.upload(g)
                s.fill(bufs.logits, 0)
              }
              const src = shards === 1 ? bufs.logits : bufs.gathered
              s.launch(sample, { grid: R * split, block: shape.block, sharedMemBytes }, [
                bufs.next,
                bufs.logits,
                src,
                bufs.last,
                bufs.pos,
                bufs.params,
                bufs.seeds,
                V,
                Vs,
                R,
                bufs.chain,
                fused,
              ])
              s.synchronize()
              return bufs.next.download()
            }
            const got = run()
            // Fused (the chain's LM head left the keys): a greedy row with a key takes its column, and sweeps
            // nothing; a greedy row whose key is 0 and the sampled rows get what they got without.
            const fused = run(1, shape.sharedMemBytes, 1)
            t.is(fused[0], V - 1, `${what}: fused, a greedy row's token is its key's column`)
            t.true(Buffer.from(fused.buffer, 4).equals(Buffer.from(got.buffer, 4)), `${what}: fused, a key of 0 and the sampled rows as without`)
            // Published (the chain stored every row's token): sample stores nothing.
            const marked = bufs.chain.download()
            marked[C - 1] = 1
            bufs.chain.upload(marked)
            bufs.next.upload(new Int32Array(R).fill(-7))
            t.true(
              run(1, shape.sharedMemBytes, 1).every((v) => v === -7),
              `${what}: published, nothing stored`,
            )
            for (const n of shards) {
              t.deepEqual(run(n), got, `${what}: ${n} ranks gathered, the same draws`)
              // As bytes: ava's deep comparison gives up on arrays of millions of elements.
              t.true(Buffer.from(bufs.logits.download().buffer).equals(Buffer.from(logits.buffer)), `${what}: and the logits, row-major`)
            }
            const max = row.reduce((m, x) => Math.max(m, x), -Infinity)
            t.is(got[0], row.indexOf(max), `${what}: greedy, the lowest index among equal maxima`)
            const kept = keptTokens(row, T, topK, topP)
            const w = (i) => Math.exp((row[i] - max) / T)
            const zk = kept.reduce((a, i) => a + w(i), 0)
            const counts = new Map()
            for (let r = 2; r < R; r++) counts.set(got[r], (counts.get(got[r]) ?? 0) + 1)
            t.deepEqual(
              [...counts.keys()].filter((i) => !kept.includes(i)),
              [],
              `${what}: no draw outside the cut`,
            )
            const n = R - 2
            let chi2 = 0
            for (const i of kept) {
              const e = (n * w(i)) / zk
              chi2 += ((counts.get(i) ?? 0) - e) ** 2 / e
            }
            const df = kept.length - 1
            // The 0.001 critical value (Wilson-Hilferty): a correct sampler fails one run in a thousand.
            const crit = df * (1 - 2 / (9 * df) + 3.09 * Math.sqrt(2 / (9 * df))) ** 3
            t.log(`${what}: ${kept.length} tokens kept; chi-square ${chi2.toFixed(2)} on ${df} df (0.001 critical ${crit.toFixed(2)}) over ${n} draws`)
            t.true(chi2 < crit, `${what}: chi-square ${chi2}`)
            t.deepEqual(run(), got, `${what}: the same seeds and positions draw the same tokens`)
            if (split > 1) {
              t.true(shape.sharedMemBytes > 0, `${what}: a block's part fits in shared memory (${shape.sharedMemBytes} bytes)`)
              t.deepEqual(run(1, 0), got, `${what}: swept in global memory, the same draws`)
            }
          } finally {
            for (const b of Object.values(bufs)) b.dispose()
          }
        }
    }
  },
)

gtest('a failed load frees everything it allocated; a bad dtype is refused before allocating', async (t) => {
  const dev = Device.open(0)
  const s = dev.createStream()
  const dir = join(checkpoints(), 'qwen2-bf16')
  // Warm the module cache and the allocator, so the comparison sees only the load.
  loadDecoder(dev, s, dir, { maxSeqLen: 64, slots: 2 }).model.dispose()
  dev.synchronize()
  const used = () => {
    const m = dev.memoryInfo()
    return m.total - m.free
  }
  const before = used()
  let calls = 0
  t.throws(
    () =>
      loadDecoder(dev, s, dir, {
        maxSeqLen: 64,
        slots: 2,
        onProgress: () => {
          if (++calls === 5) throw new Error('interrupted on purpose')
        },
      }),
    { message: /interrupted on purpose/ },
  )
  dev.synchronize()
  const after = used()
  t.log(`device memory in use before ${before}, after the failed load ${after} (bytes)`)
  t.true(Math.abs(after - before) <= 2 << 20, `${after - before} bytes more in use`)
  t.throws(() => loadDecoder(dev, s, dir, { dtype: 'f16' }), { message: /BF16 cannot load into a f16 model/ })
  t.true(Math.abs(used() - before) <= 2 << 20)
})

gtest('tensor parallel at size 1: the sharded load, all-reduce after o and down and gathered logits give the plain path bit for bit, in graphs', async (t) => {
  useNccl()
  // qwen2-bf16: biases, a tied LM head (its rows of the embedding), sharded files; llama-f16: untied.
  for (const name of ['qwen2-bf16', 'llama-f16']) {
    const dir = join(checkpoints(), name)
    const ref = reference(name)
    const plain = await loadModel(dir, { maxSeqLen: 256, slots: 4 })
    const tp = await loadModel(dir, { maxSeqLen: 256, slots: 4, tensorParallel: 1 })
    t.teardown(() => {
      plain.dispose()
      tp.dispose()
    })
    t.is(tp.model.shard.size, 1)
    t.truthy(tp.model.communicator)
    t.is(tp.loadStats.bytes, plain.loadStats.bytes, 'the whole checkpoint is the one rank slice')
    const V = plain.config.vocab
    for (const p of ref.prompts.slice(0, 3)) {
      const ids = Int32Array.from(p.ids)
      const a = plain.runner.prefill(1, ids)
      const b = tp.runner.prefill(1, ids)
      t.is(a, b)
      t.deepEqual(
        tp.runner.prefillStep.outputs.logits.view(0, V).download(),
        plain.runner.prefillStep.outputs.logits.view(0, V).download(),
        `${name}: first-step logits, bit for bit`,
      )
      t.deepEqual([...tp.runner.generate(0, ids, 24)], [...plain.runner.generate(0, ids, 24)], `${name}: 24 greedy tokens`)
    }
    const stats = tp.manager.stats()
    t.true(stats.replays > 0, `${name}: decode steps replayed graphs (${stats.replays}) with the collectives captured`)
    t.log(`${name}: tensor-parallel size 1 equals the plain path over 3 prompts (first-step logits bit for bit, 24 greedy tokens); ${stats.replays} replays`)
  }
  await t.throwsAsync(() => loadModel(join(checkpoints(), 'llama-f16'), { tensorParallel: 2 }), { instanceOf: ArgumentError, message: /tensorParallel/ })
})
