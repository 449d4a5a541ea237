// The graph manager's parts that need no GPU: tensor specs, stats, progress, registry resizing, capture
// order, out-of-memory detection and the typed errors. The GPU behaviour is in manager.gpu.test.mjs.
import test from 'ava'
import {
  ArgumentError,
  CaptureError,
  CudaError,
  Dispatcher,
  GraphConfig,
  GraphManager,
  GraphRegistry,
  InputAddressError,
  isOutOfMemory,
  ManagerStats,
  parseTensorSpec,
  parseTensorSpecs,
} from '../dist/index.js'
import { Progress, progressLine } from '../dist/manager/progress.js'

test('tensor specs: tuple and object forms, defaults, and errors that name the field', (t) => {
  t.like(parseTensorSpec('inputs.tokens', ['i32', 64]), { dtype: 'i32', rows: 64, width: 1, per: 'token', pad: 0, rowBytes: 4 })
  t.like(parseTensorSpec('x', ['f16', 8, 2048]), { rows: 8, width: 2048, rowBytes: 4096 })
  t.like(parseTensorSpec('x', { dtype: 'i64', rows: 4, per: 'request', pad: -1n }), { per: 'request', pad: -1n, readBack: false, rowBytes: 8 })
  t.like(parseTensorSpec('x', { dtype: 'i32', rows: 4, readBack: true }), { readBack: true })
  const cases = [
    [['f64', 8], 'x.dtype'],
    [['f32', 0], 'x.rows'],
    [['f32', 8, 1.5], 'x.width'],
    [{ dtype: 'f32', rows: 8, per: 'batch' }, 'x.per'],
    [{ dtype: 'i64', rows: 8, pad: 1 }, 'x.pad'],
    [{ dtype: 'i32', rows: 8, readBack: 1 }, 'x.readBack'],
    [['f32'], 'x'],
    [null, 'x'],
  ]
  for (const [spec, arg] of cases) {
    const e = t.throws(() => parseTensorSpec('x', spec), { instanceOf: ArgumentError })
    t.is(e.argument, arg)
  }
  // Only outputs are read back.
  const e = t.throws(() => parseTensorSpecs('inputs', { tokens: { dtype: 'i32', rows: 8, readBack: true } }), { instanceOf: ArgumentError })
  t.is(e.argument, 'inputs.tokens.readBack')
  t.true(parseTensorSpecs('outputs', { next: { dtype: 'i32', rows: 8, readBack: true } })[0].readBack)
})

test('stats: p50/p99 over the window, counters in toJSON', (t) => {
  const s = new ManagerStats()
  t.deepEqual(s.toJSON().replayUs, { count: 0, p50: 0, p99: 0, max: 0 })
  for (let i = 1; i <= 1000; i++) s.replayWindow.add(i)
  s.replays = 1000
  s.paddingTokens = 12
  const j = s.toJSON()
  t.is(j.replays, 1000)
  t.is(j.paddingTokens, 12)
  t.deepEqual(j.replayUs, { count: 1000, p50: 501, p99: 990, max: 1000 })
  t.is(JSON.parse(JSON.stringify(j)).replayUs.p99, 990)
  // The window keeps the most recent 8192 samples.
  for (let i = 0; i < 9000; i++) s.eagerWindow.add(5)
  t.is(s.toJSON().eagerUs.count, 8192)
})

test('progress: a bar redrawn in place on a TTY, only the summary line elsewhere', (t) => {
  t.is(progressLine(3, 12, 'FULL 64 tokens', 12), '[###.........] 3/12 FULL 64 tokens')
  const tty = {
    out: '',
    isTTY: true,
    columns: 60,
    write(s) {
      this.out += s
    },
  }
  const p = new Progress('warming up', 2, { enabled: true, sink: tty })
  p.tick('a')
  p.tick('b')
  p.finish('done: 2 graphs')
  t.regex(tty.out, /^\rwarming up \[#{12}\.{12}\] 1\/2 a/)
  t.true(tty.out.endsWith('\r\u001b[2Kdone: 2 graphs\n'))
  const pipe = {
    out: '',
    write(s) {
      this.out += s
    },
  }
  const q = new Progress('warming up', 2, { sink: pipe })
  q.tick('a')
  q.finish('summary')
  t.is(pipe.out, 'summary\n')
})

test('registry.resize re-declares bytes and evicts others (never the resized one) to stay in budget', (t) => {
  const gone = []
  const r = new GraphRegistry({ maxMemoryBytes: 100, onEvict: (e) => gone.push(e.key) })
  r.put('a', 1, 30)
  r.put('b', 2, 30)
  r.put('c', 3, 30)
  t.deepEqual(
    r.resize('c', 60).map((e) => e.key),
    ['a'],
  )
  t.deepEqual(gone, ['a'])
  t.is(r.bytes, 90)
  t.deepEqual(
    r.entries().map((e) => [e.key, e.bytes]),
    [
      ['b', 30],
      ['c', 60],
    ],
  )
  t.deepEqual(
    r.resize('b', 200).map((e) => e.key),
    ['c'],
    'over budget alone: everything else goes',
  )
  t.is(r.bytes, 200)
  t.throws(() => r.resize('zz', 1), { instanceOf: ArgumentError })
  t.throws(() => r.resize('b', -1), { instanceOf: ArgumentError })
})

test('capture targets: every key once, largest first, the same objects dispatch returns', (t) => {
  const d = new Dispatcher(GraphConfig.from({ mode: 'FULL_AND_PIECEWISE', captureSizes: [1, 2, 4, 8], maxNumSeqs: 8 }))
  d.initializeKeys()
  const targets = d.captureTargets()
  t.is(targets.length, 8, '4 PIECEWISE + 4 FULL decode keys')
  t.deepEqual(
    targets.map((r) => r.descriptor.numTokens),
    [8, 8, 4, 4, 2, 2, 1, 1],
  )
  t.is(
    d.dispatch(3, { uniformDecode: true }),
    targets.find((r) => r.mode === 'FULL' && r.descriptor.numTokens === 4),
  )
  t.is(
    d.dispatch(3),
    targets.find((r) => r.mode === 'PIECEWISE' && r.descriptor.numTokens === 4),
  )
  t.deepEqual(
    d.captureDescriptors().map((g) => [g.mode, g.descriptors.length]),
    [
      ['PIECEWISE', 4],
      ['FULL', 4],
    ],
  )
})

test('out-of-memory detection looks through causes; typed errors carry their fields', (t) => {
  const cuda = (call, cudaName, cudaCode) => new CudaError(`${call} failed: ${cudaName}`, { call, cudaName, cudaCode })
  const oom = cuda('cuGraphUpload', 'CUDA_ERROR_OUT_OF_MEMORY', 2)
  t.true(isOutOfMemory(oom))
  t.true(isOutOfMemory(new CaptureError('the capture callback threw', { cause: oom })))
  t.false(isOutOfMemory(cuda('cuLaunchKernel', 'CUDA_ERROR_INVALID_VALUE', 1)))
  t.false(isOutOfMemory(new Error('CUDA_ERROR_OUT_OF_MEMORY')))
  t.false(isOutOfMemory(undefined))
  const e = new InputAddressError('tokens', 0x7f0000, 0x7f1000)
  t.is(e.code, 'INPUT_ADDRESS')
  t.is(e.input, 'tokens')
  t.regex(e.message, /'tokens' is at 0x7f1000 but the graph was captured with 0x7f0000/)
})

test('GraphManager checks its arguments before touching a device', (t) => {
  t.is(t.throws(() => new GraphManager(null), { instanceOf: ArgumentError }).argument, 'device')
  t.is(t.throws(() => new GraphManager({}), { instanceOf: ArgumentError }).argument, 'device')
})
