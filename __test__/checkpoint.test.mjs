// Reading checkpoints (CPU): safetensors headers, config.json (both transformers 4's and 5's rotary
// fields), and whole model directories (single file and sharded), every malformed one a CheckpointError
// naming the file and the tensor or field (fixtures are written by the test).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { CheckpointError } from '../dist/index.js'
import { modelConfig, parseHfConfig, readCheckpoint, readSafetensorsHeader, weightLayout, writeSafetensors } from '../dist/model/index.js'

const dir = mkdtempSync(join(tmpdir(), 'cg-ckpt-'))
test.after.always(() => rmSync(dir, { recursive: true, force: true }))
let n = 0

/** A safetensors file with `header` (an object, or raw text) and `dataBytes` bytes of data. */
function raw(header, dataBytes = 0) {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header))
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(json.length))
  const path = join(dir, `f${n++}.safetensors`)
  writeFileSync(path, Buffer.concat([len, json, Buffer.alloc(dataBytes, 7)]))
  return path
}

test('a file written by writeSafetensors reads back: dtypes, shapes, byte ranges and metadata', (t) => {
  const path = join(dir, 'good.safetensors')
  writeSafetensors(
    path,
    [
      { name: 'a', dtype: 'F16', shape: [2, 3], data: () => Uint16Array.of(1, 2, 3, 4, 5, 6) },
      { name: 'b', dtype: 'F32', shape: [2], data: () => Float32Array.of(1.5, -2) },
    ],
    { format: 'pt' },
  )
  const h = readSafetensorsHeader(path)
  t.deepEqual([...h.tensors.keys()], ['a', 'b'])
  const a = h.tensors.get('a')
  const b = h.tensors.get('b')
  t.deepEqual([a.dtype, a.shape, a.bytes, b.start - a.start], ['F16', [2, 3], 12, 12])
  t.is(b.start + b.bytes, h.fileBytes)
  t.deepEqual(h.metadata, { format: 'pt' })
})

test('every malformed file is a CheckpointError naming the file and the tensor', (t) => {
  const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] }
  const cases = [
    ['missing file', join(dir, 'nope.safetensors'), undefined, /cannot open it \(ENOENT\)/],
    [
      'truncated before the length',
      (() => {
        const p = join(dir, 'short')
        writeFileSync(p, Buffer.alloc(5))
        return p
      })(),
      undefined,
      /truncated: 5 bytes/,
    ],
    [
      'header length past the end',
      (() => {
        const p = raw({ a: ok }, 8)
        truncateSync(p, 20)
        return p
      })(),
      undefined,
      /header length \d+ runs past the end of the file \(20 bytes\)/,
    ],
    ['invalid JSON', raw('{"a": {"dtype": "F32",', 8), undefined, /not valid JSON/],
    ['not an object', raw('[1, 2]', 0), undefined, /not a JSON object/],
    ['unknown dtype', raw({ a: { ...ok, dtype: 'F8_E9' } }, 8), 'a', /unknown dtype "F8_E9"/],
    ['bad shape', raw({ a: { ...ok, shape: [2, -1] } }, 8), 'a', /shape \[2,-1\] is not a list of non-negative integers/],
    ['offsets past the data', raw({ a: { ...ok, data_offsets: [0, 16] } }, 8), 'a', /data_offsets \[0, 16\] fall outside the 8 bytes of data/],
    ['offsets reversed', raw({ a: { ...ok, data_offsets: [8, 0] } }, 8), 'a', /fall outside/],
    ['shape and bytes disagree', raw({ a: { ...ok, shape: [3] } }, 8), 'a', /shape \[3\] of F32 needs 12 bytes, data_offsets give 8/],
    ['overlapping tensors', raw({ a: ok, b: { ...ok, data_offsets: [4, 12] } }, 16), 'b', /overlap those of 'a'/],
    ['bad metadata', raw({ __metadata__: { x: 1 }, a: ok }, 8), undefined, /__metadata__ is not an object of strings/],
  ]
  for (const [what, path, tensor, re] of cases) {
    const e = t.throws(() => readSafetensorsHeader(path), { instanceOf: CheckpointError }, what)
    t.is(e.file, path, what)
    t.is(e.tensor, tensor, what)
    t.regex(e.message, re, what)
    t.is(e.code, 'CHECKPOINT_ERROR')
  }
})

// config.json as transformers writes them (fields of Llama-3.2-1B, Mistral-7B-v0.1 and Qwen2-0.5B).
const LLAMA32 = {
  architectures: ['LlamaForCausalLM'],
  hidden_size: 2048,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 64,
  intermediate_size: 8192,
  num_hidden_layers: 16,
  vocab_size: 128256,
  rms_norm_eps: 1e-5,
  rope_theta: 500000,
  rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
  max_position_embeddings: 131072,
  tie_word_embeddings: true,
  hidden_act: 'silu',
  torch_dtype: 'bfloat16',
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
}
const MISTRAL = {
  architectures: ['MistralForCausalLM'],
  hidden_size: 4096,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  vocab_size: 32000,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 32768,
  sliding_window: 4096,
  torch_dtype: 'bfloat16',
  bos_token_id: 1,
  eos_token_id: 2,
}
const QWEN2 = {
  architectures: ['Qwen2ForCausalLM'],
  hidden_size: 896,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  intermediate_size: 4864,
  num_hidden_layers: 24,
  vocab_size: 151936,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  max_position_embeddings: 32768,
  sliding_window: 32768,
  use_sliding_window: false,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  eos_token_id: 151643,
}

test('config.json of Llama 3.2, Mistral and Qwen2 in the decoder terms', (t) => {
  const l = parseHfConfig('llama/config.json', LLAMA32, 4096)
  t.like(l, {
    architecture: 'LlamaForCausalLM',
    hidden: 2048,
    heads: 32,
    kvHeads: 8,
    headDim: 64,
    ffn: 8192,
    layers: 16,
    vocab: 128256,
    tieEmbeddings: true,
    qkvBias: false,
    dtype: 'bf16',
  })
  t.deepEqual(l.ropeScaling, { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 })
  t.deepEqual(l.eosTokenIds, [128001, 128008, 128009])
  t.is(l.bosTokenId, 128000)
  const m = parseHfConfig('mistral/config.json', MISTRAL, 4096)
  t.like(m, { architecture: 'MistralForCausalLM', headDim: 128, slidingWindow: 4096, tieEmbeddings: false, qkvBias: false })
  t.deepEqual(m.eosTokenIds, [2])
  const q = parseHfConfig('qwen/config.json', QWEN2, 8192)
  t.like(q, { architecture: 'Qwen2ForCausalLM', headDim: 64, qkvBias: true, tieEmbeddings: true, slidingWindow: null })
  t.deepEqual(parseHfConfig('x', { ...LLAMA32, rope_scaling: { type: 'linear', factor: 2 } }, 64).ropeScaling, { type: 'linear', factor: 2 })
})

test('an unsupported or broken config is a CheckpointError naming the field and what is supported', (t) => {
  const cases = [
    [
      { ...LLAMA32, architectures: ['GPT2LMHeadModel'] },
      4096,
      'architectures',
      /not supported \(supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM\)/,
    ],
    [{ ...LLAMA32, hidden_size: undefined }, 4096, 'hidden_size', /missing/],
    [{ ...LLAMA32, num_key_value_heads: 5 }, 4096, 'num_key_value_heads', /does not divide num_attention_heads \(32\)/],
    [{ ...LLAMA32, num_attention_heads: 0 }, 4096, 'num_attention_heads', /an integer in 1\.\.1024, got 0/],
    [{ ...LLAMA32, head_dim: 60 }, 4096, 'head_dim', /multiple of 8/],
    [{ ...LLAMA32, hidden_size: 2052, head_dim: 64 }, 4096, 'hidden_size', /2052: the kernels take a multiple of 8/],
    [{ ...LLAMA32, hidden_act: 'gelu' }, 4096, 'hidden_act', /SwiGLU/],
    [
      { ...LLAMA32, rope_scaling: { rope_type: 'yarn', factor: 4 } },
      4096,
      'rope_scaling',
      /rope type "yarn" is not supported \(supported: default, linear, llama3\)/,
    ],
    [{ ...LLAMA32, rope_scaling: { rope_type: 'llama3', factor: 8 } }, 4096, 'rope_scaling', /low_freq_factor/],
    [{ ...MISTRAL }, 8192, 'sliding_window', /shorter than maxSeqLen \(8192\); sliding-window attention is not implemented/],
    [{ ...LLAMA32, torch_dtype: 'float8_e4m3fn' }, 4096, 'torch_dtype', /not supported/],
    [{ ...LLAMA32, eos_token_id: ['x'] }, 4096, 'eos_token_id', /token id/],
  ]
  for (const [json, maxSeqLen, field, re] of cases) {
    const e = t.throws(() => parseHfConfig('m/config.json', json, maxSeqLen), { instanceOf: CheckpointError }, field)
    t.is(e.field, field)
    t.is(e.file, 'm/config.json')
    t.regex(e.message, re, field)
  }
})

test('transformers 5 writes the rotary settings as rope_parameters; both forms read the same', (t) => {
  const { rope_scaling, rope_theta, ...rest } = LLAMA32
  const v5 = { ...rest, rope_parameters: { ...rope_scaling, rope_theta } }
  const a = parseHfConfig('a', LLAMA32, 4096)
  const b = parseHfConfig('b', v5, 4096)
  t.deepEqual([b.ropeTheta, b.ropeScaling], [a.ropeTheta, a.ropeScaling])
  t.deepEqual(parseHfConfig('c', { ...rest, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } }).ropeScaling, { type: 'none' })
  t.is(parseHfConfig('c', { ...rest, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } }).ropeTheta, 1e6)
  const e = t.throws(() => parseHfConfig('d', { ...rest, rope_parameters: { rope_type: 'yarn', rope_theta: 1e4, factor: 4 } }), { instanceOf: CheckpointError })
  t.is(e.field, 'rope_parameters')
  t.regex(e.message, /yarn.*not supported/)
})

/** A Hugging Face directory for the tiny shape: config.json and the tensors `weightLayout` names. */
function modelDir(name, { drop, reshape, dtype = 'F16', shards = 1 } = {}) {
  const d = join(dir, name)
  mkdirSync(d, { recursive: true })
  const c = modelConfig('tiny')
  const config = {
    architectures: ['LlamaForCausalLM'],
    hidden_size: c.hidden,
    intermediate_size: c.ffn,
    num_hidden_layers: c.layers,
    num_attention_heads: c.heads,
    num_key_value_heads: c.kvHeads,
    vocab_size: c.vocab,
    max_position_embeddings: 512,
    torch_dtype: 'float16',
  }
  writeFileSync(join(d, 'config.json'), JSON.stringify(config))
  const parts = weightLayout(c)
    .flatMap((w) => w.parts)
    .filter((p) => p.name !== drop)
    .map((p) => {
      const shape = p.name === reshape ? [p.shape[0] + 1, ...p.shape.slice(1)] : p.shape
      const len = shape.reduce((a, b) => a * b, 1)
      return { name: p.name, dtype, shape, data: () => (dtype === 'I32' ? new Int32Array(len) : new Uint16Array(len).fill(0x3c00)) }
    })
  if (shards === 1) {
    writeSafetensors(join(d, 'model.safetensors'), parts)
    return d
  }
  const weightMap = {}
  const per = Math.ceil(parts.length / shards)
  for (let i = 0; i < shards; i++) {
    const file = `model-0000${i + 1}-of-0000${shards}.safetensors`
    const mine = parts.slice(i * per, (i + 1) * per)
    writeSafetensors(join(d, file), mine)
    for (const p of mine) weightMap[p.name] = file
  }
  writeFileSync(join(d, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }))
  return d
}

test('a model directory is checked whole before loading: tensors present, shapes as the config says, float dtypes, shards as indexed', (t) => {
  const one = readCheckpoint(modelDir('good'))
  t.is(one.tensors.size, weightLayout(modelConfig('tiny')).flatMap((w) => w.parts).length)
  t.is(one.config.architecture, 'LlamaForCausalLM')
  const sharded = readCheckpoint(modelDir('sharded', { shards: 3 }))
  t.is(sharded.bytes, one.bytes)
  t.true(new Set([...sharded.tensors.values()].map((x) => x.file)).size === 3)
  const fails = (d, re, fields) => {
    const e = t.throws(() => readCheckpoint(d), { instanceOf: CheckpointError })
    t.regex(e.message, re)
    if (Object.keys(fields).length > 0) t.like(e, fields)
    return e
  }
  fails(modelDir('missing', { drop: 'model.layers.1.mlp.up_proj.weight' }), /missing/, { tensor: 'model.layers.1.mlp.up_proj.weight' })
  fails(modelDir('shape', { reshape: 'model.layers.0.self_attn.k_proj.weight' }), /shape \[33, 64\] does not match the config: expected \[32, 64\]/, {
    tensor: 'model.layers.0.self_attn.k_proj.weight',
  })
  fails(modelDir('ints', { dtype: 'I32' }), /dtype I32: expected F16, BF16 or F32/, { tensor: 'model.embed_tokens.weight' })
  // The index names a shard that is not there, or a tensor the shard does not hold, or a path outside the directory.
  const d = modelDir('badindex', { shards: 2 })
  const index = JSON.parse(readFileSync(join(d, 'model.safetensors.index.json'), 'utf8'))
  const write = (weightMap) => writeFileSync(join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }))
  write({ ...index.weight_map, 'model.norm.weight': 'model-00009-of-00009.safetensors' })
  fails(d, /cannot open it \(ENOENT\)/, {})
  write({ ...index.weight_map, 'model.norm.weight': '../../etc/passwd' })
  fails(d, /expected a file name in the model directory/, { tensor: 'model.norm.weight' })
  const other =
    index.weight_map['model.norm.weight'] === 'model-00001-of-00002.safetensors' ? 'model-00002-of-00002.safetensors' : 'model-00001-of-00002.safetensors'
  write({ ...index.weight_map, 'model.norm.weight': other })
  fails(d, /the index places this tensor here, but the file does not hold it/, { tensor: 'model.norm.weight' })
  // A truncated shard is caught by its header check.
  write(index.weight_map)
  truncateSync(join(d, 'model-00002-of-00002.safetensors'), 100)
  fails(d, /model-00002-of-00002.safetensors/, {})
  const empty = join(dir, 'empty')
  mkdirSync(empty)
  writeFileSync(join(empty, 'config.json'), readFileSync(join(one.dir, 'config.json')))
  fails(empty, /no model.safetensors or model.safetensors.index.json/, {})
})
