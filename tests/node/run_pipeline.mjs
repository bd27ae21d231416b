// Runs a folder written by `distilforge package --format transformers.js` through Transformers.js's own pipeline
// in Node, from local files only, and prints one JSON object on stdout (tests/test_package_transformersjs.py).
//
//   node run_pipeline.mjs FOLDER DTYPES TASK TEXTS_JSON
//
// DTYPES: comma-separated Transformers.js dtypes (fp32, fp16, q8, int8), each loaded and run in turn; "auto" passes
// no dtype, so the folder's config.json (transformers.js_config.dtype) or Transformers.js's default decides.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { AutoTokenizer, ModelRegistry, env, pipeline } from '@huggingface/transformers';

const [folder, dtypes, task, textsJson] = process.argv.slice(2);
if (!folder || !dtypes || !task || !textsJson) {
    console.error('usage: node run_pipeline.mjs FOLDER DTYPES TASK TEXTS_JSON');
    process.exit(2);
}
const texts = JSON.parse(textsJson);
const absolute = path.resolve(folder);
const id = path.basename(absolute); // a model id under env.localModelPath, as a Hub id would be

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(absolute) + path.sep;

// every label's score, every token (none ignored as "O"), the top five tokens
const TASK_OPTIONS = {
    'text-classification': { top_k: null },
    'token-classification': { ignore_labels: [] },
    'fill-mask': { top_k: 5 },
};

function packageVersion(name) {
    const here = path.dirname(fileURLToPath(import.meta.url));
    return JSON.parse(readFileSync(path.join(here, 'node_modules', name, 'package.json'), 'utf8')).version;
}

const tokenizer = await AutoTokenizer.from_pretrained(id, { local_files_only: true });
const report = {
    node: process.versions.node,
    transformers: env.version,
    onnxruntime_node: packageVersion('onnxruntime-node'),
    available_dtypes: await ModelRegistry.get_available_dtypes(id, { local_files_only: true }),
    input_ids: texts.map((text) => Array.from(tokenizer(text).input_ids.data, Number)),
    runs: {},
};
for (const dtype of dtypes.split(',')) {
    const options = dtype === 'auto' ? {} : { dtype };
    const run = await pipeline(task, id, { ...options, local_files_only: true });
    const results = [];
    for (const text of texts) {
        // one text per call: dynamic INT8 takes one activation scale over a whole padded batch
        results.push(await run(text, TASK_OPTIONS[task] ?? {}));
    }
    report.runs[dtype] = {
        loaded_dtype: run.model.sessions.model.config.dtype,
        files: await ModelRegistry.get_model_files(id, options),
        results,
    };
    await run.dispose();
}
console.log(JSON.stringify(report));
