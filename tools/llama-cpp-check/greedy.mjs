// Greedy continuation of given prompt token ids in llama.cpp (node-llama-cpp's prebuilt libllama):
// node greedy.mjs MODEL.gguf "[ids...]" N  ->  {"generated_ids": [...], "text": "...", "ms": ...}
import {getLlama} from "node-llama-cpp";
const [modelPath, idsJson, nStr] = process.argv.slice(2);
const ids = JSON.parse(idsJson);
const n = Number(nStr || 32);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
// An f32 KV cache and no flash attention, so that f32 weights compute in f32 throughout
// (llama.cpp defaults to an f16 cache, which moves logits by about 1e-2).
const context = await model.createContext({
  contextSize: 512,
  threads: 2,
  flashAttention: false,
  experimentalKvCacheKeyType: "F32",
  experimentalKvCacheValueType: "F32",
});
const seq = context.getSequence();
const out = [];
const t0 = Date.now();
for await (const tok of seq.evaluate(ids, {temperature: 0})) {
  // Like the studio, stop at the end-of-turn token and leave it out.
  if (tok === model.tokens.eos) break;
  out.push(tok);
  if (out.length >= n) break;
}
console.log(JSON.stringify({generated_ids: out, text: model.detokenize(out), ms: Date.now() - t0}));
process.exit(0);
