/**
 * The graph manager: hands a model step to graphs and back. Joins the engine (capture, replay, exec update,
 * graph-pool accounting) with the policy layer (config, dispatcher, policies, LRU registry).
 *
 * Memory: every graph allocates its temporaries stream-ordered inside capture, from the device's graph pool,
 * and all graphs replay on the manager's one stream, so CUDA lets a smaller graph reuse the physical
 * memory of a larger one; capturing largest first (warmup) makes the whole ladder cost about what the
 * largest graph costs alone.
 */

import type { Device, GraphMemoryStats } from '../cuda/device.js'
import type { Graph } from '../cuda/graph.js'
import type { Stream } from '../cuda/stream.js'
import { CublasError, CudaError, check, InputAddressError } from '../errors.js'
import { GraphConfig, type GraphConfigInit } from '../policy/config.js'
import { Dispatcher, type DispatchResult } from '../policy/dispatcher.js'
import type { DispatchPolicy } from '../policy/policy.js'
import { type Evicted, GraphRegistry } from '../policy/registry.js'
import { ManagerStats, type ManagerStatsJSON } from './manager-stats.js'
import { Progress, type ProgressSink } from './progress.js'
import { type GraphEntry, type ManagedStep, Step, type StepOwner } from './step.js'
import { parseTensorSpecs, type StepBatch, type StepSpec, type TensorSpec } from './step-spec.js'

/** The graphs of one step: held entries by dispatch result, sizes whose capture failed, sizes that were missing. */
interface StepGraphs {
  readonly entries: Map<DispatchResult, GraphEntry>
  /** Dispatch results whose capture failed: they run eagerly until recapture. */
  readonly failed: Set<DispatchResult>
  /** Graphs runs dispatched to that were missing (evicted or never captured): they ran eagerly. */
  readonly missed: Set<DispatchResult>
}

/** Options of {@link GraphManager}. */
export interface GraphManagerOptions {
  /** Graph mode, sizes and budgets (a GraphConfig or its init object; default GraphConfig.from()). */
  config?: GraphConfig | GraphConfigInit
  /** The stream every step runs on (default: a new stream of the device). */
  stream?: Stream
  /** Decides per batch whether to use a graph (default: always, as vLLM). */
  policy?: DispatchPolicy
  /**
   * Capture a missing graph inside `run` (default false: run eagerly and leave capture to warmup, as a
   * server should, so no request waits for a capture).
   */
  captureOnMiss?: boolean
  /** Where the manager reports fallbacks (out of memory, over budget); default console.warn. */
  log?: (message: string) => void
}

/** Options of {@link GraphManager.warmup}. */
export interface WarmupOptions {
  /** Draw a progress bar on a TTY and print a summary line (default false). */
  progress?: boolean
  /** Where progress goes (default process.stderr). */
  sink?: ProgressSink
}

/** What {@link GraphManager.warmup} did. */
export interface WarmupResult {
  /** Graph entries captured now. */
  captured: number
  /** Entries that fell back to eager (out of memory, over budget). */
  failed: number
  /** Wall time, seconds. */
  seconds: number
  /** Device memory the new graphs added (driver-measured), bytes. */
  bytes: number
}

/** One held graph entry. */
export interface EntryMemory {
  /** The step's name. */
  step: string
  mode: 'FULL' | 'PIECEWISE'
  /** Token rows the graph computes (its padded size), tokens. */
  numTokens: number
  /** Request rows it computes, requests. */
  numReqs: number
  /** What it is accounted for: poolBytes + execBytes, bytes. */
  bytes: number
  /** Graph-pool memory: what its capture added, plus what it inherited from evicted graphs it shares with, bytes. */
  poolBytes: number
  /** Memory its executables added, bytes. */
  execBytes: number
}

/** Memory of a manager, bytes. */
export interface ManagerMemory {
  /** The device's graph pool (all graphs on the device), from the driver. */
  graphPool: GraphMemoryStats
  /** Bytes the held entries account for (what the budget `maxMemoryBytes` limits). */
  graphBytes: number
  /** Static input and output buffers of the live steps. */
  staticBytes: number
  /** Held entries, least recently used first. */
  entries: EntryMemory[]
}

/** `stats()`: counters, latencies and memory. */
export interface ManagerSnapshot extends ManagerStatsJSON {
  /** Graph entries held now, a count. */
  graphs: number
  /** Memory by the driver's numbers and the manager's accounting, bytes. */
  memory: ManagerMemory
}

/** Headroom left free when judging whether a graph fits (the driver maps pool memory in large chunks), bytes. */
const OOM_MARGIN = 64 * 2 ** 20

/** A capture refused because its graph cannot fit in device memory (see GraphManager#instantiate). */
class OutOfMemory extends Error {}

/** Graphs just captured for one entry, the most scratch one of them allocates, and the memory they added (bytes). */
interface Captured {
  graphs: Graph[]
  scratch: number
  pool: number
  exec: number
}

/** Whether `e` (or what caused it) is the device running out of memory. */
export function isOutOfMemory(e: unknown): boolean {
  for (let c = e, depth = 0; c instanceof Error && depth < 8; c = (c as { cause?: unknown }).cause, depth++) {
    if (c instanceof OutOfMemory) return true
    if (c instanceof CudaError && c.cudaName === 'CUDA_ERROR_OUT_OF_MEMORY') return true
    if (c instanceof CublasError && c.status === 'CUBLAS_STATUS_ALLOC_FAILED') return true
  }
  return false
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`
}

/**
 * Captures, holds, replays and evicts the graphs of wrapped steps under one config and memory budget.
 * Single-threaded, like the rest of the SDK.
 */
export class GraphManager {
  readonly device: Device
  readonly stream: Stream
  readonly config: GraphConfig
  readonly captureOnMiss: boolean
  readonly #policy: DispatchPolicy | undefined
  readonly #log: (message: string) => void
  readonly #stats = new ManagerStats()
  readonly #registry: GraphRegistry<GraphEntry, GraphEntry>
  readonly #pending: Evicted<GraphEntry, GraphEntry>[] = []
  /** Every live step and its graphs: the manager is the one owner of graph entries. */
  readonly #steps = new Map<ManagedStep, StepGraphs>()
  readonly #owner: StepOwner
  #stepCount = 0

  constructor(device: Device, options: GraphManagerOptions = {}) {
    check(device !== null && typeof device === 'object' && typeof device.createStream === 'function', 'device', 'a Device', device)
    this.device = device
    this.config = options.config instanceof GraphConfig ? options.config : GraphConfig.from(options.config)
    this.stream = options.stream ?? device.createStream()
    this.captureOnMiss = options.captureOnMiss ?? false
    this.#policy = options.policy
    this.#log = options.log ?? ((m) => console.warn(`cudagraph: ${m}`))
    this.#registry = GraphRegistry.fromConfig<GraphEntry, GraphEntry>(this.config, { onEvict: (e) => this.#pending.push(e) })
    this.#owner = {
      device,
      stream: this.stream,
      stats: this.#stats,
      graphFor: (step, result) => this.#graphFor(step, result),
      hasGraph: (step, result) => this.#graphsOf(step).entries.has(result),
      inputsRebound: (step) => this.#uncheck(this.#graphsOf(step)),
      release: (step) => this.#release(step),
    }
  }

  /**
   * Wraps a model step: allocates its static buffers (sized by the specs) and builds its dispatch keys.
   * Nothing is captured until {@link GraphManager.warmup} (or a run, with captureOnMiss).
   */
  wrap<I extends Record<string, TensorSpec>, O extends Record<string, TensorSpec>>(spec: StepSpec<I, O>): Step<I, O> {
    // A step sized below the largest capture size gets the sizes that fit its buffers.
    const tokenRows =
      spec !== null && typeof spec === 'object'
        ? parseTensorSpecs('inputs', spec.inputs)
            .filter((t) => t.per === 'token')
            .map((t) => t.rows)
        : []
    const config = tokenRows.length > 0 ? this.config.cappedTo(Math.min(...tokenRows)) : this.config
    const dispatcher = new Dispatcher(config, this.#policy === undefined ? { trackCaptures: true } : { policy: this.#policy, trackCaptures: true })
    dispatcher.initializeKeys()
    const name = spec?.name ?? `step${this.#stepCount}`
    const step = new Step<I, O>(this.#owner, spec, name, dispatcher)
    this.#stepCount++
    this.#steps.set(step, { entries: new Map(), failed: new Set(), missed: new Set() })
    return step
  }

  /**
   * Captures every graph the step's dispatcher lists, largest first, each after `numWarmups` eager runs.
   * Yields to the event loop between captures (the progress bar redraws, timers run).
   */
  async warmup<I extends Record<string, TensorSpec>, O extends Record<string, TensorSpec>>(
    step: Step<I, O>,
    options: WarmupOptions = {},
  ): Promise<WarmupResult> {
    const g = this.#liveGraphs(step)
    const targets = step.dispatcher.captureTargets().filter((r) => !g.entries.has(r))
    const show = options.progress ?? false
    const progress = new Progress(
      `warming up ${step.name}`,
      targets.length,
      options.sink === undefined ? { enabled: show } : { enabled: show, sink: options.sink },
    )
    const t0 = performance.now()
    const free0 = this.device.memoryInfo().free
    let captured = 0
    let failed = 0
    for (const r of targets) {
      g.failed.delete(r)
      if (this.#capture(step, r) !== undefined) captured++
      else failed++
      progress.tick(`${r.mode} ${r.descriptor.numTokens} tokens`)
      await new Promise<void>((resolve) => setTimeout(resolve, 0))
    }
    const seconds = (performance.now() - t0) / 1000
    const bytes = Math.max(0, free0 - this.device.memoryInfo().free)
    if (show)
      progress.finish(
        `cudagraph: ${step.name}: ${captured} graphs captured in ${seconds.toFixed(2)} s, ${mib(bytes)} added${failed ? `, ${failed} fell back to eager` : ''}`,
      )
    return { captured, failed, seconds, bytes }
  }

  /**
   * Captures up to `max` graphs that runs of `step` dispatched to but found missing (evicted, or never
   * captured) and so ran eagerly: rolling graphs, for a server that captures in idle time and never inside
   * a step serving a request. Sizes whose capture failed before are skipped. The warm-up runs and the
   * capture run the forward on whatever the static buffers hold. Returns how many were captured.
   */
  captureMissed<I extends Record<string, TensorSpec>, O extends Record<string, TensorSpec>>(step: Step<I, O>, max = Infinity): number {
    const g = this.#liveGraphs(step)
    let captured = 0
    for (const r of [...g.missed]) {
      if (captured >= max) break
      g.missed.delete(r)
      if (g.entries.has(r) || g.failed.has(r)) continue
      if (this.#capture(step, r) !== undefined) captured++
    }
    return captured
  }

  /** How many sizes runs of `step` found without a graph since they were last captured (rolling graphs). */
  missedGraphs<I extends Record<string, TensorSpec>, O extends Record<string, TensorSpec>>(step: Step<I, O>): number {
    return this.#liveGraphs(step).missed.size
  }

  /**
   * Re-captures every graph `step` holds (after its inputs were rebound, or scalars its forward reads
   * changed): each executable is updated in place when the driver allows it, else re-instantiated.
   */
  recapture<I extends Record<string, TensorSpec>, O extends Record<string, TensorSpec>>(step: Step<I, O>): { updated: number; reinstantiated: number } {
    const g = this.#liveGraphs(step)
    let updated = 0
    let reinstantiated = 0
    this.stream.synchronize()
    for (const e of g.entries.values()) {
      const t0 = performance.now()
      const fresh = this.#captureGraphs(step, e.result.mode as 'FULL' | 'PIECEWISE', e.batch, false).graphs
      fresh.forEach((f, i) => {
        if (e.graphs[i]!.update(f).updatedInPlace) updated++
        else reinstantiated++
      })
      this.#stats.captureMs += performance.now() - t0
      e.addresses = [...step.inputAddresses()]
    }
    this.#uncheck(g)
    g.failed.clear()
    this.#stats.updates += updated
    this.#stats.reinstantiations += reinstantiated
    return { updated, reinstantiated }
  }

  /** Evicts graphs unused for the config's idleEvictMs; returns how many. */
  evictIdle(): number {
    const n = this.#registry.evictIdle().length
    this.#settleEvictions()
    return n
  }

  /** Evicts every graph (of every step) and trims the graph pool. */
  evictAll(): number {
    const n = this.#registry.clear().length
    this.#settleEvictions()
    return n
  }

  /** Memory by the driver's numbers and the manager's accounting. */
  memory(): ManagerMemory {
    let staticBytes = 0
    for (const s of this.#steps.keys()) staticBytes += s.staticBytes
    return {
      graphPool: this.device.graphMemory(),
      graphBytes: this.#registry.bytes,
      staticBytes,
      entries: this.#registry.entries().map(({ value: e, bytes }) => ({
        step: e.step.name,
        mode: e.result.mode as 'FULL' | 'PIECEWISE',
        numTokens: e.batch.numTokens,
        numReqs: e.batch.numReqs,
        bytes,
        poolBytes: e.poolBytes,
        execBytes: e.execBytes,
      })),
    }
  }

  /** Counters, latency percentiles and memory, as a plain object. */
  stats(): ManagerSnapshot {
    return { ...this.#stats.toJSON(), graphs: this.#registry.size, memory: this.memory() }
  }

  /** Same as {@link GraphManager.stats}, for JSON.stringify. */
  toJSON(): ManagerSnapshot {
    return this.stats()
  }

  /** Disposes every step (graphs, then static buffers) and trims the graph pool. */
  dispose(): void {
    for (const s of [...this.#steps.keys()]) s.dispose()
  }

  /** The step's graphs; an ArgumentError unless it is a live step of this manager. */
  #liveGraphs(step: ManagedStep): StepGraphs {
    const g = this.#steps.get(step)
    if (g === undefined) check(false, 'step', 'a live step of this manager', step)
    return g
  }

  /** The graphs of a step that asks (its own owner is this manager, so it is live). */
  #graphsOf(step: ManagedStep): StepGraphs {
    return this.#steps.get(step)!
  }

  /** Every graph of a step is address-checked again at its next replay (after a rebind or recapture). */
  #uncheck(g: StepGraphs): void {
    for (const e of g.entries.values()) e.checked = false
  }

  #graphFor(step: ManagedStep, result: DispatchResult): GraphEntry | undefined {
    const g = this.#graphsOf(step)
    let e = g.entries.get(result)
    if (e !== undefined) {
      this.#registry.get(e)
      this.#stats.hits++
    } else {
      this.#stats.misses++
      if (this.captureOnMiss && !g.failed.has(result)) e = this.#capture(step, result)
      if (e === undefined) {
        g.missed.add(result)
        return undefined
      }
    }
    if (!e.checked) {
      // vLLM's input-address check, on the first replay after a capture or rebind.
      const now = step.inputAddresses()
      for (let i = 0; i < now.length; i++) {
        if (e.addresses[i] !== now[i]) throw new InputAddressError(step.inputNames[i]!, e.addresses[i]!, now[i]!)
      }
      e.checked = true
    }
    return e
  }

  /** The padded batch a graph for `result` computes. */
  #batchOf(step: ManagedStep, result: DispatchResult): StepBatch {
    const d = result.descriptor
    const numReqs = Math.min(d.numReqs ?? Math.min(d.numTokens, this.config.maxNumSeqs), step.maxReqs)
    return Object.freeze({ numTokens: d.numTokens, numReqs, realTokens: d.numTokens, realReqs: numReqs, uniformDecode: d.uniform, mode: result.mode })
  }

  /**
   * Captures the entry for `result`: warm-up runs, capture, instantiate, upload, registry. Out of memory
   * evicts everything and retries once; a second failure, or a graph larger than the whole budget, logs
   * why and returns undefined (the size runs eagerly). Nothing half-made stays behind.
   */
  #capture(step: ManagedStep, result: DispatchResult): GraphEntry | undefined {
    const batch = this.#batchOf(step, result)
    const label = `${step.name} ${result.mode} ${batch.numTokens} tokens`
    const t0 = performance.now()
    let c: Captured
    try {
      c = this.#warmAndCapture(step, batch)
    } catch (e) {
      if (!isOutOfMemory(e)) throw e
      const n = this.#registry.size
      this.#registry.clear()
      this.#settleEvictions()
      this.device.trimGraphMemory()
      this.#log(`out of memory capturing ${label} (${e instanceof Error ? e.message : String(e)}); evicted ${n} graphs, retrying once`)
      try {
        c = this.#warmAndCapture(step, batch)
      } catch (e2) {
        if (!isOutOfMemory(e2)) throw e2
        return this.#fail(step, result, `out of memory again capturing ${label} (${e2 instanceof Error ? e2.message : String(e2)}); running it eagerly`)
      }
    }
    const { graphs, scratch, pool: poolBytes, exec: execBytes } = c
    const bytes = poolBytes + execBytes
    const budget = this.config.maxMemoryBytes
    // Alone, the graph needs its scratch from the pool even where it now reuses another graph's.
    const alone = Math.max(bytes, scratch + execBytes)
    if (budget !== null && alone > budget) {
      for (const g of graphs) g.dispose()
      return this.#fail(step, result, `${label} needs ${mib(alone)}, more than the whole budget of ${mib(budget)}; running it eagerly`)
    }
    const entry: GraphEntry = {
      step,
      result,
      batch,
      graphs,
      scratchBytes: scratch,
      poolBytes,
      execBytes,
      addresses: [...step.inputAddresses()],
      checked: false,
    }
    this.#registry.put(entry, entry, bytes)
    this.#graphsOf(step).entries.set(result, entry)
    step.dispatcher.markCaptured(result.descriptor)
    this.#stats.captures++
    this.#stats.captureMs += performance.now() - t0
    this.#settleEvictions()
    // Evicting others can show that this graph alone needs more pool memory than it added.
    if (!this.#registry.has(entry))
      return this.#fail(step, result, `${label} needs more than the budget of ${mib(budget ?? 0)} with the pool memory it shares; running it eagerly`)
    return entry
  }

  #fail(step: ManagedStep, result: DispatchResult, why: string): undefined {
    // What a failed capture reserved in the graph pool goes back before the eager run needs it.
    this.device.trimGraphMemory()
    this.#graphsOf(step).failed.add(result)
    this.#stats.captureFailures++
    this.#log(why)
    return undefined
  }

  /** numWarmups eager runs at the padded size, then the capture; on failure nothing is left. */
  #warmAndCapture(step: ManagedStep, batch: StepBatch): Captured {
    for (let i = 0; i < this.config.numWarmups; i++) step.callForward({ ...batch, mode: 'NONE' })
    // Eager temporaries go back to the default pool at a sync, so the capture's memory delta is the graph's.
    this.stream.synchronize()
    return this.#captureGraphs(step, batch.mode as 'FULL' | 'PIECEWISE', batch, true)
  }

  /**
   * FULL: one graph of the whole forward; PIECEWISE: one per graphable piece (or the forward without
   * pieces). With `instantiate`, each graph is checked to fit before it is instantiated and uploaded, and
   * the memory they add is measured.
   */
  #captureGraphs(step: ManagedStep, mode: 'FULL' | 'PIECEWISE', batch: StepBatch, instantiate: boolean): Captured {
    const opts = { instantiate: false, upload: false, measureMemory: false }
    const c: Captured = { graphs: [], scratch: 0, pool: 0, exec: 0 }
    const add = (fn: () => void) => {
      // An armable step's first graph begins with its gate (StepSpec.armable).
      const first = c.graphs.length === 0
      const g = this.stream.capture(() => {
        if (first) step.captureGate(batch)
        fn()
      }, opts)
      c.graphs.push(g)
      c.scratch = Math.max(c.scratch, step.scratchBytes)
      if (instantiate) this.#instantiate(g, step.scratchBytes, c)
    }
    try {
      const graphable = step.pieceGraphable
      if (mode === 'FULL' || graphable === undefined) add(() => step.callForward(batch))
      else
        graphable.forEach((ok, i) => {
          if (ok) add(() => step.runPiece(i, batch))
        })
      return c
    } catch (e) {
      for (const g of c.graphs) g.dispose()
      throw e
    }
  }

  /**
   * Instantiates and uploads `g`, adding the pool and other memory it takes to `into`. A graph whose
   * scratch cannot fit in free memory plus the pool's reserve is refused before the driver tries: an upload
   * that runs out of memory part way leaves what it mapped in the pool, beyond the reach of a trim.
   */
  #instantiate(g: Graph, scratch: number, into: Captured): void {
    const free = this.device.memoryInfo().free
    const reserved = this.device.graphMemory().reservedCurrent
    if (scratch > reserved && scratch - reserved > free - OOM_MARGIN) {
      throw new OutOfMemory(`the graph needs ${mib(scratch)} of pool scratch; ${mib(reserved)} reserved and ${mib(free)} free`)
    }
    g.instantiate()
    g.upload(this.stream)
    const added = Math.max(0, this.device.graphMemory().reservedCurrent - reserved)
    into.pool += added
    into.exec += Math.max(0, free - this.device.memoryInfo().free - added)
  }

  /**
   * Disposes what the registry evicted, trims the graph pool and measures (driver's pool attributes) what
   * came back. Graphs of one pool share physical memory, so an evicted graph may free less pool memory
   * than it added: the rest is still needed by the graphs that remain, and is accounted to the one with the
   * most scratch; if that leaves the registry over budget, least recently used entries go too. Executable
   * memory is not returned by the driver on destroy; it serves later graphs (their captures add none).
   */
  #settleEvictions(): void {
    const budget = this.config.maxMemoryBytes
    for (;;) {
      if (this.#pending.length === 0) {
        // Inherited bytes can leave the registry over budget: least recently used entries go until it is not.
        if (budget === null || this.#registry.bytes <= budget || this.#registry.size === 0) return
        this.#registry.delete(this.#registry.keys()[0]!)
        continue
      }
      const batch = this.#pending.splice(0)
      this.stream.synchronize()
      const before = this.device.graphMemory().reservedCurrent
      let declared = 0
      let pool = 0
      for (const { value: e, bytes } of batch) {
        for (const g of e.graphs) g.dispose()
        const owner = this.#steps.get(e.step)
        owner?.entries.delete(e.result)
        e.step.dispatcher.markEvicted(e.result.descriptor)
        declared += bytes
        pool += e.poolBytes
      }
      this.device.trimGraphMemory()
      // The trim also unmapped the idle graphs that remain; re-upload the one with the most scratch (the
      // most recently used among equals) so the pool holds what they need again, before any replay.
      let heir: { key: GraphEntry; bytes: number } | undefined
      for (const x of this.#registry.entries()) if (heir === undefined || x.value.scratchBytes >= heir.key.scratchBytes) heir = x
      if (heir !== undefined && heir.key.scratchBytes > 0) for (const g of heir.key.graphs) g.upload(this.stream)
      const freed = Math.max(0, before - this.device.graphMemory().reservedCurrent)
      this.#stats.evictions += batch.length
      this.#stats.evictedBytes += declared
      this.#stats.freedBytes += freed
      // Pool memory still reserved is needed by the graphs that remain (they share it): the heir's now.
      const held = pool - freed
      if (held > 0 && heir !== undefined) {
        heir.key.poolBytes += held
        // resize may evict more (onEvict pushes them to #pending): the loop settles those too.
        this.#registry.resize(heir.key, heir.bytes + held)
      }
    }
  }

  #release(step: ManagedStep): void {
    for (const e of this.#graphsOf(step).entries.values()) this.#registry.delete(e)
    this.#settleEvictions()
    this.#steps.delete(step)
  }
}
