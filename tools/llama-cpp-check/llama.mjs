// Opens a GGUF file in llama.cpp (node-llama-cpp's prebuilt CPU library) the way both
// checks need it: two threads, an f32 KV cache and no flash attention, so that f32
// weights compute in f32 throughout (llama.cpp defaults to an f16 cache, which moves
// logits by about 1e-2).
import {getLlama} from "node-llama-cpp";

export async function openSequence(modelPath) {
  const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
  const model = await llama.loadModel({modelPath});
  const context = await model.createContext({
    contextSize: 512,
    threads: 2,
    flashAttention: false,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
  });
  return {model, seq: context.getSequence()};
}
