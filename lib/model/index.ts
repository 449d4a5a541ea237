/**
 * `cudagraph/model`: the built-in Llama-style decoder on the graph manager: its presets, the model, the
 * runner that steps it through graphs, the float64 CPU reference and the safetensors writer.
 */

export { DECODER_KERNELS_PATH, DecoderModel, type DecoderOptions, type ForwardContext, type ForwardTensors, type Weight } from './decoder-model.js'
export { DecoderReference, type ReferenceOutput } from './decoder-reference.js'
export { DecoderRunner, type DecoderRunnerOptions } from './decoder-runner.js'
export { headDim, MODEL_PRESETS, type ModelConfig, type ModelName, modelConfig, parameterCount } from './model-config.js'
export { type SafetensorsEntry, writeSafetensors } from './safetensors.js'
