// Text over the generator's socket (CPU): the fake engine behind the committed fixture tokenizer (the
// tokenizers library's own output is what the fixture tests check). Text prompts and chat messages are
// encoded as transformers would, output streams as whole characters, stop strings and end-of-sequence ids
// end requests, sampling settings reach the engine's rows, bad requests are typed errors naming the field.

import { createConnection } from 'node:net'
import test from 'ava'
import { ArgumentError } from '../dist/index.js'
import { TextTokenizer } from '../dist/model/index.js'
import { Client, ErrorCode, encode, FrameDecoder, GeneratorServer, MessageType, PROTOCOL_VERSION } from '../dist/serve/index.js'
import { FakeEngine } from './fake-engine.mjs'
import { socketPath, until } from './helpers.mjs'

const fixture = new URL('./fixtures/tokenizer', import.meta.url).pathname
const tok = TextTokenizer.fromDirectory(fixture)

async function start(t, { eos = [] } = {}) {
  const engine = new FakeEngine({ vocab: 600, maxSeqLen: 256, slots: 8, maxBatch: 8, recordSampling: true })
  const server = await GeneratorServer.listen({ socketPath: socketPath('text'), engine, log: () => {}, text: { codec: tok, eosTokenIds: new Set(eos) } })
  t.teardown(() => server.close())
  const client = await Client.connect(server.socketPath)
  t.teardown(() => client.close())
  return { engine, server, client }
}

const collect = async (g) => {
  const chunks = []
  for await (const c of g) chunks.push(c)
  return chunks
}

test('a text prompt: encoded with BOS, its tokens come back as the text they decode to, in whole characters', async (t) => {
  const { engine, client } = await start(t)
  t.is(PROTOCOL_VERSION, 2)
  t.truthy(client.server.features & 1, 'HELLO says text')
  const prompt = 'The quick brown fox'
  const g = client.generateText(prompt, { maxNewTokens: 40 })
  const chunks = await collect(g)
  const ids = engine.reference([...tok.encode(prompt, { addSpecialTokens: true })], 40)
  t.is(chunks.join(''), tok.decode(ids))
  t.is(g.finishReason, 'length')
  t.is(g.received, 40)
  // Every chunk but the last ends on a whole character: decoding a prefix of the tokens never splits one.
  t.true(chunks.every((c) => c.length > 0))
})

test('chat messages go through the template; stop strings and end-of-sequence ids end the request early', async (t) => {
  const { engine, client } = await start(t)
  const messages = [{ role: 'user', content: 'Hi 👋' }]
  const ids = [...tok.encode(tok.renderChat(messages))]
  const full = tok.decode(engine.reference(ids, 60))
  t.is((await collect(client.generateText(messages, { maxNewTokens: 60 }))).join(''), full)
  // A stop string from the middle: the text ends before it, DONE says stop.
  const stop = full.slice(20, 23)
  const g = client.generateText(messages, { maxNewTokens: 60, stop: [stop] })
  t.is((await collect(g)).join(''), full.slice(0, full.indexOf(stop)))
  t.is(g.finishReason, 'stop')
  // An end-of-sequence id: the 5th generated token ends it, its text is not sent.
  const { engine: e2, client: c2 } = await start(t, { eos: [engine.reference(ids, 5)[4]] })
  const ref = e2.reference(ids, 60)
  const at = ref.indexOf(ref[4])
  const g2 = c2.generateText(messages, { maxNewTokens: 60 })
  t.is((await collect(g2)).join(''), tok.decode(ref.slice(0, at)))
  t.is(g2.finishReason, 'stop')
  const g3 = c2.generateText(messages, { maxNewTokens: 60, ignoreEos: true })
  t.is((await collect(g3)).join(''), full)
})

test("sampling settings reach the engine's rows; greedy requests and padding stay temperature 0", async (t) => {
  const { engine, client } = await start(t)
  await Promise.all([
    collect(client.generateText('a', { maxNewTokens: 3, temperature: 0.7, topP: 0.9, topK: 40, seed: 12345 })),
    collect(client.generateText('b', { maxNewTokens: 3 })),
  ])
  const rows = engine.samplingSeen.map((r) => r.map((x) => Math.round(x * 1000) / 1000))
  t.true(rows.some((r) => r[0] === 0.7 && r[1] === 0.9 && r[2] === 40 && r[3] === 12345))
  t.true(rows.some((r) => r[0] === 0 && r[1] === 1 && r[2] === 0 && r[3] === 0))
})

test('bad text requests: the client refuses bad values naming them; the server refuses what a raw frame carries, naming the field; the connection stays', async (t) => {
  const { client, server } = await start(t)
  for (const [opts, re] of [
    [{ temperature: -1 }, /temperature/],
    [{ topP: 0 }, /topP/],
    [{ topK: 1.5 }, /topK/],
    [{ seed: 2 ** 32 }, /seed/],
  ]) {
    t.throws(() => client.generateText('hi', { maxNewTokens: 4, ...opts }), { instanceOf: ArgumentError, message: re })
  }
  // Raw frames the client would never send: the server answers each with INVALID_REQUEST naming the field.
  const errors = [
    [900, { temperature: -1 }, /temperature: expected a number in 0\.\.100/],
    [901, { topP: 0 }, /topP: expected a number in \(0, 1\]/],
    [902, { stop: Array(17).fill('x') }, /stop: at most 16 stop strings/],
    [903, { chat: true, prompt: '{' }, /prompt: a chat request carries a JSON array/],
    [904, { chat: true, prompt: '[{"role":"user"}]' }, /prompt\[0\]: expected a message/],
  ]
  const seen = []
  const d = FrameDecoder.forClient()
  const sock = createConnection(server.socketPath)
  t.teardown(() => sock.destroy())
  sock.on('data', (c) => seen.push(...d.push(c)))
  await until(() => seen.length > 0)
  for (const [id, fields] of errors)
    sock.write(
      encode({
        type: MessageType.GENERATE_TEXT,
        requestId: id,
        maxNewTokens: 1,
        temperature: 0,
        topP: 1,
        topK: 0,
        seed: 0,
        chat: false,
        ignoreEos: false,
        stop: [],
        prompt: 'x',
        ...fields,
      }),
    )
  await until(() => seen.filter((m) => m.type === MessageType.ERROR).length === errors.length)
  for (const [id, , re] of errors) {
    const e = seen.find((m) => m.type === MessageType.ERROR && m.requestId === id)
    t.is(e.code, ErrorCode.INVALID_REQUEST)
    t.regex(e.message, re)
  }
  t.true((await collect(client.generateText('still here', { maxNewTokens: 2 }))).length > 0, 'the connection stays')
  t.is(server.running, 0)
})

test('a server without a tokenizer refuses text in the client, and in the server for a raw frame', async (t) => {
  const engine = new FakeEngine({ vocab: 600, maxSeqLen: 64 })
  const server = await GeneratorServer.listen({ socketPath: socketPath('notext'), engine, log: () => {} })
  t.teardown(() => server.close())
  const client = await Client.connect(server.socketPath)
  t.teardown(() => client.close())
  t.is(client.server.features, 0)
  t.throws(() => client.generateText('hi'), { message: /this server has no tokenizer/ })
  t.deepEqual(await client.generate([1, 2, 3], { maxNewTokens: 3 }).toArray(), engine.reference([1, 2, 3], 3), 'token prompts keep working')
})
