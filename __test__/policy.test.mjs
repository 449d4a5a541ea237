// The policy layer (no GPU): descriptors and keys, graph modes, config and capture sizes, padding,
// dispatcher, policies, stats and the registry. Table-driven; property tests are in policy.props.test.mjs.
import test from 'ava'
import {
  AdaptivePolicy,
  ArgumentError,
  CapacityError,
  CompositeDispatcher,
  ConfigError,
  DefaultPolicy,
  Dispatcher,
  decodeMode,
  defaultCaptureSizes,
  describeBatch,
  descriptorFromKey,
  descriptorKey,
  findClosestSize,
  GraphConfig,
  GraphMode,
  GraphRegistry,
  graphModeName,
  hasFullGraphs,
  hasMode,
  hasPiecewiseGraphs,
  maxMode,
  mixedMode,
  padForGraph,
  parseGraphMode,
  relaxForMixed,
  StableShapePolicy,
  StreamDispatcher,
  separateRoutine,
  warmupSizes,
} from '../dist/index.js'

test('descriptors get defaults, relax for mixed batches, and key injectively', (t) => {
  const d = describeBatch({ numTokens: 16, numReqs: 16, uniform: true, hasLora: true, numActiveLoras: 2 })
  t.deepEqual({ ...d }, { numTokens: 16, numReqs: 16, uniform: true, hasLora: true, numActiveLoras: 2, hasMultimodal: false })
  t.true(Object.isFrozen(d))
  t.deepEqual({ ...relaxForMixed(d) }, { numTokens: 16, numReqs: undefined, uniform: false, hasLora: true, numActiveLoras: 2, hasMultimodal: false })
  const keys = new Set()
  for (const numTokens of [0, 1, 16, 0xffffff]) {
    for (const numReqs of [undefined, 0, 1, 0xfffe]) {
      for (const uniform of [false, true]) {
        for (const hasLora of [false, true]) {
          for (const numActiveLoras of [0, 1, 255]) {
            for (const hasMultimodal of [false, true]) {
              const x = describeBatch({ numTokens, numReqs, uniform, hasLora, numActiveLoras, hasMultimodal })
              const k = descriptorKey(x)
              t.true(Number.isSafeInteger(k))
              keys.add(k)
              t.deepEqual({ ...descriptorFromKey(k) }, { ...x })
            }
          }
        }
      }
    }
  }
  t.is(keys.size, 4 * 4 * 2 * 2 * 3 * 2)
  // fixed layout: the same key in every process
  t.is(descriptorKey(describeBatch({ numTokens: 8, numReqs: 8, uniform: true })), 8 + 9 * 2 ** 24 + 1 * 2 ** 40)
})

test('bad descriptor fields are ArgumentErrors naming the field', (t) => {
  for (const [init, field] of [
    [{ numTokens: -1 }, 'numTokens'],
    [{ numTokens: 1.5 }, 'numTokens'],
    [{ numTokens: 2 ** 24 }, 'numTokens'],
    [{ numTokens: 4, numReqs: 2 ** 16 }, 'numReqs'],
    [{ numTokens: 4, numActiveLoras: 256 }, 'numActiveLoras'],
    [{ numTokens: 4, uniform: 1 }, 'uniform'],
  ]) {
    const e = t.throws(() => describeBatch(init), { instanceOf: ArgumentError })
    t.is(e.argument, field)
  }
  t.throws(() => descriptorKey({ numTokens: 3.5, numReqs: undefined, uniform: false, hasLora: false, numActiveLoras: 0, hasMultimodal: false }), {
    instanceOf: ArgumentError,
    message: /numTokens/,
  })
})

test('graph modes: decode and mixed routines, and names', (t) => {
  const table = [
    // mode, decode, mixed, separate, max, full?, piecewise?
    ['NONE', 'NONE', 'NONE', false, 'NONE', false, false],
    ['PIECEWISE', 'PIECEWISE', 'PIECEWISE', false, 'PIECEWISE', false, true],
    ['FULL', 'FULL', 'FULL', false, 'FULL', true, false],
    ['FULL_DECODE_ONLY', 'FULL', 'NONE', true, 'FULL', true, false],
    ['FULL_AND_PIECEWISE', 'FULL', 'PIECEWISE', true, 'FULL', true, true],
  ]
  for (const [m, dec, mix, sep, max, full, pw] of table) {
    t.is(decodeMode(m), dec, m)
    t.is(mixedMode(m), mix, m)
    t.is(separateRoutine(m), sep, m)
    t.is(maxMode(m), max, m)
    t.is(hasFullGraphs(m), full, m)
    t.is(hasPiecewiseGraphs(m), pw, m)
    t.is(parseGraphMode(graphModeName(m)), m)
    t.is(GraphMode[m], m)
  }
  t.true(hasMode('FULL_DECODE_ONLY', 'NONE'))
  t.false(hasMode('FULL', 'PIECEWISE'))
  t.is(parseGraphMode('full-and-piecewise'), 'FULL_AND_PIECEWISE')
  const e = t.throws(() => parseGraphMode('HALF'), { instanceOf: ConfigError })
  t.is(e.path, 'mode')
})

test('default capture sizes follow vLLM', (t) => {
  t.deepEqual(defaultCaptureSizes(1), [1])
  t.deepEqual(defaultCaptureSizes(8), [1, 2, 4, 8])
  t.deepEqual(defaultCaptureSizes(300), [1, 2, 4, ...Array.from({ length: 31 }, (_, i) => 8 * (i + 1)), 256, 272, 288])
  const table = [
    // init -> max, count
    [{}, 512, 3 + 31 + 17],
    [{ maxNumSeqs: 64 }, 128, 3 + 16],
    [{ maxNumSeqs: 8, numSpecTokens: 1 }, 32, 6], // 1, 2, 4, 8, 16, 24, 32 rounded to multiples of 2
    [{ maxNumSeqs: 1024, maxNumBatchedTokens: 100 }, 96, 3 + 12],
    [{ maxCaptureSize: 40 }, 40, 3 + 5],
  ]
  for (const [init, max, count] of table) {
    const c = GraphConfig.from(init)
    t.is(c.maxCaptureSize, max, JSON.stringify(init))
    t.is(c.captureSizes.length, count, JSON.stringify(init))
    t.is(c.captureSizes.at(-1), max)
  }
})

test('user capture sizes are de-duplicated, filtered and sorted; a disagreeing max is an error', (t) => {
  const c = GraphConfig.from({ captureSizes: [32, 4, 4, 16, 9000], maxNumBatchedTokens: 8192 })
  t.deepEqual(c.captureSizes, [4, 16, 32])
  t.is(c.maxCaptureSize, 32)
  t.is(GraphConfig.from({ captureSizes: [8, 2], maxCaptureSize: 8 }).maxCaptureSize, 8)
  const e = t.throws(() => GraphConfig.from({ captureSizes: [8, 2], maxCaptureSize: 16 }), { instanceOf: ConfigError })
  t.is(e.path, 'maxCaptureSize')
  t.is(e.value, 16)
})

test('spec decode with FULL decode graphs rounds sizes to multiples of 1 + numSpecTokens', (t) => {
  const c = GraphConfig.from({ mode: 'FULL_AND_PIECEWISE', numSpecTokens: 2, captureSizes: [1, 2, 4, 8, 16, 17] })
  // 1, 2 -> 3; 4 -> 6; 8 -> 9; 16, 17 -> 18, above 17 rounded down to a multiple of 3 (15): dropped
  t.deepEqual(c.captureSizes, [3, 6, 9])
  t.is(c.maxCaptureSize, 9)
  const p = GraphConfig.from({ mode: 'PIECEWISE', numSpecTokens: 2, captureSizes: [1, 2, 4] })
  t.deepEqual(p.captureSizes, [1, 2, 4], 'no FULL decode graphs: no rounding')
})

test('invalid configs are ConfigErrors with the path, the value and what was expected', (t) => {
  const table = [
    [{ mode: 'SOMETIMES' }, 'mode'],
    [{ captureSizes: [1, -2] }, 'captureSizes[1]'],
    [{ captureSizes: 'all' }, 'captureSizes'],
    [{ maxNumSeqs: 0 }, 'maxNumSeqs'],
    [{ numWarmups: 1.5 }, 'numWarmups'],
    [{ specializeLora: 'yes' }, 'specializeLora'],
    [{ maxGraphs: 0 }, 'maxGraphs'],
    [{ idleEvictMs: -5 }, 'idleEvictMs'],
    [{ captureSizes: [9000], maxNumBatchedTokens: 100 }, 'captureSizes'],
    [{ maxGraph: 3 }, 'maxGraph'],
  ]
  for (const [init, path] of table) {
    const e = t.throws(() => GraphConfig.from(init), { instanceOf: ConfigError }, JSON.stringify(init))
    t.is(e.path, path)
    t.truthy(e.expected)
    t.regex(e.message, new RegExp(path.replace(/[[\]]/g, '\\$&')))
  }
})

test('config round-trips through JSON; disabled never uses graphs', (t) => {
  for (const init of [{}, { mode: 'FULL', maxNumSeqs: 16, maxGraphs: 4, maxMemoryBytes: 2 ** 30, idleEvictMs: 5000 }, { numSpecTokens: 3 }, { mode: 'NONE' }]) {
    const c = GraphConfig.from(init)
    t.deepEqual(GraphConfig.from(JSON.parse(JSON.stringify(c))).toJSON(), c.toJSON())
  }
  const off = GraphConfig.disabled()
  t.is(off.mode, 'NONE')
  t.false(off.shouldUseGraph(1))
})

test('padding: exact sizes map to themselves, others up, 0 to 0, above the max not at all', (t) => {
  const c = GraphConfig.from({ captureSizes: [1, 2, 4, 8, 16] })
  const table = [
    [0, 0],
    [1, 1],
    [3, 4],
    [4, 4],
    [5, 8],
    [9, 16],
    [16, 16],
    [17, 17],
    [1000, 1000],
  ]
  for (const [n, p] of table) t.is(c.paddedSize(n), p, `n=${n}`)
  t.true(c.shouldUseGraph(16))
  t.false(c.shouldUseGraph(17))
  t.false(c.shouldUseGraph(0))
  t.is(findClosestSize([1, 2, 4, 8], 3), 4)
  t.is(findClosestSize([1, 2, 4, 8], 9), undefined)
  t.deepEqual(
    [0, 1, 3, 5, 7, 8, 9, 17].map((n) => padForGraph(n, 8)),
    [0, 1, 4, 8, 8, 8, 16, 24],
  )
  t.throws(() => padForGraph(-1), { instanceOf: ArgumentError })
  t.deepEqual(
    warmupSizes(20, 4, 8),
    [20, 16, 8, 4, 2, 1].map((n) => ({ numTokens: n, numReqs: Math.min(n, 4) })),
  )
})

test('dispatcher follows vLLM: FULL keys first, relaxed FULL, then PIECEWISE, else NONE unpadded', (t) => {
  const config = GraphConfig.from({ mode: 'FULL_AND_PIECEWISE', captureSizes: [1, 2, 4, 8, 16], maxNumSeqs: 8 })
  const d = new Dispatcher(config)
  t.deepEqual(d.dispatch(3), { mode: 'NONE', descriptor: describeBatch({ numTokens: 3 }) }, 'keys not initialised')
  d.initializeKeys()
  const table = [
    // numTokens, options, mode, padded tokens, numReqs, uniform
    [3, { uniformDecode: true }, 'FULL', 4, 4, true],
    [8, { uniformDecode: true }, 'FULL', 8, 8, true],
    [9, { uniformDecode: true }, 'PIECEWISE', 16, undefined, false], // 16 > 1 * maxNumSeqs: no FULL decode key
    [3, {}, 'PIECEWISE', 4, undefined, false],
    [3, { uniformDecode: true, invalidModes: ['FULL'] }, 'PIECEWISE', 4, undefined, false],
    [3, { validModes: ['FULL'] }, 'NONE', 3, undefined, false],
    [17, { uniformDecode: true }, 'NONE', 17, undefined, false],
    [0, {}, 'NONE', 0, undefined, false],
  ]
  for (const [n, opts, mode, tokens, reqs, uniform] of table) {
    const r = d.dispatch(n, opts)
    t.is(r.mode, mode, `${n} ${JSON.stringify(opts)}`)
    t.is(r.descriptor.numTokens, tokens)
    t.is(r.descriptor.numReqs, reqs)
    t.is(r.descriptor.uniform, uniform)
  }
  t.is(d.dispatch(3, { uniformDecode: true }), d.dispatch(3, { uniformDecode: true }), 'hits return the same object: no allocation')
  const groups = d.captureDescriptors()
  t.deepEqual(
    groups.map((g) => g.mode),
    ['PIECEWISE', 'FULL'],
  )
  t.deepEqual(
    groups[0].descriptors.map((x) => x.numTokens),
    [16, 8, 4, 2, 1],
  )
  t.deepEqual(
    groups[1].descriptors.map((x) => x.numTokens),
    [8, 4, 2, 1],
  )
  t.throws(() => d.dispatch(-1), { instanceOf: ArgumentError })
  t.is(d.dispatch(17), d.dispatch(17), 'eager results are shared too')
  t.throws(() => d.dispatch(3, { hasLora: true, numActiveLoras: -1 }), { instanceOf: ArgumentError, message: /numActiveLoras/ })
})

test('FULL mode serves decode through relaxed FULL keys; FULL_DECODE_ONLY runs mixed batches eagerly', (t) => {
  const full = new Dispatcher(GraphConfig.from({ mode: 'FULL', captureSizes: [1, 2, 4, 8] }))
  full.initializeKeys()
  t.deepEqual([full.dispatch(3, { uniformDecode: true }).mode, full.dispatch(3).mode], ['FULL', 'FULL'])
  t.is(full.dispatch(3, { uniformDecode: true }).descriptor.numReqs, undefined)
  const dec = new Dispatcher(GraphConfig.from({ mode: 'FULL_DECODE_ONLY', captureSizes: [1, 2, 4, 8] }))
  dec.initializeKeys()
  t.is(dec.dispatch(3, { uniformDecode: true }).mode, 'FULL')
  t.is(dec.dispatch(3).mode, 'NONE')
  const spec = new Dispatcher(GraphConfig.from({ mode: 'FULL_AND_PIECEWISE', numSpecTokens: 1, captureSizes: [2, 4, 8] }))
  spec.initializeKeys()
  const r = spec.dispatch(6, { uniformDecode: true })
  t.deepEqual([r.mode, r.descriptor.numTokens, r.descriptor.numReqs], ['FULL', 8, 4])
})

test('LoRA cases: specialised counts round up to a captured count; otherwise maxLoras + 1', (t) => {
  const spec = new Dispatcher(GraphConfig.from({ captureSizes: [1, 2, 4], maxLoras: 4, specializeLora: true }))
  spec.initializeKeys()
  t.deepEqual(spec.loraCases, [0, 1, 2, 4, 5])
  const r = spec.dispatch(2, { uniformDecode: true, hasLora: true, numActiveLoras: 3 })
  t.deepEqual([r.mode, r.descriptor.hasLora, r.descriptor.numActiveLoras], ['FULL', true, 4])
  t.is(spec.dispatch(2, { hasLora: false }).descriptor.numActiveLoras, 0)
  const flat = new Dispatcher(GraphConfig.from({ captureSizes: [1, 2, 4], maxLoras: 4, specializeLora: false }))
  flat.initializeKeys()
  t.deepEqual(flat.loraCases, [5])
  t.is(flat.dispatch(2, { hasLora: true, numActiveLoras: 1 }).descriptor.numActiveLoras, 5)
  t.is(flat.dispatch(2).mode, 'NONE', 'only LoRA graphs were captured')
})

test('stats count modes, hits, misses, padding waste and the graph ratio', (t) => {
  const d = new Dispatcher(GraphConfig.from({ captureSizes: [4, 8] }))
  d.initializeKeys()
  d.dispatch(3) // padded to 4: 1 pad token
  d.dispatch(8)
  d.dispatch(9) // eager
  const s = d.stats.toJSON()
  t.deepEqual(s.byMode, { NONE: 1, PIECEWISE: 2, FULL: 0 })
  t.is(s.hits, 2)
  t.is(s.misses, 1)
  t.is(s.tokensRun, 20)
  t.is(s.tokensPadded, 1)
  t.is(s.paddingWaste, 1 / 20)
  t.is(s.graphRatio, 2 / 3)
  d.stats.reset()
  t.is(d.stats.total, 0)
})

test('DefaultPolicy bounds tokens and can prefer piecewise', (t) => {
  const config = GraphConfig.from({ captureSizes: [1, 2, 4, 8, 16], maxNumSeqs: 16 })
  const d = new Dispatcher(config, { policy: new DefaultPolicy({ minTokensForGraph: 2, maxTokensForGraph: 8, preferPiecewise: true }) })
  d.initializeKeys()
  t.is(d.dispatch(1, { uniformDecode: true }).mode, 'NONE')
  t.is(d.dispatch(4, { uniformDecode: true }).mode, 'PIECEWISE')
  t.is(d.dispatch(16).mode, 'NONE')
  const full = new Dispatcher(config, { policy: new DefaultPolicy() })
  full.initializeKeys()
  t.is(full.dispatch(4, { uniformDecode: true }).mode, 'FULL')
})

test('AdaptivePolicy explores, then picks the faster mode, and declines graphs where eager wins', (t) => {
  const policy = new AdaptivePolicy({ minSamples: 2 })
  const d = new Dispatcher(GraphConfig.from({ captureSizes: [1, 2, 4, 8], maxNumSeqs: 8 }), { policy })
  d.initializeKeys()
  const decode = { uniformDecode: true }
  t.is(d.dispatch(4, decode).mode, 'FULL', 'no data: the first available mode')
  d.record(4, 'FULL', 50, decode)
  d.record(3, 'FULL', 52, decode) // pads to the same batch
  t.is(d.dispatch(4, decode).mode, 'PIECEWISE', 'a mode without samples is explored next')
  d.record(4, 'PIECEWISE', 80, decode)
  d.record(4, 'PIECEWISE', 80, decode)
  t.is(d.dispatch(4, decode).mode, 'FULL', 'then the faster one is picked')
  t.is(policy.meanLatency(d.dispatch(4, decode).descriptor, 'FULL'), 51, 'a uniform FULL graph descriptor is its batch descriptor')
  // mixed batches of 8: eager measured faster than the graph
  d.record(8, 'PIECEWISE', 100)
  d.record(8, 'PIECEWISE', 100)
  d.record(8, 'NONE', 60)
  d.record(8, 'NONE', 60)
  t.is(d.dispatch(8).mode, 'NONE')
  t.is(policy.maxTokensForGraph, 8, 'the threshold moved down to where eager won')
  t.is(d.dispatch(2).mode, 'PIECEWISE', 'below the threshold graphs are still used')
  // the graph gets faster: it wins again and the threshold lifts
  for (let i = 0; i < 40; i++) d.record(8, 'PIECEWISE', 20)
  t.is(d.dispatch(8).mode, 'PIECEWISE')
  t.is(policy.maxTokensForGraph, 9)
})

test('StableShapePolicy captures after N sightings in a row and never disables a key for good', (t) => {
  const policy = new StableShapePolicy({ threshold: 3 })
  const d = new Dispatcher(GraphConfig.from({ captureSizes: [4, 8] }), { policy, trackCaptures: true })
  d.initializeKeys()
  t.deepEqual([d.dispatch(4).mode, d.dispatch(4).mode], ['NONE', 'NONE'])
  t.is(d.dispatch(8).mode, 'NONE', 'the streak of 4 is broken')
  t.deepEqual([d.dispatch(3).mode, d.dispatch(4).mode, d.dispatch(4).mode], ['NONE', 'NONE', 'PIECEWISE'])
  const r = d.dispatch(4)
  d.markCaptured(r.descriptor)
  t.is(d.dispatch(8).mode, 'NONE')
  t.is(d.dispatch(4).mode, 'PIECEWISE', 'a captured graph is used without a streak')
  d.markEvicted(r.descriptor)
  policy.forget(r.descriptor)
  t.false(policy.isEligible(r.descriptor))
  t.deepEqual([d.dispatch(4).mode, d.dispatch(4).mode, d.dispatch(4).mode], ['NONE', 'NONE', 'PIECEWISE'], 'eligible again after a new streak')
})

test('CompositeDispatcher asks by priority and falls back; StreamDispatcher sticks shapes to streams', (t) => {
  const small = new Dispatcher(GraphConfig.from({ mode: 'FULL', captureSizes: [1, 2, 4] }))
  const large = new Dispatcher(GraphConfig.from({ mode: 'PIECEWISE', captureSizes: [8, 64] }))
  small.initializeKeys()
  large.initializeKeys()
  const c = new CompositeDispatcher().add('large', large, 1).add('small', small, 10)
  t.deepEqual(c.names, ['small', 'large'])
  t.deepEqual([c.dispatch(3).source, c.dispatch(3).mode], ['small', 'FULL'])
  t.deepEqual([c.dispatch(30).source, c.dispatch(30).mode, c.dispatch(30).descriptor.numTokens], ['large', 'PIECEWISE', 64])
  t.deepEqual([c.dispatch(100).source, c.dispatch(100).mode], [undefined, 'NONE'])
  t.true(c.remove('small'))
  t.is(c.dispatch(3).source, 'large')
  const s = new StreamDispatcher(small, 2)
  const a = s.dispatch(1)
  const b = s.dispatch(2)
  t.not(a.stream, b.stream, 'new shapes go to the least loaded stream')
  t.is(s.dispatch(1).stream, a.stream, 'and stay there')
  t.deepEqual(s.load, [1, 1])
  s.cache(a.stream).set(descriptorKey(a.descriptor), 'graph-a')
  t.is(s.cache(a.stream).get(descriptorKey(a.descriptor)), 'graph-a')
  t.is(s.cache(b.stream).size, 0)
  t.throws(() => s.cache(2), { instanceOf: ArgumentError })
  t.throws(() => new StreamDispatcher(small, 0), { instanceOf: ArgumentError })
})

test('registry evicts least recently used by count and by bytes, reports through onEvict', (t) => {
  const evicted = []
  const r = new GraphRegistry({ maxGraphs: 3, maxMemoryBytes: 100, onEvict: (e) => evicted.push(`${e.key}:${e.reason}`) })
  r.put(1, 'a', 10)
  r.put(2, 'b', 10)
  r.put(3, 'c', 10)
  t.is(r.get(1), 'a') // 1 becomes most recent: order 2, 3, 1
  t.deepEqual(
    r.put(4, 'd', 10).map((e) => e.key),
    [2],
  )
  t.deepEqual(r.keys(), [3, 1, 4])
  r.put(5, 'e', 85) // count evicts 3 (4 entries > 3); then 105 bytes > 100 evicts 1, and 95 fits
  t.deepEqual(evicted, ['2:count', '3:count', '1:bytes'])
  t.deepEqual(r.keys(), [4, 5])
  t.is(r.bytes, 95)
  const e = t.throws(() => r.put(6, 'huge', 101), { instanceOf: CapacityError })
  t.regex(e.message, /101 bytes/)
  t.deepEqual(r.keys(), [4, 5], 'nothing evicted for an entry larger than the budget')
  r.put(5, 'e2', 5)
  t.is(evicted.at(-1), '5:replaced')
  t.true(r.delete(5))
  t.is(evicted.at(-1), '5:deleted')
  t.true(r.delete(4))
  t.is(r.size, 0)
  t.is(r.bytes, 0)
  t.throws(() => r.put(7, 'x', -1), { instanceOf: ArgumentError })
})

test('registry evicts idle entries; get marks use; fromConfig takes the budgets', (t) => {
  let now = 0
  const r = new GraphRegistry({ idleEvictMs: 100, now: () => now })
  r.put('a', 1, 0)
  now = 50
  r.put('b', 2, 0)
  now = 120
  t.is(r.get('a'), 1) // a used at 120
  now = 170
  t.deepEqual(
    r.evictIdle().map((e) => `${e.key}:${e.reason}`),
    ['b:idle'],
  )
  now = 400
  r.put('c', 3, 0)
  t.deepEqual(r.keys(), ['c'], 'put evicts idle entries too')
  t.is(r.peek('c'), 3)
  t.deepEqual(
    r.clear().map((e) => e.reason),
    ['cleared'],
  )
  const fc = GraphRegistry.fromConfig(GraphConfig.from({ maxGraphs: 2, maxMemoryBytes: 1000, idleEvictMs: 10 }))
  t.deepEqual([fc.maxGraphs, fc.maxMemoryBytes, fc.idleEvictMs], [2, 1000, 10])
})
