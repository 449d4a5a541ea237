// Text (CPU): tokenizers.js against ids from Hugging Face's `tokenizers` and the chat template against
// transformers' apply_chat_template, both computed by scripts/make-tokenizer-fixture.py into
// __test__/fixtures/tokenizer/expected.json; streaming detokenization never emits a broken character.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { CheckpointError } from '../dist/index.js'
import { Detokenizer, readGenerationConfig, StopMatcher, TextTokenizer } from '../dist/model/index.js'
import { seededRandom } from '../dist/util/random.js'

const dir = new URL('./fixtures/tokenizer/', import.meta.url).pathname
const expected = JSON.parse(readFileSync(`${dir}expected.json`, 'utf8'))
const tok = TextTokenizer.fromDirectory(dir)

test('token ids equal the tokenizers library for emoji, CJK, whitespace runs, unseen characters and special tokens', (t) => {
  for (const e of expected.encode) {
    t.deepEqual([...tok.encode(e.text)], e.ids, JSON.stringify(e.text))
    t.is(tok.decode(e.ids), e.decoded, JSON.stringify(e.text))
  }
  for (const [name, id] of Object.entries(expected.special)) t.is(tok.tokenId(name), id, name)
  t.is(tok.eosTokenId, expected.special['<|im_end|>'])
  t.is(tok.bosTokenId, expected.special['<|begin_of_text|>'])
})

test("the chat template renders as transformers' apply_chat_template, and encodes to the same ids", (t) => {
  const rendered = tok.renderChat(expected.chat.messages)
  t.is(rendered, expected.chat.rendered)
  t.deepEqual([...tok.encode(rendered)], expected.chat.ids)
  t.false(tok.renderChat(expected.chat.messages, { addGenerationPrompt: false }).endsWith('assistant\n'))
})

test('streaming detokenization emits only complete text: chunks concatenate to the whole, no replacement characters', (t) => {
  for (const e of expected.encode) {
    const d = tok.detokenizer()
    const chunks = e.ids.map((id) => d.push(id))
    chunks.push(d.flush())
    t.is(chunks.join(''), e.decoded, JSON.stringify(e.text))
    for (const c of chunks) t.false(c.includes('\uFFFD'), `a broken character in ${JSON.stringify(c)} of ${JSON.stringify(e.text)}`)
  }
  // A four-byte emoji split over byte tokens comes out whole at its last byte.
  const ids = tok.encode('🚀')
  t.true(ids.length > 1, 'the emoji spans several tokens in this small vocabulary')
  const d = tok.detokenizer()
  const out = [...ids].map((id) => d.push(id))
  t.deepEqual(out, [...new Array(ids.length - 1).fill(''), '🚀'])
})

test('both streaming decoders (the byte table of byte-level tokenizers, and the decoded window) give the whole decoding for random ids', (t) => {
  const V = expected.vocab_size
  const r = seededRandom(99)
  let sequences = 0
  for (let k = 0; k < 300; k++) {
    // Random ids make byte runs that are not UTF-8 and put special tokens between the bytes of a character.
    const ids = Array.from({ length: 1 + Math.floor(r() * 60) }, () => Math.floor(r() * V))
    const whole = tok.decode(ids)
    for (const d of [tok.detokenizer(), new Detokenizer(tok)]) {
      const out = ids.map((id) => d.push(id)).join('') + d.flush()
      t.is(out, whole, `ids ${ids.join(',')} (${d.constructor.name})`)
    }
    sequences++
  }
  t.is(sequences, 300)
  t.is(tok.detokenizer().constructor.name, 'ByteLevelStream', 'the fixture is byte-level: the table is used')
})

test('a missing or broken tokenizer file is a CheckpointError naming it', (t) => {
  const e = t.throws(() => TextTokenizer.fromDirectory('/nonexistent-model-dir'), { instanceOf: CheckpointError })
  t.is(e.file, '/nonexistent-model-dir/tokenizer.json')
  t.regex(e.message, /ENOENT/)
})

test('stop strings are found across chunk boundaries and never emitted; a held tail comes out when generation ends', (t) => {
  const run = (stops, chunks) => {
    const m = new StopMatcher(stops)
    const out = chunks.map((c) => m.push(c))
    return { text: out.join('') + m.flush(), stopped: m.stopped }
  }
  t.deepEqual(run(['\n\nUser:'], ['Hello', ' there\n', '\nUs', 'er: more']), { text: 'Hello there', stopped: '\n\nUser:' })
  t.deepEqual(run(['END', 'STOP'], ['aSTO', 'P b END']), { text: 'a', stopped: 'STOP' })
  t.deepEqual(run(['xyz'], ['abc', 'xy']), { text: 'abcxy', stopped: undefined })
  t.deepEqual(run(['🚀!'], ['go 🚀', '!']), { text: 'go ', stopped: '🚀!' })
  // Nothing that could still begin a stop string is emitted early, and no surrogate pair is split.
  const m = new StopMatcher(['ab'])
  t.is(m.push('xxa'), 'xx')
  t.is(m.push('c🙂'), 'ac')
  t.is(m.flush(), '🙂')
  t.throws(() => new StopMatcher(['']), { message: /stop\[0\]/ })
})

test('generation_config.json: eos ids (one or a list), sampling defaults, bad fields named; absent is no defaults', (t) => {
  const d = mkdtempSync(join(tmpdir(), 'cg-gen-'))
  t.teardown(() => rmSync(d, { recursive: true, force: true }))
  t.deepEqual(readGenerationConfig(d).eosTokenIds, [])
  writeFileSync(join(d, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 7], temperature: 0.6, top_p: 0.9, do_sample: true }))
  t.like(readGenerationConfig(d), { eosTokenIds: [2, 7], bosTokenId: 1, temperature: 0.6, topP: 0.9, topK: undefined, doSample: true })
  writeFileSync(join(d, 'generation_config.json'), JSON.stringify({ eos_token_id: 2, top_p: 1.5 }))
  const e = t.throws(() => readGenerationConfig(d), { instanceOf: CheckpointError })
  t.is(e.field, 'top_p')
})
