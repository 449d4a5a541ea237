/**
 * The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length,
 * a JSON header of dtype, shape and byte range per tensor, then the raw data. Tensors are written one at a
 * time, so a model larger than one Buffer can be saved; reading checks the header without the data.
 */
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs'
import { ArgumentError, CheckpointError } from '../errors.js'

/** One tensor to write: its safetensors dtype, shape and little-endian bytes. */
export interface SafetensorsEntry {
  name: string
  dtype: 'F16' | 'BF16' | 'F32' | 'I32'
  shape: readonly number[]
  /** Produces the bytes when the file reaches this tensor. */
  data: () => ArrayBufferView
}

const SIZE = { F16: 2, BF16: 2, F32: 4, I32: 4 } as const

/** Writes `entries` (in order) and string `metadata` to `path`. */
export function writeSafetensors(path: string, entries: readonly SafetensorsEntry[], metadata: Record<string, string> = {}): void {
  const header: Record<string, unknown> = { __metadata__: metadata }
  let offset = 0
  for (const e of entries) {
    const bytes = e.shape.reduce((a, b) => a * b, 1) * SIZE[e.dtype]
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + bytes] }
    offset += bytes
  }
  let json = JSON.stringify(header)
  // The data starts 8-byte aligned: the header is padded with spaces, as the format allows.
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8)
  const head = Buffer.alloc(8)
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)))
  const fd = openSync(path, 'w')
  try {
    writeSync(fd, head)
    writeSync(fd, json)
    for (const e of entries) {
      const d = e.data()
      const want = (header[e.name] as { data_offsets: [number, number] }).data_offsets
      if (d.byteLength !== want[1] - want[0])
        throw new ArgumentError(`entries.${e.name}`, `${want[1] - want[0]} bytes of data for its shape`, `${d.byteLength} bytes`)
      writeSync(fd, new Uint8Array(d.buffer, d.byteOffset, d.byteLength))
    }
  } finally {
    closeSync(fd)
  }
}

/** Element types a safetensors file may hold, with their sizes in bytes. */
export const SAFETENSORS_DTYPES = Object.freeze({ F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 } as const)

/** A safetensors element type. */
export type SafetensorsDType = keyof typeof SAFETENSORS_DTYPES

/** One tensor of a safetensors file: where its bytes are in the file. */
export interface SafetensorsTensor {
  readonly name: string
  readonly dtype: SafetensorsDType
  readonly shape: readonly number[]
  /** Offset of the first byte in the file (header included), bytes. */
  readonly start: number
  /** Its bytes. */
  readonly bytes: number
}

/** A parsed safetensors header. */
export interface SafetensorsHeader {
  readonly file: string
  /** Tensors by name, in file order. */
  readonly tensors: ReadonlyMap<string, SafetensorsTensor>
  /** The `__metadata__` strings. */
  readonly metadata: Readonly<Record<string, string>>
  /** Size of the whole file, bytes. */
  readonly fileBytes: number
}

/** The largest header accepted, bytes (the reference implementation's limit). */
const MAX_HEADER_BYTES = 100 << 20

/**
 * Reads and checks the header of safetensors file `file` without reading its data: the header length
 * within the file, the header JSON, every tensor's dtype, shape and byte range (inside the data, in
 * agreement with its shape, not overlapping another). Each problem is a CheckpointError naming the file
 * and, where one is at fault, the tensor.
 */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  let fd: number
  try {
    fd = openSync(file, 'r')
  } catch (e) {
    throw new CheckpointError(file, `cannot open it (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { cause: e })
  }
  try {
    const fileBytes = fstatSync(fd).size
    if (fileBytes < 8) throw new CheckpointError(file, `truncated: ${fileBytes} bytes, less than the 8-byte header length`)
    const head = Buffer.alloc(8)
    readSync(fd, head, 0, 8, 0)
    const headerBytes = head.readBigUInt64LE(0)
    if (headerBytes > BigInt(Math.min(fileBytes - 8, MAX_HEADER_BYTES))) {
      throw new CheckpointError(
        file,
        `the header length ${headerBytes} runs past the end of the file (${fileBytes} bytes) or the ${MAX_HEADER_BYTES}-byte limit`,
      )
    }
    const n = Number(headerBytes)
    const json = Buffer.alloc(n)
    readSync(fd, json, 0, n, 8)
    let parsed: unknown
    try {
      parsed = JSON.parse(json.toString('utf8'))
    } catch (e) {
      throw new CheckpointError(file, `the header is not valid JSON (${e instanceof Error ? e.message : String(e)})`, { cause: e })
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new CheckpointError(file, 'the header is not a JSON object')
    const dataStart = 8 + n
    const dataBytes = fileBytes - dataStart
    const tensors: SafetensorsTensor[] = []
    let metadata: Record<string, string> = {}
    for (const [name, v] of Object.entries(parsed as Record<string, unknown>)) {
      if (name === '__metadata__') {
        metadata = checkMetadata(file, v)
        continue
      }
      tensors.push(checkTensor(file, name, v, dataStart, dataBytes))
    }
    // Byte ranges may not overlap (the format also asks them to cover the data without holes; a gap is
    // allowed here, as readers do).
    const sorted = [...tensors].sort((a, b) => a.start - b.start)
    for (let i = 1; i < sorted.length; i++) {
      const a = sorted[i - 1]!
      const b = sorted[i]!
      if (b.start < a.start + a.bytes) throw new CheckpointError(file, `its bytes overlap those of '${a.name}'`, { tensor: b.name })
    }
    return { file, tensors: new Map(tensors.map((t) => [t.name, t])), metadata, fileBytes }
  } finally {
    closeSync(fd)
  }
}

function checkMetadata(file: string, v: unknown): Record<string, string> {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || !Object.values(v).every((x) => typeof x === 'string')) {
    throw new CheckpointError(file, '__metadata__ is not an object of strings')
  }
  return v as Record<string, string>
}

function checkTensor(file: string, name: string, v: unknown, dataStart: number, dataBytes: number): SafetensorsTensor {
  const fail = (what: string) => new CheckpointError(file, what, { tensor: name })
  if (v === null || typeof v !== 'object') throw fail('its entry is not an object of dtype, shape and data_offsets')
  const { dtype, shape, data_offsets: offsets } = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown }
  if (typeof dtype !== 'string' || !Object.hasOwn(SAFETENSORS_DTYPES, dtype)) {
    throw fail(`unknown dtype ${JSON.stringify(dtype)} (expected one of ${Object.keys(SAFETENSORS_DTYPES).join(', ')})`)
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
    throw fail(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`)
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw fail(`data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`)
  }
  const [begin, end] = offsets as [number, number]
  if (begin > end || end > dataBytes) throw fail(`data_offsets [${begin}, ${end}] fall outside the ${dataBytes} bytes of data`)
  const elements = (shape as number[]).reduce((a, b) => a * b, 1)
  const want = elements * SAFETENSORS_DTYPES[dtype as SafetensorsDType]
  if (end - begin !== want) throw fail(`shape [${(shape as number[]).join(', ')}] of ${dtype} needs ${want} bytes, data_offsets give ${end - begin}`)
  return { name, dtype: dtype as SafetensorsDType, shape: Object.freeze([...(shape as number[])]), start: dataStart + begin, bytes: want }
}
