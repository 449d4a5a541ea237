/**
 * `cudagraph bench --serve`: the generator as users run it, two processes. Starts `cudagraph serve` as a
 * child, then for 1, 8, 64... concurrent clients measures TTFT, inter-token time, tokens/s and the IPC
 * cost per token (server write to client read, stamped on the server's monotonic clock: no GPU work in
 * it), plus a PING round trip; then one busy-polling client (ConnectOptions.busyPoll). Checks that every
 * prompt gets the same tokens at every concurrency, then stops the server with SIGTERM and checks that it
 * exits 0 and removes its socket. With `--http` (a model directory), the same clients and prompts also
 * stream through the OpenAI endpoint (HTTP, SSE) in the same run: its TTFT, inter-token time and tokens/s
 * beside the socket's, and the per-token cost HTTP adds. The clients run on worker threads of this process
 * (serve-load.ts); every row also says how the server's steps went (its metrics: batch, step and engine
 * time) and how busy the busiest load thread was, so a row limited by the load is told from one limited
 * by the server.
 */
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ModelName } from '../model/model-config.js'
import { Client } from '../serve/client.js'
import { PACKAGE_ROOT } from '../util/package-root.js'
import { percentile } from '../util/percentile.js'
import { tokenSource } from '../util/random.js'
import { BenchmarkError } from './errors.js'
import { type LoadResult, runLoad } from './serve-load.js'
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
  /** A server step (prefill and decode, tokens sent), mean, µs. */
  stepUs: number
  /** Its engine calls (GPU work and their host side), mean, µs: the rest of a step is the server's. */
  engineUs: number
  /** Of the row's wall time, the server was inside steps, 0..1 (the rest: its event loop, or idle). */
  stepsBusy: number
  /** Threads the load ran on. */
  loadThreads: number
  /** The busiest load thread's event-loop utilization while timed, 0..1. */
  loadBusiest: number
}

const CLI = join(PACKAGE_ROOT, 'bin', 'cudagraph.js')

/** One row of the text table: `clients` concurrent text streams (the socket's, or the OpenAI endpoint's SSE); inter-token times are between text chunks. */
export interface TextRow extends Omit<ServeRow, 'busyPoll' | 'ipcP50Us' | 'ipcP99Us'> {
  path: 'socket' | 'http'
}

/** The figures every row has: tokens/s, TTFT and inter-token percentiles (ms), the server's steps, how busy the load was. */
function streamFigures(clients: number, requests: number, r: LoadResult, before: StepSums, after: StepSums) {
  const steps = after.steps - before.steps
  return {
    meanBatch: (after.batch - before.batch) / (after.decodes - before.decodes),
    stepUs: ((after.stepSeconds - before.stepSeconds) / steps) * 1e6,
    engineUs: ((after.engineSeconds - before.engineSeconds) / steps) * 1e6,
    stepsBusy: (after.stepSeconds - before.stepSeconds) / r.seconds,
    clients,
    requests,
    tokens: r.tokens,
    tokensPerSecond: r.tokens / r.seconds,
    ttftP50Ms: percentile(r.ttft, 0.5),
    ttftP99Ms: percentile(r.ttft, 0.99),
    interTokenP50Ms: percentile(r.gaps, 0.5),
    interTokenP99Ms: percentile(r.gaps, 0.99),
    loadThreads: r.threads,
    loadBusiest: r.busiest,
  }
}

/** The columns every row has, in both tables: its requests, tokens/s (and against `one` client's), TTFT and inter-token percentiles. */
const STREAM_HEADERS = ['requests', 'tokens/s', 'vs 1 client', 'TTFT p50 ms', 'TTFT p99 ms', 'ITL p50 ms', 'ITL p99 ms']

function streamCells(r: Omit<TextRow, 'path'>, one: { tokensPerSecond: number } | undefined): (string | number)[] {
  return [
    r.requests,
    fixed(r.tokensPerSecond, 0),
    one ? `${fixed(r.tokensPerSecond / one.tokensPerSecond, 1)}x` : '-',
    fixed(r.ttftP50Ms, 2),
    fixed(r.ttftP99Ms, 2),
    fixed(r.interTokenP50Ms, 3),
    fixed(r.interTokenP99Ms, 3),
  ]
}

/** The columns on the server's steps and the load, in both tables. */
const STEP_HEADERS = ['mean batch', 'step µs', 'engine µs', 'in steps %', 'load busy %']

function stepCells(r: Omit<TextRow, 'path'>): string[] {
  return [fixed(r.meanBatch, 1), fixed(r.stepUs), fixed(r.engineUs), fixed(100 * r.stepsBusy, 0), `${(100 * r.loadBusiest).toFixed(0)} (${r.loadThreads})`]
}

/** The load's threads and how busy the busiest was (past about 70% it, not the server, may limit the row). */
function loadNote(r: LoadResult): string {
  return `load ${r.threads} thread${r.threads === 1 ? '' : 's'}, busiest ${(100 * r.busiest).toFixed(0)}% busy`
}

/** The server's step counters, from its metrics. */
interface StepSums {
  /** Decode steps and the requests in them. */
  decodes: number
  batch: number
  /** Steps, and the seconds spent in them and in their engine calls. */
  steps: number
  stepSeconds: number
  engineSeconds: number
}

/** Scrapes the step counters from the server's metrics. */
async function stepSums(port: number): Promise<StepSums> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  const get = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN)
  return {
    decodes: get('cudagraph_decode_batch_size_count'),
    batch: get('cudagraph_decode_batch_size_sum'),
    steps: get('cudagraph_step_seconds_count'),
    stepSeconds: get('cudagraph_step_seconds_sum'),
    engineSeconds: get('cudagraph_engine_seconds_sum'),
  }
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
    const pinger = await Client.connect(socket)
    const { vocab, model: serverModel } = pinger.server
    // The same prompt for the same (client, request) at every concurrency: tokens are compared across rows.
    const source = tokenSource(o.seed + 29, vocab)
    const prompts = Array.from({ length: maxClients * o.requests }, () => source(o.promptLength))
    const seen = new Map<number, string>()
    let mismatches = 0
    let compared = 0

    // The socket round trip alone: PING, PONG, with no GPU work.
    const rtt: number[] = []
    for (let i = 0; i < 2200; i++) {
      const us = await pinger.ping()
      if (i >= 200) rtt.push(us)
    }
    pinger.close()
    say(`ping round trip: p50 ${fixed(percentile(rtt, 0.5))} µs, p99 ${fixed(percentile(rtt, 0.99))} µs`)

    /** Runs every client's requests in turn, all clients at once, on token ids; one row. */
    const measure = async (n: number, busyPoll: boolean): Promise<ServeRow> => {
      let before: StepSums | undefined
      const r = await runLoad(
        { path: 'tokens', socket, model: serverModel, clients: n, requests: o.requests, prompts, tokens: o.tokens, busyPoll },
        async () => {
          before = await stepSums(port)
        },
      )
      const after = await stepSums(port)
      for (const [idx, key] of r.sequences) {
        const first = seen.get(idx)
        if (first === undefined) seen.set(idx, key)
        else {
          compared++
          if (first !== key) mismatches++
        }
      }
      const row: ServeRow = {
        ...streamFigures(n, n * o.requests, r, before!, after),
        busyPoll,
        ipcP50Us: percentile(r.ipc, 0.5),
        ipcP99Us: percentile(r.ipc, 0.99),
      }
      say(
        `${n} clients${busyPoll ? ', busy-polling' : ''}: ${r.tokens} tokens in ${r.seconds.toFixed(2)} s, ${row.tokensPerSecond.toFixed(0)} tokens/s, mean decode batch ${row.meanBatch.toFixed(1)}, ${loadNote(r)}`,
      )
      return row
    }

    const rows: ServeRow[] = []
    for (const n of o.clients) rows.push(await measure(n, false))
    // One client again, busy-polling (ConnectOptions.busyPoll): the IPC cost without the wake-up.
    const polled = await measure(1, true)

    // Text: the same prompts (as text) streamed through the socket's text path and through the OpenAI
    // endpoint (SSE), by as many concurrent clients: what HTTP costs per token over the socket, like for like.
    const textRows: TextRow[] = []
    if (o.http && base !== undefined) {
      const texts = prompts.map((p) => Array.from(p, (x) => String.fromCharCode(97 + (x % 26))).join(''))
      const run = async (path: TextRow['path'], n: number): Promise<TextRow> => {
        let before: StepSums | undefined
        const r = await runLoad(
          {
            path,
            socket,
            base: base?.href,
            model: serverModel,
            clients: n,
            requests: o.requests,
            prompts: texts,
            tokens: o.tokens,
            busyPoll: false,
          },
          async () => {
            before = await stepSums(port)
          },
        )
        const after = await stepSums(port)
        say(`text over ${path}, ${n} clients: ${r.tokens} tokens in ${r.seconds.toFixed(2)} s, ${(r.tokens / r.seconds).toFixed(0)} tokens/s, ${loadNote(r)}`)
        return { path, ...streamFigures(n, n * o.requests, r, before!, after) }
      }
      for (const n of o.clients) {
        textRows.push(await run('socket', n))
        textRows.push(await run('http', n))
      }
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
        ['clients', ...STREAM_HEADERS, 'IPC p50 µs', 'IPC p99 µs', ...STEP_HEADERS],
        table.map((r) => [r.busyPoll ? `${r.clients} busy-poll` : r.clients, ...streamCells(r, one), fixed(r.ipcP50Us), fixed(r.ipcP99Us), ...stepCells(r)]),
      ),
    )
    print(
      `IPC: the socket's cost per token, from the server writing a token's frame to the client reading it (no GPU work in it); PING round trip p50 ${fixed(percentile(rtt, 0.5))} µs, p99 ${fixed(percentile(rtt, 0.99))} µs`,
    )
    print(
      `busy-poll: a client made with { busyPoll: true } keeps its event loop spinning while it generates (one CPU core busy) instead of sleeping until the kernel wakes it`,
    )
    print(
      `step µs: a server step (prefill and decode, tokens sent), mean; engine µs: its prefill and decode calls (GPU work and their host side); in steps %: of the wall time; load busy %: the clients run on worker threads of this process (up to one per 16 clients, a quarter of the cores), the busiest thread's event-loop utilization while timed (thread count)`,
    )
    print(`same tokens for the same prompt at every concurrency: ${compared - mismatches}/${compared} requests compared`)
    if (textRows.length > 0) {
      print('')
      print('Text, the same prompts: the socket (GENERATE_TEXT) and the OpenAI endpoint (POST /v1/completions, stream: true), in the same run')
      print(
        formatTable(
          ['path', 'clients', ...STREAM_HEADERS, 'HTTP - socket ITL p50 µs', ...STEP_HEADERS],
          textRows.map((r) => [
            r.path,
            r.clients,
            ...streamCells(r, textRow(r.path, 1)),
            r.path === 'http' ? fixed(httpOverheadUs(r.clients)) : '-',
            ...stepCells(r),
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
