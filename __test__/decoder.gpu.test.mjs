// GPU tests of the built-in decoder: the tiny model against a float64 CPU reference of the same math,
// graph == eager tokens, batched decode == lone requests, bad input, and transformers' greedy tokens on the
// model saved as a Hugging Face directory.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ArgumentError, Device, GraphManager } from '../dist/index.js'
import { DecoderModel, DecoderReference, DecoderRunner, KERNEL_CONSTANTS, loadDecoder, samplingRows, setSampling } from '../dist/model/index.js'
import { bf16ToNumber, gpuTest, halfToNumber, numberToBf16, numberToHalf, relError, rng } from './helpers.mjs'

const test = gpuTest()

function setup(
  t,
  { slots = 8, mode = 'FULL', model: spec = 'tiny', dtype, maxSeqLen = 128, maxPrefillTokens = 64, prefillAttention, decodeGemv, decodeChain } = {},
) {
  const dev = Device.open(0)
  const stream = dev.createStream()
  stream.prepareBlas()
  const model = DecoderModel.create(dev, stream, { model: spec, dtype, seed: 3, slots, maxSeqLen, prefillAttention, decodeGemv, decodeChain })
  const mgr = new GraphManager(dev, { stream, config: { mode, maxNumSeqs: slots, maxCaptureSize: 64 } })
  const eagerMgr = new GraphManager(dev, { stream, config: { mode: 'NONE' } })
  const graph = new DecoderRunner(model, mgr, { maxPrefillTokens, maxBatch: slots })
  const eager = new DecoderRunner(model, eagerMgr, { maxPrefillTokens, maxBatch: slots })
  t.teardown(() => {
    graph.dispose()
    eager.dispose()
    model.dispose()
  })
  return { dev, stream, model, mgr, graph, eager }
}

const prompt = (n, seed, vocab) => {
  const r = rng(seed)
  return Int32Array.from({ length: n }, () => Math.floor(r() * vocab))
}

/** A kernel test's device and stream, and `up`, an upload (typed array, dtype) freed when the test ends. */
function kernelFixture(t) {
  const dev = Device.open(0)
  const stream = dev.createStream()
  const made = []
  t.teardown(() => {
    for (const b of made) b.dispose()
  })
  const up = (a, dt) => {
    const b = dev.upload(a, dt)
    made.push(b)
    return b
  }
  return { dev, stream, up }
}

/**
 * A kernel test's view of `dtype`: number to element bits and back, its quiet NaN's bits, every element's
 * value by its bits (`value[bits]`), and the decoder's kernels compiled for it.
 */
function dtypeKit(dev, dtype) {
  const [toE, fromE, nan] = dtype === 'bf16' ? [numberToBf16, bf16ToNumber, 0x7fc0] : [numberToHalf, halfToNumber, 0x7e00]
  const value = Float64Array.from({ length: 65536 }, (_, h) => fromE(h))
  return { toE, fromE, nan, value, module: DecoderModel.module(dev, dtype) }
}

/** The model's prefill of a `length`-token prompt and 6 decode steps against the float64 CPU reference. */
async function matchesReference(t, spec, length) {
  const { model, graph } = setup(t, { model: spec })
  await graph.warmup()
  const V = model.config.vocab
  const ref = new DecoderReference(model.config, model.downloadWeights())
  const p = prompt(length, 41, V)
  // Prefill: our logits for the last prompt token against the reference's.
  const first = graph.prefill(2, p)
  const ours0 = graph.prefillStep.outputs.logits.view(0, V).download()
  const pos = Int32Array.from(p, (_, i) => i)
  const r0 = ref.forward(p, pos, new Int32Array(p.length).fill(2), [p.length - 1])
  const errs = [relError(ours0, r0.logits)]
  const spread = Math.sqrt(r0.logits.reduce((s, v) => s + v * v, 0) / V)
  t.true(spread > 1, `logits spread ${spread} (the test needs non-trivial logits)`)
  t.is(first, r0.next[0], 'prefill greedy token')
  // Decode 6 tokens, each step checked against the reference fed the same token.
  let tok = first
  let agree = 1
  for (let i = 0; i < 6; i++) {
    const at = p.length + i
    const next = graph.decode(1, Int32Array.of(2), Int32Array.of(tok), Int32Array.of(at))[0]
    const ours = graph.decodeStep.outputs.logits.view(0, V).download()
    const r = ref.forward([tok], [at], [2], [0])
    errs.push(relError(ours, r.logits))
    if (next === r.next[0]) agree++
    tok = next
  }
  t.log(
    `logits rel err vs float64: max ${Math.max(...errs).toExponential(2)} over ${errs.length} steps; greedy tokens ${agree}/7 equal; logits rms ${spread.toFixed(2)}`,
  )
  t.true(Math.max(...errs) < 1e-2, `rel err ${Math.max(...errs)}`)
  t.is(agree, 7)
}

test('tiny decoder matches the float64 CPU reference (prefill and decode logits, greedy tokens)', (t) => matchesReference(t, 'tiny', 13))

// 16 query heads on 4 key/value heads: a decode step's attention blocks take a group each (attentionHeads);
// an MLP width that is not a multiple of 8 takes silu_mul's element path.
test('a wider tiny decoder (query-head groups of 4, MLP width 100) matches the float64 CPU reference', (t) =>
  matchesReference(t, { preset: 'tiny', hidden: 128, heads: 16, kvHeads: 4, ffn: 100 }, 64))

test('graph and eager generate identical tokens (generate arms each step but the last); a batched decode step gives each request what it gets alone, in a loop of armed steps', async (t) => {
  const { model, graph, eager, mgr } = setup(t)
  const w = await graph.warmup()
  t.true(w.captured > 0 && w.failed === 0)
  const V = model.config.vocab
  const prompts = [5, 13, 29, 40].map((n, i) => prompt(n, 100 + i, V))
  const alone = prompts.map((p, i) => graph.generate(i, p, 12))
  for (const [i, p] of prompts.entries()) t.deepEqual(eager.generate(4 + i, p, 12), alone[i], `prompt ${i}: eager == graph`)
  // The four requests decode together in batches of 4 after their prefills, each step but the last arming
  // the next (its replay launched before these tokens are fed back).
  const slots = Int32Array.of(0, 1, 2, 3)
  const toks = new Int32Array(4)
  const pos = new Int32Array(4)
  // Prefills with timing events around the forward (graph and eager) give the same first tokens.
  const timing = { start: model.device.createEvent({ timing: true }), end: model.device.createEvent({ timing: true }) }
  const got = prompts.map((p, i) => {
    const first = i % 2 === 0 ? graph.prefill(i, p, 0, samplingRows(1), timing) : eager.prefill(i, p, 0, samplingRows(1), timing)
    t.true(timing.end.elapsedSince(timing.start) > 0, `prompt ${i}: a timed prefill's forward takes time`)
    return [first]
  })
  for (let step = 1; step < 12; step++) {
    for (let i = 0; i < 4; i++) {
      toks[i] = got[i][step - 1]
      pos[i] = prompts[i].length + step - 1
    }
    const next = graph.decode(4, slots, toks, pos, undefined, undefined, step < 11)
    for (let i = 0; i < 4; i++) got[i].push(next[i])
  }
  for (const [i, g] of got.entries()) t.deepEqual(Int32Array.from(g), alone[i], `request ${i} batched == alone`)
  const distinct = new Set(alone.flatMap((a) => [...a])).size
  t.true(distinct > 4, `generated tokens vary (${distinct} distinct)`)
  t.is(graph.decodeUse(3), 'padded')
  t.is(graph.prefillUse(13), 'padded')
  t.is(graph.prefillUse(16), 'captured')
  t.log(`${w.captured} graphs; manager: ${mgr.stats().replays} replays, ${mgr.stats().eagerRuns} eager runs`)
})

/**
 * `small`'s decode steps as `decodeGemv` GEMVs against cuBLAS: a batch of 11 gives each request what it
 * gets alone (the CUDA-core GEMVs' three row blocks of 4, the last one partial; the tensor-core GEMVs'
 * 16-row kernel against the 8-row one), graph equals eager, and the logits match.
 */
async function fusedDecodeMatches(t, decodeGemv) {
  const fused = setup(t, { slots: 16, model: 'small', decodeGemv })
  const plain = setup(t, { slots: 16, model: 'small', decodeGemv: 'off' })
  t.is(fused.model.decodeGemv, decodeGemv)
  await fused.graph.warmup()
  await plain.graph.warmup()
  const V = fused.model.config.vocab
  const prompts = Array.from({ length: 11 }, (_, i) => prompt(3 + 5 * i, 300 + i, V))
  const alone = prompts.map((p, i) => fused.graph.generate(i, p, 8))
  t.deepEqual(fused.eager.generate(12, prompts[7], 8), alone[7], 'eager == graph')
  const slots = Int32Array.from({ length: 11 }, (_, i) => i)
  const toks = new Int32Array(11)
  const pos = new Int32Array(11)
  const got = prompts.map((p, i) => [fused.graph.prefill(i, p)])
  for (let step = 1; step < 8; step++) {
    for (let i = 0; i < 11; i++) {
      toks[i] = got[i][step - 1]
      pos[i] = prompts[i].length + step - 1
    }
    const next = fused.graph.decode(11, slots, toks, pos, undefined, undefined, step < 7)
    for (let i = 0; i < 11; i++) got[i].push(next[i])
  }
  for (const [i, g] of got.entries()) t.deepEqual(Int32Array.from(g), alone[i], `request ${i}: batched == alone`)
  // One decode step of the same 3 requests on both paths: the same function up to rounding.
  const errs = []
  for (const m of [fused, plain]) for (let i = 0; i < 3; i++) m.graph.prefill(i, prompts[i])
  const last = Int32Array.from({ length: 3 }, (_, i) => alone[i][0])
  const at = Int32Array.from({ length: 3 }, (_, i) => prompts[i].length)
  fused.graph.decode(3, slots, last, at)
  plain.graph.decode(3, slots, last, at)
  for (let i = 0; i < 3; i++) {
    const a = fused.graph.decodeStep.outputs.logits.view(i * V, V).download()
    const b = plain.graph.decodeStep.outputs.logits.view(i * V, V).download()
    errs.push(relError(a, b))
  }
  const distinct = new Set(alone.flatMap((a) => [...a])).size
  t.log(`${decodeGemv} GEMVs against cuBLAS: logits rel err max ${Math.max(...errs).toExponential(2)}; ${distinct} distinct tokens`)
  t.true(Math.max(...errs) < 1e-2)
  t.true(distinct > 11)
}

test('CUDA-core decode GEMVs: a batch of 11 gives each request what it gets alone, graph equals eager, and the logits match cuBLAS', (t) =>
  fusedDecodeMatches(t, 'cuda-cores'))
test('tensor-core decode GEMVs: a batch of 11 gives each request what it gets alone, graph equals eager, and the logits match cuBLAS', (t) =>
  fusedDecodeMatches(t, 'tensor-cores'))

// The host budgets a layer chain's ring stages around the kernel's static shared memory before compiling it.
test("layer chain: the kernel's static shared memory is the host's CHAIN_STATIC_SHARED", async (t) => {
  const { CHAIN_STATIC_SHARED } = await import('../dist/model/decoder-model.js')
  const dev = Device.open(0)
  if (dev.computeCapability[0] < 9) return t.pass('compute capability below 9.0: no layer chain')
  for (const dtype of ['f16', 'bf16']) {
    // Never launched: any signature does.
    const chain = DecoderModel.module(dev, dtype).kernel('gemv_chain', ['ptr'])
    t.is(chain.staticSharedBytes, CHAIN_STATIC_SHARED, dtype)
  }
})

// The layer chain (o, gate/up, down and the next q/k/v in one kernel, two warps a block streaming the
// weights) against the same tensor-core GEMVs launched one by one: the same logits, bit for bit, for
// requests of different lengths, alone, 4 and 8 in one step (small: K = 256 gives 4 of 8 warps a chunk, the
// MLP's 768 12; 16 to 256 tiles on every multiprocessor, so blocks without tiles in an op; its variants
// with 4 and 2 query heads on one key/value head, head sizes 64 and 128, run attention on tensor cores
// between the chains; with a hidden size of 2560 a norm's rows past a lane's registers are staged in shared
// memory; with an MLP of 6144 a step of 4 or 8 rows streams down's input, gemv_chain_streamed, 12 steps a
// warp through its ring of 4), in f16 and bf16, and graph == eager. A chained step whose rows are all greedy
// takes its tokens from the LM head's argmax keys and publishes them (the step's ready flag set); one with a
// sampled row leaves the flag unset and its tokens to sample, the separate GEMVs' draws.
// (The batch-of-11 test above holds a chained request to its bits among 10 others, on the 16-row GEMVs.)
test('layer chain: the logits of separate tensor-core GEMVs, bit for bit, alone, 4 and 8 in a step; graph equals eager; all-greedy steps publish their tokens early', async (t) => {
  const { CHAIN_MAX_ROWS } = await import('../dist/model/decoder-model.js')
  if (Device.open(0).computeCapability[0] < 9) return t.pass('compute capability below 9.0: no layer chain')
  const models = [
    ['small', 'small', 'cuda-cores'],
    ['head size 64, 4 query heads a key/value head', { preset: 'small', kvHeads: 1 }, 'tensor-cores'],
    ['head size 128, 2 query heads a key/value head', { preset: 'small', heads: 2, kvHeads: 1 }, 'tensor-cores'],
    ['a hidden size of 2560: the norms stage their rows past the registers', { preset: 'small', hidden: 2560, heads: 20, kvHeads: 4 }, 'tensor-cores'],
    ["an MLP of 6144: down's input streams", { preset: 'small', ffn: 6144 }, 'cuda-cores'],
  ]
  for (const [name, model, attention] of models)
    for (const dtype of ['f16', 'bf16']) {
      const what = `${name}, ${dtype}`
      const chained = setup(t, { slots: 64, model, dtype })
      const separate = setup(t, { slots: 64, model, dtype, decodeChain: false })
      t.true(chained.model.decodeChain, `${what}: the chain by default`)
      t.is(chained.model.decodeAttention, attention, `${what}: attention`)
      t.false(separate.model.decodeChain)
      t.is(chained.model.decodeGemv, 'tensor-cores')
      const V = chained.model.config.vocab
      const bits = (m, rows) => new Uint32Array(m.graph.decodeStep.outputs.logits.view(0, rows * V).download().buffer)
      const same = (a, b, label) => {
        const differ = a.findIndex((x, k) => x !== b[k])
        t.is(differ, -1, `${what}, ${label}: logits bit for bit (first difference at ${differ})`)
      }
      const prompts = Array.from({ length: 8 }, (_, i) => prompt(4 + 7 * i, 700 + i, V))
      const published = (m) => m.graph.decodeStep.readyFlag.download()[0]
      for (const [i, p] of prompts.entries()) {
        const out = [chained, separate].map((m) => {
          m.graph.prefill(i, p)
          const next = m.graph.decode(1, Int32Array.of(i), Int32Array.of((17 * i + 5) % V), Int32Array.of(p.length))
          return { next: next[0], bits: bits(m, 1), published: published(m) }
        })
        t.is(out[0].next, out[1].next, `${what}, request ${i}: next token`)
        same(out[0].bits, out[1].bits, `request ${i}`)
        t.deepEqual([out[0].published, out[1].published], [1, 0], `${what}, request ${i}: the chain published its token, the separate GEMVs did not`)
      }
      // Requests 1, 3, 5 and 7 in one step, then all 8 (the chain's most), at their next positions; then
      // requests 1, 3, 5 and 7 again with request 3 sampled (the others greedy).
      const sampled = samplingRows(4)
      setSampling(sampled, 1, { temperature: 0.8, topP: 0.9, seed: 5 })
      const steps = [
        [Int32Array.of(1, 3, 5, 7), undefined, 1],
        [Int32Array.from({ length: CHAIN_MAX_ROWS }, (_, i) => i), undefined, 1],
        [Int32Array.of(1, 3, 5, 7), sampled, 2],
      ]
      for (const [slots, sampling, ahead] of steps) {
        const rows = slots.length
        const batch = [chained, separate].map((m) => {
          const next = m.graph.decode(
            rows,
            slots,
            Int32Array.from(slots, (i) => 11 * (i + ahead)),
            Int32Array.from(slots, (i) => prompts[i].length + ahead),
            sampling,
          )
          return { next: Array.from(next.subarray(0, rows)), bits: bits(m, rows), published: published(m) }
        })
        const label = `${rows} rows${sampling ? ', one sampled' : ''}`
        t.deepEqual(batch[0].next, batch[1].next, `${what}, ${label}: next tokens`)
        same(batch[0].bits, batch[1].bits, label)
        t.is(batch[0].published, sampling ? 0 : 1, `${what}, ${label}: published`)
      }
      const p = prompts[5]
      t.deepEqual(chained.eager.generate(9, p, 12), chained.graph.generate(9, p, 12), `${what}: eager == graph`)
      t.deepEqual(chained.graph.generate(9, p, 12), separate.graph.generate(9, p, 12), `${what}: chain == separate over 12 tokens`)
    }
})

// Each decode path by default: small is launch-bound at 16 slots (decodeGemvFits), bandwidth-bound at 64,
// and 1b is; a path a model's shapes do not take is a typed error, before allocating.
test('the default decode path follows the model, and a path that does not fit is a typed error', (t) => {
  const dev = Device.open(0)
  const stream = dev.createStream()
  const create = (options) => {
    const model = DecoderModel.create(dev, stream, { model: 'small', slots: 16, maxSeqLen: 64, ...options })
    const { decodeGemv } = model
    model.dispose()
    return decodeGemv
  }
  const tensorCores = dev.computeCapability[0] >= 8 ? 'tensor-cores' : 'off'
  t.is(create({}), 'cuda-cores')
  t.is(create({ slots: 64 }), tensorCores)
  t.is(create({ model: { preset: 'tiny', hidden: 2304, heads: 36, kvHeads: 4 } }), tensorCores, 'a hidden width past the CUDA-core GEMVs')
  t.throws(() => create({ model: '1b', decodeGemv: 'cuda-cores' }), { instanceOf: ArgumentError, message: /decodeGemv.*2048/ })
  t.throws(() => create({ model: { preset: 'tiny', ffn: 100 }, decodeGemv: 'tensor-cores' }), { instanceOf: ArgumentError, message: /decodeGemv.*64/ })
  t.throws(() => create({ decodeGemv: true }), { instanceOf: ArgumentError, message: /decodeGemv/ })
  t.throws(() => create({ decodeChain: 'yes' }), { instanceOf: ArgumentError, message: /decodeChain.*boolean/ })
})

test('bad token ids, slots and lengths are typed errors and leave the runner working', async (t) => {
  const { model, graph } = setup(t)
  await graph.warmup()
  const V = model.config.vocab
  const p = prompt(9, 7, V)
  const before = graph.generate(0, p, 4)
  t.throws(() => graph.prefill(0, Int32Array.of(1, V, 2)), { instanceOf: ArgumentError, message: /tokens\[1\].*0\.\.255/ })
  t.throws(() => graph.prefill(0, Int32Array.of(-1)), { instanceOf: ArgumentError })
  t.throws(() => graph.prefill(99, p), { instanceOf: ArgumentError, message: /slot/ })
  t.throws(() => graph.prefill(0, new Int32Array(65)), { instanceOf: ArgumentError, message: /at most 64 tokens/ })
  t.throws(() => graph.decode(1, Int32Array.of(0), Int32Array.of(1), Int32Array.of(128)), { instanceOf: ArgumentError, message: /position/ })
  t.throws(() => new DecoderRunner(model, graph.manager, { maxBatch: 99 }), { instanceOf: ArgumentError, message: /maxBatch/ })
  t.deepEqual(graph.generate(0, p, 4), before)
})

test('saved as a Hugging Face directory: transformers gives our greedy tokens, and loading it back gives our model', async (t) => {
  const has = spawnSync('python3', ['-c', 'import torch, transformers; assert torch.cuda.is_available()'], { encoding: 'utf8' })
  if (has.status !== 0) {
    t.log(`python3 with torch, transformers and CUDA not found: ${has.stderr.trim().split('\n').pop()}`)
    t.fail('the device machine has PyTorch and transformers; this test must run there')
    return
  }
  const { dev, stream, model, graph } = setup(t)
  await graph.warmup()
  const p = prompt(20, 9, model.config.vocab)
  const gen = graph.generate(0, p, 16)
  const dir = mkdtempSync(join(tmpdir(), 'cudagraph-peer-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  model.save(dir)
  // Loaded back through the checkpoint loader: the very same weights, bit for bit.
  const { model: back } = loadDecoder(dev, stream, dir, { maxSeqLen: 128, slots: 2 })
  t.teardown(() => back.dispose())
  const w0 = model.downloadWeights()
  for (const [name, bits] of back.downloadWeights()) t.deepEqual(bits, w0.get(name), name)
  const sequence = [...p, ...gen.subarray(0, -1)]
  writeFileSync(join(dir, 'req.json'), JSON.stringify({ batchSizes: [1], context: 8, reps: 20, sequence, promptLengths: [] }))
  const r = spawnSync('python3', [new URL('../peers/hf_decoder.py', import.meta.url).pathname, dir, join(dir, 'req.json')], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  const peer = JSON.parse(r.stdout.trim().split('\n').pop())
  const theirs = gen.map((_, i) => peer.greedy[p.length - 1 + i])
  t.log(
    `transformers ${peer.transformers} (${peer.dtype}): ours ${[...gen].join(',')}; theirs ${[...theirs].join(',')}; min top-2 margin ${Math.min(...peer.margins.slice(p.length - 1)).toFixed(3)}`,
  )
  t.deepEqual([...theirs], [...gen])
})

test("a decode step's attention rotates and stores the new keys itself: the same bits as rope_store then attention", (t) => {
  const dev = Device.open(0)
  const stream = dev.createStream()
  stream.prepareBlas()
  // tiny: groups of 2 query heads, one head a block at 3 rows, so a key/value head has a block that
  // stores the new key and value and one that must not read them back from the cache.
  // Prefill attention row by row: the decode kernel's own math, so only rotary and the stores differ (and
  // with the norms folded, past the first layer, the 1/rms scale: rope_store's `norm`, attention's ATT_NORM).
  const model = DecoderModel.create(dev, stream, { model: 'tiny', seed: 5, slots: 4, maxSeqLen: 64, decodeGemv: 'off', prefillAttention: 'rows' })
  // tiny has grouped-query attention: tensor cores from 8.0.
  t.is(model.decodeAttention, dev.computeCapability[0] >= 8 ? 'tensor-cores' : 'cuda-cores')
  const made = []
  const buf = (b) => {
    made.push(b)
    return b
  }
  t.teardown(() => {
    for (const b of made) b.dispose()
    model.dispose()
  })
  const V = model.config.vocab
  const ctx = { stream, scratch: (dtype, n) => buf(dev.alloc(dtype, n)) }
  const sampling = samplingRows(3)
  const rows = (tokens, positions) => ({
    tokens: buf(dev.upload(Int32Array.from(tokens), 'i32')),
    positions: buf(dev.upload(Int32Array.from(positions), 'i32')),
    slots: buf(dev.upload(Int32Array.of(0, 1, 2), 'i32')),
    last: buf(dev.upload(Int32Array.of(0, 1, 2), 'i32')),
    sampling: buf(dev.upload(sampling.params, 'f32')),
    seeds: buf(dev.upload(sampling.seeds, 'u32')),
    next: buf(dev.alloc('i32', 3)),
    logits: buf(dev.alloc('f32', 3 * V)),
  })
  const prompts = [prompt(9, 71, V), prompt(20, 72, V), prompt(33, 73, V)]
  // Prompts into slots 0..2, then two more tokens a request: first through rope_store (a prefill-kind
  // step of one row a request), then again through the decode step's fused attention.
  const run = (kind) => {
    for (const [i, p] of prompts.entries()) {
      const one = {
        ...rows(
          [...p],
          p.map((_, j) => j),
        ),
        slots: buf(dev.upload(new Int32Array(p.length).fill(i), 'i32')),
      }
      one.last = buf(dev.upload(Int32Array.of(p.length - 1), 'i32'))
      model.forward(ctx, one, p.length, 1)
    }
    const at = prompts.map((p) => p.length)
    const first = rows([5, 17, 201], at)
    model.forward(ctx, first, 3, 3, kind)
    // The next step reads the cache the first one wrote.
    const second = rows(
      [7, 99, 3],
      at.map((p) => p + 1),
    )
    model.forward(ctx, second, 3, 3, 'decode')
    stream.synchronize()
    return [first.logits.download(), second.logits.download()]
  }
  const [a1, a2] = run('prefill')
  const [b1, b2] = run('decode')
  t.true(Math.sqrt(a1.reduce((s, v) => s + v * v, 0) / a1.length) > 1, 'non-trivial logits')
  t.deepEqual(b1, a1, "the fused step's logits")
  t.deepEqual(b2, a2, 'the logits of the step after it, which reads the keys and values it stored')
})

// head_dim 128 (the 128 kernel) on 2 query heads of one key/value head.
const WIDE_HEAD = { preset: 'tiny', hidden: 256, heads: 2, kvHeads: 1 }

// A 150-token prompt: three blocks of 64 rows, and key tiles of 64 (head_dim 64) or 32 (128).
test('flash prefill attention: a prompt of 150 tokens matches float64 and the row kernel, and decoding after it graph == eager', async (t) => {
  for (const spec of ['small', WIDE_HEAD]) {
    const flash = setup(t, { model: spec, maxSeqLen: 256, maxPrefillTokens: 160, prefillAttention: 'flash' })
    const rows = setup(t, { model: spec, maxSeqLen: 256, maxPrefillTokens: 160, prefillAttention: 'rows' })
    t.is(flash.model.prefillAttention, 'flash')
    t.is(rows.model.prefillAttention, 'rows')
    const V = flash.model.config.vocab
    const logits = (r) => r.graph.prefillStep.outputs.logits.view(0, V).download()
    const p = prompt(150, 500, V)
    flash.graph.prefillPrompt(1, p)
    const a = logits(flash)
    rows.graph.prefillPrompt(1, p)
    const vsRows = relError(a, logits(rows))
    const ref = new DecoderReference(flash.model.config, flash.model.downloadWeights())
    const r = ref.forward(
      p,
      Int32Array.from(p, (_, i) => i),
      new Int32Array(p.length).fill(1),
      [p.length - 1],
    )
    const vsRef = relError(a, r.logits)
    t.deepEqual(flash.graph.generate(3, p, 6), flash.eager.generate(4, p, 6), 'graph == eager')
    t.log(`${JSON.stringify(spec)}: last prompt logits rel err vs float64 ${vsRef.toExponential(2)}, vs the row kernel ${vsRows.toExponential(2)}`)
    t.true(vsRef < 1e-2, `vs float64 ${vsRef}`)
    t.true(vsRows < 1e-2, `vs rows ${vsRows}`)
  }
  const dev = Device.open(0)
  const stream = dev.createStream()
  t.throws(() => DecoderModel.create(dev, stream, { model: 'tiny', prefillAttention: 'fast' }), { instanceOf: ArgumentError, message: /prefillAttention/ })
  const byDefault = DecoderModel.create(dev, stream, { model: 'tiny' })
  t.is(byDefault.prefillAttention, dev.computeCapability[0] >= 8 ? 'flash' : 'rows', 'the default: flash from compute capability 8.0')
  byDefault.dispose()
})

/** A value in [-1, 1) from four integers: every test input differs, none is zero. */
const hash = (a, b, c, d) => {
  let x = Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca6b) ^ Math.imul(c + 0x165667b1, 0xc2b2ae35) ^ Math.imul(d + 0x27d4eb2f, 0x27d4eb2d)
  x ^= x >>> 15
  x = Math.imul(x, 0x2c1b3c6d)
  x ^= x >>> 12
  x = Math.imul(x, 0x297a2d39)
  x ^= x >>> 15
  return ((x >>> 8) / 16777216) * 2 - 1
}

// The flash kernels alone, against float64, with every cache position no step wrote NaN: a row's bits are
// the same whole, in chunks, and in a step beside other requests and padding rows (the batch invariance
// the kernels promise; the model's cuBLAS GEMMs do not promise it, so it is tested here).
test('flash prefill attention kernels: float64, NaN in unwritten cache, the same bits whole, chunked and batched', async (t) => {
  const { flashPrefill } = await import('../dist/model/decoder-model.js')
  const { dev, stream, up } = kernelFixture(t)
  const [major, minor] = dev.computeCapability
  for (const dtype of ['bf16', 'f16']) {
    const { toE, nan, value, module } = dtypeKit(dev, dtype)
    const hopper = DecoderModel.compiledForHopper(module)
    // NVRTC here knows sm_90a (CUDA 12.0+), so a compute capability 9.0 device gets the Hopper kernel.
    t.is(hopper, major === 9 && minor === 0, `${dtype}: compiled for sm_90a on compute capability 9.0 only`)
    for (const [nh, nkv, hd, len, chunk] of [
      [4, 2, 64, 150, 37],
      [8, 2, 64, 100, 64],
      [4, 2, 48, 70, 64],
      [4, 4, 8, 66, 30],
      [2, 1, 128, 130, 100],
      [3, 1, 80, 65, 64],
    ]) {
      // The m16n8k16 kernel, and where the module has it, the warpgroup-MMA one the model picks for head
      // sizes 64 and 128 on Hopper.
      const kernels = [flashPrefill(module, hd, false)]
      const picked = flashPrefill(module, hd)
      t.is(picked.name.includes('_wg_'), hopper && (hd === 64 || hd === 128), `${dtype} hd ${hd}: the model's kernel is ${picked.name}`)
      if (picked.name !== kernels[0].name) kernels.push(picked)
      for (const flash of kernels) {
        const slots = 4
        const maxSeq = 256
        const K = (slot, p, kvh, d) => toE(hash(1, slot, p * 64 + kvh, d))
        const Vv = (slot, p, kvh, d) => toE(hash(2, slot, p * 64 + kvh, d))
        const Q = (slot, p, h, d) => toE(3 * hash(3, slot, p * 64 + h, d))
        const at = (slot, p, kvh) => ((slot * maxSeq + p) * nkv + kvh) * hd
        // A fresh cache: NaN everywhere; a step writes its rows' keys and values (rope_store's job).
        const cache = () => {
          const kc = new Uint16Array((slots + 1) * maxSeq * nkv * hd).fill(nan)
          return { kc, vc: kc.slice() }
        }
        const write = (c, slot, p) => {
          for (let k = 0; k < nkv; k++)
            for (let d = 0; d < hd; d++) {
              c.kc[at(slot, p, k) + d] = K(slot, p, k, d)
              c.vc[at(slot, p, k) + d] = Vv(slot, p, k, d)
            }
        }
        const step = (c, rows) => {
          const T = rows.length
          const width = (nh + 2 * nkv) * hd
          const qkv = new Uint16Array(T * width).fill(nan)
          for (const [t, [slot, p]] of rows.entries()) {
            write(c, slot, p)
            for (let h = 0; h < nh; h++) for (let d = 0; d < hd; d++) qkv[t * width + h * hd + d] = Q(slot, p, h, d)
          }
          const out = up(new Uint16Array(T * nh * hd).fill(0xdead), dtype)
          const args = [
            out,
            up(qkv, dtype),
            up(c.kc, dtype),
            up(c.vc, dtype),
            up(
              Int32Array.from(rows, (r) => r[1]),
              'i32',
            ),
            up(
              Int32Array.from(rows, (r) => r[0]),
              'i32',
            ),
          ]
          stream.launch(flash.kernel, { grid: [nh, Math.ceil(T / flash.rows)], block: flash.threads, sharedMemBytes: flash.sharedMemBytes }, [
            ...args,
            T,
            nh,
            nkv,
            hd,
            maxSeq,
            1 / Math.sqrt(hd),
          ])
          stream.synchronize()
          return out.download()
        }
        const rowBits = (out, t) => [...out.subarray(t * nh * hd, (t + 1) * nh * hd)]
        const rowsOf = (slot, from, to) => Array.from({ length: to - from }, (_, i) => [slot, from + i])
        let worst = 0
        // float64 from the cache the step read (the kernel's own inputs).
        const vsRef = (out, c, rows) => {
          for (const [t, [slot, p]] of rows.entries())
            for (let h = 0; h < nh; h++) {
              const kvh = Math.floor(h / (nh / nkv))
              const s = []
              for (let j = 0; j <= p; j++) {
                let a = 0
                for (let d = 0; d < hd; d++) a += value[Q(slot, p, h, d)] * value[c.kc[at(slot, j, kvh) + d]]
                s.push(a / Math.sqrt(hd))
              }
              const mx = Math.max(...s)
              const e = s.map((v) => Math.exp(v - mx))
              const sum = e.reduce((x, y) => x + y, 0)
              for (let d = 0; d < hd; d++) {
                let o = 0
                for (let j = 0; j <= p; j++) o += (e[j] / sum) * value[c.vc[at(slot, j, kvh) + d]]
                const got = value[out[(t * nh + h) * hd + d]]
                worst = Math.max(worst, Number.isFinite(got) ? Math.abs(got - o) : Infinity)
              }
            }
        }
        const name = `${flash.name} ${dtype} nh ${nh} nkv ${nkv} hd ${hd}`
        const rows = rowsOf(1, 0, len)
        const w = cache()
        const whole = step(w, rows)
        vsRef(whole, w, rows)
        const c = cache()
        let same = 0
        for (let s = 0; s < len; s += chunk) {
          const part = rowsOf(1, s, Math.min(len, s + chunk))
          const o = step(c, part)
          for (let i = 0; i < part.length; i++) same += String(rowBits(o, i)) === String(rowBits(whole, s + i))
        }
        t.is(same, len, `${name}: chunks of ${chunk} == whole`)
        // Another request continued at 7, this prompt's first 45 rows, a one-token request, 5 padding rows
        // (the spare slot, position 0).
        const m = cache()
        for (let p = 0; p < 7; p++) write(m, 0, p)
        const b = rowsOf(1, 0, Math.min(len, 45))
        const mix = [...rowsOf(0, 7, 26), ...b, [2, 0], ...Array.from({ length: 5 }, () => [slots, 0])]
        const mo = step(m, mix)
        vsRef(mo, m, mix.slice(0, -5))
        same = 0
        for (let i = 0; i < b.length; i++) same += String(rowBits(mo, 19 + i)) === String(rowBits(whole, i))
        t.is(same, b.length, `${name}: beside other requests == alone`)
        const tol = dtype === 'bf16' ? 2e-2 : 4e-3
        t.log(`${name}: max abs err vs float64 ${worst.toExponential(2)} (tolerance ${tol})`)
        t.true(worst < tol, `${name}: ${worst}`)
      }
    }
  }
})

// The decode attention kernels alone, on the CUDA cores and on tensor cores (flags 0: the cache holds every
// position, as after rope_store), against float64, with every cache position no step wrote NaN and
// contexts far past what shared memory held a block before (the kernels keep no scores array): a row's
// bits are the same with 1, 2 or 4 query heads a block, alone (its cache pulled into L2 first; two buffers a
// warp on tensor cores) or in a batch.
const ATTENTION_SIGNATURE = ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'i32', 'f32', 'ptr', 'i32', 'f32']
test('decode attention kernels: float64, NaN in unwritten cache, long contexts, the same bits whatever the heads a block and the batch', async (t) => {
  const { attentionMmaSharedBytes } = await import('../dist/model/decoder-model.js')
  const { dev, stream, up } = kernelFixture(t)
  const { ATT_PREFETCH, ATT_DOUBLE, ATT_WARPS } = KERNEL_CONSTANTS
  for (const dtype of ['bf16', 'f16']) {
    const { toE, nan, value, module } = dtypeKit(dev, dtype)
    for (const [nh, nkv, hd, lens] of [
      [8, 2, 64, [1, 2, 31, 33, 128, 129, 300, 1500, 4000]],
      [4, 2, 48, [5, 40, 150]],
      [4, 4, 8, [3, 70, 140]],
      [4, 2, 128, [1, 35, 130, 290, 3000]],
      [6, 2, 80, [7, 97, 131]],
    ]) {
      const D = hd <= 64 ? 64 : 128
      const maxSeq = 4096
      const T = lens.length
      const width = (nh + 2 * nkv) * hd
      const at = (slot, p, kvh) => ((slot * maxSeq + p) * nkv + kvh) * hd
      // Row r is slot r + 1 at position lens[r] - 1; the cache holds its positions, NaN past them.
      const kc = new Uint16Array((T + 2) * maxSeq * nkv * hd).fill(nan)
      const vc = kc.slice()
      const qkv = new Uint16Array(T * width).fill(nan)
      for (const [r, len] of lens.entries()) {
        for (let p = 0; p < len; p++)
          for (let k = 0; k < nkv; k++)
            for (let d = 0; d < hd; d++) {
              kc[at(r + 1, p, k) + d] = toE(hash(1, r, p * 64 + k, d))
              vc[at(r + 1, p, k) + d] = toE(hash(2, r, p * 64 + k, d))
            }
        for (let i = 0; i < nh * hd; i++) qkv[r * width + i] = toE(3 * hash(3, r, len, i))
      }
      const [dk, dv] = [up(kc, dtype), up(vc, dtype)]
      const invFreq = up(new Float32Array(hd / 2).fill(1), 'f32')
      const run = (kind, rows, gh, flags = 0) => {
        const out = up(new Uint16Array(rows.length * nh * hd).fill(0xdead), dtype)
        const q = up(Uint16Array.from(rows.flatMap((r) => [...qkv.subarray(r * width, (r + 1) * width)])), dtype)
        const pos = up(
          Int32Array.from(rows, (r) => lens[r] - 1),
          'i32',
        )
        const slots = up(
          Int32Array.from(rows, (r) => r + 1),
          'i32',
        )
        const kernel = module.kernel(`attention_${kind}${D}x${gh}`, ATTENTION_SIGNATURE)
        const sharedMemBytes = kind === 'mma_' ? attentionMmaSharedBytes(D) * (flags & ATT_DOUBLE ? 2 : 1) : 0
        stream.launch(kernel, { grid: [rows.length, nkv, nh / nkv / gh], block: 32 * ATT_WARPS, sharedMemBytes }, [
          out,
          q,
          dk,
          dv,
          pos,
          slots,
          invFreq,
          flags,
          nh,
          nkv,
          hd,
          maxSeq,
          1 / Math.sqrt(hd),
          // The residual rows of ATT_NORM, which these launches do not set.
          q,
          8,
          1e-5,
        ])
        stream.synchronize()
        return out.download()
      }
      const all = lens.map((_, r) => r)
      const expected = new Float64Array(T * nh * hd)
      for (const [r, len] of lens.entries())
        for (let h = 0; h < nh; h++) {
          const kvh = Math.floor(h / (nh / nkv))
          const s = new Float64Array(len)
          for (let j = 0; j < len; j++) {
            let a = 0
            for (let d = 0; d < hd; d++) a += value[qkv[r * width + h * hd + d]] * value[kc[at(r + 1, j, kvh) + d]]
            s[j] = a / Math.sqrt(hd)
          }
          const mx = s.reduce((a, b) => Math.max(a, b), -Infinity)
          let sum = 0
          for (let j = 0; j < len; j++) {
            s[j] = Math.exp(s[j] - mx)
            sum += s[j]
          }
          for (let d = 0; d < hd; d++) {
            let o = 0
            for (let j = 0; j < len; j++) o += (s[j] / sum) * value[vc[at(r + 1, j, kvh) + d]]
            expected[(r * nh + h) * hd + d] = o
          }
        }
      for (const kind of ['', 'mma_']) {
        const base = run(kind, all, 1)
        let worst = 0
        for (const [i, o] of expected.entries()) {
          const got = value[base[i]]
          worst = Math.max(worst, Number.isFinite(got) ? Math.abs(got - o) : Infinity)
        }
        const name = `attention_${kind}: ${dtype} nh ${nh} nkv ${nkv} hd ${hd}`
        for (const gh of [2, 4].filter((g) => (nh / nkv) % g === 0)) t.deepEqual(run(kind, all, gh), base, `${name}: ${gh} heads a block == 1`)
        const row = (o, i) => [...o.subarray(i * nh * hd, (i + 1) * nh * hd)]
        for (let r = 1; r < lens.length; r += 2)
          t.deepEqual(row(run(kind, [r], 1, ATT_PREFETCH | ATT_DOUBLE), 0), row(base, r), `${name}: row ${r} alone (L2 prefetch, two buffers) == in the batch`)
        const tol = dtype === 'bf16' ? 2e-2 : 4e-3
        t.log(`${name}, contexts ${lens.join(', ')}: max abs err vs float64 ${worst.toExponential(2)} (tolerance ${tol})`)
        t.true(worst < tol, `${name}: ${worst}`)
      }
    }
  }
})

// add_rmsnorm alone, against float64 with its roundings: rows of one 16-byte piece a thread (and idle
// threads), a row of more pieces than the block's 1024 threads (the rest stream through resid), and the
// first layer's form, which takes each row from the embedding table and stores it into the residual stream.
test('add_rmsnorm kernel: float64, a row wider than its block, the embedding rows', (t) => {
  const { dev, stream, up } = kernelFixture(t)
  const eps = 1e-5
  for (const dtype of ['bf16', 'f16']) {
    const { toE, fromE, module } = dtypeKit(dev, dtype)
    const roundE = (v) => fromE(toE(v))
    const kernel = module.kernel('add_rmsnorm', ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'f32', 'ptr', 'i32', 'i32'])
    for (const [T, H, embed] of [
      [5, 72, 0],
      [3, 8200, 0],
      [4, 2048, 1],
    ]) {
      const V = 7
      const resid0 = Float32Array.from({ length: T * H }, (_, i) => roundE(3 * hash(11, Math.floor(i / H), i % H, 0)))
      const delta = Uint16Array.from({ length: (embed ? V : T) * H }, (_, i) => toE(hash(12, Math.floor(i / H), i % H, 0)))
      const w = Uint16Array.from({ length: H }, (_, k) => toE(1 + 0.5 * hash(13, k, 0, 0)))
      const tokens = Int32Array.from({ length: T }, (_, m) => (3 * m + 2) % V)
      // The residual stream of a cuBLAS step is stored in the dtype.
      const resid = up(Uint16Array.from(resid0, toE), dtype)
      const out = up(new Uint16Array(T * H).fill(0xdead), dtype)
      const block = Math.min(1024, Math.ceil(H / 8 / 32) * 32)
      stream.launch(kernel, { grid: T, block }, [resid, up(delta, dtype), up(w, dtype), out, H, eps, up(tokens, 'i32'), V, embed])
      stream.synchronize()
      const [gotResid, gotOut] = [resid.download(), out.download()]
      let worst = 0
      for (let m = 0; m < T; m++) {
        const src = embed ? tokens[m] : m
        const r = Array.from({ length: H }, (_, k) => {
          const d = fromE(delta[src * H + k])
          return embed ? d : roundE(Math.fround(resid0[m * H + k] + d))
        })
        t.deepEqual(Array.from(gotResid.subarray(m * H, (m + 1) * H), fromE), r, `${dtype} T ${T} H ${H} embed ${embed}: row ${m} of the residual stream`)
        const f = 1 / Math.sqrt(r.reduce((a, v) => a + v * v, 0) / H + eps)
        for (let k = 0; k < H; k++) {
          const ref = roundE(roundE(r[k] * f) * fromE(w[k]))
          worst = Math.max(worst, Math.abs(fromE(gotOut[m * H + k]) - ref) / Math.max(1, Math.abs(ref)))
        }
      }
      const tol = dtype === 'bf16' ? 2e-2 : 3e-3
      t.true(worst < tol, `${dtype} T ${T} H ${H} embed ${embed}: max relative error vs float64 ${worst} (tolerance ${tol})`)
    }
  }
})

// The norms folded into the projections after them (DecoderModel.build): fold_norm's products, exact in
// f32, rounded once; rope_store and silu_mul with `norm` scale each row of a projection by its residual
// row's 1/rms before their own work, against float64 (a row of fewer 16-byte pieces than a warp has lanes,
// and 1b's 2048; rope_store's 16-byte and pair paths, silu_mul's 16-byte and element paths).
test('folded norms: fold_norm, and rope_store and silu_mul scaling by the residual rows, against float64', (t) => {
  const { dev, stream, up } = kernelFixture(t)
  const eps = 1e-5
  for (const dtype of ['bf16', 'f16']) {
    const { toE, value, module } = dtypeKit(dev, dtype)
    const fold = module.kernel('fold_norm', ['ptr', 'ptr', 'i64', 'i32'])
    const [N, K] = [37, 72]
    const w = Uint16Array.from({ length: N * K }, (_, i) => toE(hash(21, Math.floor(i / K), i % K, 0)))
    const g = Uint16Array.from({ length: K }, (_, k) => toE(1 + 0.5 * hash(22, k, 0, 0)))
    const dw = up(w, dtype)
    stream.launch(fold, { grid: 3, block: 256 }, [dw, up(g, dtype), N * K, K])
    stream.synchronize()
    t.deepEqual(
      [...dw.download()],
      Array.from(w, (x, i) => toE(value[x] * value[g[i % K]])),
      `${dtype}: fold_norm`,
    )

    const rope = module.kernel('rope_store', ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'ptr', 'i32', 'f32', 'i32'])
    const silu = module.kernel('silu_mul', ['ptr', 'ptr', 'i32', 'i32', 'ptr', 'i32', 'f32', 'i32'])
    for (const [H, hd, F] of [
      [72, 12, 100],
      [2048, 64, 8192],
    ]) {
      const T = 3
      const [nh, nkv] = [4, 2]
      const width = (nh + 2 * nkv) * hd
      const half = hd / 2
      const resid = Uint16Array.from({ length: T * H }, (_, i) => toE(5 * hash(23, Math.floor(i / H), i % H, H)))
      const inv = Array.from({ length: T }, (_, m) => {
        let ss = 0
        for (let k = 0; k < H; k++) ss += value[resid[m * H + k]] ** 2
        return 1 / Math.sqrt(ss / H + eps)
      })
      t.true(
        inv.every((f) => f < 0.9),
        'the residual rows are far from unit scale',
      )
      const dResid = up(resid, dtype)
      const name = `${dtype} H ${H}`
      const tol = dtype === 'bf16' ? 3e-2 : 4e-3
      let worst = 0
      // Error relative to the size of what was summed (at least 1).
      const err = (got, ref, size = Math.abs(ref)) => {
        worst = Math.max(worst, Math.abs(value[got] - ref) / Math.max(1, size))
      }
      // rope_store: rows at positions 3, 40 and 7 into slots 0, 1 and 2; frequencies 1, 1/2, 1/4, ...
      const maxSeq = 64
      const qkv = Uint16Array.from({ length: T * width }, (_, i) => toE(20 * hash(24, Math.floor(i / width), i % width, hd)))
      const pos = [3, 40, 7]
      const invFreq = Float32Array.from({ length: half }, (_, i) => 2 ** -i)
      const dq = up(qkv, dtype)
      const cacheLen = (T + 1) * maxSeq * nkv * hd
      const [kc, vc] = [up(new Uint16Array(cacheLen), dtype), up(new Uint16Array(cacheLen), dtype)]
      stream.launch(rope, { grid: T, block: 256 }, [
        dq,
        kc,
        vc,
        up(Int32Array.from(pos), 'i32'),
        up(Int32Array.of(0, 1, 2), 'i32'),
        up(invFreq, 'f32'),
        nh,
        nkv,
        hd,
        maxSeq,
        dResid,
        H,
        eps,
        1,
      ])
      stream.synchronize()
      const [gq, gk, gv] = [dq.download(), kc.download(), vc.download()]
      for (let m = 0; m < T; m++) {
        const x = (i) => value[qkv[m * width + i]] * inv[m]
        const at = (m * maxSeq + pos[m]) * nkv * hd
        // Head `head`'s element i: q in the row, k in the cache.
        const y = (head, i) => (head < nh ? gq[m * width + head * hd + i] : gk[at + (head - nh) * hd + i])
        for (let head = 0; head < nh + nkv; head++)
          for (let i = 0; i < half; i++) {
            const [a, b] = [x(head * hd + i), x(head * hd + i + half)]
            const [c, sn] = [Math.cos(pos[m] * invFreq[i]), Math.sin(pos[m] * invFreq[i])]
            const size = Math.abs(a) + Math.abs(b)
            err(y(head, i), a * c - b * sn, size)
            err(y(head, i + half), b * c + a * sn, size)
          }
        for (let i = 0; i < nkv * hd; i++) err(gv[at + i], x((nh + nkv) * hd + i))
      }
      t.log(`${name}: rope_store with norm, max relative error vs float64 ${worst.toExponential(2)} (tolerance ${tol})`)
      t.true(worst < tol, `${name}: rope_store with norm: ${worst}`)
      // silu_mul: gate and up scaled by the row's 1/rms, then silu(gate) * up.
      const gu = Uint16Array.from({ length: T * 2 * F }, (_, i) => toE(8 * hash(25, Math.floor(i / (2 * F)), i % (2 * F), F)))
      const out = up(new Uint16Array(T * F).fill(0xdead), dtype)
      stream.launch(silu, { grid: [Math.ceil(F / 2048), T], block: 256 }, [out, up(gu, dtype), F, T, dResid, H, eps, 1])
      stream.synchronize()
      const got = out.download()
      worst = 0
      for (let m = 0; m < T; m++)
        for (let i = 0; i < F; i++) {
          const gate = value[gu[m * 2 * F + i]] * inv[m]
          err(got[m * F + i], (gate / (1 + Math.exp(-gate))) * value[gu[m * 2 * F + F + i]] * inv[m])
        }
      t.log(`${name}: silu_mul with norm, max relative error vs float64 ${worst.toExponential(2)} (tolerance ${tol})`)
      t.true(worst < tol, `${name}: silu_mul with norm: ${worst}`)
    }
  }
})

// The tensor-core decode GEMVs alone (kernels/decoder.cu's gemv_mma_*), against float64: each epilogue and
// prologue the model uses, widths whose 64-wide chunks the warps share unevenly, columns past the last whole
// tile of 16, blocks that take several tiles. A row's bits are the same alone, in a batch of 5 (8-row
// kernel), 9 or 16 (16-row kernel), and whatever the grid.
const GEMV_SIGNATURE = ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'f32', 'i32']
test('tensor-core decode GEMV kernels: float64, every flag, a row the same bits alone, in a batch and on any grid', async (t) => {
  const { tensorGemvSharedBytes } = await import('../dist/model/decoder-model.js')
  const { dev, stream, up } = kernelFixture(t)
  const { GEMV_NORM: NORM, GEMV_BIAS: BIAS, GEMV_RESID: RESID, GEMV_F32: F32, GEMV_EMBED: EMBED, GM_WARPS } = KERNEL_CONSTANTS
  const eps = 1e-5
  const V = 37
  for (const dtype of ['bf16', 'f16']) {
    const { toE, fromE, module } = dtypeKit(dev, dtype)
    const roundE = (v) => fromE(toE(v))
    const kernel = (silu, rows) => module.kernel(`gemv_mma${silu ? '_silu' : ''}_${rows <= 8 ? 8 : 16}`, GEMV_SIGNATURE)
    // 3 chunks of 64 (five warps idle); 33 chunks (warps take 5 or 4), 1000 columns (a partial tile).
    for (const [N, K] of [
      [40, 192],
      [1000, 2112],
    ]) {
      const table = (rows, cols, f) => Uint16Array.from({ length: rows * cols }, (_, i) => toE(f(Math.floor(i / cols), i % cols)))
      const x = table(16, K, (m, k) => hash(1, m, k, 0))
      const W = table(2 * N, K, (n, k) => 0.05 * hash(2, n, k, 0))
      const normW = table(1, K, (_, k) => 1 + 0.5 * hash(3, k, 0, 0))
      const bias = table(1, N, (_, n) => hash(4, n, 0, 0))
      const emb = table(V, K, (v, k) => hash(7, v, k, 0))
      const residK = Float32Array.from({ length: 16 * K }, (_, i) => 2 * hash(5, Math.floor(i / K), i % K, 0))
      const residN = Float32Array.from({ length: 16 * N }, (_, i) => hash(6, Math.floor(i / N), i % N, 0))
      const tokens = Int32Array.from({ length: 16 }, (_, m) => (7 * m + 3) % V)
      const [dW, dNorm, dBias, dEmb] = [up(W, dtype), up(normW, dtype), up(bias, dtype), up(emb, dtype)]
      const Wf = Float64Array.from(W, fromE)
      const tiles = Math.ceil(N / 16)
      for (const [name, flags, silu] of [
        ['plain', 0, false],
        ['bias', BIAS, false],
        ['resid', RESID, false],
        ['norm, f32', NORM | F32, false],
        ['norm, embed', NORM | EMBED, false],
        ['norm, silu', NORM, true],
      ]) {
        const rowsOf = (a, width, rows) => a.constructor.from(rows.flatMap((m) => [...a.subarray(m * width, (m + 1) * width)]))
        // The kernel on token rows `rows` of the inputs, `grid` blocks: [out or resid rows, resid rows].
        const run = (rows, grid) => {
          const M = rows.length
          const out = flags & F32 ? up(new Float32Array(M * N).fill(Number.NaN), 'f32') : up(new Uint16Array(M * N).fill(0xdead), dtype)
          const resid = up(flags & RESID ? rowsOf(residN, N, rows) : rowsOf(residK, K, rows), 'f32')
          const xIn = flags & EMBED ? dEmb : up(rowsOf(x, K, rows), dtype)
          const shared = tensorGemvSharedBytes(M <= 8 ? 8 : 16, K, (flags & NORM) !== 0, silu).dynamic
          stream.launch(kernel(silu, M), { grid: [grid], block: 32 * GM_WARPS, sharedMemBytes: shared }, [
            out,
            resid,
            xIn,
            dW,
            dNorm,
            dBias,
            up(rowsOf(tokens, 1, rows), 'i32'),
            V,
            N,
            K,
            M,
            eps,
            flags,
          ])
          stream.synchronize()
          return [flags & RESID ? resid.download() : out.download(), resid.download()]
        }
        const label = `${dtype} N ${N} K ${K} ${name}`
        const all = Array.from({ length: 16 }, (_, m) => m)
        const [batch, residAfter] = run(all, 3)
        // float64 from the same inputs, with the kernel's roundings.
        let worst = 0
        for (const m of all) {
          let xr = Array.from(x.subarray(m * K, (m + 1) * K), fromE)
          if (flags & NORM) {
            const src = flags & EMBED ? Array.from(emb.subarray(tokens[m] * K, (tokens[m] + 1) * K), fromE) : Array.from(residK.subarray(m * K, (m + 1) * K))
            const f = 1 / Math.sqrt(src.reduce((a, v) => a + v * v, 0) / K + eps)
            xr = src.map((v, k) => roundE(roundE(v * f) * fromE(normW[k])))
          }
          for (let n = 0; n < N; n++) {
            const dot = (row) => {
              let a = 0
              for (let k = 0; k < K; k++) a += xr[k] * Wf[row * K + k]
              return a
            }
            const d = dot(n)
            let ref = roundE(d)
            if (silu) {
              const g = roundE(d)
              ref = roundE(roundE(g / (1 + Math.exp(-g))) * roundE(dot(N + n)))
            } else if (flags & BIAS) ref = roundE(d + fromE(bias[n]))
            else if (flags & F32) ref = d
            else if (flags & RESID) ref = roundE(residN[m * N + n] + roundE(d))
            const raw = batch[m * N + n]
            const got = flags & (F32 | RESID) ? raw : fromE(raw)
            worst = Math.max(worst, Number.isFinite(got) ? Math.abs(got - ref) / Math.max(1, Math.abs(ref)) : Infinity)
          }
        }
        const tol = dtype === 'bf16' ? 2e-2 : 3e-3
        t.true(worst < tol, `${label}: max relative error vs float64 ${worst} (tolerance ${tol})`)
        if (flags & EMBED)
          t.deepEqual(residAfter, Float32Array.from(rowsOf(emb, K, [...tokens]), fromE), `${label}: the embedding rows stored into the residual stream`)
        const row = (o, i) => [...o.subarray(i * N, (i + 1) * N)]
        for (const m of [0, 5, 9, 15]) t.deepEqual(row(run([m], Math.min(tiles, 264))[0], 0), row(batch, m), `${label}: row ${m} alone == in the batch of 16`)
        const [nine] = run(all.slice(0, 9), 1)
        const [five] = run(all.slice(0, 5), tiles)
        t.deepEqual(nine, batch.subarray(0, 9 * N), `${label}: a batch of 9 == the batch of 16's first rows`)
        t.deepEqual(five, batch.subarray(0, 5 * N), `${label}: a batch of 5 == the batch of 16's first rows`)
        t.log(`${label}: max relative error vs float64 ${worst.toExponential(2)}`)
      }
    }
  }
})
