/**
 * `cudagraph/model`: the built-in Llama-style decoder on the graph manager: its presets, the model, the
 * runner that steps it through graphs, the float64 CPU reference, safetensors files (written, and read with every header checked), Hugging Face
 * configs, tokenizers and chat templates.
 */

export { DECODER_KERNELS_PATH, DecoderModel, type DecoderOptions, type ForwardContext, type ForwardTensors, type Weight } from './decoder-model.js'
export { DecoderReference, type ReferenceOutput } from './decoder-reference.js'
export { DecoderRunner, type DecoderRunnerOptions } from './decoder-runner.js'
export { type Architecture, type CheckpointConfig, parseHfConfig, type RopeScaling, SUPPORTED_ARCHITECTURES } from './hf-config.js'
export { headDim, MODEL_PRESETS, type ModelConfig, type ModelName, modelConfig, parameterCount } from './model-config.js'
export {
  readSafetensorsHeader,
  SAFETENSORS_DTYPES,
  type SafetensorsDType,
  type SafetensorsEntry,
  type SafetensorsHeader,
  type SafetensorsTensor,
  writeSafetensors,
} from './safetensors.js'
export { type GenerationDefaults, readGenerationConfig, StopMatcher } from './stops.js'
export { type ChatMessage, Detokenizer, TextTokenizer } from './tokenizer.js'
