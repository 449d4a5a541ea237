/**
 * The generator's wire format (docs/protocol.md is the spec): length-prefixed binary frames, little
 * endian. A frame is `u32 length` (the bytes after it, 2..maxFrameBytes), `u8 version`, `u8 type`, then
 * the payload of that type. Encoders here return whole frames; {@link FrameDecoder} cuts a byte stream
 * back into messages and refuses a bad one before buffering it.
 */
import { ProtocolError } from './errors.js'

/**
 * The protocol version this side writes. Version 2 added text (GENERATE_TEXT, TEXT), the `stop` finish
 * reason and HELLO's feature bits; frames of version 1 (token prompts) are still accepted.
 */
export const PROTOCOL_VERSION = 2
/** The oldest version accepted. */
const MIN_VERSION = 1

/** Default largest frame either side accepts (length field included), bytes. */
export const DEFAULT_MAX_FRAME_BYTES = 1 << 20

/** Bytes before a frame's payload: length (4), version (1), type (1). */
const HEADER = 6

/** Message type codes (client → server below 0x80, server → client from 0x80). */
export const MessageType = {
  GENERATE: 0x01,
  CANCEL: 0x02,
  PING: 0x03,
  GENERATE_TEXT: 0x04,
  HELLO: 0x81,
  TOKENS: 0x82,
  DONE: 0x83,
  ERROR: 0x84,
  PONG: 0x85,
  TEXT: 0x86,
} as const

/** Message types version 1 did not have. */
const SINCE_V2: ReadonlySet<number> = new Set([MessageType.GENERATE_TEXT, MessageType.TEXT])

/** HELLO feature bits. */
export const Feature = {
  /** The server has a tokenizer: GENERATE_TEXT is served. */
  TEXT: 1,
  /** The tokenizer has a chat template: GENERATE_TEXT may carry chat messages. */
  CHAT: 2,
} as const

/** Why a request ended (DONE's reason byte). */
export const FINISH_REASONS = ['length', 'context', 'cancelled', 'shutdown', 'stop'] as const
/** `length`: maxNewTokens made; `context`: the model's maxSeqLen reached; `cancelled`; `shutdown`; `stop`: an end-of-sequence token or a stop string. */
export type FinishReason = (typeof FINISH_REASONS)[number]

/** ERROR codes. The first three close the connection after the frame. */
export const ErrorCode = {
  /** A frame the receiver cannot parse (bad length, version or payload). Connection closed. */
  PROTOCOL: 1,
  /** A length field above the receiver's maxFrameBytes. Connection closed. */
  FRAME_TOO_LARGE: 2,
  /** An unknown message type. Connection closed. */
  UNKNOWN_TYPE: 3,
  /** A GENERATE or CANCEL the server refuses (token ids, lengths, request id); the connection stays. */
  INVALID_REQUEST: 4,
  /** The wait queue is full; try again later. */
  BUSY: 5,
  /** The server is shutting down and takes no new requests. */
  SHUTTING_DOWN: 6,
  /** The server failed running the request. */
  INTERNAL: 7,
  /** The client read too slowly: its unread output passed the server's limit. Connection closed. */
  SLOW_READER: 8,
} as const
export type ErrorCodeName = keyof typeof ErrorCode
const ERROR_NAMES = Object.fromEntries(Object.entries(ErrorCode).map(([k, v]) => [v, k])) as Record<number, ErrorCodeName>

/** The name of ERROR code `code` (`UNKNOWN` for one this version does not define). */
export function errorCodeName(code: number): ErrorCodeName | 'UNKNOWN' {
  return ERROR_NAMES[code] ?? 'UNKNOWN'
}

/** Client → server: generate up to `maxNewTokens` tokens after `tokens` (request ids are the client's, ≥ 1). */
export interface GenerateMessage {
  type: typeof MessageType.GENERATE
  requestId: number
  maxNewTokens: number
  tokens: Int32Array
}
/**
 * Client → server (version 2): generate text. `prompt` is the text, or with `chat` a JSON array of
 * `{ role, content }` messages that the model's chat template renders. Sampling as in the model's
 * generate (temperature 0: greedy); `stop` strings end it (not sent); end-of-sequence tokens end it unless
 * `ignoreEos`.
 */
export interface GenerateTextMessage {
  type: typeof MessageType.GENERATE_TEXT
  requestId: number
  maxNewTokens: number
  temperature: number
  topP: number
  topK: number
  seed: number
  chat: boolean
  ignoreEos: boolean
  stop: string[]
  prompt: string
}
/** Client → server: stop request `requestId` (answered by DONE `cancelled` unless it already ended). */
export interface CancelMessage {
  type: typeof MessageType.CANCEL
  requestId: number
}
/** Either way: PING is answered by a PONG with the same nonce. */
export interface PingMessage {
  type: typeof MessageType.PING | typeof MessageType.PONG
  nonce: bigint
}
/** Server → client, first frame of a connection: what the model accepts. */
export interface HelloMessage {
  type: typeof MessageType.HELLO
  vocab: number
  maxSeqLen: number
  maxBatch: number
  maxFrameBytes: number
  /** {@link Feature} bits. */
  features: number
  model: string
}
/**
 * Server → client: tokens of a request, in order. `sentNs` is the server's monotonic clock when the frame
 * was written (nanoseconds; comparable with `process.hrtime.bigint()` on the same host).
 */
export interface TokensMessage {
  type: typeof MessageType.TOKENS
  requestId: number
  sentNs: bigint
  tokens: Int32Array
}
/**
 * Server → client (version 2): the text the request's latest tokens completed (whole characters; a stop
 * string and what follows it are never sent). `tokens`: how many tokens it covers.
 */
export interface TextMessage {
  type: typeof MessageType.TEXT
  requestId: number
  sentNs: bigint
  tokens: number
  text: string
}
/** Server → client: the request ended after `generated` tokens; its id is free again. */
export interface DoneMessage {
  type: typeof MessageType.DONE
  requestId: number
  reason: FinishReason
  generated: number
}
/** Server → client: `requestId` 0 for the connection, else that request (which has ended). */
export interface ErrorMessage {
  type: typeof MessageType.ERROR
  requestId: number
  code: number
  message: string
}

export type ClientMessage = GenerateMessage | GenerateTextMessage | CancelMessage | PingMessage
export type ServerMessage = HelloMessage | TokensMessage | TextMessage | DoneMessage | ErrorMessage | PingMessage
export type Message = ClientMessage | ServerMessage

/** A frame that breaks the protocol; `errorCode` is the ERROR code the receiver answers with. */
export class FrameError extends ProtocolError {
  /** The protocol's ERROR code for it (`ErrorCode.PROTOCOL`, `FRAME_TOO_LARGE`, `UNKNOWN_TYPE`). */
  readonly errorCode: number
  constructor(errorCode: number, message: string) {
    super(message)
    this.errorCode = errorCode
  }
}

function frame(type: number, payload: number): Buffer {
  const b = Buffer.allocUnsafe(HEADER + payload)
  b.writeUInt32LE(payload + 2, 0)
  b[4] = PROTOCOL_VERSION
  b[5] = type
  return b
}

function putTokens(b: Buffer, at: number, tokens: Int32Array): void {
  if ((b.byteOffset + at) % 4 === 0) new Int32Array(b.buffer, b.byteOffset + at, tokens.length).set(tokens)
  else for (let i = 0; i < tokens.length; i++) b.writeInt32LE(tokens[i]!, at + 4 * i)
}

/** Reads `n` i32 at `at` into a fresh array (the frame's bytes are not kept). */
function getTokens(b: Buffer, at: number, n: number): Int32Array {
  const out = new Int32Array(n)
  if ((b.byteOffset + at) % 4 === 0) out.set(new Int32Array(b.buffer, b.byteOffset + at, n))
  else for (let i = 0; i < n; i++) out[i] = b.readInt32LE(at + 4 * i)
  return out
}

/** The frame of one message (a Buffer in Node). */
export function encode(m: Message): Uint8Array {
  switch (m.type) {
    case MessageType.GENERATE: {
      const b = frame(m.type, 8 + 4 * m.tokens.length)
      b.writeUInt32LE(m.requestId, 6)
      b.writeUInt32LE(m.maxNewTokens, 10)
      putTokens(b, 14, m.tokens)
      return b
    }
    case MessageType.GENERATE_TEXT: {
      const stops = m.stop.map((x) => Buffer.from(x, 'utf8'))
      if (stops.length > 255 || stops.some((x) => x.length > 0xffff))
        throw new FrameError(ErrorCode.PROTOCOL, 'at most 255 stop strings of at most 65535 bytes')
      const prompt = Buffer.from(m.prompt, 'utf8')
      const b = frame(m.type, 26 + stops.reduce((n, x) => n + 2 + x.length, 0) + prompt.length)
      b.writeUInt32LE(m.requestId, 6)
      b.writeUInt32LE(m.maxNewTokens, 10)
      b.writeFloatLE(m.temperature, 14)
      b.writeFloatLE(m.topP, 18)
      b.writeUInt32LE(m.topK, 22)
      b.writeUInt32LE(m.seed, 26)
      b[30] = (m.chat ? 1 : 0) | (m.ignoreEos ? 2 : 0)
      b[31] = stops.length
      let at = 32
      for (const x of stops) {
        b.writeUInt16LE(x.length, at)
        x.copy(b, at + 2)
        at += 2 + x.length
      }
      prompt.copy(b, at)
      return b
    }
    case MessageType.TEXT:
      return encodeText(m.requestId, m.sentNs, m.tokens, m.text)
    case MessageType.CANCEL: {
      const b = frame(m.type, 4)
      b.writeUInt32LE(m.requestId, 6)
      return b
    }
    case MessageType.PING:
    case MessageType.PONG: {
      const b = frame(m.type, 8)
      b.writeBigUInt64LE(m.nonce, 6)
      return b
    }
    case MessageType.HELLO: {
      const name = Buffer.from(m.model, 'utf8')
      const b = frame(m.type, 20 + name.length)
      b.writeUInt32LE(m.vocab, 6)
      b.writeUInt32LE(m.maxSeqLen, 10)
      b.writeUInt32LE(m.maxBatch, 14)
      b.writeUInt32LE(m.maxFrameBytes, 18)
      b.writeUInt32LE(m.features, 22)
      name.copy(b, 26)
      return b
    }
    case MessageType.TOKENS:
      return encodeTokens(m.requestId, m.sentNs, m.tokens, m.tokens.length)
    case MessageType.DONE: {
      const b = frame(m.type, 9)
      b.writeUInt32LE(m.requestId, 6)
      b[10] = FINISH_REASONS.indexOf(m.reason)
      b.writeUInt32LE(m.generated, 11)
      return b
    }
    case MessageType.ERROR: {
      const text = Buffer.from(m.message, 'utf8')
      const b = frame(m.type, 6 + text.length)
      b.writeUInt32LE(m.requestId, 6)
      b.writeUInt16LE(m.code, 10)
      text.copy(b, 12)
      return b
    }
  }
}

/** A TOKENS frame of the first `n` of `tokens` (the server's per-step path: no message object). */
export function encodeTokens(requestId: number, sentNs: bigint, tokens: Int32Array, n: number): Uint8Array {
  const b = frame(MessageType.TOKENS, 12 + 4 * n)
  b.writeUInt32LE(requestId, 6)
  b.writeBigUInt64LE(sentNs, 10)
  putTokens(b, 18, n === tokens.length ? tokens : tokens.subarray(0, n))
  return b
}

/** A TEXT frame. */
export function encodeText(requestId: number, sentNs: bigint, tokens: number, text: string): Uint8Array {
  const n = Buffer.byteLength(text, 'utf8')
  const b = frame(MessageType.TEXT, 16 + n)
  b.writeUInt32LE(requestId, 6)
  b.writeBigUInt64LE(sentNs, 10)
  b.writeUInt32LE(tokens, 18)
  b.write(text, 22, 'utf8')
  return b
}

/** Payload bytes each type has: exact, or at least `min` and then `min + k * step`. */
const SHAPES: Record<number, { min: number; step: number }> = {
  [MessageType.GENERATE]: { min: 8, step: 4 },
  [MessageType.GENERATE_TEXT]: { min: 26, step: 1 },
  [MessageType.TEXT]: { min: 16, step: 1 },
  [MessageType.CANCEL]: { min: 4, step: 0 },
  [MessageType.PING]: { min: 8, step: 0 },
  [MessageType.PONG]: { min: 8, step: 0 },
  [MessageType.HELLO]: { min: 20, step: 1 },
  [MessageType.TOKENS]: { min: 12, step: 4 },
  [MessageType.DONE]: { min: 9, step: 0 },
  [MessageType.ERROR]: { min: 6, step: 1 },
}

/** Parses one frame's body (`b` from the version byte on, `len` bytes). Throws FrameError. */
function decodeBody(b: Buffer, at: number, len: number, accept: ReadonlySet<number>): Message {
  const version = b[at]!
  if (version < MIN_VERSION || version > PROTOCOL_VERSION)
    throw new FrameError(ErrorCode.PROTOCOL, `protocol version ${version}, expected ${MIN_VERSION}..${PROTOCOL_VERSION}`)
  const type = b[at + 1]!
  const shape = SHAPES[type]
  if (shape === undefined || !accept.has(type) || (version < 2 && SINCE_V2.has(type)))
    throw new FrameError(ErrorCode.UNKNOWN_TYPE, `unknown message type 0x${type.toString(16).padStart(2, '0')} in protocol version ${version}`)
  const n = len - 2
  const p = at + 2
  if (n < shape.min || (shape.step === 0 ? n !== shape.min : (n - shape.min) % shape.step !== 0)) {
    throw new FrameError(ErrorCode.PROTOCOL, `message type 0x${type.toString(16)} with a ${n}-byte payload`)
  }
  switch (type) {
    case MessageType.GENERATE:
      return { type, requestId: b.readUInt32LE(p), maxNewTokens: b.readUInt32LE(p + 4), tokens: getTokens(b, p + 8, (n - 8) / 4) }
    case MessageType.GENERATE_TEXT: {
      const flags = b[p + 24]!
      const count = b[p + 25]!
      const stop: string[] = []
      let q = p + 26
      const end = p + n
      for (let i = 0; i < count; i++) {
        if (q + 2 > end || q + 2 + b.readUInt16LE(q) > end) throw new FrameError(ErrorCode.PROTOCOL, `GENERATE_TEXT: stop string ${i} runs past the frame`)
        const len = b.readUInt16LE(q)
        stop.push(b.toString('utf8', q + 2, q + 2 + len))
        q += 2 + len
      }
      return {
        type,
        requestId: b.readUInt32LE(p),
        maxNewTokens: b.readUInt32LE(p + 4),
        temperature: b.readFloatLE(p + 8),
        topP: b.readFloatLE(p + 12),
        topK: b.readUInt32LE(p + 16),
        seed: b.readUInt32LE(p + 20),
        chat: (flags & 1) !== 0,
        ignoreEos: (flags & 2) !== 0,
        stop,
        prompt: b.toString('utf8', q, end),
      }
    }
    case MessageType.TEXT:
      return { type, requestId: b.readUInt32LE(p), sentNs: b.readBigUInt64LE(p + 4), tokens: b.readUInt32LE(p + 12), text: b.toString('utf8', p + 16, p + n) }
    case MessageType.CANCEL:
      return { type, requestId: b.readUInt32LE(p) }
    case MessageType.PING:
    case MessageType.PONG:
      return { type, nonce: b.readBigUInt64LE(p) }
    case MessageType.HELLO:
      return {
        type,
        vocab: b.readUInt32LE(p),
        maxSeqLen: b.readUInt32LE(p + 4),
        maxBatch: b.readUInt32LE(p + 8),
        maxFrameBytes: b.readUInt32LE(p + 12),
        features: b.readUInt32LE(p + 16),
        model: b.toString('utf8', p + 20, p + n),
      }
    case MessageType.TOKENS:
      return { type, requestId: b.readUInt32LE(p), sentNs: b.readBigUInt64LE(p + 4), tokens: getTokens(b, p + 12, (n - 12) / 4) }
    case MessageType.DONE: {
      const reason = FINISH_REASONS[b[p + 4]!]
      if (reason === undefined) throw new FrameError(ErrorCode.PROTOCOL, `DONE with reason ${b[p + 4]}`)
      return { type, requestId: b.readUInt32LE(p), reason, generated: b.readUInt32LE(p + 5) }
    }
    default:
      return { type: MessageType.ERROR, requestId: b.readUInt32LE(p), code: b.readUInt16LE(p + 4), message: b.toString('utf8', p + 6, p + n) }
  }
}

const CLIENT_TYPES: ReadonlySet<number> = new Set([MessageType.GENERATE, MessageType.GENERATE_TEXT, MessageType.CANCEL, MessageType.PING])
const SERVER_TYPES: ReadonlySet<number> = new Set([
  MessageType.HELLO,
  MessageType.TOKENS,
  MessageType.TEXT,
  MessageType.DONE,
  MessageType.ERROR,
  MessageType.PONG,
])

/** First allocation for a frame that arrives in pieces, bytes; it doubles up to the frame's length. */
const PARTIAL_START = 64 << 10

/**
 * Cuts a byte stream into messages. `push` returns the messages the bytes completed; the first bad frame
 * throws a FrameError and the decoder stays failed (the connection is to be closed). A length above
 * `maxFrameBytes` is refused as soon as its 4 bytes arrive, so a peer cannot make it buffer more. Whole
 * frames are decoded where they arrive; a frame that arrives in pieces is copied once into a buffer that
 * grows with what arrived (at most twice that), so a peer trickling bytes costs linear time and memory.
 */
export class FrameDecoder<M extends Message> {
  readonly maxFrameBytes: number
  readonly #accept: ReadonlySet<number>
  /** The length field of a frame whose first 1..3 bytes arrived. */
  readonly #head = Buffer.alloc(4)
  #headFilled = 0
  /** A frame (its length field included) being assembled, its total length and the bytes it holds. */
  #frame: Buffer | undefined
  #frameLength = 0
  #filled = 0
  #failed: FrameError | undefined

  private constructor(accept: ReadonlySet<number>, maxFrameBytes: number) {
    this.#accept = accept
    this.maxFrameBytes = maxFrameBytes
  }

  /** A decoder for what a server receives (GENERATE, GENERATE_TEXT, CANCEL, PING). */
  static forServer(maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): FrameDecoder<ClientMessage> {
    return new FrameDecoder<ClientMessage>(CLIENT_TYPES, maxFrameBytes)
  }

  /** A decoder for what a client receives (HELLO, TOKENS, TEXT, DONE, ERROR, PONG). */
  static forClient(maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): FrameDecoder<ServerMessage> {
    return new FrameDecoder<ServerMessage>(SERVER_TYPES, maxFrameBytes)
  }

  /** Bytes held of an incomplete frame. */
  get buffered(): number {
    return this.#headFilled + this.#filled
  }

  /** The checked total length of a frame whose length field reads `len`. */
  #frameLengthOf(len: number): number {
    if (len + 4 > this.maxFrameBytes) throw new FrameError(ErrorCode.FRAME_TOO_LARGE, `a ${len + 4}-byte frame, more than the ${this.maxFrameBytes}-byte limit`)
    if (len < 2) throw new FrameError(ErrorCode.PROTOCOL, `frame length ${len}, expected at least 2`)
    return len + 4
  }

  /** Appends `c[at..end)` to the frame being assembled, growing its buffer geometrically. */
  #append(c: Buffer, at: number, end: number): void {
    const need = this.#filled + end - at
    let f = this.#frame
    if (f === undefined || f.length < need) {
      const grown = Buffer.allocUnsafe(Math.min(this.#frameLength, Math.max(need, PARTIAL_START, 2 * (f?.length ?? 0))))
      if (f !== undefined) f.copy(grown, 0, 0, this.#filled)
      f = grown
      this.#frame = f
    }
    c.copy(f, this.#filled, at, end)
    this.#filled = need
  }

  /** The messages `chunk` completes, in order. Throws FrameError on the first bad frame. */
  push(chunk: Uint8Array): M[] {
    if (this.#failed !== undefined) throw this.#failed
    const c = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    const out: M[] = []
    let at = 0
    try {
      while (at < c.length) {
        if (this.#filled > 0) {
          // Finishing a frame that arrived in pieces.
          const end = Math.min(c.length, at + this.#frameLength - this.#filled)
          this.#append(c, at, end)
          at = end
          if (this.#filled === this.#frameLength) {
            out.push(decodeBody(this.#frame!, 4, this.#frameLength - 4, this.#accept) as M)
            this.#frame = undefined
            this.#filled = 0
          }
        } else if (this.#headFilled > 0 || c.length - at < 4) {
          // A length field split across chunks.
          const take = Math.min(4 - this.#headFilled, c.length - at)
          c.copy(this.#head, this.#headFilled, at, at + take)
          this.#headFilled += take
          at += take
          if (this.#headFilled === 4) {
            this.#frameLength = this.#frameLengthOf(this.#head.readUInt32LE(0))
            this.#headFilled = 0
            this.#append(this.#head, 0, 4)
          }
        } else {
          // Whole frames are decoded in place; the start of a longer one is kept.
          const total = this.#frameLengthOf(c.readUInt32LE(at))
          if (c.length - at >= total) {
            out.push(decodeBody(c, at + 4, total - 4, this.#accept) as M)
            at += total
          } else {
            this.#frameLength = total
            this.#append(c, at, c.length)
            at = c.length
          }
        }
      }
    } catch (e) {
      if (e instanceof FrameError) this.#failed = e
      throw e
    }
    return out
  }
}
