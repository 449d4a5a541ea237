/**
 * `cudagraph/model`: the Llama-style decoder on the graph manager and Hugging Face checkpoints for it:
 * `loadModel` (a model directory onto the GPU, its graphs captured, text in and out), the checkpoint
 * loader and its checks, the decoder and its runner (token level), sampling rows, presets of random
 * weights, the float64 CPU reference, safetensors files, Hugging Face configs, tokenizers and chat templates.
 */

export { StopMatcher } from '../util/stop-matcher.js'
export { type Checkpoint, type CheckpointTensor, type LoadOptions, type LoadProgress, type LoadStats, loadDecoder, readCheckpoint } from './checkpoint.js'
export { DECODER_KERNELS_PATH, decoderCompileOptions, KERNEL_CONSTANTS } from './decoder-kernels.js'
export {
  CHAIN_MAX_ROWS,
  chainFits,
  chainRows,
  type DecodeAttention,
  type DecodeGemv,
  DecoderModel,
  type DecoderOptions,
  type DeviceLimits,
  decodeAttentionMma,
  decodeGemvFits,
  defaultDecodeGemv,
  type ForwardContext,
  type ForwardTensors,
  type ModelBuild,
  type ModelDType,
  type PrefillAttention,
  SAMPLE_SPLIT_VOCAB,
  type StepKind,
  sampleShape,
  sampleSplitRows,
  TENSOR_GEMV_MAX_ROWS,
  tensorGemvFits,
  type Weight,
} from './decoder-model.js'
export { DecoderReference, type ReferenceOutput } from './decoder-reference.js'
export { DecoderRunner, type DecoderRunnerOptions } from './decoder-runner.js'
export { endOfSequenceIds, type GenerationDefaults, readGenerationConfig } from './generation-config.js'
export { type Architecture, type CheckpointConfig, defaultMaxSeqLen, parseHfConfig, SUPPORTED_ARCHITECTURES } from './hf-config.js'
export {
  type FinishReason,
  type GenerateOptions,
  type GenerationResult,
  LanguageModel,
  type LoadModelOptions,
  loadModel,
  type TextChunk,
} from './language-model.js'
export {
  MODEL_PRESETS,
  type ModelConfig,
  type ModelName,
  type ModelOverrides,
  modelConfig,
  parameterCount,
  type RopeScaling,
  ropeInvFreq,
} from './model-config.js'
export {
  readSafetensorsHeader,
  SAFETENSORS_DTYPES,
  type SafetensorsDType,
  type SafetensorsEntry,
  type SafetensorsHeader,
  type SafetensorsTensor,
  writeSafetensors,
} from './safetensors.js'
export { type SamplingParams, type SamplingRows, samplingParams, samplingRows, setSampling } from './sampling.js'
export { type ChatMessage, Detokenizer, TextTokenizer } from './tokenizer.js'
export { type LocalDims, localDims, type Shard, type WeightPart, type WeightSpec, WHOLE, weightLayout } from './weight-layout.js'
