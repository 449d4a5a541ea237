/**
 * The load of `cudagraph bench --serve`, spread over worker threads: each thread streams the requests of
 * its share of a row's clients. One thread parsing 64 SSE streams at 100k+ chunks a second is itself
 * about a core busy, and a load generator that is the bottleneck measures itself, not the server; so every
 * row reports how busy its busiest load thread was.
 */
import { Agent, request } from 'node:http'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { Client } from '../serve/client.js'
import { BenchmarkError } from './errors.js'

/** How a row's clients talk to the server: token ids or text over the socket, or text over the OpenAI endpoint. */
export type LoadPath = 'tokens' | 'socket' | 'http'

/** One row's load. */
export interface LoadSpec {
  path: LoadPath
  /** The server's Unix socket. */
  socket: string
  /** The OpenAI endpoint's base URL (path `http`). */
  base?: string | undefined
  /** The model id the endpoint serves (path `http`). */
  model: string
  /** Concurrent clients. */
  clients: number
  /** Requests per client, one after another: client k's j-th prompt is `prompts[k * requests + j]`. */
  requests: number
  /** Prompts: token ids (path `tokens`) or text. */
  prompts: readonly (Int32Array | string)[]
  /** Tokens generated per request. */
  tokens: number
  /** The clients busy-poll (ConnectOptions.busyPoll; path `tokens`). */
  busyPoll: boolean
}

/** What a row's requests saw. */
export interface LoadResult {
  /** Tokens received. */
  tokens: number
  /** First token (or text chunk) after the request was sent, ms. */
  ttft: number[]
  /** Between tokens (or text chunks), ms. */
  gaps: number[]
  /** Server write to client read per token, µs (path `tokens`). */
  ipc: number[]
  /** Each request's tokens (path `tokens`), by prompt index: compared across rows. */
  sequences: [index: number, tokens: string][]
  /** From the start signal until the last thread finished, s. */
  seconds: number
  /** Load threads used. */
  threads: number
  /** The busiest load thread's event-loop utilization while timed, 0..1. */
  busiest: number
}

/** One thread's share of a row: clients `first`..`first + count - 1`. */
interface Share extends LoadSpec {
  first: number
  count: number
}

type Report = { t: 'ready' } | { t: 'done'; result: Omit<LoadResult, 'seconds' | 'threads' | 'busiest'>; busy: number } | { t: 'failed'; message: string }

/** Load threads for `clients` clients: one per 16 clients, at most a quarter of the cores (the server needs the rest). */
function loadThreads(clients: number): number {
  return Math.max(1, Math.min(Math.ceil(clients / 16), Math.floor(availableParallelism() / 4)))
}

/**
 * Runs a row: starts its threads, lets every client warm up (not timed), calls `atStart` (the caller's
 * reading of the server before the timed part), then times all requests at once.
 */
export async function runLoad(spec: LoadSpec, atStart: () => Promise<void> = async () => {}): Promise<LoadResult> {
  const per = Math.ceil(spec.clients / loadThreads(spec.clients))
  const workers: { worker: Worker; report: (t: Report['t']) => Promise<Report> }[] = []
  try {
    for (let first = 0; first < spec.clients; first += per) {
      const count = Math.min(per, spec.clients - first)
      const prompts = spec.prompts.slice(first * spec.requests, (first + count) * spec.requests)
      const worker = new Worker(join(__dirname, 'serve-load.js'), { workerData: { ...spec, prompts, first, count } satisfies Share })
      const inbox: Report[] = []
      let wake: (() => void) | undefined
      let dead: Error | undefined
      worker.on('message', (m: Report) => {
        inbox.push(m)
        wake?.()
      })
      worker.on('error', (e) => {
        dead = e
        wake?.()
      })
      worker.on('exit', (code) => {
        dead ??= new BenchmarkError(`a load thread exited with ${code}`)
        wake?.()
      })
      const report = async (t: Report['t']): Promise<Report> => {
        for (;;) {
          const m = inbox.shift()
          if (m?.t === 'failed') throw new BenchmarkError(`a load thread failed: ${m.message}`)
          if (m !== undefined) {
            if (m.t !== t) throw new BenchmarkError(`a load thread sent '${m.t}', expected '${t}'`)
            return m
          }
          if (dead !== undefined) throw dead
          await new Promise<void>((resolve) => {
            wake = resolve
          })
        }
      }
      workers.push({ worker, report })
    }
    await Promise.all(workers.map((w) => w.report('ready')))
    await atStart()
    const t0 = performance.now()
    for (const w of workers) w.worker.postMessage('go')
    const done = (await Promise.all(workers.map((w) => w.report('done')))) as Extract<Report, { t: 'done' }>[]
    const seconds = (performance.now() - t0) / 1000
    const result: LoadResult = { tokens: 0, ttft: [], gaps: [], ipc: [], sequences: [], seconds, threads: workers.length, busiest: 0 }
    for (const d of done) {
      result.tokens += d.result.tokens
      for (const k of ['ttft', 'gaps', 'ipc', 'sequences'] as const) for (const x of d.result[k]) (result[k] as unknown[]).push(x)
      result.busiest = Math.max(result.busiest, d.busy)
    }
    return result
  } finally {
    await Promise.all(workers.map((w) => w.worker.terminate()))
  }
}

const httpAgent = new Agent({ keepAlive: true, maxSockets: 1024 })

/**
 * Streams one completion through the OpenAI endpoint with node:http (lighter than fetch, so the load costs
 * less CPU per chunk); the arrival time of each text chunk, and the tokens.
 */
function sseCompletion(base: URL, model: string, prompt: string, maxTokens: number, times: number[]): Promise<number> {
  const body = JSON.stringify({ model, prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } })
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: base.hostname,
        port: base.port,
        path: '/v1/completions',
        method: 'POST',
        agent: httpAgent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        res.setEncoding('utf8')
        if (res.statusCode !== 200) {
          let text = ''
          res.on('data', (d: string) => {
            text += d
          })
          res.on('end', () => reject(new BenchmarkError(`the OpenAI endpoint answered ${res.statusCode}: ${text}`)))
          return
        }
        let tokens = 0
        let pending = ''
        res.on('data', (d: string) => {
          const t = performance.now()
          pending += d
          let cut = pending.indexOf('\n\n')
          while (cut >= 0) {
            const event = pending.slice(0, cut)
            pending = pending.slice(cut + 2)
            cut = pending.indexOf('\n\n')
            if (!event.startsWith('data: {')) continue
            const chunk = JSON.parse(event.slice(6)) as { choices: { text: string }[]; usage?: { completion_tokens: number } }
            if (chunk.usage) tokens = chunk.usage.completion_tokens
            else if (chunk.choices[0]?.text) times.push(t)
          }
        })
        res.on('end', () => resolve(tokens))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

/** A load thread: connects its clients, warms them up, waits for 'go', runs every request, reports. */
async function share(s: Share, port: NonNullable<typeof parentPort>): Promise<void> {
  const clients = s.path === 'http' ? [] : await Promise.all(Array.from({ length: s.count }, () => Client.connect(s.socket, { busyPoll: s.busyPoll })))
  const base = s.base === undefined ? undefined : new URL(s.base)
  const out: Omit<LoadResult, 'seconds' | 'threads' | 'busiest'> = { tokens: 0, ttft: [], gaps: [], ipc: [], sequences: [] }
  /** Client k's request of prompt `p` for `n` tokens: the arrival times of its tokens or chunks. */
  const one = async (k: number, p: number, n: number, timed: boolean): Promise<void> => {
    const prompt = s.prompts[p]!
    const times: number[] = []
    const start = performance.now()
    if (s.path === 'http') {
      const tokens = await sseCompletion(base!, s.model, prompt as string, n, times)
      if (timed) out.tokens += tokens
    } else if (s.path === 'socket') {
      const g = clients[k]!.generateText(prompt as string, { maxNewTokens: n, ignoreEos: true })
      for await (const _ of g) times.push(performance.now())
      if (timed) out.tokens += g.received
    } else {
      const got: number[] = []
      const g = clients[k]!.generate(prompt as Int32Array, { maxNewTokens: n })
      for await (const tok of g) {
        times.push(performance.now())
        if (timed) out.ipc.push(Number(process.hrtime.bigint() - g.sentNs) / 1000)
        got.push(tok)
      }
      if (timed) {
        out.tokens += got.length
        out.sequences.push([(s.first + k) * s.requests + (p % s.requests), got.join(',')])
      }
    }
    if (!timed || times.length === 0) return
    out.ttft.push(times[0]! - start)
    for (let i = 1; i < times.length; i++) out.gaps.push(times[i]! - times[i - 1]!)
  }
  try {
    // Warm-up, not timed: one short request per client (connections, JIT).
    await Promise.all(Array.from({ length: s.count }, (_, k) => one(k, k * s.requests, 4, false)))
    port.postMessage({ t: 'ready' } satisfies Report)
    await new Promise((resolve) => port.once('message', resolve))
    const elu = performance.eventLoopUtilization()
    await Promise.all(
      Array.from({ length: s.count }, async (_, k) => {
        for (let j = 0; j < s.requests; j++) await one(k, k * s.requests + j, s.tokens, true)
      }),
    )
    port.postMessage({ t: 'done', result: out, busy: performance.eventLoopUtilization(elu).utilization } satisfies Report)
  } finally {
    for (const c of clients) c.close()
    httpAgent.destroy()
  }
}

if (!isMainThread && parentPort !== null && (workerData as Share | undefined)?.first !== undefined) {
  const port = parentPort
  share(workerData as Share, port).catch((e: unknown) =>
    port.postMessage({ t: 'failed', message: e instanceof Error ? e.message : String(e) } satisfies Report),
  )
}
