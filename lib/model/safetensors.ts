/**
 * Writes the safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
 * length, a JSON header of dtype, shape and byte range per tensor, then the raw data. Tensors are written
 * one at a time, so a model larger than one Buffer can be saved.
 */
import { closeSync, openSync, writeSync } from 'node:fs'
import { ArgumentError } from '../errors.js'

/** One tensor to write: its safetensors dtype, shape and little-endian bytes. */
export interface SafetensorsEntry {
  name: string
  dtype: 'F16' | 'F32' | 'I32'
  shape: readonly number[]
  /** Produces the bytes when the file reaches this tensor. */
  data: () => ArrayBufferView
}

const SIZE = { F16: 2, F32: 4, I32: 4 } as const

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
