/**
 * The generator's metrics in Prometheus text format (prom-client), served with a health check on a small
 * HTTP server: `GET /metrics` and `GET /healthz` (also `/health`, and both on the OpenAI HTTP port).
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import type { ManagerSnapshot } from '../manager/graph-manager.js'
import type { StepReport } from './batch-scheduler.js'
import type { FinishReason } from './wire-protocol.js'

/** How a request ended, as the `outcome` label of `cudagraph_requests_total`. */
export type RequestOutcome = FinishReason | 'busy' | 'invalid' | 'error' | 'disconnected'
const OUTCOMES: readonly RequestOutcome[] = ['length', 'context', 'cancelled', 'shutdown', 'stop', 'busy', 'invalid', 'error', 'disconnected']

/** Why the server closed a client's connection, as the `reason` label of `cudagraph_connections_dropped_total`. */
export type DropReason = 'slow_reader' | 'idle' | 'frame_timeout' | 'protocol'
const DROP_REASONS: readonly DropReason[] = ['slow_reader', 'idle', 'frame_timeout', 'protocol']
/** Buckets of the step and engine histograms, seconds. */
const STEP_BUCKETS = [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]

/** What the health check reports. */
export interface Health {
  status: 'ok' | 'closing'
  connections: number
  running: number
  queued: number
}

/** The counters, gauges and histograms of one generator. */
export class ServerMetrics {
  readonly registry = new Registry()
  readonly #requests: Record<RequestOutcome, Counter.Internal>
  readonly #tokens: Counter
  readonly #promptTokens: Counter
  readonly #ttft: Histogram
  readonly #interToken: Histogram
  readonly #batch: Histogram
  readonly #step: Histogram
  readonly #engine: Histogram
  readonly #refused: Counter
  readonly #dropped: Record<DropReason, Counter.Internal>
  readonly #httpRequests: Counter
  readonly #httpSeconds: Histogram
  #http: Server | undefined

  /**
   * `graphs` reads the graph manager's stats at scrape time (not on the serving path); `health` the
   * server's state.
   */
  constructor(
    graphs: (() => ManagerSnapshot) | undefined,
    readonly health: () => Health,
  ) {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry, prefix: 'cudagraph_process_' })
    const requests = new Counter({ name: 'cudagraph_requests_total', help: 'Requests by how they ended', labelNames: ['outcome'], registers })
    this.#requests = Object.fromEntries(OUTCOMES.map((o) => [o, requests.labels({ outcome: o })])) as Record<RequestOutcome, Counter.Internal>
    this.#tokens = new Counter({ name: 'cudagraph_generated_tokens_total', help: 'Tokens generated and sent', registers })
    this.#httpRequests = new Counter({
      name: 'cudagraph_http_requests_total',
      help: 'HTTP requests by route and status',
      labelNames: ['route', 'status'],
      registers,
    })
    this.#httpSeconds = new Histogram({
      name: 'cudagraph_http_request_duration_seconds',
      help: 'HTTP requests from arrival to the end of the response (a stream included), by route and status',
      labelNames: ['route', 'status'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60],
      registers,
    })
    this.#promptTokens = new Counter({ name: 'cudagraph_prompt_tokens_total', help: 'Prompt tokens prefilled', registers })
    this.#ttft = new Histogram({
      name: 'cudagraph_time_to_first_token_seconds',
      help: 'From a request arriving to its first token being sent',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
      registers,
    })
    this.#interToken = new Histogram({
      name: 'cudagraph_inter_token_seconds',
      help: 'Between two tokens of one request being sent',
      buckets: [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1],
      registers,
    })
    this.#batch = new Histogram({
      name: 'cudagraph_decode_batch_size',
      help: 'Requests per decode step',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers,
    })
    this.#step = new Histogram({
      name: 'cudagraph_step_seconds',
      help: 'One scheduler step (prefill and decode, tokens sent)',
      buckets: STEP_BUCKETS,
      registers,
    })
    this.#engine = new Histogram({
      name: 'cudagraph_engine_seconds',
      help: "The engine's part of a step: its prefill and decode calls (the GPU work and their host side); the rest of the step is the server's",
      buckets: STEP_BUCKETS,
      registers,
    })
    this.#refused = new Counter({ name: 'cudagraph_connections_refused_total', help: 'Connections refused at the connection limit', registers })
    const dropped = new Counter({
      name: 'cudagraph_connections_dropped_total',
      help: 'Connections the server closed: slow readers, idle ones, frames not finished in time, protocol errors',
      labelNames: ['reason'],
      registers,
    })
    this.#dropped = Object.fromEntries(DROP_REASONS.map((r) => [r, dropped.labels({ reason: r })])) as Record<DropReason, Counter.Internal>
    new Gauge({
      name: 'cudagraph_requests',
      help: 'Requests holding a KV slot (running) or waiting for one (queued)',
      labelNames: ['state'],
      registers,
      collect() {
        const h = health()
        this.set({ state: 'running' }, h.running)
        this.set({ state: 'queued' }, h.queued)
      },
    })
    new Gauge({
      name: 'cudagraph_connections',
      help: 'Open client connections',
      registers,
      collect() {
        this.set(health().connections)
      },
    })
    if (graphs !== undefined) this.#graphMetrics(graphs)
  }

  /** A connection was refused at the connection limit. */
  connectionRefused(): void {
    this.#refused.inc()
  }

  /** The server closed a connection for `reason`. */
  connectionDropped(reason: DropReason): void {
    this.#dropped[reason].inc()
  }

  /** A request ended (or was refused) with `outcome`. */
  requestEnded(outcome: RequestOutcome): void {
    this.#requests[outcome].inc()
  }

  /** A token was sent, `seconds` after the request arrived (first) or after its previous token. */
  token(first: boolean, seconds: number): void {
    this.#tokens.inc()
    ;(first ? this.#ttft : this.#interToken).observe(seconds)
  }

  /** A scheduler step ran in `seconds`. */
  step(r: StepReport, seconds: number): void {
    if (r.decodeReqs > 0) this.#batch.observe(r.decodeReqs)
    if (r.prefillTokens > 0) this.#promptTokens.inc(r.prefillTokens)
    this.#step.observe(seconds)
    this.#engine.observe(r.engineMs / 1000)
  }

  /** An HTTP request to `route` ended with `status` after `seconds`. */
  httpRequest(route: string, status: number, seconds: number): void {
    const labels = { route, status: String(status) }
    this.#httpRequests.inc(labels)
    this.#httpSeconds.observe(labels, seconds)
  }

  /** `GET /metrics` or `GET /health`: the status, content type and body to answer with. */
  async scrape(what: 'metrics' | 'health'): Promise<{ status: number; contentType: string; body: string }> {
    if (what === 'metrics') return { status: 200, contentType: this.registry.contentType, body: await this.text() }
    const h = this.health()
    return { status: h.status === 'ok' ? 200 : 503, contentType: 'application/json', body: JSON.stringify(h) }
  }

  /** The Prometheus text of every metric. */
  text(): Promise<string> {
    return this.registry.metrics()
  }

  /** Serves `/metrics` and `/healthz` on `host:port` (port 0: any free one); resolves to the port. */
  async listen(port: number, host = '127.0.0.1'): Promise<number> {
    const http = createServer((req, res) => {
      const what =
        req.method !== 'GET' ? undefined : req.url === '/metrics' ? 'metrics' : req.url === '/healthz' || req.url === '/health' ? 'health' : undefined
      if (what === undefined) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics or /healthz\n')
        return
      }
      this.scrape(what).then(
        (r) => res.writeHead(r.status, { 'content-type': r.contentType }).end(r.body),
        (e: unknown) => res.writeHead(500).end(String(e)),
      )
    })
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject)
      http.listen(port, host, () => resolve())
    })
    this.#http = http
    return (http.address() as AddressInfo).port
  }

  /** Stops the HTTP server (open scrapes are cut). */
  async close(): Promise<void> {
    const http = this.#http
    this.#http = undefined
    if (http === undefined) return
    http.closeAllConnections()
    await new Promise<void>((resolve) => http.close(() => resolve()))
  }

  /** Graph counters and memory, read from the manager when scraped. */
  #graphMetrics(graphs: () => ManagerSnapshot): void {
    const registers = [this.registry]
    let snap: ManagerSnapshot | undefined
    // One snapshot per scrape: the first collector reads it, the others reuse it.
    const read = (first: boolean) => {
      if (first || snap === undefined) snap = graphs()
      return snap
    }
    const seen: Record<string, number> = {}
    const counter = (name: string, help: string, field: 'hits' | 'misses' | 'captures' | 'evictions' | 'replays' | 'eagerRuns', first = false) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          const v = read(first)[field]
          this.inc(Math.max(0, v - (seen[field] ?? 0)))
          seen[field] = v
        },
      })
    counter('cudagraph_graph_hits_total', 'Runs that found their graph', 'hits', true)
    counter('cudagraph_graph_misses_total', 'Runs whose graph was missing (they ran eagerly)', 'misses')
    counter('cudagraph_graph_captures_total', 'Graphs captured', 'captures')
    counter('cudagraph_graph_evictions_total', 'Graphs evicted', 'evictions')
    counter('cudagraph_graph_replays_total', 'Graph replays', 'replays')
    counter('cudagraph_eager_runs_total', 'Steps run eagerly', 'eagerRuns')
    new Gauge({
      name: 'cudagraph_graphs',
      help: 'Graphs held',
      registers,
      collect() {
        this.set(read(false).graphs)
      },
    })
    new Gauge({
      name: 'cudagraph_graph_memory_bytes',
      help: 'Graph memory: what held graphs account for (held), and the device graph pool (used, reserved, high_water)',
      labelNames: ['kind'],
      registers,
      collect() {
        const m = read(false).memory
        this.set({ kind: 'held' }, m.graphBytes)
        this.set({ kind: 'used' }, m.graphPool.usedCurrent)
        this.set({ kind: 'reserved' }, m.graphPool.reservedCurrent)
        this.set({ kind: 'high_water' }, m.graphPool.usedHigh)
      },
    })
  }
}
