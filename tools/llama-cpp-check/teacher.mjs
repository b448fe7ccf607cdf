// Teacher-forced comparison in llama.cpp (node-llama-cpp's prebuilt libllama):
//   node teacher.mjs MODEL.gguf "[prompt ids]" "[studio's generated ids]"
// Feeds the studio's tokens one by one and, at each step, reports llama.cpp's most likely
// token and the probability it gives the studio's token. Where the two greedy paths part,
// this tells a near-tie (both tokens about equally likely) from a real disagreement.
import {openSequence} from "./llama.mjs";
const [modelPath, promptJson, studioJson] = process.argv.slice(2);
const prompt = JSON.parse(promptJson);
const studio = JSON.parse(studioJson);
const {model, seq} = await openSequence(modelPath);
const steps = [];
const gen = seq.evaluateWithMetadata(prompt, {probabilities: true}, {temperature: 0});
let r = await gen.next();
for (let i = 0; i < studio.length && !r.done; i++) {
  const probs = r.value.probabilities;
  const [top, pTop] = probs.entries().next().value;
  steps.push({top, p_top: pTop, studio: studio[i], p_studio: probs.get(studio[i]) ?? 0});
  r = await gen.next(studio[i]);
}
await gen.return();
console.log(JSON.stringify(steps));
process.exit(0);
