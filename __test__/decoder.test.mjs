// CPU tests of the decoder workload and the CLI: configs, the float64 reference's own consistency,
// safetensors, f16 rounding, flag parsing and the no-GPU message.
import test from 'ava'
import { readFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { ArgumentError, DecoderReference, GraphConfig, MODEL_PRESETS, fromHalf, modelConfig, parameterCount, roundHalf, toHalf, writeSafetensors } from '../dist/index.js'
import { parseBenchFlags } from '../dist/cli.js'
import { rng } from './helpers.mjs'

test('presets: 1b has about a billion parameters; bad configs name the field', (t) => {
  const p = parameterCount(MODEL_PRESETS['1b'])
  t.true(p > 0.9e9 && p < 1.3e9, `${p}`)
  t.true(parameterCount(MODEL_PRESETS.small) < 50e6)
  t.deepEqual(modelConfig({ layers: 3 }), { ...MODEL_PRESETS.small, layers: 3 })
  t.throws(() => modelConfig('huge'), { instanceOf: ArgumentError, message: /model.*tiny, small, 1b.*huge/ })
  t.throws(() => modelConfig({ hidden: 258 }), { instanceOf: ArgumentError, message: /hidden.*multiple of heads/ })
  t.throws(() => modelConfig({ heads: 1 }), { instanceOf: ArgumentError, message: /head size/ })
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

/** A reference model with random f16 weights. */
function reference(seed) {
  const c = { ...MODEL_PRESETS.tiny, layers: 2 }
  const r = rng(seed)
  const hd = c.hidden / c.heads
  const shapes = { embed: [c.vocab, c.hidden], norm: [c.hidden], lm_head: [c.hidden, c.vocab] }
  for (let l = 0; l < c.layers; l++) {
    Object.assign(shapes, {
      [`layers.${l}.attn_norm`]: [c.hidden],
      [`layers.${l}.qkv`]: [c.hidden, (c.heads + 2 * c.kvHeads) * hd],
      [`layers.${l}.o`]: [c.hidden, c.hidden],
      [`layers.${l}.mlp_norm`]: [c.hidden],
      [`layers.${l}.gate_up`]: [c.hidden, 2 * c.ffn],
      [`layers.${l}.down`]: [c.ffn, c.hidden],
    })
  }
  const w = new Map(Object.entries(shapes).map(([k, s]) => [k, Uint16Array.from({ length: s.reduce((a, b) => a * b) }, () => toHalf(k.endsWith('norm') ? 1 + (r() - 0.5) * 0.2 : (r() * 2 - 1) * 0.3))]))
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
    t.true(r.logits.every((v, j) => Math.abs(v - row[j]) < 1e-9), `position ${i}`)
    t.is(r.next[0], a.next[i])
  })
  // Order matters (rotary positions, causal attention): the same tokens reversed end in other logits.
  const reversed = new DecoderReference(c, w).forward([...toks].reverse(), pos, [0, 0, 0, 0, 0], [4])
  t.false(reversed.logits.every((v, j) => Math.abs(v - a.logits[4 * c.vocab + j]) < 1e-6))
  t.throws(() => new DecoderReference(c, w).forward([1], [3], [0], [0]), { message: /position 0 of slot 0 was never written/ })
})

test('safetensors: header, offsets, alignment and data as the format says', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'st-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const a = Uint16Array.from([1, 2, 3, 4, 5, 6])
  const b = Float32Array.from([1.5, -2])
  writeSafetensors(join(dir, 'x.safetensors'), [
    { name: 'a', dtype: 'F16', shape: [2, 3], data: () => a },
    { name: 'b', dtype: 'F32', shape: [2], data: () => b },
  ], { k: 'v' })
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
  t.throws(() => writeSafetensors(join(dir, 'y'), [{ name: 'a', dtype: 'F16', shape: [4], data: () => a }]), { message: /'a' has 12 bytes, its shape needs 8/ })
})

test('a step smaller than the largest capture size gets only the sizes that fit', (t) => {
  const c = GraphConfig.from({ mode: 'FULL', maxCaptureSize: 64 })
  t.is(c.cappedTo(64), c)
  t.deepEqual(c.cappedTo(20).captureSizes, [1, 2, 4, 8, 16])
  t.is(c.cappedTo(20).paddedSize(17), 17)
  t.is(GraphConfig.from({ mode: 'FULL', captureSizes: [8, 16] }).cappedTo(4).mode, 'NONE')
})

test('bench flags: defaults, and each bad flag names itself, what it got and what is allowed', (t) => {
  const d = parseBenchFlags([])
  t.is(d.model, 'small')
  t.deepEqual(d.promptLengths, [10, 50, 100, 150, 200, 250, 300, 350, 400])
  t.is(d.mode, 'FULL')
  t.true(d.peer && d.print)
  const o = parseBenchFlags(['--model', 'tiny', '--batch-sizes', '4,1,2', '--tokens', '8', '--mode', 'NONE', '--json', '--no-peer'])
  t.deepEqual([o.model, o.batchSizes, o.tokens, o.mode, o.print, o.peer], ['tiny', [1, 2, 4], 8, 'NONE', false, false])
  t.throws(() => parseBenchFlags(['--model', 'big']), { message: /--model: expected one of tiny, small, 1b, got 'big'/ })
  t.throws(() => parseBenchFlags(['--batch-sizes', '1,x']), { message: /--batch-sizes: expected comma-separated integers in 1\.\.256, got '1,x'/ })
  t.throws(() => parseBenchFlags(['--batch-sizes', '512']), { message: /1\.\.256/ })
  t.throws(() => parseBenchFlags(['--tokens', '0']), { message: /--tokens: expected an integer in 1\.\.1024/ })
  t.throws(() => parseBenchFlags(['--mode', 'ALL']), { message: /--mode: expected one of NONE, PIECEWISE, FULL/ })
  t.throws(() => parseBenchFlags(['--colour']), { message: /colour/ })
})

test('the cudagraph command: usage, bad commands and flags exit 2 with a message; no GPU is said plainly', (t) => {
  const bin = new URL('../bin/cudagraph.js', import.meta.url).pathname
  const run = (...a) => spawnSync(process.execPath, [bin, ...a], { encoding: 'utf8' })
  t.is(run('--help').status, 0)
  const bad = run('frobnicate')
  t.is(bad.status, 2)
  t.regex(bad.stderr, /unknown command 'frobnicate' \(expected info, bench, serve, client\)/)
  const flag = run('bench', '--model', 'big')
  t.is(flag.status, 2)
  t.regex(flag.stderr, /--model: expected one of tiny, small, 1b, got 'big'/)
  const info = run('info')
  if (info.status === 2) t.regex(info.stderr, /no usable CUDA GPU here/)
  else t.regex(info.stdout, /compute capability/)
})
