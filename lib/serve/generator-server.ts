/**
 * The generator server (continuous batching): owns the engine, accepts clients on a
 * Unix socket, batches their requests into shared steps ({@link BatchScheduler}) and streams tokens back
 * as they are made. Frames follow docs/protocol.md. A client that breaks the protocol, reads too slowly
 * or goes away loses only its own requests (their KV slots are freed at once); everyone else is served.
 */
import { existsSync, unlinkSync } from 'node:fs'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { ArgumentError, check } from '../errors.js'
import type { ManagerSnapshot } from '../manager/graph-manager.js'
import { TextOutput } from '../util/text-output.js'
import { checkSampling, checkStops, promptTokens, requestError } from '../util/text-request.js'
import { BatchScheduler, type GenerationEngine, type GenerationRequest, type SchedulerSink, type StepReport } from './batch-scheduler.js'
import { AddressInUseError } from './errors.js'
import { HttpBridge, type TextSink, type TextSubmission } from './http-bridge.js'
import type { OpenAiHttpOptions } from './openai-http.js'
import { type DropReason, type RequestOutcome, ServerMetrics } from './server-metrics.js'
import type { TextRequest, TextSetup } from './text.js'
import {
  type ClientMessage,
  DEFAULT_MAX_FRAME_BYTES,
  ErrorCode,
  encode,
  encodeText,
  encodeTokens,
  Feature,
  type FinishReason,
  FrameDecoder,
  FrameError,
  type GenerateTextMessage,
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
  /** The tokenizer and end-of-sequence ids: with them the server takes text requests (GENERATE_TEXT). */
  text?: TextSetup
  /** Requests waiting for a slot before BUSY (default 1024). */
  maxQueue?: number
  /** Requests running at once (default the engine's min(slots, maxBatch)). */
  maxRunning?: number
  /** Largest frame accepted from a client, bytes, 64..64 MiB (default 1 MiB). */
  maxFrameBytes?: number
  /**
   * Output a client may leave unread before it is dropped as a slow reader, bytes, 64 KiB..1 GiB (default
   * 4 MiB). Every byte queued to it counts: tokens, DONE, ERROR and PONG frames alike.
   */
  maxUnreadBytes?: number
  /** Open connections at most, 1..65536; more are refused at once (default 1024). */
  maxConnections?: number
  /** A connection with no request running that sends nothing this long is closed, ms (default 60000). */
  idleTimeoutMs?: number
  /** A frame whose first bytes arrived must be complete within this long, or the connection is closed, ms (default 10000). */
  frameTimeoutMs?: number
  /** Port for GET /metrics and /healthz on 127.0.0.1 (0: any free port; undefined: no HTTP). */
  metricsPort?: number
  /** The OpenAI-compatible HTTP endpoint (needs `text`); undefined: none. */
  http?: OpenAiHttpOptions
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
  /** The socket connection it came on, or undefined for another front end's request (`sink`). */
  readonly conn: Connection | undefined
  /** Another front end's receiver (the OpenAI HTTP endpoint). */
  readonly sink?: TextSink | undefined
  readonly arrived: number
  last: number
  /** A text request's output (TEXT frames, or the sink's text, instead of TOKENS). */
  readonly text?: TextOutput | undefined
}

class Connection {
  readonly requests = new Map<number, Served>()
  closed = false
  /** When the client last sent bytes, ms (performance.now()). */
  lastHeard = now()
  /** When the frame it is sending began to arrive, ms; 0 when it is between frames. */
  frameStarted = 0
  /**
   * Output not yet handed to the socket, contiguous: frames made while a write is in flight (or during a
   * step) wait here and go out as one write. A client has at most one write in flight, so what it leaves
   * unread costs its bytes, not a write request per frame.
   */
  out: Buffer | undefined
  outBytes = 0
  /** Bytes of the write in flight (0: none). */
  writing = 0
  constructor(
    readonly socket: Socket,
    readonly decoder: FrameDecoder<ClientMessage>,
  ) {}
}

/** Most bytes of a model name in HELLO. */
const MAX_MODEL_NAME_BYTES = 1024

/** The options with defaults, each checked against its documented range (an ArgumentError naming it). */
function serverLimits(o: GeneratorServerOptions) {
  check(o !== null && typeof o === 'object', 'options', 'GeneratorServer options', o)
  check(typeof o.socketPath === 'string' && o.socketPath.length > 0, 'options.socketPath', 'a Unix socket path', o.socketPath)
  const e = o.engine
  check(e !== null && typeof e === 'object' && typeof e.prefillBatch === 'function', 'options.engine', 'a GenerationEngine', e)
  check(Number.isInteger(e.vocab) && e.vocab >= 1 && e.vocab <= 0x7fffffff, 'options.engine.vocab', 'an integer in 1..2147483647', e.vocab)
  check(Number.isInteger(e.maxSeqLen) && e.maxSeqLen >= 1 && e.maxSeqLen <= 0x7fffffff, 'options.engine.maxSeqLen', 'an integer in 1..2147483647', e.maxSeqLen)
  const int = (name: keyof GeneratorServerOptions, lo: number, hi: number, dflt: number): number => {
    const v = o[name] ?? dflt
    check(typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi, `options.${name}`, `an integer in ${lo}..${hi}`, v)
    return v
  }
  const model = o.model ?? 'model'
  const t = o.text
  const h = o.http
  check(
    h === undefined || (h !== null && typeof h === 'object' && Number.isInteger(h.port) && h.port >= 0 && h.port <= 65535),
    'options.http',
    'undefined or { port: 0..65535, host?, ... }',
    h,
  )
  check(h === undefined || t !== undefined, 'options.http', 'no HTTP endpoint without options.text (it speaks text: give the tokenizer)', h)
  check(
    t === undefined || (t !== null && typeof t.codec?.encode === 'function' && typeof t.codec.detokenizer === 'function' && t.eosTokenIds instanceof Set),
    'options.text',
    'undefined or { codec: a TextCodec (encode, renderChat, detokenizer), eosTokenIds: a Set }',
    t,
  )
  check(
    typeof model === 'string' && Buffer.byteLength(model) <= MAX_MODEL_NAME_BYTES,
    'options.model',
    `a name of at most ${MAX_MODEL_NAME_BYTES} bytes`,
    model.length > 64 ? `${model.length} characters` : model,
  )
  return {
    model,
    text: o.text,
    maxFrameBytes: int('maxFrameBytes', 64, 64 << 20, DEFAULT_MAX_FRAME_BYTES),
    maxUnreadBytes: int('maxUnreadBytes', 64 << 10, 1 << 30, 4 << 20),
    maxConnections: int('maxConnections', 1, 65536, 1024),
    idleTimeoutMs: int('idleTimeoutMs', 1, 0x7fffffff, 60_000),
    frameTimeoutMs: int('frameTimeoutMs', 1, 0x7fffffff, 10_000),
  }
}

/** How long a closed connection may take to drain its last frames before it is cut, ms. */
const CLOSE_GRACE_MS = 1000

const now = () => performance.now()

/** A generator server: see the module comment. Create with {@link GeneratorServer.listen}. */
export class GeneratorServer {
  readonly socketPath: string
  readonly engine: GenerationEngine & Partial<RollingGraphs>
  readonly #scheduler: BatchScheduler<Served>
  readonly metrics: ServerMetrics
  /** The metrics port (undefined without HTTP). */
  metricsPort: number | undefined
  /** The OpenAI endpoint's port (undefined without it). */
  httpPort: number | undefined
  /** The OpenAI endpoint's worker thread. */
  #http: HttpBridge | undefined
  readonly #net: Server
  readonly #limits: ReturnType<typeof serverLimits>
  readonly #log: (message: string) => void
  readonly #conns = new Set<Connection>()
  /** Every accepted socket until it closes, also after its connection was dropped: close() waits for these. */
  readonly #sockets = new Set<Socket>()
  /** Connections with frames made during the current step. */
  readonly #dirty = new Set<Connection>()
  readonly #one = new Int32Array(1)
  readonly #sweeper: NodeJS.Timeout
  #inStep = false
  #looping = false
  #idleCapture = false
  #closing: Promise<void> | undefined
  /** Request ids of other front ends' requests (they are on no connection). */
  #nextSinkId = 1

  private constructor(o: GeneratorServerOptions, limits: ReturnType<typeof serverLimits>) {
    this.socketPath = o.socketPath
    this.engine = o.engine
    this.#limits = limits
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
    const sweep = Math.max(20, Math.min(limits.idleTimeoutMs, limits.frameTimeoutMs) / 4)
    this.#sweeper = setInterval(() => this.#sweep(), sweep).unref()
  }

  /**
   * Starts a server on `options.socketPath`; resolves once it accepts connections. Every option is checked
   * first (an ArgumentError naming it), before the socket is touched.
   */
  static async listen(options: GeneratorServerOptions): Promise<GeneratorServer> {
    const limits = serverLimits(options)
    await removeStaleSocket(options.socketPath)
    const server = new GeneratorServer(options, limits)
    await new Promise<void>((resolve, reject) => {
      server.#net.once('error', reject)
      // A backlog as deep as the connection limit allows (the kernel caps it): a burst of connects is
      // accepted or refused by the limit, not by a full queue.
      server.#net.listen({ path: options.socketPath, backlog: Math.min(limits.maxConnections, 4096) }, () => {
        server.#net.off('error', reject)
        resolve()
      })
    })
    try {
      if (options.metricsPort !== undefined) server.metricsPort = await server.metrics.listen(options.metricsPort)
      if (options.http !== undefined) {
        server.#http = await HttpBridge.start(
          {
            model: server.model,
            text: server.textFeatures.text,
            submit: (req, sink) => server.submitText(req, sink),
            httpRequest: (route, status, seconds) => server.metrics.httpRequest(route, status, seconds),
            slowReader: () => server.metrics.connectionDropped('slow_reader'),
            scrape: (what) => server.metrics.scrape(what),
            log: server.#log,
          },
          options.http,
        )
        server.httpPort = server.#http.port
      }
    } catch (e) {
      await server.close()
      throw e
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
    clearInterval(this.#sweeper)
    this.#scheduler.cancelQueued('shutdown')
    const deadline = now() + drainMs
    while (this.#scheduler.hasWork && now() < deadline) await new Promise((r) => setTimeout(r, 5))
    this.#scheduler.cancelAll('shutdown')
    await this.#http?.close()
    for (const c of [...this.#conns]) this.#close(c, undefined)
    // Every socket, dropped ones too, is ended with a destroy timer: one that never reads cannot hold this.
    const ended = [...this.#sockets].map(
      (socket) =>
        new Promise<void>((resolve) => {
          if (socket.destroyed) return resolve()
          socket.once('close', () => resolve())
          endWithin(socket, CLOSE_GRACE_MS)
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
    if (this.#sockets.size >= this.#limits.maxConnections) {
      this.metrics.connectionRefused()
      socket.destroy()
      return
    }
    this.#sockets.add(socket)
    const conn = new Connection(socket, FrameDecoder.forServer(this.#limits.maxFrameBytes))
    this.#conns.add(conn)
    socket.on('data', (chunk: Buffer) => this.#receive(conn, chunk))
    socket.on('error', () => this.#drop(conn, 'disconnected'))
    socket.on('close', () => {
      this.#sockets.delete(socket)
      this.#drop(conn, 'disconnected')
    })
    const e = this.engine
    this.#send(
      conn,
      encode({
        type: MessageType.HELLO,
        vocab: e.vocab,
        maxSeqLen: e.maxSeqLen,
        maxBatch: this.#scheduler.maxRunning,
        maxFrameBytes: this.#limits.maxFrameBytes,
        features: this.#limits.text === undefined ? 0 : Feature.TEXT | (this.#limits.text.codec.hasChatTemplate ? Feature.CHAT : 0),
        model: this.#limits.model,
      }),
    )
  }

  #receive(conn: Connection, chunk: Buffer): void {
    if (conn.closed) return
    const t = now()
    conn.lastHeard = t
    let msgs: ClientMessage[]
    try {
      msgs = conn.decoder.push(chunk)
    } catch (e) {
      if (!(e instanceof FrameError)) throw e
      this.#sendError(conn, 0, e.errorCode, e.message)
      this.#close(conn, 'protocol')
      return
    }
    // Bytes left of an unfinished frame start (or keep) its clock; a finished one stops it.
    conn.frameStarted = conn.decoder.buffered === 0 ? 0 : conn.frameStarted || t
    for (const m of msgs) {
      if (conn.closed) return
      if (m.type === MessageType.GENERATE) this.#generate(conn, m.requestId, m.maxNewTokens, m.tokens)
      else if (m.type === MessageType.GENERATE_TEXT) this.#generateText(conn, m)
      else if (m.type === MessageType.CANCEL) {
        const r = conn.requests.get(m.requestId)
        // A CANCEL for a request that already ended crossed its DONE: nothing to do.
        if (r !== undefined) this.#scheduler.cancel(r, 'cancelled')
      } else if (m.type === MessageType.PING) this.#send(conn, encode({ type: MessageType.PONG, nonce: m.nonce }))
    }
  }

  /**
   * Queues `frame` for `conn`. During a step it waits for the step's end (one write per client per step);
   * otherwise it goes out now unless a write is in flight, which it then follows. Every byte queued counts
   * against the client's unread budget.
   */
  #send(conn: Connection, frame: Uint8Array): void {
    if (conn.closed || conn.socket.destroyed) return
    const need = conn.outBytes + frame.length
    let out = conn.out
    if (out === undefined || out.length < need) {
      const grown = Buffer.allocUnsafe(Math.max(4096, 2 * need))
      if (out !== undefined) out.copy(grown, 0, 0, conn.outBytes)
      out = grown
      conn.out = out
    }
    out.set(frame, conn.outBytes)
    conn.outBytes = need
    if (conn.writing + conn.outBytes > this.#limits.maxUnreadBytes) {
      this.#dropSlowReader(conn)
      return
    }
    if (this.#inStep) this.#dirty.add(conn)
    else this.#write(conn)
  }

  /** Hands the queued output to the socket as one write, unless one is in flight (its end calls this again). */
  #write(conn: Connection): void {
    if (conn.writing > 0 || conn.outBytes === 0 || conn.closed || conn.socket.destroyed) return
    const buf = conn.out!.subarray(0, conn.outBytes)
    conn.out = undefined
    conn.outBytes = 0
    conn.writing = buf.length
    conn.socket.write(buf, () => {
      conn.writing = 0
      this.#write(conn)
    })
  }

  /** Writes what the step made for each client. */
  #flush(): void {
    for (const conn of this.#dirty) this.#write(conn)
    this.#dirty.clear()
  }

  /** Drops a client whose unread output passed the budget. */
  #dropSlowReader(conn: Connection): void {
    const unread = conn.writing + conn.outBytes
    const limit = this.#limits.maxUnreadBytes
    conn.out = undefined
    conn.outBytes = 0
    this.#log(`cudagraph serve: dropping a client that left ${unread} bytes unread (limit ${limit})`)
    // Written past the budget on purpose: the last frame says why, if the client reads after all.
    conn.socket.write(encode({ type: MessageType.ERROR, requestId: 0, code: ErrorCode.SLOW_READER, message: `more than ${limit} bytes unread; closing` }))
    this.#close(conn, 'slow_reader')
  }

  /** Ends `conn` (its requests too) and cuts it if it does not drain within the grace period. */
  #close(conn: Connection, reason: DropReason | undefined): void {
    if (reason !== undefined && !conn.closed) this.metrics.connectionDropped(reason)
    // What is still queued (the ERROR that says why, DONE shutdown frames) goes behind any write in flight.
    if (conn.outBytes > 0 && !conn.closed && !conn.socket.destroyed) conn.socket.write(conn.out!.subarray(0, conn.outBytes))
    conn.out = undefined
    conn.outBytes = 0
    this.#drop(conn, reason === undefined ? 'shutdown' : 'disconnected')
    endWithin(conn.socket, CLOSE_GRACE_MS)
  }

  /** Closes connections idle past idleTimeoutMs and ones whose frame did not finish within frameTimeoutMs. */
  #sweep(): void {
    const t = now()
    const { idleTimeoutMs, frameTimeoutMs } = this.#limits
    for (const c of [...this.#conns]) {
      if (c.frameStarted > 0 && t - c.frameStarted > frameTimeoutMs) this.#close(c, 'frame_timeout')
      else if (c.requests.size === 0 && c.frameStarted === 0 && t - c.lastHeard > idleTimeoutMs) this.#close(c, 'idle')
    }
  }

  #generate(conn: Connection, id: number, maxNewTokens: number, prompt: Int32Array): void {
    if (this.#admissible(conn, id)) this.#submit({ id, conn, prompt, maxNewTokens, arrived: now(), last: 0 })
  }

  /** A text request: its prompt encoded (or its chat rendered), its output turned into TEXT frames. */
  #generateText(conn: Connection, m: GenerateTextMessage): void {
    const id = m.requestId
    if (!this.#admissible(conn, id)) return
    const setup = this.#limits.text
    if (setup === undefined) {
      this.#refuse(conn, id, ErrorCode.INVALID_REQUEST, 'invalid', 'this server has no tokenizer: send token ids (GENERATE)')
      return
    }
    let req: TextRequest
    let prompt: Int32Array
    try {
      let messages: unknown
      if (m.chat) {
        try {
          messages = JSON.parse(m.prompt)
        } catch {
          throw requestError('prompt', 'a chat request carries a JSON array of { role, content } messages')
        }
      }
      req = {
        prompt: m.chat ? (messages as TextRequest['prompt']) : m.prompt,
        maxNewTokens: m.maxNewTokens === 0 ? undefined : m.maxNewTokens,
        sampling: checkSampling(m),
        stop: checkStops(m.stop),
        ignoreEos: m.ignoreEos,
      }
      prompt = promptTokens(setup.codec, req.prompt)
    } catch (e) {
      if (!(e instanceof ArgumentError)) throw e
      this.#refuse(conn, id, ErrorCode.INVALID_REQUEST, 'invalid', e.message)
      return
    }
    this.#submit({ ...this.#textServed(id, conn, undefined, setup, req, prompt), conn })
  }

  #textServed(id: number, conn: Connection | undefined, sink: TextSink | undefined, setup: TextSetup, req: TextRequest, prompt: Int32Array): Served {
    return {
      id,
      conn,
      sink,
      prompt,
      maxNewTokens: req.maxNewTokens ?? Math.max(1, this.engine.maxSeqLen - prompt.length),
      sampling: req.sampling,
      stopTokens: req.ignoreEos ? undefined : setup.eosTokenIds,
      text: new TextOutput(setup.codec.detokenizer(), req.stop, req.ignoreEos ? new Set() : setup.eosTokenIds),
      arrived: now(),
      last: 0,
    }
  }

  /** The model's name (HELLO, and the OpenAI endpoint's model id). */
  get model(): string {
    return this.#limits.model
  }

  /** Whether the server has a tokenizer (text requests), and whether it has a chat template. */
  get textFeatures(): { text: boolean; chat: boolean } {
    const t = this.#limits.text
    return { text: t !== undefined, chat: t?.codec.hasChatTemplate ?? false }
  }

  /**
   * Queues a text request from another front end (the OpenAI HTTP endpoint) on the same scheduler as the
   * socket's: its output goes to `sink`. `req` is checked by the caller; a prompt the model cannot take
   * (encoding, chat template, context) is refused with the parameter at fault.
   */
  submitText(req: TextRequest, sink: TextSink): TextSubmission {
    const setup = this.#limits.text
    if (this.#closing !== undefined) return { ok: false, reason: 'shutdown', message: 'the server is shutting down' }
    if (setup === undefined) return { ok: false, reason: 'invalid', message: 'this server has no tokenizer', param: 'prompt' }
    let prompt: Int32Array
    try {
      prompt = promptTokens(setup.codec, req.prompt)
    } catch (e) {
      if (!(e instanceof ArgumentError)) throw e
      return { ok: false, reason: 'invalid', message: e.message, param: e.argument }
    }
    const max = this.engine.maxSeqLen
    if (prompt.length >= max)
      return { ok: false, reason: 'invalid', message: `the prompt has ${prompt.length} tokens; the context holds ${max} (prompt and output)`, param: 'prompt' }
    if (req.maxNewTokens !== undefined && prompt.length + req.maxNewTokens > max) {
      return {
        ok: false,
        reason: 'invalid',
        message: `${prompt.length} prompt tokens and ${req.maxNewTokens} new ones exceed the ${max}-token context`,
        param: 'max_tokens',
      }
    }
    const r = this.#textServed(this.#nextSinkId++, undefined, sink, setup, req, prompt)
    const why = this.#scheduler.invalid(r.prompt, r.maxNewTokens)
    if (why !== undefined) return { ok: false, reason: 'invalid', message: why, param: 'prompt' }
    if (!this.#scheduler.submit(r)) {
      this.metrics.requestEnded('busy')
      return { ok: false, reason: 'busy', message: `the queue is full (${this.#scheduler.maxQueue} waiting)` }
    }
    this.#wake()
    return { ok: true, promptTokens: prompt.length, cancel: (reason = 'cancelled') => this.#scheduler.cancel(r, reason) }
  }

  /** Whether `conn` may start request `id` now (if not, it was told why). */
  #admissible(conn: Connection, id: number): boolean {
    if (this.#closing !== undefined) {
      this.#refuse(conn, id, ErrorCode.SHUTTING_DOWN, 'shutdown', 'the server is shutting down')
      return false
    }
    if (id === 0 || conn.requests.has(id)) {
      this.#refuse(conn, id, ErrorCode.INVALID_REQUEST, 'invalid', `request id ${id} is ${id === 0 ? 'reserved' : 'already running on this connection'}`)
      return false
    }
    return true
  }

  #refuse(conn: Connection, id: number, code: number, outcome: RequestOutcome, message: string): void {
    this.#sendError(conn, id, code, message)
    this.metrics.requestEnded(outcome)
  }

  /** Queues the socket request `r` (checked against the engine first); a full queue is BUSY. */
  #submit(r: Served & { conn: Connection }): void {
    const why = this.#scheduler.invalid(r.prompt, r.maxNewTokens)
    if (why !== undefined) {
      this.#refuse(r.conn, r.id, ErrorCode.INVALID_REQUEST, 'invalid', why)
      return
    }
    if (!this.#scheduler.submit(r)) {
      this.#refuse(r.conn, r.id, ErrorCode.BUSY, 'busy', `the queue is full (${this.#scheduler.maxQueue} waiting)`)
      return
    }
    r.conn.requests.set(r.id, r)
    this.#wake()
  }

  #sendToken(r: Served, tok: number, index: number): void {
    const t = now()
    this.metrics.token(index === 0, (t - (index === 0 ? r.arrived : r.last)) / 1000)
    r.last = t
    const conn = r.conn
    if (conn?.closed) return
    if (r.text !== undefined) {
      const out = r.text.push(tok)
      if (out.text !== '') {
        if (conn !== undefined) this.#send(conn, encodeText(r.id, process.hrtime.bigint(), out.tokens, out.text))
        else r.sink!.text(out.text, out.tokens)
      }
      if (r.text.stopped !== undefined) this.#scheduler.cancel(r, 'stop')
      return
    }
    if (conn === undefined) return
    this.#one[0] = tok
    this.#send(conn, encodeTokens(r.id, process.hrtime.bigint(), this.#one, 1))
  }

  #finish(r: Served, reason: FinishReason, generated: number): void {
    const conn = r.conn
    if (conn?.requests.get(r.id) === r) conn.requests.delete(r.id)
    if (conn?.closed) return
    this.metrics.requestEnded(reason)
    const tail = r.text?.flush()
    if (conn === undefined) {
      if (tail !== undefined && (tail.text !== '' || tail.tokens > 0)) r.sink!.text(tail.text, tail.tokens)
      r.sink!.done(reason, generated)
      return
    }
    if (tail !== undefined && (tail.text !== '' || tail.tokens > 0)) this.#send(conn, encodeText(r.id, process.hrtime.bigint(), tail.tokens, tail.text))
    this.#send(conn, encode({ type: MessageType.DONE, requestId: r.id, reason, generated }))
  }

  #failed(r: Served, e: unknown): void {
    this.metrics.requestEnded('error')
    const msg = e instanceof Error ? e.message : String(e)
    this.#log(`cudagraph serve: a step failed (${msg}); its requests end with INTERNAL`)
    if (r.conn === undefined) {
      r.sink!.failed(`the step failed: ${msg}`)
      return
    }
    r.conn.requests.delete(r.id)
    if (!r.conn.closed) this.#sendError(r.conn, r.id, ErrorCode.INTERNAL, `the step failed: ${msg}`)
  }

  #sendError(conn: Connection, id: number, code: number, message: string): void {
    this.#send(conn, encode({ type: MessageType.ERROR, requestId: id, code, message }))
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
    this.#inStep = true
    let r: StepReport
    try {
      r = s.step()
    } finally {
      this.#inStep = false
      this.#flush()
    }
    this.metrics.step(r, (now() - t0) / 1000)
    setImmediate(this.#tick)
  }

  /**
   * Rolling graphs: with no request in flight, captures the graphs steps found missing, one per turn of
   * the event loop, stopping as soon as a request arrives. Never inside a step that serves one.
   */
  #captureWhileIdle(): void {
    const e = this.engine
    // Closing (or closed): the engine may be disposed already; it is not touched again.
    if (this.#closing !== undefined || this.#idleCapture || e.captureMissed === undefined || !(e.missedGraphs! > 0)) return
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

/** Ends `socket` (its pending output drains first) and destroys it if that takes longer than `ms`. */
function endWithin(socket: Socket, ms: number): void {
  if (socket.destroyed) return
  socket.end()
  setTimeout(() => socket.destroy(), ms).unref()
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
