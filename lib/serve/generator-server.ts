/**
 * The generator (seed 004's server, with continuous batching): owns the engine, accepts clients on a
 * Unix socket, batches their requests into shared steps ({@link BatchScheduler}) and streams tokens back
 * as they are made. Frames follow docs/protocol.md. A client that breaks the protocol, reads too slowly
 * or goes away loses only its own requests (their KV slots are freed at once); everyone else is served.
 */
import { existsSync, unlinkSync } from 'node:fs'
import { connect, createServer, type Server, type Socket } from 'node:net'
import type { ManagerSnapshot } from '../manager/graph-manager.js'
import { BatchScheduler, type GenerationEngine, type GenerationRequest, type SchedulerSink } from './batch-scheduler.js'
import { AddressInUseError } from './errors.js'
import { type RequestOutcome, ServerMetrics } from './server-metrics.js'
import {
  type ClientMessage,
  DEFAULT_MAX_FRAME_BYTES,
  ErrorCode,
  encode,
  encodeTokens,
  type FinishReason,
  FrameDecoder,
  FrameError,
  MessageType,
} from './wire-protocol.js'

/** Rolling graphs: an engine that can capture, in idle time, the graphs its steps found missing. */
export interface RollingGraphs {
  /** Graphs steps found missing since they were last captured. */
  readonly missedGraphs: number
  /** Captures up to `max` of them; returns how many. */
  captureMissed(max: number): number
  /** The graph manager, whose stats /metrics reports. */
  readonly manager: { stats(): ManagerSnapshot }
}

/** Options of {@link GeneratorServer.listen}. */
export interface GeneratorServerOptions {
  /** The Unix socket path (a stale file from a dead server is replaced; a live server is an error). */
  socketPath: string
  /** What runs the model (a DecoderRunner, or any GenerationEngine). */
  engine: GenerationEngine & Partial<RollingGraphs>
  /** Model name sent in HELLO (default `model`). */
  model?: string
  /** Requests waiting for a slot before BUSY (default 1024). */
  maxQueue?: number
  /** Requests running at once (default the engine's min(slots, maxBatch)). */
  maxRunning?: number
  /** Largest frame accepted from a client, bytes (default 1 MiB). */
  maxFrameBytes?: number
  /** Unread output a client may leave before it is dropped as a slow reader, bytes (default 4 MiB). */
  maxUnreadBytes?: number
  /** Port for GET /metrics and /healthz on 127.0.0.1 (0: any free port; undefined: no HTTP). */
  metricsPort?: number
  /** Where the server reports dropped clients and engine failures (default console.error). */
  log?: (message: string) => void
}

/** Options of {@link GeneratorServer.close}. */
export interface CloseOptions {
  /** How long running requests may go on finishing before they are cancelled, ms (default 0). */
  drainMs?: number
}

interface Served extends GenerationRequest {
  readonly id: number
  readonly conn: Connection
  readonly arrived: number
  last: number
}

class Connection {
  readonly requests = new Map<number, Served>()
  closed = false
  constructor(
    readonly socket: Socket,
    readonly decoder: FrameDecoder<ClientMessage>,
  ) {}
}

const now = () => performance.now()

/** A generator server: see the module comment. Create with {@link GeneratorServer.listen}. */
export class GeneratorServer {
  readonly socketPath: string
  readonly engine: GenerationEngine & Partial<RollingGraphs>
  readonly #scheduler: BatchScheduler<Served>
  readonly metrics: ServerMetrics
  /** The metrics port (undefined without HTTP). */
  metricsPort: number | undefined
  readonly #net: Server
  readonly #model: string
  readonly #maxFrame: number
  readonly #maxUnread: number
  readonly #log: (message: string) => void
  readonly #conns = new Set<Connection>()
  readonly #one = new Int32Array(1)
  #looping = false
  #idleCapture = false
  #closing: Promise<void> | undefined

  private constructor(o: GeneratorServerOptions) {
    this.socketPath = o.socketPath
    this.engine = o.engine
    this.#model = o.model ?? 'model'
    this.#maxFrame = o.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES
    this.#maxUnread = o.maxUnreadBytes ?? 4 << 20
    this.#log = o.log ?? ((m) => console.error(m))
    const sink: SchedulerSink<Served> = {
      token: (r, tok, index) => this.#sendToken(r, tok, index),
      done: (r, reason, n) => this.#finish(r, reason, n),
      failed: (r, e) => this.#failed(r, e),
    }
    this.#scheduler = new BatchScheduler(o.engine, sink, {
      ...(o.maxQueue !== undefined && { maxQueue: o.maxQueue }),
      ...(o.maxRunning !== undefined && { maxRunning: o.maxRunning }),
    })
    const mgr = o.engine.manager
    const graphs = mgr === undefined ? undefined : () => mgr.stats()
    this.metrics = new ServerMetrics(graphs, () => ({
      status: this.#closing === undefined ? 'ok' : 'closing',
      connections: this.#conns.size,
      running: this.running,
      queued: this.queued,
    }))
    this.#net = createServer((s) => this.#accept(s))
  }

  /** Starts a server on `options.socketPath`; resolves once it accepts connections. */
  static async listen(options: GeneratorServerOptions): Promise<GeneratorServer> {
    await removeStaleSocket(options.socketPath)
    const server = new GeneratorServer(options)
    await new Promise<void>((resolve, reject) => {
      server.#net.once('error', reject)
      server.#net.listen(options.socketPath, () => {
        server.#net.off('error', reject)
        resolve()
      })
    })
    if (options.metricsPort !== undefined) {
      try {
        server.metricsPort = await server.metrics.listen(options.metricsPort)
      } catch (e) {
        await server.close()
        throw e
      }
    }
    return server
  }

  /** Requests holding a KV slot. */
  get running(): number {
    return this.#scheduler.running
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.#scheduler.queued
  }

  /** Open client connections. */
  get connections(): number {
    return this.#conns.size
  }

  /**
   * Stops accepting, ends queued requests (DONE `shutdown`), lets running ones finish for up to
   * `drainMs`, cancels the rest (DONE `shutdown`), closes every connection, the metrics server and the
   * socket file. The engine stays the caller's to dispose.
   */
  close(options: CloseOptions = {}): Promise<void> {
    this.#closing ??= this.#shutdown(options.drainMs ?? 0)
    return this.#closing
  }

  async #shutdown(drainMs: number): Promise<void> {
    const netClosed = new Promise<void>((resolve) => this.#net.close(() => resolve()))
    this.#scheduler.cancelQueued('shutdown')
    const deadline = now() + drainMs
    while (this.#scheduler.hasWork && now() < deadline) await new Promise((r) => setTimeout(r, 5))
    this.#scheduler.cancelAll('shutdown')
    const ended = [...this.#conns].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.socket.destroyed) return resolve()
          c.socket.once('close', () => resolve())
          c.socket.end()
          // A client that does not read its last frames is not waited for.
          setTimeout(() => c.socket.destroy(), 1000).unref()
        }),
    )
    await Promise.all(ended)
    await netClosed
    await this.metrics.close()
    // libuv unlinks the socket on close; this covers a path replaced meanwhile.
    if (existsSync(this.socketPath)) {
      try {
        unlinkSync(this.socketPath)
      } catch {
        // gone between the check and the unlink
      }
    }
  }

  #accept(socket: Socket): void {
    if (this.#closing !== undefined) {
      socket.destroy()
      return
    }
    const conn = new Connection(socket, FrameDecoder.forServer(this.#maxFrame))
    this.#conns.add(conn)
    const e = this.engine
    socket.write(
      encode({
        type: MessageType.HELLO,
        vocab: e.vocab,
        maxSeqLen: e.maxSeqLen,
        maxBatch: this.#scheduler.maxRunning,
        maxFrameBytes: this.#maxFrame,
        model: this.#model,
      }),
    )
    socket.on('data', (chunk: Buffer) => this.#receive(conn, chunk))
    socket.on('error', () => this.#drop(conn, 'disconnected'))
    socket.on('close', () => this.#drop(conn, 'disconnected'))
  }

  #receive(conn: Connection, chunk: Buffer): void {
    if (conn.closed) return
    let msgs: ClientMessage[]
    try {
      msgs = conn.decoder.push(chunk)
    } catch (e) {
      if (!(e instanceof FrameError)) throw e
      this.#sendError(conn, 0, e.errorCode, e.message)
      conn.socket.end()
      this.#drop(conn, 'cancelled')
      return
    }
    for (const m of msgs) {
      if (m.type === MessageType.GENERATE) this.#generate(conn, m.requestId, m.maxNewTokens, m.tokens)
      else if (m.type === MessageType.CANCEL) {
        const r = conn.requests.get(m.requestId)
        // A CANCEL for a request that already ended crossed its DONE: nothing to do.
        if (r !== undefined) this.#scheduler.cancel(r, 'cancelled')
      } else if (m.type === MessageType.PING) conn.socket.write(encode({ type: MessageType.PONG, nonce: m.nonce }))
    }
  }

  #generate(conn: Connection, id: number, maxNewTokens: number, prompt: Int32Array): void {
    const refuse = (code: number, outcome: RequestOutcome, message: string) => {
      this.#sendError(conn, id, code, message)
      this.metrics.requestEnded(outcome)
    }
    if (this.#closing !== undefined) {
      refuse(ErrorCode.SHUTTING_DOWN, 'shutdown', 'the server is shutting down')
      return
    }
    if (id === 0 || conn.requests.has(id)) {
      refuse(ErrorCode.INVALID_REQUEST, 'invalid', `request id ${id} is ${id === 0 ? 'reserved' : 'already running on this connection'}`)
      return
    }
    const why = this.#scheduler.invalid(prompt, maxNewTokens)
    if (why !== undefined) {
      refuse(ErrorCode.INVALID_REQUEST, 'invalid', why)
      return
    }
    const r: Served = { id, conn, prompt, maxNewTokens, arrived: now(), last: 0 }
    if (!this.#scheduler.submit(r)) {
      refuse(ErrorCode.BUSY, 'busy', `the queue is full (${this.#scheduler.maxQueue} waiting)`)
      return
    }
    conn.requests.set(id, r)
    this.#wake()
  }

  #sendToken(r: Served, tok: number, index: number): void {
    const t = now()
    this.metrics.token(index === 0, (t - (index === 0 ? r.arrived : r.last)) / 1000)
    r.last = t
    const conn = r.conn
    if (conn.closed) return
    this.#one[0] = tok
    conn.socket.write(encodeTokens(r.id, process.hrtime.bigint(), this.#one, 1))
    if (conn.socket.writableLength > this.#maxUnread) {
      this.#log(`cudagraph serve: dropping a client that left ${conn.socket.writableLength} bytes unread (limit ${this.#maxUnread})`)
      this.#sendError(conn, 0, ErrorCode.SLOW_READER, `more than ${this.#maxUnread} bytes unread; closing`)
      this.#drop(conn, 'disconnected')
      // Its requests are gone, so nothing more is queued for it: what is pending (the error last) may
      // still drain if it reads now; a client that never does is cut after a second.
      conn.socket.end()
      setTimeout(() => conn.socket.destroy(), 1000).unref()
    }
  }

  #finish(r: Served, reason: FinishReason, generated: number): void {
    const conn = r.conn
    if (conn.requests.get(r.id) === r) conn.requests.delete(r.id)
    if (conn.closed) return
    this.metrics.requestEnded(reason)
    conn.socket.write(encode({ type: MessageType.DONE, requestId: r.id, reason, generated }))
  }

  #failed(r: Served, e: unknown): void {
    this.metrics.requestEnded('error')
    const msg = e instanceof Error ? e.message : String(e)
    this.#log(`cudagraph serve: a step failed (${msg}); its requests end with INTERNAL`)
    r.conn.requests.delete(r.id)
    if (!r.conn.closed) this.#sendError(r.conn, r.id, ErrorCode.INTERNAL, `the step failed: ${msg}`)
  }

  #sendError(conn: Connection, id: number, code: number, message: string): void {
    if (!conn.socket.destroyed) conn.socket.write(encode({ type: MessageType.ERROR, requestId: id, code, message }))
  }

  /** Forgets `conn`: its requests end now (slots freed), nothing more is written to it. */
  #drop(conn: Connection, outcome: RequestOutcome): void {
    if (conn.closed) return
    conn.closed = true
    this.#conns.delete(conn)
    for (const r of conn.requests.values()) {
      this.#scheduler.cancel(r, 'cancelled')
      this.metrics.requestEnded(outcome)
    }
    conn.requests.clear()
  }

  /** Starts the step loop if there is work and it is not running. */
  #wake(): void {
    if (this.#looping) return
    this.#looping = true
    setImmediate(this.#tick)
  }

  /** One scheduler step, then the event loop (new frames, cancels) before the next. */
  readonly #tick = (): void => {
    const s = this.#scheduler
    if (!s.hasWork) {
      this.#looping = false
      this.#captureWhileIdle()
      return
    }
    const t0 = now()
    const r = s.step()
    this.metrics.step(r, (now() - t0) / 1000)
    setImmediate(this.#tick)
  }

  /**
   * Rolling graphs: with no request in flight, captures the graphs steps found missing, one per turn of
   * the event loop, stopping as soon as a request arrives. Never inside a step that serves one.
   */
  #captureWhileIdle(): void {
    const e = this.engine
    if (this.#idleCapture || e.captureMissed === undefined || !(e.missedGraphs! > 0)) return
    this.#idleCapture = true
    const turn = () => {
      if (this.#scheduler.hasWork || this.#closing !== undefined || !(e.missedGraphs! > 0)) {
        this.#idleCapture = false
        return
      }
      try {
        e.captureMissed!(1)
      } catch (err) {
        this.#log(`cudagraph serve: idle capture failed: ${err instanceof Error ? err.message : String(err)}`)
        this.#idleCapture = false
        return
      }
      setImmediate(turn)
    }
    setImmediate(turn)
  }
}

/** Removes a socket file nobody listens on; throws if a server answers there. */
async function removeStaleSocket(path: string): Promise<void> {
  if (!existsSync(path)) return
  const live = await new Promise<boolean>((resolve) => {
    const s = connect(path)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
  if (live) throw new AddressInUseError(`a server is already listening on ${path}`)
  unlinkSync(path)
}
