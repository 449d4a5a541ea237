/**
 * Batch descriptors: what a captured graph is specialised for, and the key that finds it.
 * Semantics follow vLLM's `BatchDescriptor`.
 */
import { ArgumentError } from '../errors.js'

/** What a batch looks like, as far as choosing a graph is concerned. A plain, immutable object. */
export interface BatchDescriptor {
  /** Tokens in the (padded) batch. */
  readonly numTokens: number
  /** Requests in the batch; undefined when the graph serves any number (PIECEWISE and mixed graphs). */
  readonly numReqs: number | undefined
  /** All requests have the same query length (uniform decode). */
  readonly uniform: boolean
  /** LoRA adapters are active. */
  readonly hasLora: boolean
  /** Distinct active LoRA adapters (0 without LoRA). */
  readonly numActiveLoras: number
  /** The batch carries multimodal inputs. */
  readonly hasMultimodal: boolean
}

/** Fields of {@link describeBatch}: only `numTokens` is required. */
export type BatchDescriptorInit = { numTokens: number } & Partial<Omit<BatchDescriptor, 'numTokens'>>

/** Largest `numTokens` a key can hold (2^24 - 1). */
export const MAX_KEY_TOKENS = 0xffffff
/** Largest `numReqs` a key can hold (2^16 - 2). */
export const MAX_KEY_REQS = 0xfffe
/** Largest `numActiveLoras` a key can hold. */
export const MAX_KEY_LORAS = 0xff

function checkInt(field: string, v: unknown, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw new ArgumentError(field, `an integer in ${lo}..${hi}`, v)
  return v
}

function checkBool(field: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new ArgumentError(field, 'a boolean', v)
  return v
}

/** A validated, frozen descriptor with defaults filled in (numReqs undefined, flags false, 0 LoRAs). */
export function describeBatch(init: BatchDescriptorInit): BatchDescriptor {
  if (init === null || typeof init !== 'object') throw new ArgumentError('init', 'a batch descriptor object', init)
  const d: BatchDescriptor = {
    numTokens: checkInt('numTokens', init.numTokens, 0, MAX_KEY_TOKENS),
    numReqs: init.numReqs === undefined ? undefined : checkInt('numReqs', init.numReqs, 0, MAX_KEY_REQS),
    uniform: checkBool('uniform', init.uniform ?? false),
    hasLora: checkBool('hasLora', init.hasLora ?? false),
    numActiveLoras: checkInt('numActiveLoras', init.numActiveLoras ?? 0, 0, MAX_KEY_LORAS),
    hasMultimodal: checkBool('hasMultimodal', init.hasMultimodal ?? false),
  }
  return Object.freeze(d)
}

/** The descriptor a mixed (non-uniform) batch graph serves: numReqs dropped, uniform false. */
export function relaxForMixed(d: BatchDescriptor): BatchDescriptor {
  return describeBatch({ ...d, numReqs: undefined, uniform: false })
}

/**
 * A number that identifies the descriptor: a safe integer, so usable as a Map key, equal in every process
 * (generators and clients agree on it), injective over valid descriptors. Bit layout, low to high:
 * numTokens (24), numReqs + 1 (16; 0 = undefined), uniform (1), hasLora (1), numActiveLoras (8),
 * hasMultimodal (1): 51 bits. Out-of-range or non-integer fields are an ArgumentError naming the field.
 */
export function descriptorKey(d: BatchDescriptor): number {
  if (d === null || typeof d !== 'object') throw new ArgumentError('descriptor', 'a batch descriptor', d)
  return packKey(d.numTokens, d.numReqs, d.uniform, d.hasLora, d.numActiveLoras, d.hasMultimodal)
}

const P24 = 0x1000000
const P40 = P24 * 0x10000

/** {@link descriptorKey} from fields, without building a descriptor (the dispatcher's hot path). */
export function packKey(
  numTokens: number,
  numReqs: number | undefined,
  uniform: boolean,
  hasLora: boolean,
  numActiveLoras: number,
  hasMultimodal: boolean,
): number {
  if (!(numTokens >= 0 && numTokens <= MAX_KEY_TOKENS && Number.isInteger(numTokens)))
    throw new ArgumentError('numTokens', `an integer in 0..${MAX_KEY_TOKENS}`, numTokens)
  if (numReqs !== undefined && !(numReqs >= 0 && numReqs <= MAX_KEY_REQS && Number.isInteger(numReqs))) {
    throw new ArgumentError('numReqs', `an integer in 0..${MAX_KEY_REQS} or undefined`, numReqs)
  }
  if (!(numActiveLoras >= 0 && numActiveLoras <= MAX_KEY_LORAS && Number.isInteger(numActiveLoras)))
    throw new ArgumentError('numActiveLoras', `an integer in 0..${MAX_KEY_LORAS}`, numActiveLoras)
  if (typeof uniform !== 'boolean') throw new ArgumentError('uniform', 'a boolean', uniform)
  if (typeof hasLora !== 'boolean') throw new ArgumentError('hasLora', 'a boolean', hasLora)
  if (typeof hasMultimodal !== 'boolean') throw new ArgumentError('hasMultimodal', 'a boolean', hasMultimodal)
  return packKeyUnchecked(numTokens, numReqs, uniform, hasLora, numActiveLoras, hasMultimodal)
}

/**
 * {@link packKey} for fields already known valid (the dispatcher validates its inputs once per call).
 * @internal
 */
export function packKeyUnchecked(
  numTokens: number,
  numReqs: number | undefined,
  uniform: boolean,
  hasLora: boolean,
  numActiveLoras: number,
  hasMultimodal: boolean,
): number {
  const flags = (uniform ? 1 : 0) | (hasLora ? 2 : 0) | (numActiveLoras << 2) | (hasMultimodal ? 0x400 : 0)
  return numTokens + (numReqs === undefined ? 0 : numReqs + 1) * P24 + flags * P40
}

/** The descriptor a key was made from (the inverse of {@link descriptorKey}). */
export function descriptorFromKey(key: number): BatchDescriptor {
  if (!Number.isSafeInteger(key) || key < 0) throw new ArgumentError('key', 'a descriptor key', key)
  const numTokens = key % P24
  const r = Math.floor(key / P24) % 0x10000
  const flags = Math.floor(key / P40)
  if (flags > 0x7ff) throw new ArgumentError('key', 'a descriptor key', key)
  return describeBatch({
    numTokens,
    numReqs: r === 0 ? undefined : r - 1,
    uniform: (flags & 1) !== 0,
    hasLora: (flags & 2) !== 0,
    numActiveLoras: (flags >> 2) & 0xff,
    hasMultimodal: (flags & 0x400) !== 0,
  })
}
