// The generator serving a transformers-made checkpoint (scripts/make-checkpoints.py) on the GPU: text over
// the OpenAI HTTP endpoint (driven by the openai client) and over the socket equals the model's own
// generate for the same prompt and seed, greedy and sampled; 64 concurrent streaming HTTP clients each get
// what they get alone.
import { join } from 'node:path'
import OpenAI from 'openai'
import { loadModel } from '../dist/model/index.js'
import { Client, GeneratorServer } from '../dist/serve/index.js'
import { gpuTest, socketPath, useCheckpoints } from './helpers.mjs'

const gtest = gpuTest()
const checkpoints = useCheckpoints()

async function serve(t, name) {
  const m = await loadModel(join(checkpoints(), name), { maxSeqLen: 256, slots: 64 })
  const server = await GeneratorServer.listen({
    socketPath: socketPath('gpu-oai'),
    engine: m.runner,
    model: name,
    log: (s) => t.log(s),
    text: { codec: m.tokenizer, eosTokenIds: m.eosTokenIds },
    http: { port: 0 },
  })
  t.teardown(async () => {
    await server.close()
    m.dispose()
  })
  const openai = new OpenAI({ baseURL: `http://127.0.0.1:${server.httpPort}/v1`, apiKey: 'unused', maxRetries: 0 })
  return { m, server, openai }
}

const text = async (chunks) => {
  let s = ''
  for await (const c of chunks) s += c.text
  return s
}

gtest('HTTP, socket and generate give the same text for the same prompt and seed, greedy and sampled', async (t) => {
  const { m, server, openai } = await serve(t, 'llama3-bf16')
  const client = await Client.connect(server.socketPath)
  t.teardown(() => client.close())
  const prompts = ['Once upon a time', 'The quick brown fox', '東京は']
  const settings = [
    { temperature: 0, seed: 0 },
    { temperature: 0.9, seed: 11, topP: 0.95 },
  ]
  let compared = 0
  for (const p of prompts) {
    for (const s of settings) {
      const alone = await text(m.generate(p, { maxNewTokens: 32, ...s }))
      const viaHttp = await openai.completions.create({
        model: 'llama3-bf16',
        prompt: p,
        max_tokens: 32,
        temperature: s.temperature,
        seed: s.seed,
        top_p: s.topP ?? 1,
      })
      const viaSocket = (await client.generateText(p, { maxNewTokens: 32, ...s }).toArray()).join('')
      t.is(viaHttp.choices[0].text, alone, `HTTP: ${p} ${JSON.stringify(s)}`)
      t.is(viaSocket, alone, `socket: ${p} ${JSON.stringify(s)}`)
      compared++
    }
  }
  const chat = [{ role: 'user', content: 'Say hi in Japanese' }]
  const aloneChat = await text(m.generate(chat, { maxNewTokens: 24 }))
  const viaChat = await openai.chat.completions.create({ model: 'llama3-bf16', messages: chat, max_tokens: 24, temperature: 0 })
  t.is(viaChat.choices[0].message.content, aloneChat)
  t.log(`${compared} prompt/setting pairs and one chat identical over HTTP, the socket and generate; e.g. ${JSON.stringify(aloneChat.slice(0, 40))}`)
})

gtest('64 concurrent streaming HTTP clients each get what they get alone', async (t) => {
  const { openai } = await serve(t, 'llama-f16')
  const prompts = Array.from({ length: 64 }, (_, i) => `Numbers ${i * 7919}, and then`)
  const ask = (prompt) => openai.completions.create({ model: 'llama-f16', prompt, max_tokens: 24, temperature: 0, ignore_eos: true })
  const alone = []
  for (const p of prompts) alone.push((await ask(p)).choices[0].text)
  const t0 = performance.now()
  const together = await Promise.all(
    prompts.map(async (prompt) => {
      const stream = await openai.completions.create({ model: 'llama-f16', prompt, max_tokens: 24, temperature: 0, ignore_eos: true, stream: true })
      let s = ''
      for await (const ch of stream) s += ch.choices[0]?.text ?? ''
      return s
    }),
  )
  const ms = performance.now() - t0
  const same = together.filter((s, i) => s === alone[i]).length
  t.log(`64 concurrent streams: ${same}/64 identical to alone, in ${ms.toFixed(0)} ms`)
  t.is(same, 64)
})
