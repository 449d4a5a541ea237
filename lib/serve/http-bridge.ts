/**
 * The OpenAI endpoint runs in a worker thread, so that parsing, JSON and every SSE write of 64 streams
 * leave the main thread, which runs the scheduler and the GPU steps, free. This is the bridge: the
 * messages, the main thread's side ({@link HttpBridge}: the worker, requests into the scheduler, their
 * output batched per step into one message) and the worker's ({@link WorkerTextService}).
 */
import { join } from 'node:path'
import { type MessagePort, Worker } from 'node:worker_threads'
import type { TextRequest } from './text.js'
import type { FinishReason } from './wire-protocol.js'

/** Where a request's output goes (inside steps, in order). */
export interface TextSink {
  /** New text, complete characters, covering `tokens` tokens. */
  text(text: string, tokens: number): void
  /** The request ended after `generated` tokens. */
  done(reason: FinishReason, generated: number): void
  /** The step it was in failed. */
  failed(message: string): void
}

/** What a submission answers. */
export type TextSubmission =
  | { ok: true; promptTokens: number; cancel: (reason?: FinishReason) => void }
  | { ok: false; reason: 'busy' | 'shutdown' | 'invalid'; message: string; param?: string }

/** What the OpenAI endpoint needs of the generator. */
export interface TextService {
  /** The model id. */
  readonly model: string
  /** Whether text requests are served (the server has a tokenizer). */
  readonly text: boolean
  submit(req: TextRequest, sink: TextSink): Promise<TextSubmission>
  /** An HTTP request to `route` ended with `status` after `seconds`. */
  httpRequest(route: string, status: number, seconds: number): void
  /** A client was dropped for reading too slowly. */
  slowReader(): void
  /** `GET /metrics` or `GET /health`: status, content type and body. */
  scrape(what: 'metrics' | 'health'): Promise<{ status: number; contentType: string; body: string }>
}

/** Worker → main. */
type Up =
  | { t: 'listening'; port: number }
  | { t: 'failed-to-listen'; message: string }
  | { t: 'submit'; rid: number; req: TextRequest }
  | { t: 'cancel'; rid: number }
  | { t: 'http'; route: string; status: number; seconds: number }
  | { t: 'slow-reader' }
  | { t: 'scrape'; rid: number; what: 'metrics' | 'health' }

/**
 * A step's output events, packed so that a message costs a few copies, not one object per token: event i
 * is `meta[4i..4i+3]` = [request id, kind, number, characters], and its string is the next `characters`
 * of `text`. Kinds: TEXT (number: tokens), DONE (number: generated; string: the finish reason), FAILED
 * (string: the message).
 */
interface Events {
  t: 'events'
  meta: Int32Array
  text: string
}
const TEXT = 0
const DONE = 1
const FAILED = 2

/** Main → worker. */
type Down =
  | {
      t: 'submitted'
      rid: number
      result: { ok: true; promptTokens: number } | { ok: false; reason: 'busy' | 'shutdown' | 'invalid'; message: string; param?: string }
    }
  | Events
  | { t: 'scraped'; rid: number; status: number; contentType: string; body: string }
  | { t: 'close' }

/** @internal What the main thread's side serves the worker with. */
export interface BridgeHost {
  readonly model: string
  readonly text: boolean
  submit(req: TextRequest, sink: TextSink): TextSubmission
  httpRequest(route: string, status: number, seconds: number): void
  slowReader(): void
  scrape(what: 'metrics' | 'health'): Promise<{ status: number; contentType: string; body: string }>
  log(message: string): void
}

/** @internal The main thread's side: starts the worker and serves its requests from the scheduler. */
export class HttpBridge {
  readonly #worker: Worker
  readonly #host: BridgeHost
  readonly #cancels = new Map<number, (reason?: FinishReason) => void>()
  /** Output events since the last message (see {@link Events}): the output of one step goes in one message. */
  #meta: number[] = []
  #text = ''
  #flushing = false
  #exited: Promise<void>
  port = 0

  private constructor(host: BridgeHost, options: unknown) {
    this.#host = host
    this.#worker = new Worker(join(__dirname, 'openai-worker.js'), { workerData: { options, model: host.model, text: host.text } })
    this.#exited = new Promise((resolve) => this.#worker.once('exit', () => resolve()))
  }

  /** Starts the endpoint in a worker with `options` (OpenAiHttpOptions); resolves once it listens. */
  static async start(host: BridgeHost, options: unknown): Promise<HttpBridge> {
    const b = new HttpBridge(host, options)
    b.port = await new Promise<number>((resolve, reject) => {
      b.#worker.once('error', reject)
      b.#worker.on('message', (m: Up) => {
        if (m.t === 'listening') resolve(m.port)
        else if (m.t === 'failed-to-listen') reject(new Error(m.message))
        else b.#receive(m)
      })
    })
    b.#worker.on('error', (e) => host.log(`cudagraph serve: the HTTP worker failed: ${e.message}`))
    b.#worker.once('exit', () => {
      for (const cancel of b.#cancels.values()) cancel()
      b.#cancels.clear()
    })
    return b
  }

  #receive(m: Up): void {
    const host = this.#host
    switch (m.t) {
      case 'submit': {
        const rid = m.rid
        const sink: TextSink = {
          text: (text, tokens) => this.#push(rid, TEXT, tokens, text),
          done: (reason, generated) => {
            this.#cancels.delete(rid)
            this.#push(rid, DONE, generated, reason)
          },
          failed: (message) => {
            this.#cancels.delete(rid)
            this.#push(rid, FAILED, 0, message)
          },
        }
        const r = host.submit(m.req, sink)
        if (r.ok) this.#cancels.set(rid, r.cancel)
        this.#post({ t: 'submitted', rid, result: r.ok ? { ok: true, promptTokens: r.promptTokens } : r })
        return
      }
      case 'cancel':
        this.#cancels.get(m.rid)?.()
        return
      case 'http':
        host.httpRequest(m.route, m.status, m.seconds)
        return
      case 'slow-reader':
        host.slowReader()
        return
      case 'scrape':
        host.scrape(m.what).then(
          (r) => this.#post({ t: 'scraped', rid: m.rid, ...r }),
          (e: unknown) => this.#post({ t: 'scraped', rid: m.rid, status: 500, contentType: 'text/plain', body: String(e) }),
        )
    }
  }

  /** Queues an output event; a step's events go out together when it returns (a microtask after). */
  #push(rid: number, kind: number, n: number, text: string): void {
    this.#meta.push(rid, kind, n, text.length)
    this.#text += text
    if (this.#flushing) return
    this.#flushing = true
    queueMicrotask(() => {
      this.#flushing = false
      const m: Events = { t: 'events', meta: Int32Array.from(this.#meta), text: this.#text }
      this.#meta.length = 0
      this.#text = ''
      this.#post(m)
    })
  }

  #post(m: Down): void {
    this.#worker.postMessage(m)
  }

  /** Closes the endpoint (after the events queued so far) and waits for the worker to end. */
  async close(): Promise<void> {
    await Promise.resolve()
    this.#post({ t: 'close' })
    await this.#exited
  }
}

/** @internal The worker's side: a {@link TextService} whose calls are messages to the main thread. */
export class WorkerTextService implements TextService {
  readonly model: string
  readonly text: boolean
  readonly #port: MessagePort
  readonly #sinks = new Map<number, TextSink>()
  readonly #pending = new Map<number, (r: TextSubmission) => void>()
  readonly #scrapes = new Map<number, (r: { status: number; contentType: string; body: string }) => void>()
  /**
   * Text not yet handed to its sink. Every step's events that arrived together (the worker fell behind)
   * go to each stream as one write, not one per step: a stream costs a write per turn of this thread's
   * event loop, so the thread catches up instead of lagging further (vLLM's API server merges outputs
   * the same way).
   */
  readonly #unsent = new Map<number, { text: string; tokens: number }>()
  #sending = false
  #next = 1
  /** Called when the main thread asks the worker to close. */
  onClose: () => void = () => {}

  constructor(port: MessagePort, model: string, text: boolean) {
    this.#port = port
    this.model = model
    this.text = text
    port.on('message', (m: Down) => this.#receive(m))
  }

  #receive(m: Down): void {
    switch (m.t) {
      case 'submitted': {
        const resolve = this.#pending.get(m.rid)
        this.#pending.delete(m.rid)
        const r = m.result
        if (!r.ok) this.#sinks.delete(m.rid)
        resolve?.(r.ok ? { ok: true, promptTokens: r.promptTokens, cancel: () => this.#port.postMessage({ t: 'cancel', rid: m.rid } satisfies Up) } : r)
        return
      }
      case 'events':
        this.#events(m)
        return
      case 'scraped': {
        const resolve = this.#scrapes.get(m.rid)
        this.#scrapes.delete(m.rid)
        resolve?.(m)
        return
      }
      case 'close':
        this.onClose()
    }
  }

  /** Unpacks a step's events: text waits in #unsent for this turn's end; a request's end hands its text over first. */
  #events({ meta, text }: Events): void {
    let at = 0
    for (let i = 0; i < meta.length; i += 4) {
      const rid = meta[i]!
      const kind = meta[i + 1]!
      const n = meta[i + 2]!
      const chars = meta[i + 3]!
      const str = text.slice(at, at + chars)
      at += chars
      const sink = this.#sinks.get(rid)
      if (sink === undefined) continue
      if (kind === TEXT) {
        const u = this.#unsent.get(rid)
        if (u === undefined) this.#unsent.set(rid, { text: str, tokens: n })
        else {
          u.text += str
          u.tokens += n
        }
        continue
      }
      this.#sinks.delete(rid)
      this.#handOver(rid, sink)
      if (kind === DONE) sink.done(str as FinishReason, n)
      else sink.failed(str)
    }
    if (this.#unsent.size === 0 || this.#sending) return
    this.#sending = true
    // After the messages that arrived in this turn of the event loop, all of them.
    setImmediate(() => {
      this.#sending = false
      for (const [rid, u] of this.#unsent) this.#sinks.get(rid)?.text(u.text, u.tokens)
      this.#unsent.clear()
    })
  }

  /** Hands `rid`'s unsent text to its sink. */
  #handOver(rid: number, sink: TextSink): void {
    const u = this.#unsent.get(rid)
    if (u === undefined) return
    this.#unsent.delete(rid)
    sink.text(u.text, u.tokens)
  }

  submit(req: TextRequest, sink: TextSink): Promise<TextSubmission> {
    const rid = this.#next++
    this.#sinks.set(rid, sink)
    return new Promise((resolve) => {
      this.#pending.set(rid, resolve)
      this.#port.postMessage({ t: 'submit', rid, req } satisfies Up)
    })
  }

  httpRequest(route: string, status: number, seconds: number): void {
    this.#port.postMessage({ t: 'http', route, status, seconds } satisfies Up)
  }

  slowReader(): void {
    this.#port.postMessage({ t: 'slow-reader' } satisfies Up)
  }

  scrape(what: 'metrics' | 'health'): Promise<{ status: number; contentType: string; body: string }> {
    const rid = this.#next++
    return new Promise((resolve) => {
      this.#scrapes.set(rid, resolve)
      this.#port.postMessage({ t: 'scrape', rid, what } satisfies Up)
    })
  }
}

/** @internal Posts the worker's listening port (or why it could not listen) to the main thread. */
export function reportListening(port: MessagePort, r: { port: number } | { error: string }): void {
  port.postMessage(('port' in r ? { t: 'listening', port: r.port } : { t: 'failed-to-listen', message: r.error }) satisfies Up)
}
