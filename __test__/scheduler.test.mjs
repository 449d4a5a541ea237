// Continuous batching on a CPU engine (FakeEngine keeps a real per-slot token cache, so a wrong slot,
// position or chunk changes the tokens): join/leave, queue limits, cancellation, chunked prefill.
import test from 'ava'
import fc from 'fast-check'
import { ArgumentError } from '../dist/index.js'
import { BatchScheduler } from '../dist/serve/index.js'
import { FakeEngine } from './fake-engine.mjs'

function collect() {
  const tokens = new Map()
  const done = new Map()
  const failed = new Map()
  return {
    tokens,
    done,
    failed,
    sink: {
      token: (r, tok, i) => {
        const a = tokens.get(r) ?? []
        if (a.length !== i) throw new Error(`token ${i} of ${r.name} out of order`)
        a.push(tok)
        tokens.set(r, a)
      },
      done: (r, reason, n) => {
        if (done.has(r)) throw new Error(`${r.name} ended twice`)
        done.set(r, { reason, n })
      },
      failed: (r, e) => failed.set(r, e),
    },
  }
}
const req = (name, prompt, maxNewTokens) => ({ name, prompt: Int32Array.from(prompt), maxNewTokens })

test('requests joining at different steps are batched and each gets what it gets alone', (t) => {
  const eng = new FakeEngine()
  const c = collect()
  const s = new BatchScheduler(eng, c.sink)
  const reqs = Array.from({ length: 12 }, (_, i) =>
    req(
      `r${i}`,
      Array.from({ length: 1 + ((i * 7) % 30) }, (_, k) => (i * 13 + k) % 97),
      3 + (i % 9),
    ),
  )
  let steps = 0
  for (let i = 0; i < reqs.length || s.hasWork; steps++) {
    if (i < reqs.length) t.true(s.submit(reqs[i++]))
    if (i < reqs.length && steps % 2) t.true(s.submit(reqs[i++]))
    s.step()
    t.true(s.running <= 8)
  }
  for (const r of reqs) {
    t.deepEqual(c.tokens.get(r), eng.reference(r.prompt, r.maxNewTokens), r.name)
    t.deepEqual(c.done.get(r), { reason: 'length', n: r.maxNewTokens })
  }
  t.true(Math.max(...eng.decodeSizes) > 4, `decode batches ${eng.decodeSizes}`)
  t.true(Math.max(...eng.prefillSizes) > 1, 'several requests prefilled in one step')
  t.true(eng.chunked, 'long prompts went over several steps (16-token prefill budget)')
})

test('the queue is bounded, a full one refuses at once, and cancel frees slots for waiting requests', (t) => {
  const eng = new FakeEngine({ slots: 2, maxBatch: 2 })
  const c = collect()
  const s = new BatchScheduler(eng, c.sink, { maxQueue: 2 })
  const rs = Array.from({ length: 6 }, (_, i) => req(`r${i}`, [i + 1, 2, 3], 50))
  // Two take the free slots at the next step, two wait: the fifth is refused.
  t.deepEqual(
    rs.slice(0, 5).map((r) => s.submit(r)),
    [true, true, true, true, false],
  )
  s.step()
  t.is(s.running, 2)
  t.is(s.queued, 2)
  t.false(s.submit(rs[4]))
  t.throws(() => s.submit(rs[2]), { instanceOf: ArgumentError, message: /not already submitted/ })
  t.true(s.cancel(rs[0]))
  t.deepEqual(c.done.get(rs[0]), { reason: 'cancelled', n: c.tokens.get(rs[0]).length })
  t.false(s.cancel(rs[0]))
  t.true(s.cancel(rs[3])) // still queued
  t.true(s.submit(rs[4]))
  s.step()
  t.is(s.running, 2) // rs[1], and rs[2] in rs[0]'s slot
  t.is(s.queued, 1)
  while (s.hasWork) s.step()
  for (const r of [rs[1], rs[2], rs[4]]) t.deepEqual(c.tokens.get(r), eng.reference(r.prompt, 50))
  t.is(c.done.get(rs[3]).n, 0)
  t.is(s.cancelAll('shutdown'), 0)
})

test('bad prompts are refused with a reason before anything runs; the context end stops a request', (t) => {
  const eng = new FakeEngine({ maxSeqLen: 10 })
  const c = collect()
  const s = new BatchScheduler(eng, c.sink)
  t.regex(s.invalid(new Int32Array(0), 5), /at least one token/)
  t.regex(s.invalid(Int32Array.of(1, 97), 5), /token 1 of the prompt is 97, outside the vocabulary 0\.\.96/)
  t.regex(s.invalid(new Int32Array(11), 5), /longer than the model's 10-token context/)
  t.regex(s.invalid(Int32Array.of(1), 0), /maxNewTokens must be a positive integer/)
  t.throws(() => s.submit(req('bad', [-1], 4)), { instanceOf: ArgumentError })
  const r = req('long', [1, 2, 3, 4, 5, 6], 100)
  s.submit(r)
  while (s.hasWork) s.step()
  t.deepEqual(c.done.get(r), { reason: 'context', n: 5 })
  t.deepEqual(c.tokens.get(r), eng.reference(r.prompt, 100))
})

test('an engine failure ends the requests of that step with the error; the others go on', (t) => {
  let fail = false
  const eng = new FakeEngine({ failOn: (kind) => fail && kind === 'decode' })
  const c = collect()
  const s = new BatchScheduler(eng, c.sink)
  const a = req('a', [1, 2], 10)
  s.submit(a)
  s.step()
  fail = true
  s.step()
  fail = false
  t.regex(String(c.failed.get(a)), /injected decode failure/)
  t.is(s.running, 0)
  const b = req('b', [3, 4], 4)
  s.submit(b)
  while (s.hasWork) s.step()
  t.deepEqual(c.tokens.get(b), eng.reference(b.prompt, 4))
})

test('property: any interleaving of joins, cancels and steps ends every request once, frees every slot and keeps tokens exact', (t) => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant('submit'), len: fc.integer({ min: 1, max: 40 }), seed: fc.nat(96), max: fc.integer({ min: 1, max: 30 }) }),
    fc.record({ kind: fc.constant('cancel'), pick: fc.nat() }),
    fc.record({ kind: fc.constant('step'), n: fc.integer({ min: 1, max: 4 }) }),
  )
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0, max: 4 }), (ops, slots, maxQueue) => {
      const eng = new FakeEngine({ slots, maxBatch: slots, maxSeqLen: 48 })
      const c = collect()
      const s = new BatchScheduler(eng, c.sink, { maxQueue })
      const live = []
      const all = []
      for (const o of ops) {
        if (o.kind === 'submit') {
          const r = req(
            `r${all.length}`,
            Array.from({ length: o.len }, (_, k) => (o.seed + k * 5) % 97),
            o.max,
          )
          if (s.submit(r)) {
            live.push(r)
            all.push(r)
          } else t.true(s.queued >= maxQueue)
        } else if (o.kind === 'cancel' && live.length) s.cancel(live[o.pick % live.length])
        else for (let i = 0; i < o.n; i++) s.step()
        t.true(s.running <= slots)
      }
      while (s.hasWork) s.step()
      t.is(s.running + s.queued, 0)
      for (const r of all) {
        const d = c.done.get(r)
        t.truthy(d, `${r.name} never ended`)
        const ref = eng.reference(r.prompt, r.maxNewTokens)
        const got = c.tokens.get(r) ?? []
        if (d.reason === 'cancelled') t.deepEqual(got, ref.slice(0, got.length))
        else t.deepEqual(got, ref)
      }
      // Every slot is free again: a full house of new requests runs at once.
      for (let i = 0; i < slots; i++) t.true(s.submit(req(`x${i}`, [i], 10)))
      s.step()
      t.is(s.running, slots)
    }),
    { numRuns: 200 },
  )
})
