// NCCL on one GPU (the multi-GPU kinds were not lent): a one-rank communicator from the nvidia-nccl wheel
// PyTorch installs. Every collective runs and gives what one rank must (all-reduce sum and avg: the
// input; all-gather: a copy; broadcast: unchanged), inside a captured graph to the same bits as eagerly;
// bad arguments are typed errors; an aborted communicator refuses further work.
import { ArgumentError, Communicator, Device, DisposedError } from '../dist/index.js'
import { gpuTest, randomF32, useNccl } from './helpers.mjs'

const test = gpuTest()

test('a one-rank communicator: all-reduce, all-gather and broadcast, eagerly and captured in a graph; typed errors; abort', (t) => {
  useNccl()
  const version = Communicator.version()
  t.true(version >= 20000, `NCCL ${version}`)
  const dev = Device.open(0)
  const s = dev.createStream()
  const comm = Communicator.create(dev, { id: Communicator.uniqueId(), rank: 0, size: 1 })
  t.teardown(() => comm.dispose())
  t.is(comm.rank, 0)
  t.is(comm.size, 1)
  const x = randomF32(4099, 5)
  const a = dev.upload(x)
  const recv = dev.alloc('f32', 4099)
  comm.allReduce(s, a, 'sum')
  comm.allReduce(s, a, 'avg')
  comm.allGather(s, a, recv)
  comm.broadcast(s, a, 0)
  s.synchronize()
  t.deepEqual(a.download(), x, 'one rank: sum, avg and broadcast leave the values')
  t.deepEqual(recv.download(), x, 'one rank: all-gather copies')
  // Captured: the collectives are nodes of the graph, and replaying it gives the eager bits.
  const b = dev.upload(x)
  const out = dev.alloc('f32', 4099)
  const g = s.capture(() => {
    comm.allReduce(s, b, 'max')
    comm.allGather(s, b, out)
  })
  g.launch(s)
  g.launch(s)
  s.synchronize()
  t.deepEqual(out.download(), x)
  t.log(`NCCL ${version}: collectives eager and in a graph of ${g.nodeCount} nodes`)
  g.dispose()
  t.throws(() => comm.allGather(s, a, dev.alloc('f32', 7)), { instanceOf: ArgumentError, message: /recv.*4099 elements of f32/ })
  t.throws(() => comm.allReduce(s, a, 'mean'), { instanceOf: ArgumentError, message: /op.*sum, prod, max, min, avg/ })
  t.throws(() => comm.broadcast(s, a, 3), { instanceOf: ArgumentError, message: /root/ })
  comm.abort()
  t.throws(() => comm.allReduce(s, a), { instanceOf: DisposedError, message: /aborted/ })
  for (const buf of [a, b, recv, out]) buf.dispose()
})
