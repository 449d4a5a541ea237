/**
 * `cudagraph bench --serve`: the generator as users run it, two processes. Starts `cudagraph serve` as a
 * child, then for 1, 8, 64... concurrent clients measures TTFT, inter-token time, tokens/s and the IPC
 * cost per token (server write to client read, stamped on the server's monotonic clock: no GPU work in
 * it), plus a PING round trip; then one busy-polling client (ConnectOptions.busyPoll). Checks that every
 * prompt gets the same tokens at every concurrency, then stops the server with SIGTERM and checks that it
 * exits 0 and removes its socket.
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
import { lineChartSvg } from './svg-chart.js'
import { fixed, formatTable } from './table.js'

/** What `cudagraph bench --serve` runs. */
export interface ServeBenchOptions {
  model: ModelName
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
  const child = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      '--socket',
      socket,
      '--model',
      o.model,
      '--max-batch',
      String(maxClients),
      '--max-seq-len',
      String(maxSeqLen),
      '--metrics-port',
      '0',
      '--seed',
      String(o.seed),
    ],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  )
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /metrics http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(out)
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
        clients: n,
        busyPoll,
        requests: n * o.requests,
        tokens,
        tokensPerSecond: tokens / seconds,
        ttftP50Ms: percentile(ttft, 0.5),
        ttftP99Ms: percentile(ttft, 0.99),
        interTokenP50Ms: percentile(gaps, 0.5),
        interTokenP99Ms: percentile(gaps, 0.99),
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
    for (const c of clients) c.close()

    const one = rows.find((r) => r.clients === 1)
    const most = rows.find((r) => r.clients === maxClients)
    const table = [...rows, polled]
    print('')
    print(`Generator over a Unix socket: ${o.model}, prompts of ${o.promptLength} tokens, ${o.tokens} tokens each, ${o.requests} requests per client in turn`)
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
    }
    print(
      `targets: IPC per token p50 at 1 client ${fixed(targets.ipcP50Us)} µs, busy-polling ${fixed(targets.ipcBusyPollP50Us)} µs (<= 30); ${maxClients} clients ${fixed(targets.scaling, 1)}x the tokens/s of 1 (>= 20); ` +
        `same tokens at every concurrency: ${targets.sameTokens ? 'yes' : 'no'}; clean shutdown: ${targets.cleanShutdown ? 'yes' : 'no'}`,
    )
    const results = {
      options: { ...o, print: undefined },
      pingRoundTripUs: { p50: percentile(rtt, 0.5), p99: percentile(rtt, 0.99) },
      rows: table,
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
        title: `cudagraph serve (${o.model}): tokens/s vs concurrent clients (log-log), higher is better`,
        xLabel: 'concurrent clients',
        yUnit: 'tokens/s',
        series: [
          { name: 'generator (measured)', color: '#2a9d8f', points: rows.map((r) => [r.clients, r.tokensPerSecond] as const) },
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
