// Greedy continuation of given prompt token ids in llama.cpp (node-llama-cpp's prebuilt libllama):
// node greedy.mjs MODEL.gguf "[ids...]" N  ->  {"generated_ids": [...], "text": "...", "ms": ...}
import {openSequence} from "./llama.mjs";
const [modelPath, idsJson, nStr] = process.argv.slice(2);
const ids = JSON.parse(idsJson);
const n = Number(nStr || 32);
const {model, seq} = await openSequence(modelPath);
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
