// CPU tests of the decoder workload and the CLI: configs, the float64 reference's own consistency,
// safetensors, f16 rounding, flag parsing and the no-GPU message.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { ArgumentError, fromHalf, GraphConfig, roundHalf, toHalf } from '../dist/index.js'
import { DecoderReference, modelConfig, parameterCount, weightLayout, writeSafetensors } from '../dist/model/index.js'
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
