/**
 * The generator's client: connects to a {@link GeneratorServer} over its Unix socket and streams tokens
 * (token prompts) or text (text and chat prompts, when the server has a tokenizer).
 * Many generations can share one connection. Every failure is a typed error: RefusedError (no server),
 * BusyError (queue full), ProtocolError, ServerError (the server's error frames) and
 * ConnectionClosedError (the server went away); a cancelled generation rejects with its signal's reason.
 */
import { createConnection, type Socket } from 'node:net'
import { check } from '../errors.js'
import { checkSampling } from '../util/text-request.js'
import { BusyError, ConnectionClosedError, ProtocolError, RefusedError, ServerError } from './errors.js'
import {
  DEFAULT_MAX_FRAME_BYTES,
  ErrorCode,
  encode,
  errorCodeName,
  Feature,
  type FinishReason,
  FrameDecoder,
  type GenerateTextMessage,
  type HelloMessage,
  MessageType,
  type ServerMessage,
} from './wire-protocol.js'

/** Options of {@link Client.connect}. */
export interface ConnectOptions {
  /** Give up waiting for the server's HELLO after this long, ms (default 5000). */
  timeoutMs?: number
  /** Largest frame accepted from the server, bytes (default 1 MiB). */
  maxFrameBytes?: number
  /**
   * Busy-poll while a generation is open (default false): the event loop never sleeps, so a token is read
   * as soon as the kernel has it instead of after the process is woken up, which on a VM is most of the
   * socket's cost per token (measured: about half). Costs one CPU core, busy, while generating.
   */
  busyPoll?: boolean
}

/** Options of {@link Client.generate}. */
export interface GenerateOptions {
  /** Most tokens to generate (the model's context may end it sooner). */
  maxNewTokens: number
  /** Cancels the request: the server stops it and the iteration rejects with the signal's reason. */
  signal?: AbortSignal
}

/** Options of {@link Client.generateText}. */
export interface TextGenerateOptions {
  /** Most tokens to generate (default: what the context leaves after the prompt). */
  maxNewTokens?: number
  /** 0 (default) is greedy. */
  temperature?: number
  /** In (0, 1] (default 1: off). */
  topP?: number
  /** 0 (default): off. */
  topK?: number
  /** 0..2^32-1 (default 0). */
  seed?: number
  /** Strings that end it (not sent), at most 16. */
  stop?: readonly string[]
  /** Keep going past end-of-sequence tokens (default false). */
  ignoreEos?: boolean
  signal?: AbortSignal
}

/** What the server accepts, from its HELLO. */
export type ServerInfo = Omit<HelloMessage, 'type'>

const FATAL: ReadonlySet<number> = new Set([ErrorCode.PROTOCOL, ErrorCode.FRAME_TOO_LARGE, ErrorCode.UNKNOWN_TYPE])

/**
 * One request's stream: token ids (numbers) for a token prompt, text chunks (strings) for a text prompt.
 * Iterate it with `for await`; ending the loop early cancels the request. What arrives before it is read
 * is kept (it is small).
 */
export class Generation<T extends number | string = number> implements AsyncIterable<T> {
  readonly requestId: number
  /** Why it ended, once it has. */
  finishReason: FinishReason | undefined
  /** Tokens received so far. */
  received = 0
  /** The server's send time of the frame of the last token read (its monotonic clock, ns). */
  sentNs = 0n
  readonly #client: Client
  readonly #tokens: T[] = []
  readonly #sent: bigint[] = []
  #read = 0
  #error: unknown
  #ended = false
  /** The pending `next()` of the iterator, answered as soon as a token or the end arrives. */
  #waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined
  #signal: AbortSignal | undefined
  #onAbort: (() => void) | undefined

  /** @internal */
  constructor(client: Client, requestId: number, signal: AbortSignal | undefined) {
    this.#client = client
    this.requestId = requestId
    if (signal !== undefined) {
      this.#signal = signal
      this.#onAbort = () => this.cancel(signal.reason)
      signal.addEventListener('abort', this.#onAbort, { once: true })
    }
  }

  /** Whether the request has ended (its remaining tokens may still be unread). */
  get ended(): boolean {
    return this.#ended
  }

  /** Stops the request; the iteration rejects with `reason` (default an AbortError). */
  cancel(reason: unknown = new DOMException('the generation was cancelled', 'AbortError')): void {
    if (this.#ended) return
    this.#client.send(encode({ type: MessageType.CANCEL, requestId: this.requestId }))
    this.end(undefined, reason)
  }

  /** @internal the tokens of a TOKENS frame, or the text of a TEXT frame (`count` tokens) */
  push(tokens: ArrayLike<T>, sentNs: bigint, count = tokens.length): void {
    if (this.#ended) return
    this.received += count
    let i = 0
    const w = this.#waiter
    if (w !== undefined && tokens.length > 0) {
      // A reader is waiting: hand it the first token directly (one promise, no queueing).
      this.#waiter = undefined
      this.sentNs = sentNs
      w.resolve({ value: tokens[i++]!, done: false })
    }
    for (; i < tokens.length; i++) {
      this.#tokens.push(tokens[i]!)
      this.#sent.push(sentNs)
    }
  }

  /** @internal the request ended: with `reason`, or with `error` */
  end(reason: FinishReason | undefined, error?: unknown): void {
    if (this.#ended) return
    this.#ended = true
    this.finishReason = reason
    this.#error = error
    this.#client.forget(this.requestId)
    if (this.#onAbort !== undefined) this.#signal!.removeEventListener('abort', this.#onAbort)
    const w = this.#waiter
    this.#waiter = undefined
    if (w !== undefined) this.#settle(w.resolve, w.reject)
  }

  /** Answers a read at the end: the error, or done. */
  #settle(resolve: (r: IteratorResult<T>) => void, reject: (e: unknown) => void): void {
    if (this.#error !== undefined) reject(this.#error)
    else resolve({ value: undefined, done: true })
  }

  #next(): Promise<IteratorResult<T>> {
    if (this.#read < this.#tokens.length) {
      this.sentNs = this.#sent[this.#read]!
      const value = this.#tokens[this.#read++]!
      if (this.#read === this.#tokens.length) this.#tokens.length = this.#sent.length = this.#read = 0
      return Promise.resolve({ value, done: false })
    }
    return new Promise((resolve, reject) => {
      if (this.#ended) this.#settle(resolve, reject)
      else this.#waiter = { resolve, reject }
    })
  }

  /** Tokens as they arrive; ending the loop early (break, return, throw) cancels the request. */
  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => this.#next(),
      return: () => {
        if (!this.#ended) this.cancel()
        return Promise.resolve({ value: undefined, done: true })
      },
    }
  }

  /** Reads the whole stream into an array. */
  async toArray(): Promise<T[]> {
    const out: T[] = []
    for await (const t of this) out.push(t)
    return out
  }
}

/**
 * The prompt as token ids, or an ArgumentError naming the first bad element: every id must be an integer
 * in 0..2^31−1. Nothing is coerced (NaN, null, 1.7, 2^32+5 and strings are refused, not sent as 0, 1, 5).
 */
function promptTokens(prompt: unknown): Int32Array {
  if (prompt instanceof Int32Array) {
    check(prompt.length >= 1, 'prompt', 'at least one token id', prompt)
    for (let i = 0; i < prompt.length; i++) if (prompt[i]! < 0) check(false, `prompt[${i}]`, 'a token id in 0..2147483647', prompt[i])
    return prompt
  }
  check(Array.isArray(prompt) && prompt.length >= 1, 'prompt', 'an Int32Array or an array of at least one token id', prompt)
  const out = new Int32Array(prompt.length)
  for (let i = 0; i < prompt.length; i++) {
    const v: unknown = prompt[i]
    if (!(typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0x7fffffff))
      check(false, `prompt[${i}]`, 'a token id (an integer in 0..2147483647)', v)
    out[i] = v
  }
  return out
}

/** A connection to a generator server. */
export class Client {
  /** What the server accepts (from its HELLO). */
  readonly server: ServerInfo
  readonly #socket: Socket
  readonly #open = new Map<number, Generation<number> | Generation<string>>()
  readonly #pings = new Map<bigint, { resolve: (us: number) => void; reject: (e: unknown) => void; t0: bigint }>()
  #nextId = 1
  #nextNonce = 1n
  #closed: Error | undefined
  readonly #busyPoll: boolean
  #polling = false

  private constructor(socket: Socket, hello: ServerInfo, busyPoll: boolean) {
    this.#socket = socket
    this.server = hello
    this.#busyPoll = busyPoll
  }

  /** Connects to the server at `socketPath` and waits for its HELLO. */
  static connect(socketPath: string, options: ConnectOptions = {}): Promise<Client> {
    const decoder = FrameDecoder.forClient(options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES)
    return new Promise<Client>((resolve, reject) => {
      const socket = createConnection(socketPath)
      let client: Client | undefined
      const timer = setTimeout(
        () => fail(new ProtocolError(`no HELLO from the server at ${socketPath} within ${options.timeoutMs ?? 5000} ms`)),
        options.timeoutMs ?? 5000,
      )
      const fail = (e: Error) => {
        clearTimeout(timer)
        socket.destroy()
        reject(e)
      }
      socket.on('error', (e: NodeJS.ErrnoException) => {
        if (client !== undefined) return client.#lost(new ConnectionClosedError(`the connection to ${socketPath} failed: ${e.message}`, { cause: e }))
        if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') fail(new RefusedError(`no generator is listening on ${socketPath} (${e.code})`, { cause: e }))
        else fail(new ConnectionClosedError(`could not connect to ${socketPath}: ${e.message}`, { cause: e }))
      })
      socket.on('close', () => {
        if (client !== undefined) client.#lost(new ConnectionClosedError(`the server at ${socketPath} closed the connection`))
        else fail(new ConnectionClosedError(`the server at ${socketPath} closed the connection before its HELLO`))
      })
      socket.on('data', (chunk: Buffer) => {
        let msgs: ServerMessage[]
        try {
          msgs = decoder.push(chunk)
        } catch (e) {
          const err = new ProtocolError(`bad frame from the server: ${(e as Error).message}`, { cause: e })
          if (client === undefined) return fail(err)
          client.#lost(err)
          return socket.destroy()
        }
        for (const m of msgs) {
          if (client !== undefined) {
            client.#handle(m)
          } else if (m.type === MessageType.HELLO) {
            clearTimeout(timer)
            const { type: _, ...hello } = m
            client = new Client(socket, hello, options.busyPoll ?? false)
            resolve(client)
          } else {
            return fail(new ProtocolError(`expected HELLO first, got message type 0x${m.type.toString(16)}`))
          }
        }
      })
    })
  }

  /** Whether the connection is closed. */
  get closed(): boolean {
    return this.#closed !== undefined
  }

  /** Generations in flight on this connection. */
  get inFlight(): number {
    return this.#open.size
  }

  /** Starts generating after `prompt` (token ids): iterate the result for the tokens. */
  generate(prompt: Int32Array | readonly number[], options: GenerateOptions): Generation {
    const tokens = promptTokens(prompt)
    check(options !== null && typeof options === 'object', 'options', '{ maxNewTokens, ... }', options)
    check(
      Number.isInteger(options.maxNewTokens) && options.maxNewTokens >= 1 && options.maxNewTokens <= 0xffffffff,
      'maxNewTokens',
      'a positive 32-bit integer',
      options.maxNewTokens,
    )
    check(
      14 + 4 * tokens.length <= this.server.maxFrameBytes,
      'prompt',
      `at most ${Math.floor((this.server.maxFrameBytes - 14) / 4)} tokens (the server's frame limit)`,
      tokens.length,
    )
    return this.#start<number>(options.signal, (requestId) => encode({ type: MessageType.GENERATE, requestId, maxNewTokens: options.maxNewTokens, tokens }))
  }

  /**
   * Starts generating text after `prompt` (a string, or chat messages the server's chat template renders):
   * iterate the result for text chunks, each whole characters. Needs a server with a tokenizer.
   */
  generateText(prompt: string | readonly { role: string; content: string }[], options: TextGenerateOptions = {}): Generation<string> {
    check((this.server.features & Feature.TEXT) !== 0, 'prompt', 'token ids: this server has no tokenizer', typeof prompt)
    const chat = typeof prompt !== 'string'
    check(!chat || (Array.isArray(prompt) && prompt.length > 0), 'prompt', 'a string or a non-empty array of { role, content } messages', prompt)
    check(!chat || (this.server.features & Feature.CHAT) !== 0, 'prompt', "a string: the server's tokenizer has no chat template", 'chat messages')
    const o = options
    const maxNewTokens = o.maxNewTokens ?? 0
    check(Number.isInteger(maxNewTokens) && maxNewTokens >= 0 && maxNewTokens <= 0xffffffff, 'maxNewTokens', 'a positive 32-bit integer', o.maxNewTokens)
    // Checked here as the server checks them: nothing is sent that it would refuse.
    const sampling = checkSampling({ temperature: o.temperature ?? 0, topP: o.topP ?? 1, topK: o.topK ?? 0, seed: o.seed ?? 0 })
    const msg: Omit<GenerateTextMessage, 'requestId'> = {
      type: MessageType.GENERATE_TEXT,
      maxNewTokens,
      ...sampling,
      chat,
      ignoreEos: o.ignoreEos ?? false,
      stop: [...(o.stop ?? [])],
      prompt: chat ? JSON.stringify(prompt) : prompt,
    }
    const size = encode({ ...msg, requestId: 1 }).length
    check(size <= this.server.maxFrameBytes, 'prompt', `a request of at most ${this.server.maxFrameBytes} bytes (the server's frame limit)`, `${size} bytes`)
    return this.#start<string>(o.signal, (requestId) => encode({ ...msg, requestId }))
  }

  /** Opens a generation under a fresh request id and sends `frame(id)`. */
  #start<T extends number | string>(signal: AbortSignal | undefined, frame: (id: number) => Uint8Array): Generation<T> {
    const id = this.#nextId
    this.#nextId = id >= 0xffffffff ? 1 : id + 1
    const g = new Generation<T>(this, id, signal)
    if (this.#closed !== undefined) {
      g.end(undefined, this.#closed)
      return g
    }
    if (signal?.aborted) {
      g.end(undefined, signal.reason)
      return g
    }
    this.#open.set(id, g as unknown as Generation<number> | Generation<string>)
    this.send(frame(id))
    if (this.#busyPoll && !this.#polling) {
      this.#polling = true
      setImmediate(this.#poll)
    }
    return g
  }

  /**
   * One turn of busy-polling: while an immediate is pending, libuv polls its sockets without waiting, so
   * the loop spins instead of sleeping. Stops with the last open generation.
   */
  readonly #poll = (): void => {
    this.#polling = this.#open.size > 0
    if (this.#polling) setImmediate(this.#poll)
  }

  /** Round trip of a PING through the server, µs. */
  ping(): Promise<number> {
    if (this.#closed !== undefined) return Promise.reject(this.#closed)
    const nonce = this.#nextNonce++
    return new Promise<number>((resolve, reject) => {
      this.#pings.set(nonce, { resolve, reject, t0: process.hrtime.bigint() })
      this.send(encode({ type: MessageType.PING, nonce }))
    })
  }

  /** Closes the connection; generations still open reject with ConnectionClosedError. */
  close(): void {
    this.#lost(new ConnectionClosedError('the client closed the connection'))
    this.#socket.end()
  }

  /** @internal */
  send(frame: Uint8Array): void {
    if (this.#closed === undefined) this.#socket.write(frame)
  }

  /** @internal a generation ended */
  forget(id: number): void {
    this.#open.delete(id)
  }

  #handle(m: ServerMessage): void {
    switch (m.type) {
      case MessageType.TOKENS:
        ;(this.#open.get(m.requestId) as Generation<number> | undefined)?.push(m.tokens, m.sentNs)
        return
      case MessageType.TEXT:
        ;(this.#open.get(m.requestId) as Generation<string> | undefined)?.push([m.text], m.sentNs, m.tokens)
        return
      case MessageType.DONE:
        this.#open
          .get(m.requestId)
          ?.end(
            m.reason,
            m.reason === 'shutdown' ? new ServerError('SHUTTING_DOWN', `the server shut down after ${m.generated} tokens of this request`) : undefined,
          )
        return
      case MessageType.PONG: {
        const p = this.#pings.get(m.nonce)
        this.#pings.delete(m.nonce)
        p?.resolve(Number(process.hrtime.bigint() - p.t0) / 1000)
        return
      }
      case MessageType.ERROR: {
        const name = errorCodeName(m.code)
        const err =
          m.code === ErrorCode.BUSY
            ? new BusyError(m.message)
            : FATAL.has(m.code)
              ? new ProtocolError(`the server refused a frame: ${m.message} (${name})`)
              : new ServerError(name, m.message)
        if (m.requestId === 0) this.#lost(err)
        else this.#open.get(m.requestId)?.end(undefined, err)
        return
      }
      default:
        this.#lost(new ProtocolError(`unexpected message type 0x${m.type.toString(16)} after HELLO`))
        this.#socket.destroy()
    }
  }

  /** The connection is unusable: everything waiting on it fails with `err`. */
  #lost(err: Error): void {
    if (this.#closed !== undefined) return
    this.#closed = err
    for (const g of [...this.#open.values()]) g.end(undefined, err)
    for (const p of this.#pings.values()) p.reject(err)
    this.#pings.clear()
  }
}
