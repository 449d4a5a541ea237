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

/** One request's output event: text (with tokens), done (reason, generated) or failed (message). */
type Event =
  | [rid: number, kind: 0, text: string, tokens: number]
  | [rid: number, kind: 1, reason: FinishReason, generated: number]
  | [rid: number, kind: 2, message: string, _: 0]

/** Main → worker. */
type Down =
  | {
      t: 'submitted'
      rid: number
      result: { ok: true; promptTokens: number } | { ok: false; reason: 'busy' | 'shutdown' | 'invalid'; message: string; param?: string }
    }
  | { t: 'events'; events: Event[] }
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
  /** Output events since the last message: the output of one step goes in one message. */
  #outbox: Event[] = []
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
          text: (text, tokens) => this.#push([rid, 0, text, tokens]),
          done: (reason, generated) => {
            this.#cancels.delete(rid)
            this.#push([rid, 1, reason, generated])
          },
          failed: (message) => {
            this.#cancels.delete(rid)
            this.#push([rid, 2, message, 0])
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
  #push(e: Event): void {
    this.#outbox.push(e)
    if (this.#flushing) return
    this.#flushing = true
    queueMicrotask(() => {
      this.#flushing = false
      const events = this.#outbox
      this.#outbox = []
      this.#post({ t: 'events', events })
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
        for (const [rid, kind, a, b] of m.events) {
          const sink = this.#sinks.get(rid)
          if (sink === undefined) continue
          if (kind === 0) sink.text(a, b)
          else {
            this.#sinks.delete(rid)
            if (kind === 1) sink.done(a, b)
            else sink.failed(a)
          }
        }
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
