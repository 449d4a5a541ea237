// NCCL without a GPU (CPU): bad arguments are ArgumentErrors before anything is loaded; without libnccl
// every call is a CudaUnavailableError that names it (with it, a unique id is 128 bytes).
import test from 'ava'
import { ArgumentError, Communicator, CudaUnavailableError, NativeBindingError } from '../dist/index.js'

test('a missing libnccl is a CudaUnavailableError naming it; bad options are ArgumentErrors naming the field', (t) => {
  try {
    const id = Communicator.uniqueId()
    t.is(id.length, 128, 'libnccl is here: a unique id is 128 bytes')
    t.log(`libnccl found here: NCCL ${Communicator.version()}`)
  } catch (e) {
    if (e instanceof NativeBindingError) {
      t.log(`no native addon here: ${e.message}`)
      t.pass()
      return
    }
    t.true(e instanceof CudaUnavailableError, String(e))
    t.regex(e.message, /NCCL \(libnccl\.so\.2\) was not found; put its folder on LD_LIBRARY_PATH or CUDAGRAPH_LIBRARY_PATH/)
  }
  const device = {}
  t.throws(() => Communicator.create(device, { id: new Uint8Array(12), rank: 0, size: 1 }), { instanceOf: ArgumentError, message: /id.*128-byte/ })
  t.throws(() => Communicator.create(device, { id: new Uint8Array(128), rank: 2, size: 2 }), { instanceOf: ArgumentError, message: /rank.*0\.\.1/ })
  t.throws(() => Communicator.create(device, { id: new Uint8Array(128), rank: 0, size: 0 }), { instanceOf: ArgumentError, message: /size/ })
})
