import { type BatchDescriptor, packKey } from './descriptor.js'
import type { RuntimeMode } from './graph-mode.js'
import type { DispatchPolicy } from './policy.js'

/** The key of a descriptor's shape: its relaxed form. */
function shapeKey(d: BatchDescriptor): number {
  return packKey(d.numTokens, undefined, false, d.hasLora, d.numActiveLoras, d.hasMultimodal)
}

/** Options of {@link StableShapePolicy}. */
export interface StableShapePolicyOptions {
  /** Consecutive sightings before a descriptor may be captured (default 3). */
  threshold?: number
}

/**
 * Captures only shapes that proved stable: a shape (padded tokens and LoRA count; request count and
 * uniformity do not make another shape) becomes eligible after it was dispatched `threshold` times in a
 * row. A graph that exists is always used. Nothing is disabled for good: a shape that was
 * {@link StableShapePolicy.forget | forgotten} (its graph evicted; batch or graph descriptor alike) earns
 * eligibility again the same way.
 */
export class StableShapePolicy implements DispatchPolicy {
  readonly threshold: number
  #last = -1
  #streak = 0
  readonly #eligible = new Set<number>()

  constructor(o: StableShapePolicyOptions = {}) {
    this.threshold = o.threshold ?? 3
  }

  shouldUseGraph(key: BatchDescriptor, graphAvailable: boolean): boolean {
    const k = shapeKey(key)
    if (k === this.#last) this.#streak++
    else {
      this.#last = k
      this.#streak = 1
    }
    if (this.#streak >= this.threshold) this.#eligible.add(k)
    return graphAvailable || this.#eligible.has(k)
  }

  selectMode(_key: BatchDescriptor, modes: readonly RuntimeMode[]): RuntimeMode {
    return modes[0]!
  }

  /** Whether `key` has earned capture. */
  isEligible(key: BatchDescriptor): boolean {
    return this.#eligible.has(shapeKey(key))
  }

  /** Drops `key`'s eligibility (e.g. its graph was evicted); it can earn it again. */
  forget(key: BatchDescriptor): void {
    const k = shapeKey(key)
    this.#eligible.delete(k)
    if (k === this.#last) this.#streak = 0
  }
}
