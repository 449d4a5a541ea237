/**
 * A Hugging Face model directory as a {@link DecoderModel}: `config.json`, and `model.safetensors` or the
 * shards a `model.safetensors.index.json` names. Everything is checked on the CPU first (the config, every
 * header, every tensor's presence, shape and dtype), so a bad directory allocates nothing; then each tensor
 * streams from disk to the device through pinned chunks, never through the JS heap.
 */
import { existsSync } from 'node:fs'
import { basename, join } from 'node:path'
import type { DeviceBuffer } from '../cuda/buffer.js'
import type { Communicator } from '../cuda/communicator.js'
import type { Device } from '../cuda/device.js'
import type { Stream } from '../cuda/stream.js'
import { CheckpointError, check } from '../errors.js'
import { type DecodeGemv, DecoderModel, type ModelDType, type PrefillAttention } from './decoder-model.js'
import { type CheckpointConfig, defaultMaxSeqLen, parseHfConfig } from './hf-config.js'
import { readJsonObject } from './json-file.js'
import { readSafetensorsHeader, type SafetensorsTensor } from './safetensors.js'
import { type WeightPart, WHOLE, weightLayout } from './weight-layout.js'

/** A tensor of a checkpoint and the file it is in. */
export interface CheckpointTensor {
  readonly file: string
  readonly tensor: SafetensorsTensor
}

/** A checked model directory: its config and the tensors the decoder reads. */
export interface Checkpoint {
  readonly dir: string
  readonly config: CheckpointConfig
  /** The tensors the decoder reads, by Hugging Face name. */
  readonly tensors: ReadonlyMap<string, CheckpointTensor>
  /** Bytes of those tensors. */
  readonly bytes: number
}

/** Options of {@link loadDecoder}. */
export interface LoadOptions {
  /** Storage type (default the checkpoint's; f32 checkpoints default to f16). */
  dtype?: ModelDType | undefined
  /** KV-cache slots (default 64). */
  slots?: number | undefined
  /** Longest sequence a slot holds (default min(2048, max_position_embeddings)). */
  maxSeqLen?: number | undefined
  /**
   * Tensor parallelism: this rank's communicator. The load reads only the rank's slice of each tensor
   * ({@link weightLayout}): its rows, or for o and down its columns of every row.
   */
  communicator?: Communicator | undefined
  /** Decode steps' projections (`DecodeGemv`); default `defaultDecodeGemv`'s. */
  decodeGemv?: DecodeGemv | undefined
  /** Whether decode steps may run each layer as one kernel (`DecoderModel.decodeChain`); default true where it fits. */
  decodeChain?: boolean | undefined
  /** Prefill attention's kernel (`PrefillAttention`); default `'flash'` from compute capability 8.0, else `'rows'`. */
  prefillAttention?: PrefillAttention | undefined
  /** Whether the norms' weights are folded into the projections after them (`DecoderOptions.foldNorms`); default true. */
  foldNorms?: boolean | undefined
  /** Called after each tensor is on the device. A throw ends the load, freeing what it allocated. */
  onProgress?: (p: LoadProgress) => void
}

/** How far a load is. */
export interface LoadProgress {
  /** The tensor just loaded, and how many are loaded of how many. */
  readonly tensor: string
  readonly tensors: number
  readonly totalTensors: number
  /** Bytes loaded so far and in all (of this rank's slices). */
  readonly bytes: number
  readonly totalBytes: number
}

/** A load's figures. */
export interface LoadStats {
  readonly seconds: number
  /** Bytes read from the checkpoint (this rank's slices). */
  readonly bytes: number
  /** bytes / seconds / 1e9. */
  readonly gbPerSecond: number
}

const FLOAT_DTYPES = new Set(['F16', 'BF16', 'F32'])

/**
 * Reads and checks model directory `dir` for a context of `maxSeqLen` tokens (undefined: the default)
 * without touching the GPU. Each problem is a CheckpointError naming the file and the field or tensor.
 */
export function readCheckpoint(dir: string, maxSeqLen?: number): Checkpoint {
  const configFile = join(dir, 'config.json')
  const config = parseHfConfig(configFile, readJsonObject(configFile), maxSeqLen)
  const available = new Map<string, CheckpointTensor>()
  const indexFile = join(dir, 'model.safetensors.index.json')
  let where = join(dir, 'model.safetensors')
  if (existsSync(indexFile)) {
    where = indexFile
    const map = readJsonObject(indexFile).weight_map
    if (map === null || typeof map !== 'object' || Array.isArray(map))
      throw new CheckpointError(indexFile, 'weight_map is not an object', { field: 'weight_map' })
    const shards = new Map<string, ReadonlyMap<string, SafetensorsTensor>>()
    for (const [name, shard] of Object.entries(map)) {
      if (typeof shard !== 'string' || shard !== basename(shard) || shard === '..' || shard === '.')
        throw new CheckpointError(indexFile, `weight_map names ${JSON.stringify(shard)}: expected a file name in the model directory`, { tensor: name })
      const file = join(dir, shard)
      const header = shards.get(file) ?? readSafetensorsHeader(file).tensors
      shards.set(file, header)
      const tensor = header.get(name)
      if (tensor === undefined) throw new CheckpointError(file, `the index places this tensor here, but the file does not hold it`, { tensor: name })
      available.set(name, { file, tensor })
    }
  } else {
    if (!existsSync(where)) throw new CheckpointError(dir, 'no model.safetensors or model.safetensors.index.json in the model directory')
    for (const [name, tensor] of readSafetensorsHeader(where).tensors) available.set(name, { file: where, tensor })
  }
  const tensors = new Map<string, CheckpointTensor>()
  let bytes = 0
  for (const spec of weightLayout(config)) {
    for (const part of spec.parts) {
      const t = available.get(part.name)
      if (t === undefined)
        throw new CheckpointError(where, `missing (the config needs it: ${config.architecture}, ${config.layers} layers)`, { tensor: part.name })
      const { shape, dtype } = t.tensor
      if (shape.length !== part.shape.length || shape.some((d, i) => d !== part.shape[i])) {
        throw new CheckpointError(t.file, `shape [${shape.join(', ')}] does not match the config: expected [${part.shape.join(', ')}]`, { tensor: part.name })
      }
      if (!FLOAT_DTYPES.has(dtype)) throw new CheckpointError(t.file, `dtype ${dtype}: expected F16, BF16 or F32`, { tensor: part.name })
      tensors.set(part.name, t)
      bytes += t.tensor.bytes
    }
  }
  return { dir, config, tensors, bytes }
}

const STORAGE = { f16: 'F16', bf16: 'BF16' } as const

/**
 * Loads model directory `dir` onto `device` (uploads on `stream`, waiting at the end): a
 * {@link DecoderModel} in the checkpoint's dtype (bf16 or f16; f32 converted to `options.dtype`, default
 * f16). A bad directory or option is a typed error before anything is allocated; a failure while loading
 * frees everything allocated.
 */
export function loadDecoder(
  device: Device,
  stream: Stream,
  dir: string,
  options: LoadOptions = {},
): { model: DecoderModel; checkpoint: Checkpoint; stats: LoadStats } {
  check(typeof dir === 'string' && dir.length > 0, 'dir', 'a model directory path', dir)
  check(options.onProgress === undefined || typeof options.onProgress === 'function', 'onProgress', 'a function', options.onProgress)
  const ckpt = readCheckpoint(dir, options.maxSeqLen)
  const dtype = options.dtype ?? (ckpt.config.dtype === 'f32' ? 'f16' : ckpt.config.dtype)
  check(dtype === 'f16' || dtype === 'bf16', 'dtype', "'f16' or 'bf16'", dtype)
  for (const [name, t] of ckpt.tensors) {
    if (t.tensor.dtype !== STORAGE[dtype] && t.tensor.dtype !== 'F32') {
      throw new CheckpointError(
        t.file,
        `dtype ${t.tensor.dtype} cannot load into a ${dtype} model (load with dtype '${t.tensor.dtype === 'BF16' ? 'bf16' : 'f16'}')`,
        {
          tensor: name,
        },
      )
    }
  }
  const convert = DecoderModel.module(device, dtype).kernel('convert_f32', ['ptr', 'ptr', 'i64'])
  const comm = options.communicator
  const layout = weightLayout(ckpt.config, comm === undefined ? WHOLE : { rank: comm.rank, size: comm.size })
  const elemBytes = (dt: string) => (dt === 'F32' ? 4 : 2)
  const sliceBytes = (part: WeightPart) => part.rows[1] * part.cols[1] * elemBytes(ckpt.tensors.get(part.name)!.tensor.dtype)
  const totalBytes = layout.reduce((n, spec) => n + spec.parts.reduce((m, part) => m + sliceBytes(part), 0), 0)
  const totalTensors = layout.reduce((n, spec) => n + spec.parts.length, 0)
  // The rank's slice of `part` into `into` (its dtype's elements): whole rows in one read, else one read a row.
  const readSlice = (into: DeviceBuffer, part: WeightPart, file: string, tensor: SafetensorsTensor) => {
    const [row0, rows] = part.rows
    const [col0, cols] = part.cols
    const full = part.shape[1] ?? 1
    const elem = elemBytes(tensor.dtype)
    if (cols === full) stream.uploadFile(into, file, tensor.start + row0 * full * elem)
    else for (let i = 0; i < rows; i++) stream.uploadFile(into.view(i * cols, cols), file, tensor.start + ((row0 + i) * full + col0) * elem)
  }
  const t0 = performance.now()
  let loaded = 0
  let count = 0
  const model = DecoderModel.build(device, stream, {
    config: ckpt.config,
    dtype,
    slots: options.slots,
    maxSeqLen: options.maxSeqLen ?? defaultMaxSeqLen(ckpt.config.maxPositions),
    source: { dir },
    communicator: comm,
    decodeGemv: options.decodeGemv,
    decodeChain: options.decodeChain,
    prefillAttention: options.prefillAttention,
    foldNorms: options.foldNorms,
    fill: (spec, buffer) => {
      const cols = spec.shape.length === 2 ? spec.shape[1] : 1
      let row = 0
      for (const part of spec.parts) {
        const rows = part.rows[1]
        const view = buffer.view(row * cols, rows * cols)
        row += rows
        const { file, tensor } = ckpt.tensors.get(part.name)!
        if (tensor.dtype === 'F32') {
          const staged = device.alloc('f32', view.length)
          try {
            readSlice(staged, part, file, tensor)
            stream.launch(convert, { grid: Math.min(4096, Math.ceil(view.length / 256)), block: 256 }, [view, staged, view.length])
            stream.synchronize()
          } finally {
            staged.dispose()
          }
        } else {
          readSlice(view, part, file, tensor)
        }
        loaded += sliceBytes(part)
        options.onProgress?.({ tensor: part.name, tensors: ++count, totalTensors, bytes: loaded, totalBytes })
      }
    },
  })
  const seconds = (performance.now() - t0) / 1000
  return { model, checkpoint: ckpt, stats: { seconds, bytes: totalBytes, gbPerSecond: totalBytes / seconds / 1e9 } }
}
