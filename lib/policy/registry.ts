/**
 * The graph cache: least-recently-used eviction by count, by bytes and by idle time. Entries declare their
 * bytes; the owner (the graph manager) frees a graph in `onEvict`.
 */
import { ArgumentError, CapacityError } from '../errors.js'
import type { GraphConfig } from './config.js'

/** Why an entry left the registry. */
export type EvictReason = 'count' | 'bytes' | 'idle' | 'replaced' | 'deleted' | 'cleared'

/** An entry that left the registry. */
/** What a registry holds by default: something to dispose when it is evicted (a Graph). */
export interface Releasable {
  dispose(): void
}

export interface Evicted<K, T> {
  key: K
  value: T
  /** The bytes it declared. */
  bytes: number
  reason: EvictReason
}

/** Options of {@link GraphRegistry}. */
export interface RegistryOptions<K, T> {
  /** Most entries; null = no limit. */
  maxGraphs?: number | null
  /** Most bytes over all entries; null = no limit. */
  maxMemoryBytes?: number | null
  /** Entries unused this long (ms) are evicted by put and evictIdle; null = never. */
  idleEvictMs?: number | null
  /** Called for every entry that leaves, in eviction order (least recently used first). */
  onEvict?: (e: Evicted<K, T>) => void
  /** Clock in ms (default performance.now); read only when idleEvictMs is set. */
  now?: () => number
}

interface Node<K, T> {
  key: K
  value: T
  bytes: number
  lastUsed: number
  prev: Node<K, T> | undefined
  next: Node<K, T> | undefined
}

function limit(name: string, v: number | null | undefined): number | null {
  if (v === undefined || v === null) return null
  if (!(Number.isSafeInteger(v) && v > 0)) throw new ArgumentError(name, 'a positive integer or null', v)
  return v
}

/** An LRU map of graphs with count, byte and idle budgets. */
export class GraphRegistry<T = Releasable, K = number> {
  readonly maxGraphs: number | null
  readonly maxMemoryBytes: number | null
  readonly idleEvictMs: number | null
  readonly #onEvict: ((e: Evicted<K, T>) => void) | undefined
  readonly #now: () => number
  readonly #map = new Map<K, Node<K, T>>()
  /** Least recently used end. */
  #head: Node<K, T> | undefined
  /** Most recently used end. */
  #tail: Node<K, T> | undefined
  #bytes = 0

  constructor(options: RegistryOptions<K, T> = {}) {
    this.maxGraphs = limit('maxGraphs', options.maxGraphs)
    this.maxMemoryBytes = limit('maxMemoryBytes', options.maxMemoryBytes)
    this.idleEvictMs = limit('idleEvictMs', options.idleEvictMs)
    this.#onEvict = options.onEvict
    this.#now = options.now ?? (() => performance.now())
  }

  /** A registry with the budgets of `config`. */
  static fromConfig<T = Releasable, K = number>(config: GraphConfig, options: Pick<RegistryOptions<K, T>, 'onEvict' | 'now'> = {}): GraphRegistry<T, K> {
    return new GraphRegistry<T, K>({ ...options, maxGraphs: config.maxGraphs, maxMemoryBytes: config.maxMemoryBytes, idleEvictMs: config.idleEvictMs })
  }

  /** Entries held. */
  get size(): number {
    return this.#map.size
  }

  /** Bytes held (the sum of the entries' declared bytes). */
  get bytes(): number {
    return this.#bytes
  }

  /** Whether `key` is held (does not mark it used). */
  has(key: K): boolean {
    return this.#map.has(key)
  }

  /** The value of `key` without marking it used. */
  peek(key: K): T | undefined {
    return this.#map.get(key)?.value
  }

  /** The value of `key`, marked most recently used; undefined when absent. */
  get(key: K): T | undefined {
    const n = this.#map.get(key)
    if (n === undefined) return undefined
    if (n !== this.#tail) {
      this.#unlink(n)
      this.#append(n)
    }
    if (this.idleEvictMs !== null) n.lastUsed = this.#now()
    return n.value
  }

  /**
   * Stores `value` under `key`, declaring `bytes`, as most recently used; then evicts least recently used
   * entries (never this one) until within budget, and idle ones. Returns what was evicted (also passed
   * to onEvict). An entry larger than maxMemoryBytes is a CapacityError and changes nothing.
   */
  put(key: K, value: T, bytes: number): Evicted<K, T>[] {
    if (!(Number.isSafeInteger(bytes) && bytes >= 0)) throw new ArgumentError('bytes', 'a non-negative integer', bytes)
    if (this.maxMemoryBytes !== null && bytes > this.maxMemoryBytes) {
      throw new CapacityError(`entry of ${bytes} bytes exceeds the registry's whole budget of ${this.maxMemoryBytes} bytes; nothing was evicted`)
    }
    const old = this.#map.get(key)
    this.#checkTotal(bytes - (old?.bytes ?? 0))
    const evicted: Evicted<K, T>[] = []
    if (old) this.#remove(old, 'replaced', evicted)
    const node: Node<K, T> = { key, value, bytes, lastUsed: this.idleEvictMs !== null ? this.#now() : 0, prev: undefined, next: undefined }
    this.#map.set(key, node)
    this.#append(node)
    this.#bytes += bytes
    while (this.#head !== node && this.maxGraphs !== null && this.#map.size > this.maxGraphs) this.#remove(this.#head!, 'count', evicted)
    while (this.#head !== node && this.maxMemoryBytes !== null && this.#bytes > this.maxMemoryBytes) this.#remove(this.#head!, 'bytes', evicted)
    if (this.idleEvictMs !== null) this.#evictIdle(node.lastUsed, evicted, node)
    return evicted
  }

  /**
   * Changes the bytes `key` declares (without marking it used), then evicts least recently used entries
   * (never this one) while over the byte budget. Returns what was evicted.
   */
  resize(key: K, bytes: number): Evicted<K, T>[] {
    if (!(Number.isSafeInteger(bytes) && bytes >= 0)) throw new ArgumentError('bytes', 'a non-negative integer', bytes)
    const n = this.#map.get(key)
    if (n === undefined) throw new ArgumentError('key', 'a key in the registry', key)
    this.#checkTotal(bytes - n.bytes)
    this.#bytes += bytes - n.bytes
    n.bytes = bytes
    const evicted: Evicted<K, T>[] = []
    while (this.maxMemoryBytes !== null && this.#bytes > this.maxMemoryBytes && this.#head !== undefined) {
      const victim = this.#head === n ? n.next : this.#head
      if (victim === undefined) break
      this.#remove(victim, 'bytes', evicted)
    }
    return evicted
  }

  /** Entries with their declared bytes, least recently used first. */
  entries(): { key: K; value: T; bytes: number }[] {
    const out: { key: K; value: T; bytes: number }[] = []
    for (let n = this.#head; n; n = n.next) out.push({ key: n.key, value: n.value, bytes: n.bytes })
    return out
  }

  /** Removes `key` (reported to onEvict as 'deleted'); returns whether it was there. */
  delete(key: K): boolean {
    const n = this.#map.get(key)
    if (n) this.#remove(n, 'deleted', [])
    return n !== undefined
  }

  /** Evicts entries unused for idleEvictMs as of `now`; returns them. */
  evictIdle(now: number = this.#now()): Evicted<K, T>[] {
    const evicted: Evicted<K, T>[] = []
    if (this.idleEvictMs !== null) this.#evictIdle(now, evicted, undefined)
    return evicted
  }

  /** Removes every entry (reported as 'cleared'). */
  clear(): Evicted<K, T>[] {
    const evicted: Evicted<K, T>[] = []
    while (this.#head) this.#remove(this.#head, 'cleared', evicted)
    return evicted
  }

  /** Keys from least to most recently used. */
  keys(): K[] {
    return this.entries().map((e) => e.key)
  }

  /**
   * The total is kept exact: a change that would take it past 2^53−1 bytes (where doubles stop counting
   * every byte, and sums and differences drift) is a CapacityError and changes nothing.
   */
  #checkTotal(delta: number): void {
    if (this.#bytes + delta > Number.MAX_SAFE_INTEGER) {
      throw new CapacityError(`the registry would hold more than ${Number.MAX_SAFE_INTEGER} bytes (2^53-1) in all; nothing was changed`)
    }
  }

  #evictIdle(now: number, evicted: Evicted<K, T>[], keep: Node<K, T> | undefined): void {
    // Least recently used first: stop at the first entry still fresh.
    while (this.#head && this.#head !== keep && now - this.#head.lastUsed > this.idleEvictMs!) this.#remove(this.#head, 'idle', evicted)
  }

  #remove(n: Node<K, T>, reason: EvictReason, evicted: Evicted<K, T>[]): void {
    this.#unlink(n)
    this.#map.delete(n.key)
    this.#bytes -= n.bytes
    const e: Evicted<K, T> = { key: n.key, value: n.value, bytes: n.bytes, reason }
    evicted.push(e)
    this.#onEvict?.(e)
  }

  #unlink(n: Node<K, T>): void {
    if (n.prev) n.prev.next = n.next
    else this.#head = n.next
    if (n.next) n.next.prev = n.prev
    else this.#tail = n.prev
    n.prev = n.next = undefined
  }

  #append(n: Node<K, T>): void {
    n.prev = this.#tail
    if (this.#tail) this.#tail.next = n
    else this.#head = n
    this.#tail = n
  }
}
