// Property tests (fast-check) for the policy layer: padding, keys, config round-trips and validation,
// and the registry against a reference model.
import test from 'ava'
import fc from 'fast-check'
import { ConfigError, describeBatch, descriptorFromKey, descriptorKey, GraphConfig, GraphRegistry } from '../dist/index.js'

const RUNS = { numRuns: 300 }

const sizeLists = fc.uniqueArray(fc.integer({ min: 1, max: 2048 }), { minLength: 1, maxLength: 40 })

test('padding is monotone, never smaller, idempotent, and lands on a capture size', (t) => {
  fc.assert(
    fc.property(sizeLists, (list) => {
      const c = GraphConfig.from({ captureSizes: list, maxNumBatchedTokens: 4096 })
      const sizes = new Set(c.captureSizes)
      let prev = 0
      for (let n = 1; n <= c.maxCaptureSize; n++) {
        const p = c.paddedSize(n)
        if (p < n || p < prev || !sizes.has(p) || c.paddedSize(p) !== p) return false
        if (sizes.has(n) && p !== n) return false
        prev = p
      }
      return c.paddedSize(0) === 0 && c.paddedSize(c.maxCaptureSize + 1) === c.maxCaptureSize + 1
    }),
    RUNS,
  )
  t.pass()
})

const descriptors = fc.record({
  numTokens: fc.integer({ min: 0, max: 0xffffff }),
  numReqs: fc.option(fc.integer({ min: 0, max: 0xfffe }), { nil: undefined }),
  uniform: fc.boolean(),
  hasLora: fc.boolean(),
  numActiveLoras: fc.integer({ min: 0, max: 255 }),
  hasMultimodal: fc.boolean(),
})

// The second descriptor differs from the first in at most one field: near-collisions, where a packing
// bug would show.
const nearPairs = descriptors.chain((a) =>
  fc.tuple(
    fc.constant(a),
    fc.oneof(
      fc.constant(a),
      fc.integer({ min: 0, max: 0xffffff }).map((numTokens) => ({ ...a, numTokens })),
      fc.option(fc.integer({ min: 0, max: 0xfffe }), { nil: undefined }).map((numReqs) => ({ ...a, numReqs })),
      fc.constant({ ...a, uniform: !a.uniform }),
      fc.constant({ ...a, hasLora: !a.hasLora }),
      fc.integer({ min: 0, max: 255 }).map((numActiveLoras) => ({ ...a, numActiveLoras })),
      fc.constant({ ...a, hasMultimodal: !a.hasMultimodal }),
    ),
  ),
)

test('descriptor keys are injective safe integers and decode back', (t) => {
  fc.assert(
    fc.property(nearPairs, ([a, b]) => {
      const da = describeBatch(a)
      const db = describeBatch(b)
      const same = JSON.stringify({ ...da, numReqs: da.numReqs ?? null }) === JSON.stringify({ ...db, numReqs: db.numReqs ?? null })
      const ka = descriptorKey(da)
      return Number.isSafeInteger(ka) && (ka === descriptorKey(db)) === same && JSON.stringify(descriptorFromKey(ka)) === JSON.stringify(da)
    }),
    { numRuns: 3000 },
  )
  t.pass()
})

const inits = fc.record(
  {
    mode: fc.constantFrom('NONE', 'PIECEWISE', 'FULL', 'FULL_DECODE_ONLY', 'FULL_AND_PIECEWISE'),
    captureSizes: sizeLists,
    maxNumSeqs: fc.integer({ min: 1, max: 1024 }),
    numSpecTokens: fc.integer({ min: 0, max: 4 }),
    maxNumBatchedTokens: fc.integer({ min: 2048, max: 16384 }),
    numWarmups: fc.integer({ min: 0, max: 5 }),
    specializeLora: fc.boolean(),
    maxLoras: fc.integer({ min: 0, max: 16 }),
    maxGraphs: fc.option(fc.integer({ min: 1, max: 1000 }), { nil: null }),
    maxMemoryBytes: fc.option(fc.integer({ min: 1, max: 2 ** 40 }), { nil: null }),
    idleEvictMs: fc.option(fc.integer({ min: 1, max: 3_600_000 }), { nil: null }),
  },
  { requiredKeys: [] },
)

test('GraphConfig.from(toJSON()) round-trips', (t) => {
  fc.assert(
    fc.property(inits, (init) => {
      let c
      try {
        c = GraphConfig.from(init)
      } catch (e) {
        return e instanceof ConfigError // spec rounding can leave no size: a ConfigError, never anything else
      }
      const again = GraphConfig.from(JSON.parse(JSON.stringify(c.toJSON())))
      return JSON.stringify(again.toJSON()) === JSON.stringify(c.toJSON())
    }),
    RUNS,
  )
  t.pass()
})

const badFields = fc.oneof(
  fc.record({ mode: fc.string().filter((s) => !/^\s*(none|piecewise|full|full[-_]decode[-_]only|full[-_]and[-_]piecewise)\s*$/i.test(s)) }),
  fc.record({ maxNumSeqs: fc.oneof(fc.integer({ max: 0 }), fc.double({ noInteger: true }), fc.string()) }),
  fc.record({ numSpecTokens: fc.oneof(fc.integer({ max: -1 }), fc.constant(Number.NaN)) }),
  fc.record({ captureSizes: fc.array(fc.integer({ max: 0 }), { minLength: 1 }) }),
  fc.record({ captureSizes: fc.oneof(fc.string(), fc.integer()) }),
  fc.record({ maxGraphs: fc.oneof(fc.integer({ max: 0 }), fc.boolean()) }),
  fc.record({ specializeLora: fc.oneof(fc.integer(), fc.string()) }),
  fc.record({ unknownField: fc.anything() }),
)

test('bad configs always throw ConfigError naming a field', (t) => {
  fc.assert(
    fc.property(badFields, (init) => {
      try {
        GraphConfig.from(init)
        return false
      } catch (e) {
        return e instanceof ConfigError && e.path.length > 0 && Object.keys(init).some((k) => e.path.startsWith(k))
      }
    }),
    RUNS,
  )
  t.pass()
})

const ops = fc.array(
  fc.oneof(
    fc.record({ op: fc.constant('put'), key: fc.integer({ min: 0, max: 12 }), bytes: fc.integer({ min: 0, max: 120 }) }),
    fc.record({ op: fc.constant('get'), key: fc.integer({ min: 0, max: 12 }) }),
    fc.record({ op: fc.constant('delete'), key: fc.integer({ min: 0, max: 12 }) }),
  ),
  { maxLength: 200 },
)

test('the registry never exceeds its budgets and evicts in LRU order (against a reference model)', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 50, max: 300 }), ops, (maxGraphs, maxMemoryBytes, seq) => {
      const evicted = []
      const r = new GraphRegistry({ maxGraphs, maxMemoryBytes, onEvict: (e) => evicted.push(e.key) })
      let model = [] // least recent first: [key, bytes]
      for (const s of seq) {
        if (s.op === 'put') {
          if (s.bytes > maxMemoryBytes) {
            try {
              r.put(s.key, s.key, s.bytes)
              return false
            } catch {
              continue
            }
          }
          evicted.length = 0
          r.put(s.key, s.key, s.bytes)
          const expect = []
          if (model.some(([k]) => k === s.key)) expect.push(s.key)
          model = model.filter(([k]) => k !== s.key)
          model.push([s.key, s.bytes])
          const total = () => model.reduce((a, [, b]) => a + b, 0)
          while (model.length > 1 && model.length > maxGraphs) expect.push(model.shift()[0])
          while (model.length > 1 && total() > maxMemoryBytes) expect.push(model.shift()[0])
          if (JSON.stringify(evicted) !== JSON.stringify(expect)) return false
        } else if (s.op === 'get') {
          const i = model.findIndex(([k]) => k === s.key)
          if ((r.get(s.key) === undefined) !== i < 0) return false
          if (i >= 0) model.push(...model.splice(i, 1))
        } else {
          const i = model.findIndex(([k]) => k === s.key)
          if (r.delete(s.key) !== i >= 0) return false
          if (i >= 0) model.splice(i, 1)
        }
        if (r.size > maxGraphs || r.bytes > maxMemoryBytes) return false
        if (JSON.stringify(r.keys()) !== JSON.stringify(model.map(([k]) => k))) return false
      }
      return true
    }),
    RUNS,
  )
  t.pass()
})
