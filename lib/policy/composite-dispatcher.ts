import { describeBatch } from './descriptor.js'
import type { DispatcherLike, DispatchOptions, DispatchResult } from './dispatcher.js'

/** A composite decision: which member dispatcher made it (undefined when none chose a graph). */
export interface CompositeResult extends DispatchResult {
  readonly source: string | undefined
}

/**
 * Chains dispatchers by priority: the highest-priority member that picks a graph wins; if none does, the
 * batch runs eagerly. Ties keep the order members were added in.
 */
export class CompositeDispatcher implements DispatcherLike {
  readonly #members: { name: string; dispatcher: DispatcherLike; priority: number }[] = []

  /** Adds (or replaces) member `name`. Higher priority is asked first. */
  add(name: string, dispatcher: DispatcherLike, priority = 0): this {
    this.remove(name)
    this.#members.push({ name, dispatcher, priority })
    this.#members.sort((a, b) => b.priority - a.priority)
    return this
  }

  /** Removes member `name`; returns whether it was there. */
  remove(name: string): boolean {
    const i = this.#members.findIndex((m) => m.name === name)
    if (i >= 0) this.#members.splice(i, 1)
    return i >= 0
  }

  /** Member names, highest priority first. */
  get names(): string[] {
    return this.#members.map((m) => m.name)
  }

  dispatch(numTokens: number, options?: DispatchOptions): CompositeResult {
    for (const m of this.#members) {
      const r = m.dispatcher.dispatch(numTokens, options)
      if (r.mode !== 'NONE') return { mode: r.mode, descriptor: r.descriptor, source: m.name }
    }
    return { mode: 'NONE', descriptor: describeBatch({ numTokens }), source: undefined }
  }
}
