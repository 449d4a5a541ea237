// CPU tests: argument validation, error types and the no-driver path. They run everywhere (CI has no GPU).
import test from 'ava'
import { mapError } from '../dist/cuda/native.js'
import * as api from '../dist/index.js'
import { gpu } from './helpers.mjs'

const { ArgumentError, CaptureError, CompileError, CudaError, CudaGraphError, CudaUnavailableError, Device, DisposedError, InUseError } = api

test('the package root exports the API and the error classes', (t) => {
  const exported = Object.keys(api)
  for (const name of ['Device', 'Stream', 'DeviceBuffer', 'Event', 'Module', 'Kernel', 'Graph', 'DTYPES', 'ARG_KINDS']) t.true(exported.includes(name), name)
  const made = [
    new ArgumentError('x', 'a number', 'y'),
    new CaptureError('x'),
    new CompileError('x', { module: 'm', log: '' }),
    new CudaError('x', { call: 'cuInit', cudaName: 'CUDA_ERROR_NOT_INITIALIZED', cudaCode: 3 }),
    new CudaUnavailableError('x'),
    new DisposedError('x'),
    new InUseError('x'),
    new api.NativeBindingError('x', { platform: 'p', package: 'cudagraph-p' }),
  ]
  for (const e of made) {
    t.true(e instanceof CudaGraphError)
    t.true(e instanceof Error)
    t.is(e.name, e.constructor.name)
  }
  // Not on the root: the model and the generator are subpath exports; charts and progress bars are not API.
  for (const name of ['DecoderModel', 'GeneratorServer', 'Client', 'lineChartSvg', 'Progress', 'writeSafetensors']) t.false(exported.includes(name), name)
})

test("the binding's mailbox layout is what the TypeScript side writes by", async (t) => {
  // Loading the binding needs no GPU (CUDA is loaded on first use), only the addon.
  const { binding } = await import('../dist/cuda/native.js')
  const { LAYOUT, MAILBOX } = await import('../dist/cuda/mailbox.js')
  const b = binding()
  t.deepEqual({ ...LAYOUT }, { ...b.launchMailboxLayout() })
  t.is(MAILBOX.length, LAYOUT.slots)
  t.true(LAYOUT.graph + 2 <= LAYOUT.stage && LAYOUT.stage + 6 <= LAYOUT.kernel, 'the regions do not overlap')
})

test('native error codes become typed errors in one place', (t) => {
  // The binding sends each error's fields as JSON in `code` (src/error.rs); nothing is parsed out of the message.
  const raw = (fields, message) => Object.assign(new Error(message), { code: JSON.stringify(fields) })
  const cuda = mapError(
    raw({ code: 'CUDA_ERROR', call: 'cuLaunchKernel', cudaName: 'CUDA_ERROR_INVALID_VALUE', cudaCode: '1' }, 'cuLaunchKernel failed: invalid argument'),
  )
  t.true(cuda instanceof CudaError)
  t.is(cuda.cudaName, 'CUDA_ERROR_INVALID_VALUE')
  t.is(cuda.cudaCode, 1)
  t.is(cuda.call, 'cuLaunchKernel')
  t.is(cuda.message, 'cuLaunchKernel failed: invalid argument')
  const comp = mapError(raw({ code: 'COMPILE_ERROR', module: 'm', log: 'line 1: error' }, "NVRTC could not compile 'm'"))
  t.true(comp instanceof CompileError)
  t.is(comp.log, 'line 1: error')
  t.is(comp.module, 'm')
  const arg = mapError(
    raw(
      { code: 'ARGUMENT_ERROR', argument: 'args[2]', expected: 'a buffer (ptr)', got: 'a number' },
      "argument 'args[2]': expected a buffer (ptr), got a number",
    ),
  )
  t.is(arg.argument, 'args[2]')
  t.is(arg.expected, 'a buffer (ptr)')
  t.true(mapError(Object.assign(new Error('Value is none of these types'), { code: 'InvalidArg' })) instanceof ArgumentError)
  // Async tasks carry the same JSON as a message prefix.
  const inUse = mapError(new Error('[{"code":"IN_USE"}] buffer is used'))
  t.true(inUse instanceof InUseError)
  t.is(inUse.message, 'buffer is used')
  const plain = new TypeError('other')
  t.is(mapError(plain), plain)
})

test('Device.open validates its ordinal before touching the driver', (t) => {
  for (const bad of [-1, 1.5, Number.NaN, '0']) {
    const e = t.throws(() => Device.open(bad), { instanceOf: ArgumentError })
    t.is(e.argument, 'ordinal')
  }
})

test('without a driver every entry point says so with CudaUnavailableError', (t) => {
  if (gpu.available) {
    t.true(Device.count() >= 1)
    t.throws(() => Device.open(Device.count()), { instanceOf: ArgumentError, message: /ordinal/ })
    return
  }
  console.log(`# no-driver path: ${gpu.reason}`)
  t.throws(() => Device.count(), { instanceOf: CudaUnavailableError })
  t.throws(() => Device.open(0), { instanceOf: CudaUnavailableError, message: /driver/ })
  t.throws(() => Device.driverVersion(), { instanceOf: CudaUnavailableError })
  t.deepEqual(Object.keys(Device.availability()), ['available', 'reason'])
})

test('dtype helpers map host arrays to dtypes', (t) => {
  t.deepEqual(api.DTYPES, ['f32', 'f16', 'bf16', 'i32', 'u32', 'i64', 'u8'])
  t.deepEqual(api.DTYPE_SIZE, { f32: 4, f16: 2, bf16: 2, i32: 4, u32: 4, i64: 8, u8: 1 })
})

test("the kernel cache's directory follows CUDAGRAPH_KERNEL_CACHE, XDG_CACHE_HOME and HOME (no GPU needed)", (t) => {
  const keys = ['CUDAGRAPH_KERNEL_CACHE', 'XDG_CACHE_HOME', 'HOME']
  const saved = keys.map((k) => process.env[k])
  t.teardown(() => {
    for (const [i, k] of keys.entries()) {
      if (saved[i] === undefined) delete process.env[k]
      else process.env[k] = saved[i]
    }
  })
  const dir = (cache, xdg, home) => {
    for (const [k, v] of [
      ['CUDAGRAPH_KERNEL_CACHE', cache],
      ['XDG_CACHE_HOME', xdg],
      ['HOME', home],
    ]) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
    return api.kernelCacheDir()
  }
  t.is(dir('/k', '/x', '/h'), '/k')
  t.is(dir('off', '/x', '/h'), undefined)
  t.is(dir(undefined, '/x', '/h'), '/x/cudagraph/kernels')
  t.is(dir(undefined, undefined, '/h'), '/h/.cache/cudagraph/kernels')
  t.is(dir(undefined, undefined, undefined), undefined)
})
