/**
 * The OpenAI-compatible HTTP endpoint on the generator's scheduler (node:http, no framework: the two
 * things that must be right, SSE framing and backpressure, are a few lines each on the raw response):
 * `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions` (streaming as Server-Sent Events,
 * one `data:` event per chunk, then `data: [DONE]`), `/health` and `/metrics`. Requests join the same
 * continuous batch as the socket's. Errors come in OpenAI's shape `{ error: { message, type, param, code } }`;
 * a parameter this server does not implement is a 400 naming it, never ignored. Every resource a client
 * can hold is bounded: the body (413), the unread output of a stream (the client is dropped), open
 * connections, and time (headers, body, idle keep-alive).
 */
import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ArgumentError } from '../errors.js'
import { type ChatMessage, checkSampling, checkStops, requestError } from '../util/text-request.js'
import type { TextService, TextSink } from './http-bridge.js'
import type { TextRequest } from './text.js'
import type { FinishReason } from './wire-protocol.js'

/** Options of {@link OpenAiHttp.listen}. */
export interface OpenAiHttpOptions {
  /** Interface to listen on (default 127.0.0.1). */
  host?: string
  /** Port (0: any free one). */
  port: number
  /** Largest request body, bytes (default 1 MiB); more is a 413. */
  maxBodyBytes?: number
  /** A stream's output its client may leave unread before it is dropped, bytes (default 4 MiB). */
  maxUnreadBytes?: number
  /** Open connections at most (default 1024); more are refused by the kernel's backlog and closed. */
  maxConnections?: number
  /** A keep-alive connection with no request is closed after this long, ms (default 60000). */
  idleTimeoutMs?: number
  /** Headers and body must arrive within this long, ms (default 30000). */
  requestTimeoutMs?: number
}

/** An OpenAI-shaped error. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type = status === 429 ? 'rate_limit_error' : status >= 500 ? 'server_error' : status === 404 ? 'not_found_error' : 'invalid_request_error',
  ) {
    super(message)
  }
}

type Route = 'models' | 'completions' | 'chat' | 'health' | 'metrics' | 'other'

/** Parameters that are accepted and have no effect on the output. */
const INERT = new Set(['model', 'user', 'stream', 'stream_options'])
/** Parameters accepted only at their default (anything else is a 400 naming them). */
const DEFAULT_ONLY: Record<string, (v: unknown) => boolean> = {
  n: (v) => v === 1,
  best_of: (v) => v === 1,
  logprobs: (v) => v === false || v === 0,
  top_logprobs: (v) => v === 0,
  echo: (v) => v === false,
  suffix: (v) => v === '',
  presence_penalty: (v) => v === 0,
  frequency_penalty: (v) => v === 0,
  logit_bias: (v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0,
  tools: (v) => Array.isArray(v) && v.length === 0,
  tool_choice: (v) => v === 'none',
  functions: (v) => Array.isArray(v) && v.length === 0,
  function_call: (v) => v === 'none',
  response_format: (v) => typeof v === 'object' && v !== null && (v as { type?: unknown }).type === 'text',
  parallel_tool_calls: () => true,
  store: (v) => v === false,
  metadata: () => true,
}
/** Parameters the endpoint reads, per route. */
const SAMPLING = ['max_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'stop', 'ignore_eos']
const KNOWN: Record<'completions' | 'chat', Set<string>> = {
  completions: new Set(['prompt', ...SAMPLING]),
  chat: new Set(['messages', 'max_completion_tokens', ...SAMPLING]),
}

/** The OpenAI endpoint of one generator server (in its worker thread: see http-bridge.ts). */
export class OpenAiHttp {
  readonly #gen: TextService
  readonly #http: Server
  readonly #maxBody: number
  readonly #maxUnread: number
  readonly #created = Math.floor(Date.now() / 1000)
  /** Streams and responses in progress: closing ends them. */
  readonly #open = new Set<ServerResponse>()
  port = 0

  private constructor(gen: TextService, o: OpenAiHttpOptions) {
    this.#gen = gen
    this.#maxBody = o.maxBodyBytes ?? 1 << 20
    this.#maxUnread = o.maxUnreadBytes ?? 4 << 20
    this.#http = createServer(
      {
        requestTimeout: o.requestTimeoutMs ?? 30_000,
        headersTimeout: Math.min(o.requestTimeoutMs ?? 30_000, 20_000),
        keepAliveTimeout: o.idleTimeoutMs ?? 60_000,
      },
      (req, res) => this.#route(req, res),
    )
    this.#http.maxConnections = o.maxConnections ?? 1024
  }

  /** Starts the endpoint for `gen`; resolves once it listens. */
  static async listen(gen: TextService, o: OpenAiHttpOptions): Promise<OpenAiHttp> {
    const h = new OpenAiHttp(gen, o)
    await new Promise<void>((resolve, reject) => {
      h.#http.once('error', reject)
      h.#http.listen(o.port, o.host ?? '127.0.0.1', () => {
        h.#http.off('error', reject)
        resolve()
      })
    })
    h.port = (h.#http.address() as AddressInfo).port
    return h
  }

  /** Stops accepting and closes every connection (streams in progress end with the server's shutdown first). */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#http.close(() => resolve()))
    this.#http.closeIdleConnections()
    for (const res of this.#open) res.destroy()
    this.#http.closeAllConnections()
    await closed
  }

  #route(req: IncomingMessage, res: ServerResponse): void {
    const t0 = performance.now()
    const url = (req.url ?? '/').split('?')[0]!
    const route: Route =
      url === '/v1/models'
        ? 'models'
        : url === '/v1/completions'
          ? 'completions'
          : url === '/v1/chat/completions'
            ? 'chat'
            : url === '/metrics'
              ? 'metrics'
              : url === '/health' || url === '/healthz'
                ? 'health'
                : 'other'
    res.once('close', () => this.#gen.httpRequest(route, res.statusCode, (performance.now() - t0) / 1000))
    if ((route === 'metrics' || route === 'health') && req.method === 'GET') {
      this.#gen.scrape(route).then(
        (r) => res.writeHead(r.status, { 'content-type': r.contentType }).end(r.body),
        (e: unknown) => this.#fail(res, e),
      )
      return
    }
    if (route === 'models' && req.method === 'GET') {
      sendJson(res, 200, { object: 'list', data: [{ id: this.#gen.model, object: 'model', created: this.#created, owned_by: 'cudagraph' }] })
      return
    }
    if ((route === 'completions' || route === 'chat') && req.method === 'POST') {
      this.#generate(route, req, res).catch((e: unknown) => this.#fail(res, e))
      return
    }
    const allowed = route === 'models' || route === 'metrics' || route === 'health' ? 'GET' : route === 'other' ? undefined : 'POST'
    this.#fail(
      res,
      allowed ? new HttpError(405, `${req.method} ${url}: use ${allowed}`) : new HttpError(404, `no route ${req.method} ${url}`, null, 'not_found'),
    )
  }

  /** Sends `e` in OpenAI's shape (a stream already begun gets an error event and ends). */
  #fail(res: ServerResponse, e: unknown): void {
    const err = e instanceof HttpError ? e : new HttpError(500, `internal error: ${e instanceof Error ? e.message : String(e)}`)
    const body = { error: { message: err.message, type: err.type, param: err.param, code: err.code } }
    if (res.headersSent) {
      if (!res.writableEnded && !res.destroyed) res.end(`data: ${JSON.stringify(body)}\n\n`)
      return
    }
    sendJson(res, err.status, body)
  }

  async #generate(route: 'completions' | 'chat', req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req, this.#maxBody)
    const parsed = this.#parse(route, body)
    if (!this.#gen.text)
      throw new HttpError(400, 'this server has no tokenizer: it serves token ids on its socket only', route === 'chat' ? 'messages' : 'prompt')
    const id = `${route === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`
    const created = Math.floor(Date.now() / 1000)
    const model = this.#gen.model
    const object = route === 'chat' ? 'chat.completion' : 'text_completion'
    // Stream chunks: chat.completion.chunk; completions stream text_completion objects, as OpenAI does.
    const chunkObject = route === 'chat' ? 'chat.completion.chunk' : 'text_completion'
    const choice = (text: string, finish: string | null, delta: boolean) =>
      route === 'chat'
        ? {
            index: 0,
            [delta ? 'delta' : 'message']: delta ? (text === '' ? {} : { content: text }) : { role: 'assistant', content: text },
            finish_reason: finish,
            logprobs: null,
          }
        : { index: 0, text, finish_reason: finish, logprobs: null }
    let text = ''
    let generated = 0
    let ended = false
    let submitted: { cancel: (reason?: FinishReason) => void; promptTokens: number } | undefined
    const usage = () => ({
      prompt_tokens: submitted?.promptTokens ?? 0,
      completion_tokens: generated,
      total_tokens: (submitted?.promptTokens ?? 0) + generated,
    })
    const finishOf = (r: FinishReason) => (r === 'stop' ? 'stop' : 'length')
    const stream = parsed.stream
    const write = (event: unknown) => send(`data: ${JSON.stringify(event)}\n\n`)
    const send = (frame: string) => {
      if (res.destroyed) return
      res.write(frame)
      // Backpressure: what the client leaves unread is bounded; past it the client is dropped.
      if (res.writableLength > this.#maxUnread) {
        this.#gen.slowReader()
        submitted?.cancel()
        res.destroy()
      }
    }
    const chunk = (text: string, finish: string | null) => ({ id, object: chunkObject, created, model, choices: [choice(text, finish, true)] })
    // The chunk of each token is the same JSON around its text: built once, so a token costs one string escape.
    const [head, tail] = JSON.stringify(chunk('\u0000', null)).split('"\\u0000"') as [string, string]
    const sink: TextSink = {
      text: (t, tokens) => {
        generated += tokens
        if (stream) send(`data: ${head}${JSON.stringify(t)}${tail}\n\n`)
        else text += t
      },
      done: (reason, n) => {
        ended = true
        generated = n
        this.#open.delete(res)
        if (res.destroyed) return
        if (reason === 'shutdown') return this.#fail(res, new HttpError(503, 'the server shut down before this request finished', null, 'shutting_down'))
        if (reason === 'cancelled') return void res.destroy()
        if (!stream) {
          sendJson(res, 200, { id, object, created, model, choices: [choice(text, finishOf(reason), false)], usage: usage() })
          return
        }
        write(chunk('', finishOf(reason)))
        if (parsed.includeUsage) write({ id, object: chunkObject, created, model, choices: [], usage: usage() })
        if (!res.destroyed) res.end('data: [DONE]\n\n')
      },
      failed: (message) => {
        ended = true
        this.#open.delete(res)
        this.#fail(res, new HttpError(500, message))
      },
    }
    // A client that goes away (or aborts) cancels its request, also while the submission is on its way:
    // its KV slot is free at once.
    let gone = false
    res.once('close', () => {
      gone = true
      this.#open.delete(res)
      if (!ended) submitted?.cancel()
    })
    const sub = await this.#gen.submit(parsed.request, sink)
    if (!sub.ok) {
      if (sub.reason === 'busy') throw new HttpError(429, sub.message, null, 'queue_full')
      if (sub.reason === 'shutdown') throw new HttpError(503, sub.message, null, 'shutting_down')
      const param = sub.param === 'prompt' && route === 'chat' ? 'messages' : (sub.param ?? null)
      throw new HttpError(400, sub.message, param, /context/.test(sub.message) ? 'context_length_exceeded' : null)
    }
    submitted = sub
    if (gone) {
      sub.cancel()
      return
    }
    this.#open.add(res)
    if (stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' })
      res.socket?.setNoDelay(true)
      res.flushHeaders()
      if (route === 'chat')
        write({
          id,
          object: chunkObject,
          created,
          model,
          choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null, logprobs: null }],
        })
    }
  }

  /** The request's parameters, checked: a 400 naming the first bad or unsupported one. */
  #parse(route: 'completions' | 'chat', body: unknown): { request: TextRequest; stream: boolean; includeUsage: boolean } {
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'the body must be a JSON object')
    const b = body as Record<string, unknown>
    for (const [k, v] of Object.entries(b)) {
      if (v === null || v === undefined || INERT.has(k) || KNOWN[route].has(k)) continue
      const ok = DEFAULT_ONLY[k]
      if (ok === undefined) throw new HttpError(400, `unknown parameter '${k}'`, k, 'unknown_parameter')
      if (!ok(v)) throw new HttpError(400, `'${k}' is not supported by this server (only its default)`, k, 'unsupported_parameter')
    }
    if (typeof b.model !== 'string') throw new HttpError(400, "'model' is required: a model id from GET /v1/models", 'model')
    if (b.model !== this.#gen.model)
      throw new HttpError(404, `the model '${b.model}' does not exist here (this server has '${this.#gen.model}')`, 'model', 'model_not_found')
    const num = (k: string): number | undefined => {
      const v = b[k]
      if (v === undefined || v === null) return undefined
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new HttpError(400, `'${k}' must be a number`, k)
      return v
    }
    const stream = b.stream === undefined || b.stream === null ? false : b.stream
    if (typeof stream !== 'boolean') throw new HttpError(400, "'stream' must be a boolean", 'stream')
    const so = b.stream_options
    let includeUsage = false
    if (so !== undefined && so !== null) {
      if (typeof so !== 'object' || Array.isArray(so)) throw new HttpError(400, "'stream_options' must be an object", 'stream_options')
      if (!stream) throw new HttpError(400, "'stream_options' is only for stream: true", 'stream_options')
      for (const k of Object.keys(so)) if (k !== 'include_usage') throw new HttpError(400, `unknown parameter 'stream_options.${k}'`, `stream_options.${k}`)
      includeUsage = (so as { include_usage?: unknown }).include_usage === true
    }
    const maxKey = route === 'chat' && b.max_completion_tokens !== undefined && b.max_completion_tokens !== null ? 'max_completion_tokens' : 'max_tokens'
    const maxNewTokens = num(maxKey)
    if (maxNewTokens !== undefined && !(Number.isInteger(maxNewTokens) && maxNewTokens >= 1))
      throw new HttpError(400, `'${maxKey}' must be a positive integer`, maxKey)
    const stopRaw = b.stop ?? []
    const stop = typeof stopRaw === 'string' ? [stopRaw] : stopRaw
    if (!Array.isArray(stop) || !stop.every((x) => typeof x === 'string')) throw new HttpError(400, "'stop' must be a string or an array of strings", 'stop')
    const ignoreEos = b.ignore_eos ?? false
    if (typeof ignoreEos !== 'boolean') throw new HttpError(400, "'ignore_eos' must be a boolean", 'ignore_eos')
    try {
      const sampling = checkSampling(
        { temperature: num('temperature') ?? 1, topP: num('top_p') ?? 1, topK: num('top_k') ?? 0, seed: num('seed') ?? 0 },
        { temperature: 'temperature', topP: 'top_p', topK: 'top_k', seed: 'seed' },
      )
      if (sampling.temperature > 2) throw requestError('temperature', `expected a number in 0..2, got ${sampling.temperature}`)
      const prompt = route === 'chat' ? messages(b.messages) : completionPrompt(b.prompt)
      return { request: { prompt, maxNewTokens, sampling, stop: checkStops(stop), ignoreEos }, stream, includeUsage }
    } catch (e) {
      if (e instanceof ArgumentError) throw new HttpError(400, e.message, e.argument)
      throw e
    }
  }
}

/** `prompt` of /v1/completions: a string, an array of one string, or token ids (an array of integers). */
function completionPrompt(p: unknown): string | Int32Array {
  if (typeof p === 'string') return p
  if (Array.isArray(p) && p.length === 1 && typeof p[0] === 'string') return p[0]
  if (Array.isArray(p) && p.length > 0 && p.every((x) => Number.isInteger(x) && x >= 0 && x <= 0x7fffffff)) return Int32Array.from(p as number[])
  if (Array.isArray(p) && p.length > 1 && p.every((x) => typeof x === 'string'))
    throw requestError('prompt', 'one prompt per request (a batch of prompts is n > 1: not supported)')
  throw requestError('prompt', 'expected a string or an array of token ids')
}

/** `messages` of /v1/chat/completions: `{ role, content }` with string content, or text parts. */
function messages(m: unknown): ChatMessage[] {
  if (!Array.isArray(m) || m.length === 0) throw requestError('messages', 'expected a non-empty array of messages')
  return m.map((x: unknown, i) => {
    const msg = x as { role?: unknown; content?: unknown }
    if (x === null || typeof x !== 'object' || typeof msg.role !== 'string') throw requestError(`messages[${i}]`, 'expected { role, content }')
    const c = msg.content
    if (typeof c === 'string') return { role: msg.role, content: c }
    if (Array.isArray(c) && c.every((p) => p !== null && typeof p === 'object' && p.type === 'text' && typeof p.text === 'string'))
      return { role: msg.role, content: c.map((p: { text: string }) => p.text).join('') }
    throw requestError(`messages[${i}].content`, 'expected a string or text parts (other content types are not supported)')
  })
}

/** The request body as JSON, at most `limit` bytes (a 413 past it, a 400 for bad JSON). */
function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'])
    if (declared > limit) {
      reject(new HttpError(413, `the body is ${declared} bytes; at most ${limit}`, null, 'body_too_large'))
      return
    }
    const parts: Buffer[] = []
    let n = 0
    req.on('data', (c: Buffer) => {
      n += c.length
      if (n > limit) {
        // Stop reading; the 413 goes out with `connection: close`, which drops the rest.
        req.removeAllListeners('data')
        req.pause()
        reject(new HttpError(413, `the body is more than ${limit} bytes`, null, 'body_too_large'))
        return
      }
      parts.push(c)
    })
    req.on('error', reject)
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(parts).toString('utf8')))
      } catch (e) {
        reject(new HttpError(400, `the body is not valid JSON: ${e instanceof Error ? e.message : String(e)}`, null, 'invalid_json'))
      }
    })
  })
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.destroyed) return
  const text = JSON.stringify(body)
  // After a 413 the rest of the body is unread: the connection cannot carry another request.
  const close = status === 413 ? { connection: 'close' } : {}
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...close }).end(text)
}
