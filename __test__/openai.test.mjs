// The OpenAI-compatible HTTP endpoint, driven by the official `openai` client (CPU: the fake engine behind
// the committed fixture tokenizer). Completions and chat completions, streaming and not, include_usage, an
// abort mid-stream freeing the slot, bad parameters as BadRequestError naming the parameter, a full queue
// as RateLimitError, shutdown as a 503, and SSE framing and limits seen on the raw wire.
import { createConnection } from 'node:net'
import { MessageChannel } from 'node:worker_threads'
import test from 'ava'
import OpenAI from 'openai'
import { TextTokenizer } from '../dist/model/index.js'
import { WorkerTextService } from '../dist/serve/http-bridge.js'
import { Client, GeneratorServer } from '../dist/serve/index.js'
import { FakeEngine } from './fake-engine.mjs'
import { socketPath, until } from './helpers.mjs'

const tok = TextTokenizer.fromDirectory(new URL('./fixtures/tokenizer', import.meta.url).pathname)

async function start(t, { engine: eo = {}, server: so = {} } = {}) {
  const engine = new FakeEngine({ vocab: 600, maxSeqLen: 256, slots: 8, maxBatch: 8, ...eo })
  const server = await GeneratorServer.listen({
    socketPath: socketPath('oai'),
    engine,
    model: 'tiny-test',
    log: () => {},
    text: { codec: tok, eosTokenIds: new Set() },
    http: { port: 0, maxBodyBytes: 64 << 10 },
    metricsPort: 0,
    ...so,
  })
  t.teardown(() => server.close())
  const openai = new OpenAI({ baseURL: `http://127.0.0.1:${server.httpPort}/v1`, apiKey: 'unused', maxRetries: 0 })
  return { engine, server, openai, base: `http://127.0.0.1:${server.httpPort}` }
}

/** What the fake engine makes after `ids`, as text. */
const expected = (engine, ids, n) => tok.decode(engine.reference([...ids], n))

test('completions and chat completions, non-streaming: text, finish_reason, usage, ids and models', async (t) => {
  const { engine, openai } = await start(t)
  const models = await openai.models.list()
  t.deepEqual(
    models.data.map((m) => m.id),
    ['tiny-test'],
  )
  const c = await openai.completions.create({ model: 'tiny-test', prompt: 'The quick brown fox', max_tokens: 20, temperature: 0 })
  const ids = tok.encode('The quick brown fox', { addSpecialTokens: true })
  t.is(c.object, 'text_completion')
  t.regex(c.id, /^cmpl-/)
  t.is(c.model, 'tiny-test')
  t.is(c.choices[0].text, expected(engine, ids, 20))
  t.is(c.choices[0].finish_reason, 'length')
  t.deepEqual(c.usage, { prompt_tokens: ids.length, completion_tokens: 20, total_tokens: ids.length + 20 })
  const messages = [{ role: 'user', content: 'Hi 👋' }]
  const chatIds = tok.encode(tok.renderChat(messages))
  const r = await openai.chat.completions.create({ model: 'tiny-test', messages, max_tokens: 30, temperature: 0 })
  t.is(r.object, 'chat.completion')
  t.is(r.choices[0].message.role, 'assistant')
  t.is(r.choices[0].message.content, expected(engine, chatIds, 30))
  t.is(r.usage.prompt_tokens, chatIds.length)
  // A token-id prompt and a stop string.
  const full = expected(engine, [1, 2, 3], 40)
  const stop = full.slice(10, 13)
  const s = await openai.completions.create({ model: 'tiny-test', prompt: [1, 2, 3], max_tokens: 40, stop })
  t.is(s.choices[0].text, full.slice(0, full.indexOf(stop)))
  t.is(s.choices[0].finish_reason, 'stop')
})

test('streaming: SSE chunks concatenate to the non-streamed text; include_usage adds a usage chunk; [DONE] ends it', async (t) => {
  const { engine, openai, base } = await start(t)
  const messages = [
    { role: 'system', content: 'terse' },
    { role: 'user', content: 'count' },
  ]
  const ids = tok.encode(tok.renderChat(messages))
  const stream = await openai.chat.completions.create({ model: 'tiny-test', messages, max_tokens: 50, stream: true, stream_options: { include_usage: true } })
  let text = ''
  let usage
  let finish
  let first = true
  for await (const ch of stream) {
    if (first) t.is(ch.choices[0].delta.role, 'assistant')
    first = false
    if (ch.usage) usage = ch.usage
    for (const c of ch.choices) {
      text += c.delta.content ?? ''
      finish = c.finish_reason ?? finish
    }
  }
  t.is(text, expected(engine, ids, 50))
  t.is(finish, 'length')
  t.deepEqual(usage, { prompt_tokens: ids.length, completion_tokens: 50, total_tokens: ids.length + 50 })
  const cs = await openai.completions.create({ model: 'tiny-test', prompt: 'abc', max_tokens: 12, stream: true })
  let ctext = ''
  for await (const ch of cs) ctext += ch.choices[0]?.text ?? ''
  t.is(ctext, expected(engine, tok.encode('abc', { addSpecialTokens: true }), 12))
  // The raw wire: each event a `data: {json}` line and a blank line, the last `data: [DONE]`.
  const raw = await (
    await fetch(`${base}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny-test', prompt: 'abc', max_tokens: 5, stream: true }),
    })
  ).text()
  const events = raw.split('\n\n').filter((e) => e !== '')
  t.true(events.every((e) => e.startsWith('data: ')))
  t.is(events.at(-1), 'data: [DONE]')
})

test('an abort mid-stream cancels the request and frees its slot at once', async (t) => {
  const { server, openai } = await start(t, { engine: { stepDelayMs: 2 } })
  const ctl = new AbortController()
  const stream = await openai.completions.create({ model: 'tiny-test', prompt: 'abc', max_tokens: 200, stream: true, ignore_eos: true }, { signal: ctl.signal })
  let n = 0
  try {
    for await (const _ of stream) if (++n === 3) ctl.abort()
  } catch (e) {
    t.is(e.name, 'APIUserAbortError')
  }
  t.true(n < 20, `${n} chunks read after the abort`)
  await until(() => server.running === 0, 2000)
  t.is(server.running, 0)
  const metrics = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text()
  t.regex(metrics, /cudagraph_requests_total\{outcome="cancelled"\} 1/)
  t.regex(metrics, /cudagraph_http_requests_total\{route="completions",status="200"\} 1/)
})

test('bad and unsupported parameters are BadRequestError naming the parameter; unknown model and path are 404; a big body is 413', async (t) => {
  const { openai, base, server } = await start(t)
  const bad = async (params, param, re, route = 'chat') => {
    const call =
      route === 'chat'
        ? openai.chat.completions.create({ model: 'tiny-test', messages: [{ role: 'user', content: 'x' }], ...params })
        : openai.completions.create({ model: 'tiny-test', prompt: 'x', ...params })
    const e = await t.throwsAsync(call, { instanceOf: OpenAI.BadRequestError })
    t.is(e.param, param, JSON.stringify(params))
    t.regex(e.message, re)
    t.is(e.type, 'invalid_request_error')
  }
  await bad({ n: 2 }, 'n', /'n' is not supported/)
  await bad({ logprobs: true }, 'logprobs', /not supported/)
  await bad({ tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools', /not supported/)
  await bad({ presence_penalty: 0.5 }, 'presence_penalty', /not supported/)
  await bad({ frobnicate: 1 }, 'frobnicate', /unknown parameter/)
  await bad({ temperature: 3 }, 'temperature', /0\.\.2/)
  await bad({ top_p: 0 }, 'top_p', /\(0, 1\]/)
  await bad({ max_tokens: 0 }, 'max_tokens', /positive integer/)
  await bad({ stop: [1] }, 'stop', /string/)
  await bad({ messages: [] }, 'messages', /non-empty array/)
  await bad({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }, 'messages[0].content', /text parts/)
  await bad({ prompt: 'x'.repeat(2000) }, 'prompt', /context holds 256/, 'completions')
  await bad({ max_tokens: 1000 }, 'max_tokens', /exceed the 256-token context/, 'completions')
  const nf = await t.throwsAsync(openai.chat.completions.create({ model: 'gpt-4', messages: [{ role: 'user', content: 'x' }] }), {
    instanceOf: OpenAI.NotFoundError,
  })
  t.is(nf.param, 'model')
  t.is((await fetch(`${base}/v1/nothing`)).status, 404)
  const post = (body) => fetch(`${base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
  const invalid = await post('{"model":')
  t.is(invalid.status, 400)
  t.regex((await invalid.json()).error.message, /not valid JSON/)
  const big = await post(JSON.stringify({ model: 'tiny-test', prompt: 'x'.repeat(100 << 10) }))
  t.is(big.status, 413)
  t.is((await big.json()).error.code, 'body_too_large')
  t.is(server.running, 0)
})

test('a full queue is RateLimitError (429); shutting down is a 503, and a stream in flight ends with an error event', async (t) => {
  const { server, openai } = await start(t, { engine: { slots: 1, maxBatch: 1, stepDelayMs: 2 }, server: { maxQueue: 0 } })
  const long = openai.completions.create({ model: 'tiny-test', prompt: 'a', max_tokens: 200, stream: true, ignore_eos: true })
  const s = await long
  const it = s[Symbol.asyncIterator]()
  await it.next()
  const e = await t.throwsAsync(openai.completions.create({ model: 'tiny-test', prompt: 'b', max_tokens: 2 }), { instanceOf: OpenAI.RateLimitError })
  t.is(e.status, 429)
  const closing = server.close({ drainMs: 0 })
  const rest = (async () => {
    for (;;) {
      const r = await it.next()
      if (r.done) return
    }
  })()
  await t.throwsAsync(rest, { message: /shut down/ })
  await closing
  const late = await t.throwsAsync(openai.completions.create({ model: 'tiny-test', prompt: 'b', max_tokens: 2 }))
  t.true(late instanceof OpenAI.APIConnectionError || late.status === 503, String(late))
})

test('the HTTP path and the socket path give the same text for the same prompt and seed', async (t) => {
  const { server, openai } = await start(t)
  const client = await Client.connect(server.socketPath)
  t.teardown(() => client.close())
  const viaSocket = (await client.generateText('Hello', { maxNewTokens: 24, temperature: 0.8, seed: 7 }).toArray()).join('')
  const viaHttp = await openai.completions.create({ model: 'tiny-test', prompt: 'Hello', max_tokens: 24, temperature: 0.8, seed: 7 })
  t.is(viaHttp.choices[0].text, viaSocket)
})

test('a streaming client that stops reading is dropped past its unread budget; its request is cancelled and its slot freed', async (t) => {
  // Steps of 50 µs, as a model's take: the endpoint keeps up and writes a chunk of about 200 bytes per
  // token, or per few tokens when it falls behind. Loopback's kernel buffers took about 4 MB before the
  // server saw any backpressure (tcp_wmem's maximum, 4 MiB, on the CI machine), so 39000 tokens were too
  // few when the endpoint merged two steps a chunk: 190000 tokens are 9 MB or more even merged four to a
  // chunk, and the drop comes once the buffers are full, seconds before the last token.
  const { server } = await start(t, {
    engine: { maxSeqLen: 200000, slots: 2, maxBatch: 2, stepDelayMs: 0.05 },
    server: { http: { port: 0, maxUnreadBytes: 64 << 10 } },
  })
  const s = createConnection(server.httpPort, '127.0.0.1')
  t.teardown(() => s.destroy())
  const body = JSON.stringify({ model: 'tiny-test', prompt: 'abc', max_tokens: 190000, stream: true, ignore_eos: true, temperature: 0 })
  s.write(`POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`)
  s.pause() // never reads: the kernel's buffers fill, then the server's
  const metric = async (re) => Number(re.exec(await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text())?.[1] ?? 0)
  const t0 = Date.now()
  while ((await metric(/cudagraph_connections_dropped_total\{reason="slow_reader"\} (\d+)/)) !== 1) {
    if (Date.now() - t0 > 10_000) {
      t.fail('not dropped within 10 s')
      return
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  await until(() => server.running === 0, 2000)
  t.is(await metric(/cudagraph_requests_total\{outcome="cancelled"\} (\d+)/), 1)
  t.is(server.running, 0)
})

test("the endpoint's thread merges the text of steps that arrive together into one write per stream; an end hands its text over first", async (t) => {
  const { port1: main, port2: worker } = new MessageChannel()
  t.teardown(() => main.close())
  main.on('message', (m) => {
    if (m.t === 'submit') main.postMessage({ t: 'submitted', rid: m.rid, result: { ok: true, promptTokens: 2 } })
  })
  const service = new WorkerTextService(worker, 'm', true)
  const got = []
  const sink = (name) => ({
    text: (s, n) => got.push([name, 'text', s, n]),
    done: (r, n) => got.push([name, 'done', r, n]),
    failed: (m) => got.push([name, 'failed', m]),
  })
  t.true((await service.submit({ prompt: 'a' }, sink('a'))).ok)
  t.true((await service.submit({ prompt: 'b' }, sink('b'))).ok)
  // A step's events: [request id, kind (0 text, 1 done, 2 failed), number, characters] and the strings.
  const events = (...e) => ({
    t: 'events',
    meta: Int32Array.from(e.flatMap(([rid, kind, n, s]) => [rid, kind, n, s.length])),
    text: e.map((x) => x[3]).join(''),
  })
  // Three steps' messages before the thread turns: one write each, for the tokens of all three.
  main.postMessage(events([1, 0, 1, 'he'], [2, 0, 1, 'x']))
  main.postMessage(events([1, 0, 2, 'llo']))
  main.postMessage(events([1, 0, 1, ' wo'], [2, 0, 1, 'y']))
  await until(() => got.length === 2)
  t.deepEqual(got.splice(0), [
    ['a', 'text', 'hello wo', 4],
    ['b', 'text', 'xy', 2],
  ])
  // An end in the same message as text: the text first, then the end; an unknown id is ignored.
  main.postMessage(events([1, 0, 1, 'rld'], [1, 1, 5, 'length'], [9, 0, 1, 'zz'], [2, 2, 0, 'the step failed']))
  await until(() => got.length === 3)
  t.deepEqual(got, [
    ['a', 'text', 'rld', 1],
    ['a', 'done', 'length', 5],
    ['b', 'failed', 'the step failed'],
  ])
})
