// Run face-api itself (@vladmandic/face-api, pure-JS TF.js CPU backend) on face crops that
// models/verify_faceapi.py prepared, and write what it computes: the exact network input
// tensors face-api builds (pad to square + resize) and its age, gender and descriptor outputs.
//
//   node verify_faceapi.mjs WORKDIR
//
// WORKDIR/crops.json lists {height, width, offset} for RGB uint8 crops stored back to back in
// WORKDIR/crops.u8. Writes WORKDIR/faceapi.json, input_112.f32 and input_150.f32 (NHWC
// float32, little-endian). Not part of the build or of CI; see models/README.md.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
// The node-wasm bundle loads @tensorflow/tfjs (which carries the pure-JS CPU backend) and
// never tfjs-node, whose install downloads a native library from outside npm.
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

const { tf } = faceapi;
const workdir = process.argv[2];
if (!workdir) {
  console.error('usage: node verify_faceapi.mjs WORKDIR');
  process.exit(2);
}

await tf.setBackend('cpu');
await tf.ready();
const modelDir = path.join(path.dirname(require.resolve('@vladmandic/face-api/package.json')), 'model');
await faceapi.nets.ageGenderNet.loadFromDisk(modelDir);
await faceapi.nets.faceRecognitionNet.loadFromDisk(modelDir);

const crops = JSON.parse(fs.readFileSync(path.join(workdir, 'crops.json'), 'utf8'));
const pixels = fs.readFileSync(path.join(workdir, 'crops.u8'));
const inputs112 = [];
const inputs150 = [];
const results = [];
for (const crop of crops.items) {
  const { height, width, offset } = crop;
  const values = new Float32Array(pixels.subarray(offset, offset + height * width * 3));
  const image = tf.tensor3d(values, [height, width, 3], 'float32');
  const netInput = await faceapi.toNetInput(image);
  const batch112 = netInput.toBatchTensor(112, true);
  const batch150 = netInput.toBatchTensor(150, true);
  inputs112.push(Buffer.from((await batch112.data()).buffer));
  inputs150.push(Buffer.from((await batch150.data()).buffer));
  const raw = faceapi.nets.ageGenderNet.forwardInput(netInput); // {age [1], gender softmax [1, 2]}
  const prediction = await faceapi.nets.ageGenderNet.predictAgeAndGender(image);
  const descriptor = await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(image);
  results.push({
    age: Array.from(await raw.age.data()),
    gender_faceapi_order: Array.from(await raw.gender.data()),
    prediction,
    descriptor: Array.from(descriptor),
  });
  tf.dispose([image, batch112, batch150, raw.age, raw.gender]);
}
fs.writeFileSync(path.join(workdir, 'input_112.f32'), Buffer.concat(inputs112));
fs.writeFileSync(path.join(workdir, 'input_150.f32'), Buffer.concat(inputs150));
const versions = { faceapi: faceapi.version, tfjs: tf.version_core, backend: tf.getBackend() };
fs.writeFileSync(path.join(workdir, 'faceapi.json'), JSON.stringify({ versions, results }));
console.log(`face-api ${versions.faceapi}, tfjs ${versions.tfjs} (${versions.backend}): ${results.length} crops`);
