/**
 * `cudagraph bench --serve`: the generator as users run it, two processes. Starts `cudagraph serve` as a
 * child, then for 1, 8, 64... concurrent clients measures TTFT, inter-token time, tokens/s and the IPC
 * cost per token (server write to client read, stamped on the server's monotonic clock: no GPU work in
 * it), plus a PING round trip; then one busy-polling client (ConnectOptions.busyPoll). Checks that every
 * prompt gets the same tokens at every concurrency, then stops the server with SIGTERM and checks that it
 * exits 0 and removes its socket. With `--http` (a model directory), the same clients and prompts also
 * stream through the OpenAI endpoint (HTTP, SSE) in the same run: its TTFT, inter-token time and tokens/s
 * beside the socket's, and the per-token cost HTTP adds.
 */
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { Agent, request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ModelName } from '../model/model-config.js'
import { Client } from '../serve/client.js'
import { PACKAGE_ROOT } from '../util/package-root.js'
import { percentile } from '../util/percentile.js'
import { tokenSource } from '../util/random.js'
import { BenchmarkError } from './errors.js'
import { lineChartSvg } from './svg-chart.js'
import { fixed, formatTable } from './table.js'

/** What `cudagraph bench --serve` runs. */
export interface ServeBenchOptions {
  /** A preset, or a Hugging Face model directory (needed for `http`). */
  model: ModelName | { dir: string }
  /** Also measure the OpenAI HTTP endpoint (SSE streaming). */
  http: boolean
  /** Concurrent clients, one row each. */
  clients: number[]
  /** Timed requests per client, one after another. */
  requests: number
  /** Tokens generated per request. */
  tokens: number
  /** Prompt tokens per request. */
  promptLength: number
  seed: number
  out: string
  print: boolean
}

/** One row: `clients` clients, each running its requests in turn. */
export interface ServeRow {
  clients: number
  /** Whether the clients busy-poll (ConnectOptions.busyPoll). */
  busyPoll: boolean
  requests: number
  tokens: number
  tokensPerSecond: number
  ttftP50Ms: number
  ttftP99Ms: number
  interTokenP50Ms: number
  interTokenP99Ms: number
  /** Server write to client read per token, µs. */
  ipcP50Us: number
  ipcP99Us: number
  /** Mean requests per decode step in the server (its metrics). */
  meanBatch: number
}

const CLI = join(PACKAGE_ROOT, 'bin', 'cudagraph.js')

/** One row of the text table: `clients` concurrent text streams (the socket's, or the OpenAI endpoint's SSE); inter-token times are between text chunks. */
export interface TextRow extends Omit<ServeRow, 'busyPoll' | 'ipcP50Us' | 'ipcP99Us' | 'meanBatch'> {
  path: 'socket' | 'http'
}

/** The figures every row has: tokens/s, and TTFT and inter-token percentiles (ms). */
function streamFigures(clients: number, requests: number, tokens: number, seconds: number, ttft: number[], gaps: number[]) {
  return {
    clients,
    requests,
    tokens,
    tokensPerSecond: tokens / seconds,
    ttftP50Ms: percentile(ttft, 0.5),
    ttftP99Ms: percentile(ttft, 0.99),
    interTokenP50Ms: percentile(gaps, 0.5),
    interTokenP99Ms: percentile(gaps, 0.99),
  }
}

/** A text stream's chunk arrival times (ms) and its tokens. */
interface Streamed {
  times: number[]
  tokens: number
}

const httpAgent = new Agent({ keepAlive: true, maxSockets: 1024 })

/**
 * Streams one completion through the OpenAI endpoint with node:http (lighter than fetch, so the
 * benchmark's own client costs less CPU per chunk); the arrival time of each chunk, and the tokens.
 */
function sseCompletion(base: URL, model: string, prompt: string, maxTokens: number): Promise<Streamed> {
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
        const times: number[] = []
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
        res.on('end', () => resolve({ times, tokens }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

/** A socket text stream: chunk arrival times and tokens. */
async function socketText(c: Client, prompt: string, maxTokens: number): Promise<Streamed> {
  const times: number[] = []
  const g = c.generateText(prompt, { maxNewTokens: maxTokens, ignoreEos: true })
  for await (const _ of g) times.push(performance.now())
  return { times, tokens: g.received }
}

/** Scrapes the sum and count of histogram `name` from the server's metrics. */
async function histogram(port: number, name: string): Promise<{ sum: number; count: number }> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  const get = (suffix: string) => Number(new RegExp(`^${name}_${suffix}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN)
  return { sum: get('sum'), count: get('count') }
}

/** Runs the benchmark; returns what serve-results.json holds. */
export async function runServeBench(o: ServeBenchOptions): Promise<Record<string, unknown>> {
  const say = (s: string) => o.print && process.stderr.write(`${s}\n`)
  const print = (s: string) => o.print && process.stdout.write(`${s}\n`)
  const socket = join(tmpdir(), `cudagraph-bench-${process.pid}.sock`)
  const maxClients = Math.max(...o.clients)
  const maxSeqLen = Math.max(128, o.promptLength + o.tokens)
  const modelArg = typeof o.model === 'string' ? o.model : o.model.dir
  const child = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      '--socket',
      socket,
      '--model',
      modelArg,
      '--max-batch',
      String(maxClients),
      '--max-seq-len',
      String(maxSeqLen),
      '--metrics-port',
      '0',
      '--seed',
      String(o.seed),
      ...(o.http ? ['--http', '127.0.0.1:0'] : []),
    ],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  )
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  let base: URL | undefined
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /metrics http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(out)
      const api = /OpenAI API (http:\/\/[^/\s]+)\/v1/.exec(out)?.[1]
      if (api !== undefined) base = new URL(api)
      if (m) resolve(Number(m[1]))
    })
    void exited.then((code) => reject(new BenchmarkError(`cudagraph serve exited with ${code} before it was ready`)))
  })
  try {
    const clients = await Promise.all(Array.from({ length: maxClients }, () => Client.connect(socket)))
    const vocab = clients[0]!.server.vocab
    // The same prompt for the same (client, request) at every concurrency: tokens are compared across rows.
    const source = tokenSource(o.seed + 29, vocab)
    const prompts = Array.from({ length: maxClients * o.requests }, () => source(o.promptLength))
    const seen = new Map<number, string>()
    let mismatches = 0
    let compared = 0

    // The socket round trip alone: PING, PONG, with no GPU work.
    const rtt: number[] = []
    for (let i = 0; i < 2200; i++) {
      const us = await clients[0]!.ping()
      if (i >= 200) rtt.push(us)
    }
    say(`ping round trip: p50 ${fixed(percentile(rtt, 0.5))} µs, p99 ${fixed(percentile(rtt, 0.99))} µs`)

    /** Runs every client's requests in turn, all clients at once; one row. */
    const measure = async (group: Client[], busyPoll: boolean): Promise<ServeRow> => {
      const n = group.length
      // Warm-up: one short request per client (connections, JIT), not timed.
      await Promise.all(group.map((c, k) => c.generate(prompts[k]!, { maxNewTokens: 4 }).toArray()))
      const before = await histogram(port, 'cudagraph_decode_batch_size')
      const ttft: number[] = []
      const gaps: number[] = []
      const ipc: number[] = []
      let tokens = 0
      const t0 = performance.now()
      await Promise.all(
        group.map(async (c, k) => {
          for (let j = 0; j < o.requests; j++) {
            const idx = k * o.requests + j
            const got: number[] = []
            const start = performance.now()
            let prev = start
            const g = c.generate(prompts[idx]!, { maxNewTokens: o.tokens })
            for await (const tok of g) {
              const t = performance.now()
              ipc.push(Number(process.hrtime.bigint() - g.sentNs) / 1000)
              if (got.length === 0) ttft.push(t - start)
              else gaps.push(t - prev)
              prev = t
              got.push(tok)
            }
            tokens += got.length
            const key = got.join(',')
            const first = seen.get(idx)
            if (first === undefined) seen.set(idx, key)
            else {
              compared++
              if (first !== key) mismatches++
            }
          }
        }),
      )
      const seconds = (performance.now() - t0) / 1000
      const after = await histogram(port, 'cudagraph_decode_batch_size')
      const row: ServeRow = {
        ...streamFigures(n, n * o.requests, tokens, seconds, ttft, gaps),
        busyPoll,
        ipcP50Us: percentile(ipc, 0.5),
        ipcP99Us: percentile(ipc, 0.99),
        meanBatch: (after.sum - before.sum) / (after.count - before.count),
      }
      say(
        `${n} clients${busyPoll ? ', busy-polling' : ''}: ${tokens} tokens in ${seconds.toFixed(2)} s, ${row.tokensPerSecond.toFixed(0)} tokens/s, mean decode batch ${row.meanBatch.toFixed(1)}`,
      )
      return row
    }

    const rows: ServeRow[] = []
    for (const n of o.clients) rows.push(await measure(clients.slice(0, n), false))
    // One client again, busy-polling (ConnectOptions.busyPoll): the IPC cost without the wake-up.
    const poller = await Client.connect(socket, { busyPoll: true })
    const polled = await measure([poller], true)
    poller.close()
    const serverModel = clients[0]!.server.model
    for (const c of clients) c.close()

    // Text: the same prompts (as text) streamed through the socket's text path and through the OpenAI
    // endpoint (SSE), by as many concurrent clients: what HTTP costs per token over the socket, like for like.
    const textRows: TextRow[] = []
    if (o.http && base !== undefined) {
      const api = base
      const texts = prompts.map((p) => Array.from(p, (x) => String.fromCharCode(97 + (x % 26))).join(''))
      const textClients = await Promise.all(Array.from({ length: maxClients }, () => Client.connect(socket)))
      const run = async (path: TextRow['path'], n: number): Promise<TextRow> => {
        const one = (k: number, idx: number, tokens: number) =>
          path === 'http' ? sseCompletion(api, serverModel, texts[idx]!, tokens) : socketText(textClients[k]!, texts[idx]!, tokens)
        await Promise.all(Array.from({ length: n }, (_, k) => one(k, k, 4)))
        const ttft: number[] = []
        const gaps: number[] = []
        let tokens = 0
        const t0 = performance.now()
        await Promise.all(
          Array.from({ length: n }, async (_, k) => {
            for (let j = 0; j < o.requests; j++) {
              const start = performance.now()
              const r = await one(k, k * o.requests + j, o.tokens)
              tokens += r.tokens
              if (r.times.length > 0) ttft.push(r.times[0]! - start)
              for (let i = 1; i < r.times.length; i++) gaps.push(r.times[i]! - r.times[i - 1]!)
            }
          }),
        )
        const seconds = (performance.now() - t0) / 1000
        say(`text over ${path}, ${n} clients: ${tokens} tokens in ${seconds.toFixed(2)} s, ${(tokens / seconds).toFixed(0)} tokens/s`)
        return { path, ...streamFigures(n, n * o.requests, tokens, seconds, ttft, gaps) }
      }
      for (const n of o.clients) {
        textRows.push(await run('socket', n))
        textRows.push(await run('http', n))
      }
      for (const c of textClients) c.close()
    }
    const textRow = (path: TextRow['path'], n: number) => textRows.find((r) => r.path === path && r.clients === n)
    /** HTTP's inter-token p50 over the socket text path's at `n` clients, µs. */
    const httpOverheadUs = (n: number) => {
      const h = textRow('http', n)
      const sk = textRow('socket', n)
      return h && sk ? (h.interTokenP50Ms - sk.interTokenP50Ms) * 1000 : undefined
    }

    const one = rows.find((r) => r.clients === 1)
    const most = rows.find((r) => r.clients === maxClients)
    const table = [...rows, polled]
    print('')
    print(`Generator over a Unix socket: ${modelArg}, prompts of ${o.promptLength} tokens, ${o.tokens} tokens each, ${o.requests} requests per client in turn`)
    print(
      formatTable(
        ['clients', 'requests', 'tokens/s', 'vs 1 client', 'TTFT p50 ms', 'TTFT p99 ms', 'ITL p50 ms', 'ITL p99 ms', 'IPC p50 µs', 'IPC p99 µs', 'mean batch'],
        table.map((r) => [
          r.busyPoll ? `${r.clients} busy-poll` : r.clients,
          r.requests,
          fixed(r.tokensPerSecond, 0),
          one ? `${fixed(r.tokensPerSecond / one.tokensPerSecond, 1)}x` : '-',
          fixed(r.ttftP50Ms, 2),
          fixed(r.ttftP99Ms, 2),
          fixed(r.interTokenP50Ms, 3),
          fixed(r.interTokenP99Ms, 3),
          fixed(r.ipcP50Us),
          fixed(r.ipcP99Us),
          fixed(r.meanBatch, 1),
        ]),
      ),
    )
    print(
      `IPC: the socket's cost per token, from the server writing a token's frame to the client reading it (no GPU work in it); PING round trip p50 ${fixed(percentile(rtt, 0.5))} µs, p99 ${fixed(percentile(rtt, 0.99))} µs`,
    )
    print(
      `busy-poll: a client made with { busyPoll: true } keeps its event loop spinning while it generates (one CPU core busy) instead of sleeping until the kernel wakes it`,
    )
    print(`same tokens for the same prompt at every concurrency: ${compared - mismatches}/${compared} requests compared`)
    if (textRows.length > 0) {
      print('')
      print('Text, the same prompts: the socket (GENERATE_TEXT) and the OpenAI endpoint (POST /v1/completions, stream: true), in the same run')
      print(
        formatTable(
          ['path', 'clients', 'requests', 'tokens/s', 'vs 1 client', 'TTFT p50 ms', 'TTFT p99 ms', 'ITL p50 ms', 'ITL p99 ms', 'HTTP - socket ITL p50 µs'],
          textRows.map((r) => [
            r.path,
            r.clients,
            r.requests,
            fixed(r.tokensPerSecond, 0),
            textRow(r.path, 1) ? `${fixed(r.tokensPerSecond / textRow(r.path, 1)!.tokensPerSecond, 1)}x` : '-',
            fixed(r.ttftP50Ms, 2),
            fixed(r.ttftP99Ms, 2),
            fixed(r.interTokenP50Ms, 3),
            fixed(r.interTokenP99Ms, 3),
            r.path === 'http' ? fixed(httpOverheadUs(r.clients)) : '-',
          ]),
        ),
      )
    }

    child.kill('SIGTERM')
    const code = await exited
    const socketRemoved = !existsSync(socket)
    print(`SIGTERM: the server exited with ${code} and ${socketRemoved ? 'removed' : 'left'} its socket file`)
    const targets = {
      ipcP50Us: one?.ipcP50Us,
      ipcBusyPollP50Us: polled.ipcP50Us,
      scaling: one && most ? most.tokensPerSecond / one.tokensPerSecond : undefined,
      sameTokens: mismatches === 0,
      cleanShutdown: code === 0 && socketRemoved,
      httpScaling:
        textRow('http', 1) && textRow('http', maxClients) ? textRow('http', maxClients)!.tokensPerSecond / textRow('http', 1)!.tokensPerSecond : undefined,
      httpOverheadP50Us: httpOverheadUs(1),
    }
    print(
      `targets: IPC per token p50 at 1 client ${fixed(targets.ipcP50Us)} µs, busy-polling ${fixed(targets.ipcBusyPollP50Us)} µs (<= 30); ${maxClients} clients ${fixed(targets.scaling, 1)}x the tokens/s of 1 (>= 20); ` +
        `same tokens at every concurrency: ${targets.sameTokens ? 'yes' : 'no'}; clean shutdown: ${targets.cleanShutdown ? 'yes' : 'no'}` +
        (o.http
          ? `; HTTP: ${maxClients} clients ${fixed(targets.httpScaling, 1)}x the tokens/s of 1 (>= 20), per-token cost over the socket at 1 client ${fixed(targets.httpOverheadP50Us)} µs p50 (<= 50)`
          : ''),
    )
    const results = {
      options: { ...o, print: undefined },
      pingRoundTripUs: { p50: percentile(rtt, 0.5), p99: percentile(rtt, 0.99) },
      rows: table,
      textRows,
      tokensCompared: compared,
      mismatches,
      shutdown: { code, socketRemoved },
      targets,
    }
    mkdirSync(o.out, { recursive: true })
    writeFileSync(join(o.out, 'serve-results.json'), `${JSON.stringify(results, null, 2)}\n`)
    writeFileSync(
      join(o.out, 'serve-chart.svg'),
      lineChartSvg({
        title: `cudagraph serve (${modelArg}): tokens/s vs concurrent clients (log-log), higher is better`,
        xLabel: 'concurrent clients',
        yUnit: 'tokens/s',
        series: [
          { name: 'token ids over the socket', color: '#2a9d8f', points: rows.map((r) => [r.clients, r.tokensPerSecond] as const) },
          {
            name: 'text over the socket',
            color: '#8d6cab',
            points: textRows.filter((r) => r.path === 'socket').map((r) => [r.clients, r.tokensPerSecond] as const),
          },
          {
            name: 'text over OpenAI HTTP/SSE',
            color: '#e76f51',
            points: textRows.filter((r) => r.path === 'http').map((r) => [r.clients, r.tokensPerSecond] as const),
          },
          { name: 'linear from 1 client', color: '#bbbbbb', points: one ? rows.map((r) => [r.clients, one.tokensPerSecond * r.clients] as const) : [] },
        ],
      }),
    )
    say(`wrote ${join(o.out, 'serve-results.json')} and ${join(o.out, 'serve-chart.svg')}`)
    return results
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL')
  }
}
