// The wire format (docs/protocol.md): round trips of every message, any chunking of the byte stream, and
// corrupted or hostile streams, which must end in a FrameError and never buffer past the frame limit.
import test from 'ava'
import fc from 'fast-check'
import { ErrorCode, encode, encodeTokens, FINISH_REASONS, FrameDecoder, FrameError, MessageType } from '../dist/serve/index.js'

const u32 = fc.integer({ min: 0, max: 0xffffffff })
const i32s = (min) => fc.array(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), { minLength: min, maxLength: 40 }).map((a) => Int32Array.from(a))
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })
const clientMsg = fc.oneof(
  fc.record({ type: fc.constant(MessageType.GENERATE), requestId: u32, maxNewTokens: u32, tokens: i32s(0) }),
  fc.record({ type: fc.constant(MessageType.CANCEL), requestId: u32 }),
  fc.record({ type: fc.constant(MessageType.PING), nonce: u64 }),
  fc.record({
    type: fc.constant(MessageType.GENERATE_TEXT),
    requestId: u32,
    maxNewTokens: u32,
    // f32 fields: values that survive a round trip through 32 bits.
    temperature: fc.float({ noNaN: true }).map(Math.fround),
    topP: fc.float({ noNaN: true }).map(Math.fround),
    topK: u32,
    seed: u32,
    chat: fc.boolean(),
    ignoreEos: fc.boolean(),
    stop: fc.array(fc.string({ maxLength: 10 }), { maxLength: 4 }),
    prompt: fc.string({ maxLength: 60 }),
  }),
)
const serverMsg = fc.oneof(
  fc.record({
    type: fc.constant(MessageType.HELLO),
    vocab: u32,
    maxSeqLen: u32,
    maxBatch: u32,
    maxFrameBytes: u32,
    features: u32,
    model: fc.string({ maxLength: 20 }),
  }),
  fc.record({ type: fc.constant(MessageType.TEXT), requestId: u32, sentNs: u64, tokens: u32, text: fc.string({ maxLength: 40 }) }),
  fc.record({ type: fc.constant(MessageType.TOKENS), requestId: u32, sentNs: u64, tokens: i32s(0) }),
  fc.record({ type: fc.constant(MessageType.DONE), requestId: u32, reason: fc.constantFrom(...FINISH_REASONS), generated: u32 }),
  fc.record({ type: fc.constant(MessageType.ERROR), requestId: u32, code: fc.integer({ min: 0, max: 0xffff }), message: fc.string({ maxLength: 60 }) }),
  fc.record({ type: fc.constant(MessageType.PONG), nonce: u64 }),
)
/** Cuts `bytes` at the given fractions. */
function chunks(bytes, cuts) {
  const at = [...new Set(cuts.map((c) => Math.floor(c * bytes.length)))].sort((a, b) => a - b)
  const out = []
  let prev = 0
  for (const a of [...at, bytes.length]) {
    out.push(bytes.subarray(prev, a))
    prev = a
  }
  return out
}
const normalize = (m) => JSON.parse(JSON.stringify(m, (_, v) => (typeof v === 'bigint' ? `${v}n` : v instanceof Int32Array ? [...v] : v)))

for (const [side, arb, decoder] of [
  ['client', clientMsg, () => FrameDecoder.forServer()],
  ['server', serverMsg, () => FrameDecoder.forClient()],
]) {
  test(`every ${side} message survives encode, any chunking and decode`, (t) => {
    fc.assert(
      fc.property(fc.array(arb, { maxLength: 12 }), fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 8 }), (msgs, cuts) => {
        const d = decoder()
        const got = chunks(Buffer.concat(msgs.map(encode)), cuts).flatMap((c) => d.push(c))
        t.deepEqual(normalize(got), normalize(msgs))
        t.is(d.buffered, 0)
      }),
      { numRuns: 300 },
    )
  })
}

test('random and corrupted streams end in a FrameError, never another throw, and never buffer past the limit', (t) => {
  const max = 4096
  const stream = fc.oneof(
    fc.uint8Array({ maxLength: 600 }),
    // a valid stream with one byte flipped
    fc.tuple(fc.array(clientMsg, { minLength: 1, maxLength: 6 }), fc.nat(), fc.integer({ min: 1, max: 255 })).map(([msgs, at, x]) => {
      const b = Buffer.concat(msgs.map(encode))
      b[at % b.length] ^= x
      return new Uint8Array(b)
    }),
  )
  fc.assert(
    fc.property(stream, fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 6 }), (bytes, cuts) => {
      const d = FrameDecoder.forServer(max)
      try {
        for (const c of chunks(Buffer.from(bytes), cuts)) {
          d.push(c)
          t.true(d.buffered < max)
        }
      } catch (e) {
        t.true(e instanceof FrameError, String(e))
        t.true([ErrorCode.PROTOCOL, ErrorCode.FRAME_TOO_LARGE, ErrorCode.UNKNOWN_TYPE].includes(e.errorCode))
        // A failed decoder stays failed: the connection is to be closed.
        t.throws(() => d.push(Buffer.from(encode({ type: MessageType.PING, nonce: 1n }))), { instanceOf: FrameError })
      }
    }),
    { numRuns: 500 },
  )
})

test('a frame above the limit is refused from its length field alone; bad version, type and sizes are named', (t) => {
  const d = FrameDecoder.forServer(1024)
  const len = Buffer.alloc(4)
  len.writeUInt32LE(5000)
  t.throws(() => d.push(len), { instanceOf: FrameError, message: /5004-byte frame, more than the 1024-byte limit/ })
  const bad = (bytes, re, code) =>
    t.throws(() => FrameDecoder.forServer().push(Buffer.from(bytes)), { instanceOf: FrameError, message: re }, String(code)) && undefined
  bad([2, 0, 0, 0, 9, MessageType.PING], /protocol version 9, expected 1\.\.2/)
  // Text arrived with version 2: a version-1 frame of that type is unknown.
  bad([2, 0, 0, 0, 1, MessageType.GENERATE_TEXT], /unknown message type 0x04 in protocol version 1/)
  bad([2, 0, 0, 0, 1, 0x7f], /unknown message type 0x7f/)
  bad([2, 0, 0, 0, 1, MessageType.HELLO], /unknown message type 0x81/) // a server message sent to the server
  bad([3, 0, 0, 0, 1, MessageType.CANCEL, 0], /0x2 with a 1-byte payload/)
  bad([1, 0, 0, 0, 1], /frame length 1/)
  const e = t.throws(() => FrameDecoder.forServer().push(Buffer.from([2, 0, 0, 0, 1, 0x7f])))
  t.is(e.errorCode, ErrorCode.UNKNOWN_TYPE)
  // TOKENS built by the server's fast path equal the general encoder's.
  const tokens = Int32Array.of(5, -1, 7)
  t.deepEqual(encodeTokens(3, 42n, tokens, 2), encode({ type: MessageType.TOKENS, requestId: 3, sentNs: 42n, tokens: tokens.subarray(0, 2) }))
})
