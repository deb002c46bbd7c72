// The mixreorg-edge demo page: an exported ONNX artifact on onnxruntime-web. Everything the page does to an image
// (resizing, normalisation, the label rule, the vocabulary) comes from the artifact's metadata.json.
// Query parameters: artifact=URL of the artifact folder (default artifact/), backend=auto|wasm|webgpu,
// threads=N (WebAssembly threads; default min(4, cores)).
const ORT_DIST = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
// onnxruntime-web's bundles: with WebGPU, and WebAssembly alone (its plain build runs ~2x faster on the CPU than the
// WebGPU bundle's; measured in headless Chromium), imported once the backend is known.
const BUNDLES = { webgpu: "ort.min.mjs", wasm: "ort.wasm.min.mjs" };
let ort;
const FORMAT = "mixreorg-edge artifact";
const BACKGROUND = "background";
const PALETTE_SIZE = 24;
const ALPHA = 0.5;
const params = new URLSearchParams(location.search);
const artifactUrl = new URL(params.get("artifact") || "artifact/", location.href);
if (!artifactUrl.pathname.endsWith("/")) artifactUrl.pathname += "/";

const $ = (id) => document.getElementById(id);

// What tests and scripts read: the state, the last label map and its timing; `runs` counts model runs, `updates`
// every label map drawn and every message shown.
const demo = (window.mixreorgDemo = {
  state: "loading", error: null, backend: null, labels: null, width: 0, height: 0,
  latencyMs: null, totalMs: null, runs: 0, updates: 0, benchmark,
});

class UserError extends Error {}

function setState(state) {
  demo.state = state;
  document.body.dataset.state = state;
}

function showError(message, fatal) {
  demo.error = message;
  $("error").textContent = message;
  $("error").hidden = false;
  if (fatal) setState("error");
  demo.updates++;
}

function clearError() {
  demo.error = null;
  $("error").hidden = true;
}

async function fetchOk(url, what) {
  let response;
  try {
    response = await fetch(url, { cache: "no-store" });
  } catch (error) {
    throw new UserError(`Could not fetch ${what} (${url}): ${error.message}`);
  }
  if (!response.ok) {
    throw new UserError(`Could not fetch ${what} (${url}): HTTP ${response.status}` +
      (response.status === 404 ? " (no such file in the artifact folder)" : ""));
  }
  return response;
}

async function readMetadata() {
  const url = new URL("metadata.json", artifactUrl);
  const response = await fetchOk(url, "metadata.json");
  let metadata;
  try {
    metadata = await response.json();
  } catch {
    throw new UserError(`${url} is not valid JSON`);
  }
  if (metadata.format !== FORMAT) throw new UserError(`${url} is not a mixreorg-edge artifact's metadata.json`);
  if (metadata.target !== "onnx") {
    throw new UserError(`This is a ${metadata.target} artifact; the page runs ONNX artifacts (export with --target onnx).`);
  }
  const pre = metadata.preprocess || {};
  if (pre.resize !== "stretch" || pre.channels !== "RGB" || pre.layout !== "NCHW") {
    throw new UserError(`Unsupported preprocessing in metadata.json: ${JSON.stringify(pre)}`);
  }
  if (!["labels", "scores", "embeddings"].includes(metadata.output?.kind)) {
    throw new UserError(`Unknown output kind in metadata.json: ${metadata.output?.kind}`);
  }
  return metadata;
}

// A vocabulary (the JSON `vocab build` writes, or the artifact's vocabulary.json), checked against the model.
function checkVocabulary(vocabulary, embedDim, source) {
  const needed = ["labels", "foreground", "background_words", "embeddings", "logit_scale", "embed_dim"];
  const missing = needed.filter((key) => !(key in vocabulary));
  if (missing.length) throw new UserError(`${source} is not a vocabulary file (missing ${missing.join(", ")})`);
  if (vocabulary.embed_dim !== embedDim || vocabulary.embeddings.some((row) => row.length !== embedDim)) {
    throw new UserError(`${source} has ${vocabulary.embed_dim}-dimensional embeddings; this model outputs ` +
      `${embedDim}-dimensional ones: build the vocabulary with the teacher the student was distilled from.`);
  }
  const entries = vocabulary.foreground.length + vocabulary.background_words.length;
  if (vocabulary.embeddings.length !== entries) {
    throw new UserError(`${source} has ${vocabulary.embeddings.length} embeddings for ${entries} entries`);
  }
  return vocabulary;
}

async function importOrt(backend) {
  ort = await import(ORT_DIST + BUNDLES[backend]);
  ort.env.wasm.wasmPaths = ORT_DIST;
  ort.env.wasm.numThreads = Number(params.get("threads")) || Math.min(4, navigator.hardwareConcurrency || 1);
}

// WebGPU where the browser has an adapter and the model runs on it (unless backend=wasm), else WebAssembly; the
// backend string says which, how many threads, and why not WebGPU.
async function createSession(modelBytes) {
  const wanted = params.get("backend") || "auto";
  let note = "";
  if (wanted !== "wasm") {
    const adapter = navigator.gpu ? await navigator.gpu.requestAdapter().catch(() => null) : null;
    if (adapter) {
      await importOrt("webgpu");
      try {
        return { session: await ort.InferenceSession.create(modelBytes, { executionProviders: ["webgpu"] }),
                 backend: "webgpu" };
      } catch (error) {
        note = `WebGPU failed: ${error.message}`;
      }
    } else {
      note = "WebGPU unavailable in this browser";
    }
    if (wanted === "webgpu") throw new UserError(note);
  }
  if (!ort) await importOrt("wasm");
  const session = await ort.InferenceSession.create(modelBytes, { executionProviders: ["wasm"] });
  const threads = ort.env.wasm.numThreads > 1 && !self.crossOriginIsolated ? 1 : ort.env.wasm.numThreads;
  return { session, backend: `wasm, ${threads} thread${threads > 1 ? "s" : ""}${note ? `; ${note}` : ""}` };
}

function checkSession(session, metadata) {
  const { input, output } = metadata;
  if (!session.inputNames.includes(input.name) || !session.outputNames.includes(output.name)) {
    throw new UserError(`${metadata.model_file} does not match metadata.json: the model takes ` +
      `[${session.inputNames}] and gives [${session.outputNames}], metadata.json says ${input.name} -> ${output.name}`);
  }
  const declared = session.inputMetadata?.find?.((item) => item.name === input.name);
  const shape = declared?.shape;
  if (shape && shape.length && shape.some((dim, i) => typeof dim === "number" && dim !== input.shape[i])) {
    throw new UserError(`${metadata.model_file} does not match metadata.json: its input is [${shape}], ` +
      `metadata.json says [${input.shape}]`);
  }
}

// --- colours: the same as the Python overlay's (a SHA-256 of the class name picks a palette slot) ---------------
function slotColour(slot) {
  const hue = (slot % 12) / 12, dark = slot >= 12;
  const s = dark ? 0.55 : 0.9, v = dark ? 0.65 : 0.95;
  const i = Math.floor(hue * 6), f = hue * 6 - i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  const rgb = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
  return rgb.map((c) => Math.round(c * 255));
}

async function nameSlot(name) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(name.trim().toLowerCase()));
  return new DataView(digest).getUint32(0) % PALETTE_SIZE;
}

async function classColours(names) {
  const taken = new Map();
  for (const name of [...new Set(names)].sort()) {
    let slot = await nameSlot(name);
    const used = new Set(taken.values());
    for (let step = 0; step < PALETTE_SIZE; step++) {
      if (!used.has((slot + step) % PALETTE_SIZE)) { slot = (slot + step) % PALETTE_SIZE; break; }
    }
    taken.set(name, slot);
  }
  return names.map((name) => slotColour(taken.get(name)));
}

// --- the model's input: stretched to the input size, ((pixel * scale) - mean) / std, NCHW ------------------------
function preprocess(bitmap, metadata) {
  const [, channels, height, width] = metadata.input.shape;
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, width, height);
  const rgba = context.getImageData(0, 0, width, height).data;
  const { scale, mean, std } = metadata.preprocess;
  const data = new Float32Array(channels * height * width);
  const plane = height * width;
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) data[c * plane + i] = (rgba[4 * i + c] * scale - mean[c]) / std[c];
  }
  return { tensor: new ort.Tensor("float32", data, metadata.input.shape), rgba, width, height };
}

// --- outputs -> label indices (metadata.json's rule) ------------------------------------------------------------
function argmaxLabels(scores, [, classes, height, width]) {
  const plane = height * width, labels = new Int32Array(plane);
  for (let i = 0; i < plane; i++) {
    let best = scores[i], index = 0;
    for (let c = 1; c < classes; c++) if (scores[c * plane + i] > best) { best = scores[c * plane + i]; index = c; }
    labels[i] = index;
  }
  return labels;
}

// PyTorch's bilinear weights with align_corners=false (half-pixel centres, source clamped at 0).
function axisWeights(out, inp) {
  const low = new Int32Array(out), high = new Int32Array(out), frac = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    const source = Math.max(0, (o + 0.5) * (inp / out) - 0.5);
    low[o] = Math.min(Math.floor(source), inp - 1);
    high[o] = Math.min(low[o] + 1, inp - 1);
    frac[o] = source - Math.floor(source);
  }
  return { low, high, frac };
}

// `embeddings` (1, E, h, w) -> label indices at (H, W): the rule metadata.json's `embeddings_to_labels` states,
// over the ticked foreground entries only. With background words: background where their logsumexp beats the best
// foreground logit. Without them, with a threshold: GroupViT's rule (top classes, product of softmaxes, threshold
// capped at the image's best score).
function embeddingLabels(embeddings, [, dim, h, w], vocabulary, active, [H, W], topClasses) {
  const nForeground = vocabulary.foreground.length, nActive = active.length;
  const entries = [...active, ...vocabulary.background_words.map((_, k) => nForeground + k)];
  const plane = h * w, logits = entries.map(() => new Float64Array(plane));
  entries.forEach((entry, n) => {
    const row = vocabulary.embeddings[entry], out = logits[n];
    const bias = entry >= nForeground ? vocabulary.background_bias || 0 : 0;
    for (let i = 0; i < plane; i++) {
      let sum = 0;
      for (let e = 0; e < dim; e++) sum += row[e] * embeddings[e * plane + i];
      out[i] = vocabulary.logit_scale * sum + bias;
    }
  });
  const ys = axisWeights(H, h), xs = axisWeights(W, w);
  const background = vocabulary.background_index;
  const groupvit = background != null && !vocabulary.background_words.length;
  const kept = groupvit ? keptClasses(logits.slice(0, nActive), ys, xs, [h, w], Math.min(topClasses, nActive)) : null;
  const value = new Float64Array(entries.length), labels = new Int32Array(H * W), bestScore = new Float64Array(H * W);
  let imageBest = -Infinity;
  for (let y = 0; y < H; y++) {
    const y0 = ys.low[y] * w, y1 = ys.high[y] * w, fy = ys.frac[y];
    for (let x = 0; x < W; x++) {
      const x0 = xs.low[x], x1 = xs.high[x], fx = xs.frac[x], p = y * W + x;
      for (let n = 0; n < entries.length; n++) {
        const l = logits[n];
        value[n] = (1 - fy) * ((1 - fx) * l[y0 + x0] + fx * l[y0 + x1]) + fy * ((1 - fx) * l[y1 + x0] + fx * l[y1 + x1]);
      }
      let best = -Infinity, bestN = -1;
      if (groupvit) {
        const all = logSumExp(value, 0, nActive), top = logSumExp(value, 0, nActive, kept);
        for (let n = 0; n < nActive; n++) {
          const score = kept[n] ? Math.exp(value[n] - top) * Math.exp(value[n] - all) : 0;
          if (score > best) { best = score; bestN = n; }
        }
        bestScore[p] = best;
        imageBest = Math.max(imageBest, best);
      } else {
        for (let n = 0; n < nActive; n++) if (value[n] > best) { best = value[n]; bestN = n; }
      }
      const entry = bestN < 0 ? -1 : active[bestN];
      let label = background != null && entry >= background ? entry + 1 : entry;
      if (background != null && !groupvit && (bestN < 0 || logSumExp(value, nActive, entries.length) > best)) {
        label = background;
      }
      labels[p] = label;
    }
  }
  if (groupvit) {
    const threshold = Math.min(vocabulary.background_threshold, imageBest);
    for (let p = 0; p < labels.length; p++) if (bestScore[p] < threshold || labels[p] < 0) labels[p] = background;
  }
  return labels;
}

// GroupViT's kept classes: the `k` with the highest mean upsampled logit over the image (ties: the first). The mean
// of a bilinear upsampling is a weighted sum of the (h, w) logits: each weight a row's total times a column's.
function keptClasses(logits, ys, xs, [h, w], k) {
  const totals = (axis, size) => {
    const total = new Float64Array(size);
    for (let o = 0; o < axis.low.length; o++) {
      total[axis.low[o]] += 1 - axis.frac[o];
      total[axis.high[o]] += axis.frac[o];
    }
    return total;
  };
  const rows = totals(ys, h), columns = totals(xs, w), pixels = ys.low.length * xs.low.length;
  const means = logits.map((l) => {
    let sum = 0;
    for (let i = 0; i < h * w; i++) sum += l[i] * rows[Math.floor(i / w)] * columns[i % w];
    return sum / pixels;
  });
  return means.map((m, i) => means.filter((other, j) => other > m || (other === m && j < i)).length < k);
}

// log(sum(exp(values[start..end)))), over the entries `mask` keeps when given.
function logSumExp(values, start, end, mask) {
  let peak = -Infinity;
  for (let i = start; i < end; i++) if (!mask || mask[i]) peak = Math.max(peak, values[i]);
  if (peak === -Infinity) return -Infinity;
  let sum = 0;
  for (let i = start; i < end; i++) if (!mask || mask[i]) sum += Math.exp(values[i] - peak);
  return peak + Math.log(sum);
}

// --- the page -----------------------------------------------------------------------------------------------------
const app = { metadata: null, session: null, vocabulary: null, active: [], colours: [], last: null };

function labelNames() {
  return app.vocabulary ? app.vocabulary.labels : app.metadata.labels;
}

function toLabels(result) {
  const { data, dims } = result;
  const kind = app.metadata.output.kind;
  const [H, W] = app.metadata.input.shape.slice(2);
  if (kind === "labels") return Int32Array.from(data, Number);
  if (kind === "scores") return argmaxLabels(data, dims);
  return embeddingLabels(data, dims, app.vocabulary, app.active, [H, W], app.metadata.background?.top_classes ?? 5);
}

async function render() {
  const { input, output } = app.last;
  const labels = toLabels(output);
  const names = labelNames();
  app.colours = await classColours(names);
  const { width, height, rgba } = input;
  const canvas = $("overlay");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  const counts = new Array(names.length).fill(0);
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i];
    counts[label]++;
    const painted = names[label] !== BACKGROUND;
    for (let c = 0; c < 3; c++) {
      image.data[4 * i + c] = painted ? Math.round((1 - ALPHA) * rgba[4 * i + c] + ALPHA * app.colours[label][c])
                                      : rgba[4 * i + c];
    }
    image.data[4 * i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  drawLegend(names, counts, labels.length);
  Object.assign(demo, { labels, width, height, colours: app.colours });
  demo.updates++;
}

function drawLegend(names, counts, total) {
  const legend = $("legend");
  legend.replaceChildren();
  names.map((name, index) => ({ name, index, count: counts[index] }))
    .filter((item) => item.count).sort((a, b) => b.count - a.count)
    .forEach(({ name, index, count }) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = name === BACKGROUND ? "transparent" : `rgb(${app.colours[index].join(",")})`;
      item.append(swatch, `${name} ${Math.round((100 * count) / total)}%`);
      legend.append(item);
    });
}

async function segment(file) {
  clearError();
  if (!app.session) return showError("The model is not loaded yet.", false);
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    showError(`Could not decode ${file.name}: not an image this browser can read.`, false);
    setState(app.last ? "done" : "ready");
    return;
  }
  setState("running");
  const started = performance.now();
  const input = preprocess(bitmap, app.metadata);
  const runStarted = performance.now();
  let outputs;
  try {
    outputs = await app.session.run({ [app.metadata.input.name]: input.tensor });
  } catch (error) {
    showError(`The model failed on ${file.name}: ${error.message || error}`, false);
    setState(app.last ? "done" : "ready");
    return;
  }
  const latencyMs = performance.now() - runStarted;
  demo.runs++;
  app.last = { input, output: outputs[app.metadata.output.name] };
  await render();
  const totalMs = performance.now() - started;
  Object.assign(demo, { latencyMs, totalMs });
  $("timing").textContent = `${file.name}: model ${latencyMs.toFixed(1)} ms, with pre- and post-processing ` +
    `${totalMs.toFixed(1)} ms · backend: ${demo.backend}`;
  setState("done");
}

// One run on a blank input, so the first image's latency is the steady state's, not the first call's set-up.
async function warmUp(metadata) {
  const tensor = new ort.Tensor("float32", new Float32Array(metadata.input.shape.reduce((a, b) => a * b)),
                                metadata.input.shape);
  try {
    await app.session.run({ [metadata.input.name]: tensor });
  } catch (error) {
    throw new UserError(`${metadata.model_file} fails to run on a ${metadata.input.shape} input: ${error.message}`);
  }
}

// `runs` timed session.run calls on the last input (ms each), for benchmarks/web_latency.py.
async function benchmark(runs) {
  if (!app.last) throw new Error("segment an image first");
  const feeds = { [app.metadata.input.name]: app.last.input.tensor };
  const times = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    await app.session.run(feeds);
    times.push(performance.now() - started);
  }
  return times;
}

function showVocabulary() {
  const list = $("vocabulary");
  list.replaceChildren();
  app.vocabulary.foreground.forEach((name, entry) => {
    const item = document.createElement("li");
    const box = document.createElement("input");
    Object.assign(box, { type: "checkbox", checked: app.active.includes(entry), value: name });
    box.addEventListener("change", () => {
      const ticked = [...list.querySelectorAll("input")].flatMap((input, k) => (input.checked ? [k] : []));
      if (!ticked.length && app.vocabulary.background_index == null) {
        box.checked = true;
        return showError("Keep at least one class: this vocabulary has no background class.", false);
      }
      app.active = ticked;
      if (app.last) render();
    });
    const label = document.createElement("label");
    label.append(box, ` ${name}`);
    item.append(label);
    list.append(item);
  });
  $("vocabulary-panel").hidden = false;
}

async function loadVocabularyFile(file) {
  clearError();
  try {
    let vocabulary;
    try {
      vocabulary = JSON.parse(await file.text());
    } catch {
      throw new UserError(`${file.name} is not valid JSON`);
    }
    app.vocabulary = checkVocabulary(vocabulary, app.vocabulary.embed_dim, file.name);
    app.active = app.vocabulary.foreground.map((_, k) => k);
    showVocabulary();
    if (app.last) await render();
  } catch (error) {
    showError(error.message, false);
  }
}

async function start() {
  const metadata = (app.metadata = await readMetadata());
  const modelUrl = new URL(metadata.model_file, artifactUrl);
  const modelBytes = new Uint8Array(await (await fetchOk(modelUrl, metadata.model_file)).arrayBuffer());
  if (metadata.output.kind === "embeddings") {
    const url = new URL(metadata.vocabulary_file || "vocabulary.json", artifactUrl);
    const response = await fetchOk(url, "the vocabulary file");
    app.vocabulary = checkVocabulary(await response.json(), metadata.output.shape[1], url.pathname);
    app.active = app.vocabulary.foreground.map((_, k) => k);
  }
  let created;
  try {
    created = await createSession(modelBytes);
  } catch (error) {
    if (error instanceof UserError) throw error;
    throw new UserError(`onnxruntime-web could not load ${metadata.model_file}: ${error.message || error}`);
  }
  app.session = created.session;
  demo.backend = created.backend;
  checkSession(app.session, metadata);
  await warmUp(metadata);
  const [, , height, width] = metadata.input.shape;
  $("model").textContent = `${metadata.model?.name ?? "model"} · ${metadata.precision} · ${width}x${height} px · ` +
    `output: ${metadata.output.kind} · labels: ${metadata.label_set} · backend: ${demo.backend}`;
  if (app.vocabulary) showVocabulary(); else $("baked").hidden = false;
  setState("ready");
}

function wireInputs() {
  $("image").addEventListener("change", (event) => event.target.files[0] && segment(event.target.files[0]));
  $("vocabulary-file").addEventListener("change",
    (event) => event.target.files[0] && loadVocabularyFile(event.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file && app.session) segment(file);
  });
}

window.addEventListener("unhandledrejection", (event) => showError(String(event.reason?.message || event.reason), false));
wireInputs();
start().catch((error) => {
  $("model").textContent = "The artifact could not be loaded.";
  showError(error.message || String(error), true);
});
