// CPU tests: argument validation, error types and the no-driver path. They run everywhere (CI has no GPU).
import test from 'ava'
import * as api from '../dist/index.js'
import { mapError } from '../dist/errors.js'
import { gpu } from './helpers.mjs'

const { ArgumentError, CaptureError, CompileError, CudaError, CudaGraphError, CudaUnavailableError, Device, DisposedError, InUseError } = api

test('the package root exports the API and the error classes', (t) => {
  for (const name of ['Device', 'Stream', 'DeviceBuffer', 'Event', 'Module', 'Kernel', 'Graph', 'DTYPES', 'ARG_KINDS']) {
    t.truthy(api[name], name)
  }
  for (const E of [ArgumentError, CaptureError, CompileError, CudaError, CudaUnavailableError, DisposedError, InUseError]) {
    t.true(new E('x') instanceof CudaGraphError)
    t.true(new E('x') instanceof Error)
  }
})

test('native error codes become typed errors in one place', (t) => {
  const raw = (code, message) => Object.assign(new Error(message), { code })
  const cuda = mapError(raw('CUDA_ERROR', 'cuLaunchKernel failed: CUDA_ERROR_INVALID_VALUE: invalid argument'))
  t.true(cuda instanceof CudaError)
  t.is(cuda.cudaName, 'CUDA_ERROR_INVALID_VALUE')
  t.is(cuda.call, 'cuLaunchKernel')
  const comp = mapError(raw('COMPILE_ERROR', "NVRTC could not compile 'm' (NVRTC_ERROR_COMPILATION)\nline 1: error"))
  t.true(comp instanceof CompileError)
  t.is(comp.log, 'line 1: error')
  const arg = mapError(raw('ARGUMENT_ERROR', "argument 'args[2]': expected a buffer (ptr), got a number"))
  t.is(arg.argument, 'args[2]')
  t.true(mapError(raw('InvalidArg', 'Value is none of these types')) instanceof ArgumentError)
  t.true(mapError(new Error('[IN_USE] buffer is used')) instanceof InUseError)
  t.is(mapError(new Error('[IN_USE] buffer is used')).message, 'buffer is used')
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
