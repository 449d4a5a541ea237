// CPU tests of the decoder workload and the CLI: configs, the float64 reference's own consistency,
// safetensors, f16 rounding, flag parsing and the no-GPU message.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { ArgumentError, fromHalf, GraphConfig, roundHalf, toHalf } from '../dist/index.js'
import { DecoderReference, localDims, modelConfig, parameterCount, weightLayout, writeSafetensors } from '../dist/model/index.js'
import { rng } from './helpers.mjs'

test('presets: 1b has about a billion parameters; bad configs name the field', (t) => {
  const p = parameterCount(modelConfig('1b'))
  t.true(p > 0.9e9 && p < 1.3e9, `${p}`)
  t.true(parameterCount(modelConfig('small')) < 50e6)
  t.deepEqual(modelConfig({ layers: 3 }), { ...modelConfig('small'), layers: 3 })
  t.is(modelConfig({ preset: 'tiny', headDim: 32 }).headDim, 32, 'an explicit head size')
  // Every weight of the layout adds up to the parameter count; a tied model has no lm_head.
  const c = modelConfig('tiny')
  t.is(
    weightLayout(c).reduce((n, w) => n + w.shape.reduce((a, b) => a * b), 0),
    parameterCount(c),
  )
  const tied = { ...c, tieEmbeddings: true, qkvBias: true }
  t.false(weightLayout(tied).some((w) => w.name === 'lm_head'))
  t.is(
    weightLayout(tied).reduce((n, w) => n + w.shape.reduce((a, b) => a * b), 0),
    parameterCount(tied),
  )
  t.throws(() => modelConfig('huge'), { instanceOf: ArgumentError, message: /model.*tiny, small, 1b.*huge/ })
  t.throws(() => modelConfig({ hidden: 258 }), { instanceOf: ArgumentError, message: /hidden.*multiple of heads/ })
  t.throws(() => modelConfig({ heads: 1 }), { instanceOf: ArgumentError, message: /headDim.*head size/ })
  t.throws(() => modelConfig({ hidden: 260, headDim: 64 }), { instanceOf: ArgumentError, message: /hidden.*multiple of 8/ })
  t.throws(() => modelConfig({ kvHeads: 3 }), { instanceOf: ArgumentError, message: /kvHeads/ })
  t.throws(() => modelConfig({ layerz: 3 }), { instanceOf: ArgumentError, message: /model.layerz/ })
})

test('f16 rounding: exact values survive, ties go to even, overflow is infinity', (t) => {
  for (const v of [0, 1, -2.5, 65504, 2 ** -24, 0.333251953125]) t.is(fromHalf(toHalf(v)), v)
  t.is(roundHalf(1 + 2 ** -11), 1)
  t.is(roundHalf(1 + 3 * 2 ** -11), 1 + 2 ** -9)
  t.is(roundHalf(70000), Infinity)
  t.true(Number.isNaN(roundHalf(NaN)))
})

/** A reference model with random f16 weights, in the decoder's layout. */
function reference(seed) {
  const c = modelConfig('tiny')
  const r = rng(seed)
  const w = new Map(
    weightLayout(c).map(({ name, shape }) => [
      name,
      Uint16Array.from({ length: shape.reduce((a, b) => a * b) }, () => toHalf(name.endsWith('norm') ? 1 + (r() - 0.5) * 0.2 : (r() * 2 - 1) * 0.3)),
    ]),
  )
  return { c, w }
}

test('reference: a prefill gives the logits of token-by-token decoding (causal attention, KV cache)', (t) => {
  const { c, w } = reference(1)
  const toks = [3, 77, 200, 9, 41]
  const pos = [0, 1, 2, 3, 4]
  const a = new DecoderReference(c, w).forward(toks, pos, [0, 0, 0, 0, 0], [0, 1, 2, 3, 4])
  const b = new DecoderReference(c, w)
  toks.forEach((tok, i) => {
    const r = b.forward([tok], [i], [5], [0])
    const row = a.logits.subarray(i * c.vocab, (i + 1) * c.vocab)
    t.true(
      r.logits.every((v, j) => Math.abs(v - row[j]) < 1e-9),
      `position ${i}`,
    )
    t.is(r.next[0], a.next[i])
  })
  // Order matters (rotary positions, causal attention): the same tokens reversed end in other logits.
  const reversed = new DecoderReference(c, w).forward([...toks].reverse(), pos, [0, 0, 0, 0, 0], [4])
  t.false(reversed.logits.every((v, j) => Math.abs(v - a.logits[4 * c.vocab + j]) < 1e-6))
  t.throws(() => new DecoderReference(c, w).forward([1], [3], [0], [0]), { message: /position 0 never was/ })
})

test('safetensors: header, offsets, alignment and data as the format says', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'st-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const a = Uint16Array.from([1, 2, 3, 4, 5, 6])
  const b = Float32Array.from([1.5, -2])
  writeSafetensors(
    join(dir, 'x.safetensors'),
    [
      { name: 'a', dtype: 'F16', shape: [2, 3], data: () => a },
      { name: 'b', dtype: 'F32', shape: [2], data: () => b },
    ],
    { k: 'v' },
  )
  const f = readFileSync(join(dir, 'x.safetensors'))
  const n = Number(f.readBigUInt64LE(0))
  t.is((8 + n) % 8, 0)
  const h = JSON.parse(f.subarray(8, 8 + n).toString())
  t.deepEqual(h.a, { dtype: 'F16', shape: [2, 3], data_offsets: [0, 12] })
  t.deepEqual(h.b, { dtype: 'F32', shape: [2], data_offsets: [12, 20] })
  t.deepEqual(h.__metadata__, { k: 'v' })
  const data = f.subarray(8 + n)
  t.deepEqual(new Uint16Array(data.buffer.slice(data.byteOffset, data.byteOffset + 12)), a)
  t.deepEqual(new Float32Array(data.buffer.slice(data.byteOffset + 12, data.byteOffset + 20)), b)
  t.throws(() => writeSafetensors(join(dir, 'y'), [{ name: 'a', dtype: 'F16', shape: [4], data: () => a }]), {
    message: /entries.a': expected 8 bytes of data for its shape, got '12 bytes'/,
  })
})

test('a step smaller than the largest capture size gets only the sizes that fit', (t) => {
  const c = GraphConfig.from({ mode: 'FULL', maxCaptureSize: 64 })
  t.is(c.cappedTo(64), c)
  t.deepEqual(c.cappedTo(20).captureSizes, [1, 2, 4, 8, 16])
  t.is(c.cappedTo(20).paddedSize(17), 17)
  t.is(GraphConfig.from({ mode: 'FULL', captureSizes: [8, 16] }).cappedTo(4).mode, 'NONE')
})

test('tensor-parallel shards: the ranks together hold every element of each split tensor once, and the embedding and norms whole; shapes are the local ones; a size that does not divide is an ArgumentError', (t) => {
  for (const [c, n] of [
    [modelConfig({ preset: 'tiny', heads: 4, kvHeads: 2, vocab: 256 }), 2],
    [{ ...modelConfig('tiny'), qkvBias: true, tieEmbeddings: true }, 2],
    [modelConfig({ preset: 'small', kvHeads: 4 }), 4],
  ]) {
    const whole = weightLayout(c)
    const held = new Map()
    for (let rank = 0; rank < n; rank++) {
      const d = localDims(c, { rank, size: n })
      t.deepEqual(d, { heads: c.heads / n, kvHeads: c.kvHeads / n, ffn: c.ffn / n, vocab: c.vocab / n })
      for (const spec of weightLayout(c, { rank, size: n })) {
        // A weight's parts fill its local shape: their rows back to back, each row the part's columns.
        const rows = spec.parts.reduce((a, p) => a + p.rows[1], 0)
        t.is(rows, spec.shape[0], `${spec.name} rows`)
        for (const p of spec.parts) {
          t.is(p.cols[1], spec.shape[1] ?? 1, `${p.name} columns`)
          const full = p.shape[1] ?? 1
          const cells = held.get(p.name) ?? new Uint8Array(p.shape[0] * full)
          held.set(p.name, cells)
          for (let r = p.rows[0]; r < p.rows[0] + p.rows[1]; r++) for (let k = p.cols[0]; k < p.cols[0] + p.cols[1]; k++) cells[r * full + k]++
        }
      }
    }
    // The embedding and the norms are whole on every rank; the rest is split.
    for (const spec of whole) {
      for (const p of spec.parts) {
        const times = /embed_tokens|norm/.test(p.name) ? n : 1
        t.true(
          held.get(p.name).every((x) => x === times),
          `${p.name}: every element ${times === 1 ? 'once' : 'on every rank'} over ${n} ranks`,
        )
      }
    }
  }
  const c = modelConfig('tiny')
  t.throws(() => weightLayout(c, { rank: 0, size: 3 }), { instanceOf: ArgumentError, message: /tensorParallel.*heads \(4\)/ })
  t.throws(() => localDims(c, { rank: 2, size: 2 }), { instanceOf: ArgumentError, message: /tensorParallel/ })
})

test('decode steps take the fused GEMVs when the model is launch-bound: projections at most 2048 wide, a full batch within 2^27 multiply-adds', async (t) => {
  const { decodeGemvFits } = await import('../dist/model/decoder-model.js')
  const { modelConfig, localDims, WHOLE } = await import('../dist/model/index.js')
  const fits = (model, slots, shard = WHOLE) => {
    const c = modelConfig(model)
    return decodeGemvFits(c, localDims(c, shard), slots)
  }
  t.true(fits('tiny', 256))
  t.true(fits('small', 16), '16 rows of small are 1.1e8 multiply-adds')
  t.false(fits('small', 24), '24 rows of small are 1.6e8 multiply-adds, past 2^27')
  t.false(fits('small', 64))
  t.false(fits('1b', 1), 'an MLP width of 8192 is past 2048')
  t.false(fits({ preset: 'tiny', ffn: 100 }, 4), 'an MLP width of 100 is not 16-byte rows')
  t.false(fits({ preset: 'small', ffn: 2056 }, 1), 'past 2048')
  t.true(fits({ preset: 'tiny', ffn: 4096 }, 4, { rank: 0, size: 2 }), "a rank's share of the MLP is its width")
  t.false(fits({ preset: 'tiny', ffn: 4096 }, 4))
})

// The rule reads two device properties; a plain object gives them for an H200 and for older parts.
test('otherwise the tensor-core GEMVs: widths a multiple of 64, compute capability 8.0+, 16 normalized rows in shared memory', async (t) => {
  const { tensorGemvFits, defaultDecodeGemv } = await import('../dist/model/decoder-model.js')
  const { modelConfig, localDims, WHOLE } = await import('../dist/model/index.js')
  const h200 = { computeCapability: [9, 0], maxSharedMemoryPerBlock: 232448 }
  const pick = (model, slots, device = h200) => {
    const c = modelConfig(model)
    return defaultDecodeGemv(device, c, localDims(c, WHOLE), slots)
  }
  t.is(pick('small', 16), 'cuda-cores')
  t.is(pick('small', 64), 'tensor-cores')
  t.is(pick('1b', 64), 'tensor-cores')
  t.is(pick('1b', 64, { computeCapability: [7, 5], maxSharedMemoryPerBlock: 65536 }), 'off', 'no bf16 MMAs before 8.0')
  t.is(pick({ preset: 'small', ffn: 776 }, 64), 'off', 'an MLP width of 776 is not whole 64-wide chunks')
  t.is(pick('1b', 64, { computeCapability: [8, 0], maxSharedMemoryPerBlock: 166912 }), 'off', "an A100's 163 KiB do not take o's and down's rings")
  // gate/up's block at 16 rows: the rings (96 KiB), 16 normalized rows of hidden + 32 elements, the partial sums (16 KiB).
  const fits = (hidden) => {
    const c = modelConfig({ preset: 'small', hidden, heads: hidden / 64, kvHeads: 1 })
    return tensorGemvFits(h200, c, localDims(c, WHOLE))
  }
  t.true(fits(3648), "3648: 227 KiB, an H200's whole block")
  t.false(fits(3712))
})

// The layer chain's ring: as many 16 KiB stages as a block holds beside the warps' partial sums and its
// staged rows, down's input streaming instead where that leaves two more, or where staged rows leave too few.
test('layer chains: compute capability 9.0+, at least 4 ring stages beside 4 to 8 rows, down streaming where that leaves two more', async (t) => {
  const { chainFits, chainRows, chainStages, chainSharedBytes, chainLayout, CHAIN_STATIC_SHARED } = await import('../dist/model/decoder-model.js')
  const { modelConfig } = await import('../dist/model/index.js')
  const h200 = { computeCapability: [9, 0], maxSharedMemoryPerBlock: 232448 }
  t.is(CHAIN_STATIC_SHARED, 256, 'two mbarriers a stage')
  // 232448 bytes less 256 static, 1280 of partial sums a row and the rows of 8192 (+ 32) elements: 13 stages
  // beside one row, 9 beside 4, 5 beside 8.
  t.is(chainStages(232448, 1, 8192), 13)
  t.is(chainStages(232448, 4, 8192), 9)
  t.is(chainStages(232448, 8, 8192), 5)
  t.is(chainStages(232448, 1, 256), 14)
  t.is(chainStages(400000, 1, 256), 16, 'at most GC_STAGES (the mbarriers are static)')
  t.is(chainSharedBytes(5, 8, 8192), 5 * 16384 + 10240 + 8 * 8224 * 2)
  // Streamed: 8 rows of 2304 (+ 32) elements, or the warps' rings of 4 steps of 8 rows of 64 where larger.
  t.is(chainStages(232448, 8, 2304, true), 11)
  t.is(chainStages(232448, 8, 768, true), 11, "the warps' rings: 32 KiB")
  t.true(chainSharedBytes(11, 8, 2304, true) + 256 <= 232448)
  const b1 = modelConfig('1b')
  t.true(chainFits(h200, b1))
  t.is(chainRows(h200, b1), 8)
  // A norm of 2048 stages none of its rows (a lane's registers hold 2048 a row), only its weights: rows of
  // 2048 + 2048 / rows.
  t.deepEqual(chainLayout(232448, b1, b1, 1), { streamed: false, width: 8192, stages: 13 })
  t.deepEqual(chainLayout(232448, b1, b1, 2), { streamed: false, width: 8192, stages: 12 }, 'streamed: 13, one more is not enough')
  t.deepEqual(chainLayout(232448, b1, b1, 4), { streamed: true, width: 2560, stages: 12 }, 'down streams at 4 rows: 12 stages, not 9')
  t.deepEqual(chainLayout(232448, b1, b1, 8), { streamed: true, width: 2304, stages: 11 }, 'and at 8: 11, not 5')
  const small = modelConfig('small')
  t.deepEqual(chainLayout(232448, small, small, 8), { streamed: false, width: 768, stages: 12 }, 'nothing wider than the norms: staged')
  const wide = modelConfig({ preset: 'small', ffn: 1600 })
  t.false(chainLayout(232448, wide, wide, 8).streamed, 'staged whole and streamed both leave 11 stages')
  // An MLP of 11008: 4 stages beside 7 staged rows (11040 elements each), 11 streamed.
  t.is(chainStages(232448, 7, 11008), 4)
  const mlp = modelConfig({ preset: '1b', ffn: 11008 })
  t.is(chainRows(h200, mlp), 8)
  t.deepEqual(chainLayout(232448, mlp, mlp, 7), { streamed: true, width: 2344, stages: 11 })
  t.deepEqual(chainLayout(232448, mlp, mlp, 1), { streamed: false, width: 11008, stages: 12 }, 'streamed: 13, one more is not enough')
  // An MLP of 24576: 4 staged rows would leave one stage; streamed, 12.
  const huge = modelConfig({ preset: '1b', ffn: 24576 })
  t.is(chainRows(h200, huge), 8)
  t.deepEqual(chainLayout(232448, huge, huge, 4), { streamed: true, width: 2560, stages: 12 })
  // A hidden size of 5120: its norms' rows (5120 + 2 x 3072 + 5120 / rows) leave 3 stages at 7 rows, 4 at 6.
  const h5120 = modelConfig({ preset: '1b', hidden: 5120, heads: 40, kvHeads: 8, ffn: 13824 })
  t.is(chainLayout(232448, h5120, h5120, 7).stages, 3)
  t.is(chainRows(h200, h5120), 6)
  t.false(chainFits({ computeCapability: [8, 0], maxSharedMemoryPerBlock: 232448 }, b1), 'no mbarrier waits before 9.0')
  // 99 KiB a block: 4 stages at 5 rows (3 at 6); 88 KiB: 3 at 4 rows, no chain.
  t.is(chainRows({ ...h200, maxSharedMemoryPerBlock: 101376 }, b1), 5)
  t.false(chainFits({ ...h200, maxSharedMemoryPerBlock: 90112 }, b1), 'too few stages even streamed')
})

test('attention blocks take 4, 2 or 1 query heads of a group: the most that divides it and still makes two blocks a multiprocessor, else the most that divides it', async (t) => {
  const { attentionHeads } = await import('../dist/model/decoder-model.js')
  // A 1B model (8 key/value heads, 4 query heads each) on 132 multiprocessors: a batch of 64 takes whole
  // groups, 32 rows two heads a block, 16 one; batches too small for two blocks a multiprocessor take whole groups.
  t.is(attentionHeads(64, 8, 4, 132), 4)
  t.is(attentionHeads(32, 8, 4, 132), 2)
  t.is(attentionHeads(16, 8, 4, 132), 1)
  t.is(attentionHeads(8, 8, 4, 132), 4)
  t.is(attentionHeads(1, 8, 4, 132), 4)
  t.is(attentionHeads(1, 8, 6, 132), 2, 'too few rows: the most that divides the group')
  t.is(attentionHeads(512, 2, 7, 132), 1, '7 is not a multiple of 2')
  t.is(attentionHeads(512, 2, 6, 132), 2)
  t.is(attentionHeads(512, 1, 16, 132), 4, 'at most 4')
  t.is(attentionHeads(512, 1, 16, 1500), 2, 'fewer heads a block on a larger GPU')
})

test('decode attention: tensor cores for grouped-query models from 8.0; its flags (a decode step rotates its rows; the CUDA-core kernels on grids of at most half the multiprocessors prefetch into L2; a layer chain launches early)', async (t) => {
  const { attentionFlagsFor, attentionMmaSharedBytes, decodeAttentionMma } = await import('../dist/model/decoder-model.js')
  const h200 = { computeCapability: [9, 0], maxSharedMemoryPerBlock: 232448 }
  t.true(decodeAttentionMma(h200, modelConfig('1b')), 'groups of 4')
  t.false(decodeAttentionMma(h200, modelConfig('small')), 'one query head a key/value head')
  t.false(decodeAttentionMma({ ...h200, computeCapability: [7, 5] }, modelConfig('1b')), 'no MMAs before 8.0')
  const [ROPE, PREFETCH, DOUBLE, EARLY] = [1, 2, 4, 8]
  // A 1B model on 132 multiprocessors: one request (32 blocks) and two (64) prefetch, four (128) do not.
  t.is(attentionFlagsFor('decode', false, 32, 132, false), ROPE | PREFETCH)
  t.is(attentionFlagsFor('decode', false, 66, 132, false), ROPE | PREFETCH)
  t.is(attentionFlagsFor('decode', false, 67, 132, false), ROPE)
  t.is(attentionFlagsFor('decode', true, 32, 132, false), ROPE | DOUBLE, 'tensor cores: two buffers, no prefetch')
  t.is(attentionFlagsFor('decode', true, 67, 132, false), ROPE)
  t.is(attentionFlagsFor('prefill', false, 512, 132, false), 0)
  t.is(attentionFlagsFor('prefill', false, 8, 132, false), PREFETCH)
  t.is(attentionFlagsFor('decode', true, 32, 132, true), ROPE | DOUBLE | EARLY, 'a layer chain next: it launches first')
  // Four warps' key and value buffers of 32 rows, 72 or 136 elements of 2 bytes.
  t.is(attentionMmaSharedBytes(64), 36864)
  t.is(attentionMmaSharedBytes(128), 69632)
})
