/**
 * `cudagraph/model`: the built-in Llama-style decoder on the graph manager: its presets, the model, the
 * runner that steps it through graphs, the float64 CPU reference and the safetensors writer.
 */
export { MODEL_PRESETS, headDim, modelConfig, parameterCount, type ModelConfig, type ModelName } from './model-config.js'
export { DecoderModel, DECODER_KERNELS_PATH, type DecoderOptions, type ForwardContext, type ForwardTensors, type Weight } from './decoder-model.js'
export { DecoderRunner, type DecoderRunnerOptions } from './decoder-runner.js'
export { DecoderReference, type ReferenceOutput } from './decoder-reference.js'
export { writeSafetensors, type SafetensorsEntry } from './safetensors.js'
