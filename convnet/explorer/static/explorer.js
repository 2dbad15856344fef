// convnet explore: the page. Plain JavaScript, no build step, no library; it talks to the JSON API only
// (convnet/explorer/app.py lists the endpoints). Text from the server is set with textContent, never as HTML.
"use strict";

const state = {
  model: null,          // GET /api/model
  input: null,          // {image: Blob, filename} or {sample: id}, plus label
  converted: null,      // the "input" part of the last prediction: the pixels the model sees
  maps: null,           // POST /api/featuremaps answer
  zoom: null,           // {layer, index} of the enlarged map
  explanation: null,    // POST /api/explain answer
  run: null,            // GET /api/run answer
  testOffset: 0,
  sequence: 0,          // increases with each new input: answers for an older input are dropped
  latest: {},           // per view, the number of its last request: an answer to an older one is dropped
};
const SHOWN_MAPS = 32;  // maps drawn per layer before "show all"
const INPUT_VIEW = 224; // CSS pixels of the input view (the model's input, scaled up)

const $ = (id) => document.getElementById(id);

function element(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  if (text !== null) node.textContent = text;
  return node;
}

function setStatus(message, isError = false) {
  const status = $("status");
  status.textContent = message || "";
  status.classList.toggle("error", Boolean(isError));
  if (isError) status.dataset.testid = "error"; else status.dataset.testid = "status";
}

// a request number for `view`; `current(view, n)` says whether n is still the view's latest request
function ticket(view) { state.latest[view] = (state.latest[view] || 0) + 1; return state.latest[view]; }
function current(view, n) { return state.latest[view] === n; }

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

function layerPath(name) {
  return name.split("/").map(encodeURIComponent).join("/");
}

function bytes(base64) {
  const text = atob(base64);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

function floats(base64) {
  return new Float32Array(bytes(base64).buffer);
}

function formatCount(value) {
  if (value >= 1e9) return (value / 1e9).toFixed(2) + "G";
  if (value >= 1e6) return (value / 1e6).toFixed(2) + "M";
  if (value >= 1e3) return (value / 1e3).toFixed(2) + "K";
  return String(value);
}

function shapeText(shape) {
  if (shape === null || shape === undefined) return "-";
  if (Array.isArray(shape[0])) return shape.map(shapeText).join(", ");
  return "(" + shape.map((v) => (v === null ? "None" : v)).join(", ") + ")";
}

function percent(p) { return (100 * p).toFixed(2) + "%"; }

// -- colours --------------------------------------------------------------------------------------------------
const HEAT = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];  // inferno, 5 stops

function heatColour(t) {
  const x = Math.min(Math.max(t, 0), 1) * (HEAT.length - 1);
  const i = Math.min(Math.floor(x), HEAT.length - 2);
  const f = x - i;
  return HEAT[i].map((c, k) => Math.round(c + f * (HEAT[i + 1][k] - c)));
}

// gray (h, w) uint8 plane at `offset` of `data` into a canvas
function drawGray(canvas, data, height, width, offset = 0) {
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0; i < height * width; i++) {
    const v = data[offset + i];
    image.data[4 * i] = v; image.data[4 * i + 1] = v; image.data[4 * i + 2] = v; image.data[4 * i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
}

// (H, W, C) uint8 pixels, C = 1 or 3, as RGBA
function rgba(pixels, height, width, channels) {
  const out = new Uint8ClampedArray(height * width * 4);
  for (let i = 0; i < height * width; i++) {
    for (let k = 0; k < 3; k++) out[4 * i + k] = pixels[i * channels + (channels === 1 ? 0 : k)];
    out[4 * i + 3] = 255;
  }
  return out;
}

function drawPixels(canvas, packed) {
  const [height, width, channels] = packed.shape;
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  image.data.set(rgba(bytes(packed.data), height, width, channels));
  context.putImageData(image, 0, 0);
}

// -- 1. the network -------------------------------------------------------------------------------------------
const NODE_W = 270, NODE_H = 40, GAP_X = 24, GAP_Y = 26;

function layout(layers) {
  const top = layers.filter((layer) => layer.nested_in === null);
  const depth = {};
  for (const layer of top) {  // the table is in topological order
    const parents = layer.inputs.filter((name) => name in depth);
    depth[layer.name] = parents.length ? Math.max(...parents.map((name) => depth[name])) + 1 : 0;
  }
  const levels = [];
  for (const layer of top) (levels[depth[layer.name]] = levels[depth[layer.name]] || []).push(layer);
  const widest = Math.max(...levels.map((level) => level.length));
  const width = widest * (NODE_W + GAP_X) + GAP_X;
  const positions = {};
  levels.forEach((level, row) => {
    const start = (width - level.length * (NODE_W + GAP_X) + GAP_X) / 2;
    level.forEach((layer, column) => {
      positions[layer.name] = {x: start + column * (NODE_W + GAP_X), y: GAP_Y + row * (NODE_H + GAP_Y)};
    });
  });
  return {top, positions, width, height: levels.length * (NODE_H + GAP_Y) + GAP_Y};
}

function drawGraph(model) {
  const svgNS = "http://www.w3.org/2000/svg";
  const {top, positions, width, height} = layout(model.layers);
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const nested = new Set(model.layers.filter((l) => l.nested_in !== null).map((l) => l.nested_in.split("/")[0]));
  for (const layer of top) {
    const to = positions[layer.name];
    for (const name of layer.inputs) {
      const from = positions[name];
      if (!from) continue;
      const x1 = from.x + NODE_W / 2, y1 = from.y + NODE_H, x2 = to.x + NODE_W / 2, y2 = to.y;
      const skip = y2 - y1 > NODE_H + GAP_Y;  // a connection past other layers bends out to the side
      const bend = skip ? NODE_W * 0.65 : 0;
      const path = document.createElementNS(svgNS, "path");
      path.setAttribute("d", `M${x1},${y1} C${x1 + bend},${y1 + 30} ${x2 + bend},${y2 - 30} ${x2},${y2}`);
      path.setAttribute("class", skip ? "edge skip" : "edge");
      svg.appendChild(path);
    }
  }
  for (const layer of top) {
    const {x, y} = positions[layer.name];
    const group = document.createElementNS(svgNS, "g");
    group.setAttribute("class", "node" + (layer.conv ? " conv" : "") + (nested.has(layer.name) ? " nested" : ""));
    group.setAttribute("transform", `translate(${x},${y})`);
    group.dataset.layer = layer.name;
    group.dataset.testid = "graph-node";
    const rect = document.createElementNS(svgNS, "rect");
    rect.setAttribute("width", NODE_W);
    rect.setAttribute("height", NODE_H);
    rect.setAttribute("rx", 5);
    const title = document.createElementNS(svgNS, "text");
    title.setAttribute("x", 8);
    title.setAttribute("y", 16);
    title.textContent = `${layer.name} (${layer.class_name})`;
    const detail = document.createElementNS(svgNS, "text");
    detail.setAttribute("x", 8);
    detail.setAttribute("y", 32);
    detail.setAttribute("class", "small");
    const field = layer.receptive_field ? ` · RF ${layer.receptive_field.join("x")}` : "";
    detail.textContent = `${shapeText(layer.output_shape)} · ${formatCount(layer.params)} p${field}`;
    group.append(rect, title, detail);
    group.addEventListener("click", () => showLayer(layer.name));
    svg.appendChild(group);
  }
  $("graph").replaceChildren(svg);
}

function showLayer(name) {
  const model = state.model;
  const layer = model.layers.find((item) => item.name === name);
  document.querySelectorAll("#graph .node").forEach((node) => node.classList.toggle("selected",
    node.dataset.layer === name));
  const table = element("table", {class: "detail"});
  const rows = [["Layer", layer.name], ["Type", layer.class_name], ["Output shape", shapeText(layer.output_shape)],
    ["Parameters", layer.params.toLocaleString()], ["Multiply-adds", formatCount(layer.macs)],
    ["Inputs", layer.inputs.join(", ") || "-"],
    ["Receptive field", layer.receptive_field ? layer.receptive_field.join("x") : "-"],
    ["Jump (stride in input pixels)", layer.jump ? layer.jump.join("x") : "-"],
    ["Centre of the first unit's field", layer.start ? layer.start.join(", ") : "-"]];
  for (const [key, value] of rows) {
    const row = element("tr");
    row.append(element("th", {}, key), element("td", {}, value));
    table.appendChild(row);
  }
  const panel = $("layer-detail");
  panel.replaceChildren(table);
  const inner = model.layers.filter((item) => item.nested_in === name);
  if (inner.length) {
    panel.appendChild(element("h4", {}, `Inside ${name}`));
    const list = element("ul");
    for (const item of inner) {
      list.appendChild(element("li", {}, `${item.name} (${item.class_name}) ${shapeText(item.output_shape)}`));
    }
    panel.appendChild(list);
  }
  if (layer.spatial) {
    const link = element("a", {href: "#featuremaps"}, "Its feature maps");
    panel.appendChild(link);
  }
}

// -- 2. the input -------------------------------------------------------------------------------------------------
function inputForm(extra = {}) {
  const form = new FormData();
  if (state.input.sample) form.append("sample", state.input.sample);
  else form.append("image", state.input.image, state.input.filename);
  for (const [key, value] of Object.entries(extra)) if (value !== null && value !== undefined) form.append(key, value);
  return form;
}

async function setInput(input) {
  state.input = input;
  state.sequence += 1;
  const sequence = state.sequence;
  $("input-label").textContent = input.label;
  $("rf-box").hidden = true;
  $("rf-text").textContent = "";
  setStatus("Running the model ...");
  try {
    const prediction = await api("/api/predict", {method: "POST", body: inputForm()});
    if (sequence !== state.sequence) return;
    showPrediction(prediction);
    const maps = await api("/api/featuremaps", {method: "POST", body: inputForm()});
    if (sequence !== state.sequence) return;
    showMaps(maps);
    await explainInput(sequence);
    if (sequence === state.sequence) setStatus("");
  } catch (error) {
    if (sequence === state.sequence) setStatus(error.message, true);
  }
}

function showConversion(converted) {
  state.converted = converted;
  const {original, converted: size} = converted;
  const canvas = $("input-canvas");
  drawPixels(canvas, converted.pixels);
  const scale = INPUT_VIEW / Math.max(size.height, size.width);
  canvas.style.width = `${size.width * scale}px`;
  canvas.style.height = `${size.height * scale}px`;
  const scaled = converted.scale === 1 ? "" : ` Pixels are multiplied by ${converted.scale.toPrecision(4)}.`;
  $("conversion").textContent = `Original: ${original.width}x${original.height}, ${original.channels} channel(s); ` +
    `the model takes ${size.width}x${size.height}, ${size.channels} channel(s). ` +
    (converted.note ? converted.note : "No conversion needed.") + scaled;
}

function drawingSetup() {
  const canvas = $("draw-canvas");
  const context = canvas.getContext("2d");
  const clear = () => { context.fillStyle = "#000"; context.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    const [x, y] = point(event);
    context.beginPath();
    context.moveTo(x, y);
    context.lineTo(x + 0.1, y);
    context.strokeStyle = "#fff";
    context.lineWidth = 22;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.stroke();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const [x, y] = point(event);
    context.lineTo(x, y);
    context.stroke();
  });
  window.addEventListener("pointerup", () => { drawing = false; });
  $("draw-clear").addEventListener("click", clear);
  $("draw-use").addEventListener("click", () => {
    canvas.toBlob((blob) => setInput({image: blob, filename: "drawing.png", label: "your drawing"}), "image/png");
  });
}

function sampleButton(sample, caption) {
  const button = element("button", {type: "button", class: "thumb", dataset: {sampleId: sample.id, testid: "sample"}});
  const image = element("img", {src: `/api/samples/${sample.id}.png`, alt: sample.label, loading: "lazy"});
  button.append(image, element("span", {}, caption));
  button.addEventListener("click", () => setInput({sample: sample.id, label: `${sample.id} (${caption})`}));
  return button;
}

async function loadSamples(offset) {
  const answer = await api(`/api/samples?offset=${offset}&limit=48`);
  if (offset === 0) {
    const photos = answer.samples.filter((sample) => sample.kind === "photo");
    $("photo-gallery").replaceChildren(...photos.map((sample) => sampleButton(sample, sample.label)));
    const select = $("pg-sample");
    select.replaceChildren(...answer.samples.filter((s) => s.kind === "photo")
      .map((s) => element("option", {value: s.id}, s.label)));
  }
  const tests = answer.samples.filter((sample) => sample.kind === "test");
  $("test-gallery").append(...tests.map((sample) => sampleButton(sample, sample.class_name)));
  state.testOffset = offset + tests.length;
  $("test-more").hidden = state.testOffset >= answer.test_total;
  $("test-reason").textContent = answer.test_total ? `${answer.test_total} test images` :
    (answer.test_reason ? `No test images: ${answer.test_reason}` : "No run: no test images.");
  return answer;
}

// -- 3. the prediction --------------------------------------------------------------------------------------------
function showPrediction(answer) {
  showConversion(answer.input);
  const [best] = answer.predictions;
  $("top-class").textContent = best.class_name;
  $("top-probability").textContent = percent(best.probability);
  const bars = answer.predictions.map((item) => {
    const row = element("li", {dataset: {testid: "bar", index: item.index}});
    const bar = element("span", {class: "bar"});
    bar.style.width = `${Math.max(100 * item.probability, 0.5)}%`;
    row.append(element("span", {class: "bar-label"}, item.class_name), element("span", {class: "bar-track"}),
      element("span", {class: "bar-value"}, percent(item.probability)));
    row.children[1].appendChild(bar);
    return row;
  });
  $("bars").replaceChildren(...bars);
}

// -- 4. feature maps ------------------------------------------------------------------------------------------------
function showMaps(answer) {
  state.maps = answer;
  const container = $("maps");
  container.replaceChildren();
  for (const layer of answer.layers) {
    const [height, width, count] = layer.shape;
    const data = bytes(layer.maps.data);
    const info = state.model.layers.find((item) => item.name === layer.name);
    const field = info && info.receptive_field ? `, receptive field ${info.receptive_field.join("x")}` : "";
    const block = element("div", {class: "layer-maps", dataset: {layer: layer.name}});
    block.appendChild(element("h3", {}, `${layer.name}: ${count} maps of ${height}x${width}${field}`));
    const grid = element("div", {class: "grid"});
    const draw = (limit) => {
      grid.replaceChildren();
      for (let k = 0; k < Math.min(limit, layer.shown); k++) {
        const canvas = element("canvas", {class: "map", title: `${layer.name} / map ${k}`,
          dataset: {testid: "feature-map", layer: layer.name, index: k}});
        drawGray(canvas, data, height, width, k * height * width);
        canvas.addEventListener("click", () => enlarge(layer.name, k));
        grid.appendChild(canvas);
      }
    };
    draw(SHOWN_MAPS);
    block.appendChild(grid);
    if (layer.shown > SHOWN_MAPS) {
      const more = element("button", {type: "button"}, `Show all ${layer.shown}`);
      more.addEventListener("click", () => { draw(layer.shown); more.remove(); });
      block.appendChild(more);
    }
    container.appendChild(block);
  }
  if (state.zoom) enlarge(state.zoom.layer, state.zoom.index);
}

function enlarge(layerName, index) {
  const layer = state.maps && state.maps.layers.find((item) => item.name === layerName);
  if (!layer || index >= layer.shown) { $("zoom").hidden = true; return; }
  state.zoom = {layer: layerName, index};
  const [height, width] = layer.shape;
  const canvas = $("zoom-canvas");
  drawGray(canvas, bytes(layer.maps.data), height, width, index * height * width);
  const scale = 280 / Math.max(height, width);
  canvas.style.width = `${width * scale}px`;
  canvas.style.height = `${height * scale}px`;
  canvas.dataset.layer = layerName;
  canvas.dataset.index = index;
  $("zoom-title").textContent = `${layerName} / map ${index} (${height}x${width})`;
  $("zoom-range").textContent = `min ${layer.min[index].toPrecision(4)} (black), max ${layer.max[index].toPrecision(4)}` +
    " (white). Click a unit.";
  $("unit-box").hidden = true;
  $("zoom").hidden = false;
}

async function clickUnit(event) {
  const canvas = $("zoom-canvas");
  const box = canvas.getBoundingClientRect();
  const row = Math.floor((event.clientY - box.top) / box.height * canvas.height);
  const col = Math.floor((event.clientX - box.left) / box.width * canvas.width);
  const layer = state.zoom.layer;
  if (row < 0 || col < 0 || row >= canvas.height || col >= canvas.width) return;
  const unit = $("unit-box");
  const cell = box.width / canvas.width;
  Object.assign(unit.style, {left: `${col * cell}px`, top: `${row * cell}px`, width: `${cell}px`, height: `${cell}px`});
  unit.hidden = false;
  const n = ticket("field");
  try {
    const answer = await api(`/api/receptive-field/${layerPath(layer)}?row=${row}&col=${col}`);
    if (current("field", n)) showReceptiveField(answer);
  } catch (error) {
    setStatus(error.message, true);
  }
}

function showReceptiveField(answer) {
  const [top, left, bottom, right] = answer.box;
  const canvas = $("input-canvas");
  const scale = parseFloat(canvas.style.width) / canvas.width;
  const outline = $("rf-box");
  Object.assign(outline.style, {left: `${left * scale}px`, top: `${top * scale}px`,
    width: `${(right - left) * scale}px`, height: `${(bottom - top) * scale}px`});
  Object.assign(outline.dataset, {top, left, bottom, right, layer: answer.layer, row: answer.position[0],
    col: answer.position[1]});
  outline.hidden = false;
  const [rows, cols] = [canvas.height, canvas.width];
  const padded = top < 0 || left < 0 || bottom > rows || right > cols ? "; the part outside the image is padding" : "";
  $("rf-text").textContent = `Unit (${answer.position.join(", ")}) of ${answer.layer} sees input rows ${top} to ` +
    `${bottom - 1} and columns ${left} to ${right - 1}: ${answer.size.join("x")} pixels${padded}.`;
}

// -- 5. filters -------------------------------------------------------------------------------------------------------
async function showFilters(layer) {
  if (!layer) return;
  const n = ticket("filters");
  try {
    const answer = await api(`/api/filters/${layerPath(layer)}?max_filters=64&max_channels=8`);
    if (!current("filters", n)) return;
    const [kh, kw, channelsIn, count] = answer.shape;
    const values = floats(answer.kernel.data);
    const [, , c, f] = answer.kernel.shape;
    $("filter-info").textContent = `${layer}: ${count} filters of ${kh}x${kw}x${channelsIn}; showing ${f} filters` +
      (answer.rgb ? " as RGB images" : ` x ${c} input channel(s), side by side`) + ", each filter scaled to its own range.";
    const canvases = [];
    for (let k = 0; k < f; k++) {
      let low = Infinity, high = -Infinity;
      for (let i = 0; i < kh * kw * c; i++) { const v = values[i * f + k]; low = Math.min(low, v); high = Math.max(high, v); }
      const span = high > low ? high - low : 1;
      const canvas = element("canvas", {class: "filter", title: `filter ${k}`, dataset: {testid: "filter", index: k}});
      const width = answer.rgb ? kw : c * (kw + 1) - 1;
      canvas.width = width;
      canvas.height = kh;
      const context = canvas.getContext("2d");
      const image = context.createImageData(width, kh);
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          for (let ch = 0; ch < c; ch++) {
            const v = Math.round(255 * (values[((i * kw + j) * c + ch) * f + k] - low) / span);
            if (answer.rgb) {
              image.data[4 * (i * width + j) + ch] = v;
              image.data[4 * (i * width + j) + 3] = 255;
            } else {
              const p = 4 * (i * width + ch * (kw + 1) + j);
              image.data[p] = v; image.data[p + 1] = v; image.data[p + 2] = v; image.data[p + 3] = 255;
            }
          }
        }
      }
      context.putImageData(image, 0, 0);
      canvas.style.width = `${width * Math.max(4, Math.floor(56 / kw))}px`;
      canvases.push(canvas);
    }
    $("filter-grid").replaceChildren(...canvases);
  } catch (error) {
    setStatus(error.message, true);
  }
}

// -- 6. explanations -------------------------------------------------------------------------------------------------
const METHOD_LABELS = {grad_cam: "Grad-CAM", gradient: "Saliency (gradient)", smoothgrad: "SmoothGrad",
  occlusion: "Occlusion"};

async function explainInput(sequence = state.sequence) {
  if (!state.input) return;
  const method = $("explain-method").value;
  const extra = {method};
  if (method === "grad_cam") extra.layer = $("explain-layer").value;
  if ($("explain-class").value !== "") extra.class_index = $("explain-class").value;
  $("explain-layer").disabled = method !== "grad_cam";
  const n = ticket("explain");
  try {
    const answer = await api("/api/explain", {method: "POST", body: inputForm(extra)});
    if (sequence !== state.sequence || !current("explain", n)) return;
    state.explanation = answer;
    drawExplanation();
    if ($("status").classList.contains("error")) setStatus("");  // an earlier refusal no longer applies
  } catch (error) {
    if (sequence === state.sequence) setStatus(error.message, true);
  }
}

function drawExplanation() {
  const answer = state.explanation;
  if (!answer) return;
  const [height, width] = answer.map.shape;
  const heat = floats(answer.map.data);
  const span = answer.max > answer.min ? answer.max - answer.min : 1;
  const alpha = parseFloat($("explain-alpha").value);
  const pixels = rgba(bytes(answer.input.pixels.data), height, width, answer.input.pixels.shape[2]);
  const views = {"explain-input": pixels, "explain-map": new Uint8ClampedArray(height * width * 4),
    "explain-overlay": new Uint8ClampedArray(height * width * 4)};
  for (let i = 0; i < height * width; i++) {
    const colour = heatColour((heat[i] - answer.min) / span);
    for (let k = 0; k < 3; k++) {
      views["explain-map"][4 * i + k] = colour[k];
      views["explain-overlay"][4 * i + k] = (1 - alpha) * pixels[4 * i + k] + alpha * colour[k];
    }
    views["explain-map"][4 * i + 3] = 255;
    views["explain-overlay"][4 * i + 3] = 255;
  }
  const scale = INPUT_VIEW / Math.max(height, width);
  for (const [id, data] of Object.entries(views)) {
    const canvas = $(id);
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    const image = context.createImageData(width, height);
    image.data.set(data);
    context.putImageData(image, 0, 0);
    canvas.style.width = `${width * scale}px`;
    canvas.style.height = `${height * scale}px`;
  }
  const where = answer.layer ? ` at layer ${answer.layer}` : "";
  $("explain-text").textContent = `${METHOD_LABELS[answer.method] || answer.method} for ${answer.class_name} ` +
    `(${percent(answer.probability)})${where}; map from ${answer.min.toPrecision(3)} (dark) to ${answer.max.toPrecision(3)} (bright).`;
}

function explainSetup(model) {
  $("explain-method").replaceChildren(...model.explain_methods.map((name) =>
    element("option", {value: name}, METHOD_LABELS[name] || name)));
  $("explain-method").value = model.default_cam_layer ? "grad_cam" : "gradient";
  $("explain-layer").replaceChildren(...model.spatial_layers.map((name) => element("option", {value: name}, name)));
  if (model.default_cam_layer) $("explain-layer").value = model.default_cam_layer;
  const classes = model.class_names || Array.from({length: model.num_classes || 0}, (_, i) => String(i));
  $("explain-class").replaceChildren(element("option", {value: ""}, "the predicted class"),
    ...classes.map((name, i) => element("option", {value: i}, name)));
  for (const id of ["explain-method", "explain-layer", "explain-class"]) {
    $(id).addEventListener("change", () => explainInput());
  }
  $("explain-alpha").addEventListener("input", drawExplanation);
}

// -- 7. the run --------------------------------------------------------------------------------------------------------
function chart(title, series) {
  const svgNS = "http://www.w3.org/2000/svg";
  const W = 360, H = 200, L = 48, R = 10, T = 24, B = 30;
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  svg.setAttribute("class", "chart");
  svg.dataset.testid = "curve";
  const all = series.flatMap(([, values]) => values).filter((v) => v !== null);
  if (!all.length) return svg;
  let low = Math.min(...all), high = Math.max(...all);
  if (high === low) { high += 0.5; low -= 0.5; }
  const epochs = Math.max(...series.map(([, values]) => values.length));
  const x = (i) => L + (epochs > 1 ? i / (epochs - 1) : 0.5) * (W - L - R);
  const y = (v) => T + (1 - (v - low) / (high - low)) * (H - T - B);
  const text = (content, attributes) => {
    const node = document.createElementNS(svgNS, "text");
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    node.textContent = content;
    svg.appendChild(node);
  };
  text(title, {x: L, y: 14, class: "chart-title"});
  text(high.toPrecision(3), {x: L - 4, y: T + 4, "text-anchor": "end", class: "small"});
  text(low.toPrecision(3), {x: L - 4, y: H - B, "text-anchor": "end", class: "small"});
  text("epoch 1", {x: L, y: H - 8, class: "small"});
  text(`epoch ${epochs}`, {x: W - R, y: H - 8, "text-anchor": "end", class: "small"});
  const axis = document.createElementNS(svgNS, "path");
  axis.setAttribute("d", `M${L},${T} L${L},${H - B} L${W - R},${H - B}`);
  axis.setAttribute("class", "axis");
  svg.appendChild(axis);
  series.forEach(([name, values], s) => {
    const points = values.map((v, i) => (v === null ? null : [x(i), y(v)])).filter(Boolean);
    const line = document.createElementNS(svgNS, "polyline");
    line.setAttribute("points", points.map((p) => p.join(",")).join(" "));
    line.setAttribute("class", `series s${s}`);
    svg.appendChild(line);
    for (const [px, py] of points) {
      const dot = document.createElementNS(svgNS, "circle");
      dot.setAttribute("cx", px); dot.setAttribute("cy", py); dot.setAttribute("r", 2.5);
      dot.setAttribute("class", `series s${s}`);
      svg.appendChild(dot);
    }
    text(name, {x: W - R - 4, y: T + 12 + 12 * s, "text-anchor": "end", class: `legend s${s}`});
  });
  return svg;
}

function showRun(run) {
  state.run = run;
  $("run-body").hidden = false;
  const metrics = run.metrics || {};
  const accuracy = run.accuracy === null ? "" : ` Recomputed now on ${run.test_images} test images: accuracy ` +
    `${percent(run.accuracy)}.`;
  const saved = metrics.test_accuracy !== undefined && metrics.test_accuracy !== null ?
    ` metrics.json: test accuracy ${percent(metrics.test_accuracy)} on ${metrics.test_images} images.` : "";
  const missing = run.missing.length ? ` Missing: ${run.missing.join(", ")}.` : "";
  const data = run.dataset_error ? ` No test images: ${run.dataset_error}.` : "";
  $("run-text").textContent = `Run ${run.folder}.${saved}${accuracy}${missing}${data}`;
  const history = run.history || {};
  const charts = [];
  const keys = Object.keys(history).filter((key) => !key.startsWith("val_") && key !== "learning_rate" && key !== "lr");
  for (const key of keys) {
    const series = [[key, history[key]]];
    if (history["val_" + key]) series.push(["val_" + key, history["val_" + key]]);
    charts.push(chart(key, series));
  }
  $("curves").replaceChildren(...charts);
  if (run.confusion) showConfusion(run);
  showMistakes(run.mistakes, "The model's most confident mistakes on the test images; click one to load it as the input.");
  const tables = [];
  for (const [title, values] of [["metrics.json", metrics], ["config.json", run.config || {}]]) {
    const table = element("table", {class: "detail"});
    table.appendChild(element("caption", {}, title));
    for (const [key, value] of Object.entries(values)) {
      if (value !== null && typeof value === "object") continue;
      const row = element("tr");
      row.append(element("th", {}, key), element("td", {}, String(value)));
      table.appendChild(row);
    }
    tables.push(table);
  }
  $("run-tables").replaceChildren(...tables);
}

function showConfusion(run) {
  const names = run.class_names;
  const table = element("table", {class: "confusion"});
  const head = element("tr");
  head.appendChild(element("th", {}, "true \\ predicted"));
  names.forEach((name, j) => head.appendChild(element("th", {title: name}, String(j))));
  table.appendChild(head);
  run.confusion.forEach((counts, i) => {
    const row = element("tr");
    row.appendChild(element("th", {class: "row-name"}, `${i} ${names[i] || ""}`));
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    counts.forEach((count, j) => {
      const cell = element("td", {dataset: {testid: "confusion-cell", row: i, col: j}}, String(count));
      const share = count / total;
      cell.style.background = i === j ? `rgba(40, 140, 70, ${share})` : `rgba(200, 60, 40, ${Math.min(1, 3 * share)})`;
      if (i !== j && count > 0) {
        cell.classList.add("clickable");
        cell.addEventListener("click", () => {
          const chosen = run.mistakes.filter((m) => m.true === i && m.predicted === j);
          showMistakes(chosen, `${names[i]} taken for ${names[j]}: ${count} test image(s); ${chosen.length} of them ` +
            "among the most confident mistakes listed.");
        });
      }
      row.appendChild(cell);
    });
    table.appendChild(row);
  });
  $("confusion").replaceChildren(table);
}

function showMistakes(mistakes, text) {
  $("mistakes-text").textContent = text;
  const names = state.run.class_names;
  $("mistakes").replaceChildren(...mistakes.map((m) => {
    const caption = `${names[m.true]} -> ${names[m.predicted]} (${percent(m.probability)})`;
    const button = sampleButton({id: m.id, label: caption}, caption);
    button.dataset.testid = "mistake";
    button.addEventListener("click", () => { location.hash = "#input"; });
    return button;
  }));
}

// -- 8. the playground -------------------------------------------------------------------------------------------------
const KERNEL = 7;
let playgroundTimer = null;

function kernelCells() { return Array.from(document.querySelectorAll("#kernel input")); }

function setKernel(preset) {
  kernelCells().forEach((cell) => {
    const [i, j] = [Number(cell.dataset.row), Number(cell.dataset.col)];
    const middle = (KERNEL - 1) / 2;
    cell.value = (preset === "vertical" && j === middle) || (preset === "horizontal" && i === middle) ? 1 : 0;
  });
  schedulePlayground();
}

// "vertical" or "horizontal" for the seed's presets, else "custom"
function kernelName(kernel) {
  const middle = (KERNEL - 1) / 2;
  for (const name of ["vertical", "horizontal"]) {
    const same = kernel.every((row, i) => row.every((v, j) =>
      v === ((name === "vertical" ? j : i) === middle ? 1 : 0)));
    if (same) return name;
  }
  return "custom";
}

function schedulePlayground() {
  clearTimeout(playgroundTimer);
  playgroundTimer = setTimeout(runPlayground, 120);
}

async function runPlayground() {
  const kernel = [];
  for (let i = 0; i < KERNEL; i++) kernel.push([]);
  for (const cell of kernelCells()) kernel[Number(cell.dataset.row)][Number(cell.dataset.col)] = Number(cell.value) || 0;
  const body = {sample: $("pg-sample").value || "photo-china", kernel, stride: Number($("pg-stride").value),
    padding: $("pg-padding").value};
  const n = ticket("playground");
  try {
    const answer = await api("/api/playground", {method: "POST", headers: {"content-type": "application/json"},
      body: JSON.stringify(body)});
    if (!current("playground", n)) return;
    const {height, width} = answer.output;
    const canvas = $("pg-output");
    drawGray(canvas, bytes(answer.output.pixels.data), height, width);
    canvas.dataset.kernel = kernelName(kernel);
    canvas.dataset.stride = answer.stride;
    canvas.style.width = `${Math.min(360, width * 360 / answer.input.width)}px`;
    $("pg-size").textContent = `Input ${answer.input.height}x${answer.input.width} (height x width) -> output ` +
      `${height}x${width}, stride ${answer.stride}, ${answer.padding} padding`;
    $("pg-formula").textContent = answer.padding === "SAME" ?
      `SAME: out = ceil(in / stride): height ${answer.formula.height}, width ${answer.formula.width}` :
      `VALID: out = ceil((in - 7 + 1) / stride): height ${answer.formula.height}, width ${answer.formula.width}`;
    $("pg-input").src = `/api/samples/${answer.sample}.png`;
    $("pg-input-caption").textContent = `${answer.sample}: ${answer.input.width}x${answer.input.height}`;
  } catch (error) {
    setStatus(error.message, true);
  }
}

function playgroundSetup() {
  const grid = $("kernel");
  for (let i = 0; i < KERNEL; i++) {
    for (let j = 0; j < KERNEL; j++) {
      const cell = element("input", {type: "number", step: "0.5", value: j === 3 ? 1 : 0,
        dataset: {row: i, col: j, testid: "kernel-cell"}, "aria-label": `kernel row ${i} column ${j}`});
      cell.addEventListener("input", schedulePlayground);
      grid.appendChild(cell);
    }
  }
  document.querySelectorAll("#playground [data-preset]").forEach((button) =>
    button.addEventListener("click", () => setKernel(button.dataset.preset)));
  $("pg-stride").replaceChildren(...[1, 2, 3, 4, 5, 6, 7].map((s) => element("option", {value: s}, String(s))));
  for (const id of ["pg-stride", "pg-padding", "pg-sample"]) $(id).addEventListener("change", schedulePlayground);
}

// -- start ------------------------------------------------------------------------------------------------------------
async function start() {
  drawingSetup();
  playgroundSetup();
  $("image-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) setInput({image: file, filename: file.name, label: file.name});
  });
  $("zoom-canvas").addEventListener("click", clickUnit);
  $("test-more").addEventListener("click", () => loadSamples(state.testOffset));
  $("filter-layer").addEventListener("change", (event) => showFilters(event.target.value));
  try {
    const model = await api("/api/model");
    state.model = model;
    $("model-name").textContent = model.name;
    $("model-source").textContent = model.source + (model.untrained ? " — its predictions mean nothing yet" : "");
    $("model-totals").textContent = `${model.params.toLocaleString()} parameters, ${formatCount(model.macs)} ` +
      `multiply-adds per image; input ${shapeText(model.input_shape)}` + (model.graph ? "; a functional graph" : "");
    drawGraph(model);
    explainSetup(model);
    $("filter-layer").replaceChildren(...model.conv_layers.map((name) => element("option", {value: name}, name)));
    if (model.conv_layers.length) showFilters(model.conv_layers[0]);
    else $("filter-info").textContent = "This model has no Conv2D layer.";
    const samples = await loadSamples(0);
    runPlayground();
    if (model.run) {
      api("/api/run").then(showRun).catch((error) => setStatus(error.message, true));
    } else {
      $("nav-run").classList.add("muted");
    }
    const first = samples.samples.find((s) => s.kind === "test") || samples.samples[0];
    if (first) setInput({sample: first.id, label: `${first.id} (${first.class_name || first.label})`});
  } catch (error) {
    setStatus(error.message, true);
  }
}

document.addEventListener("DOMContentLoaded", start);
