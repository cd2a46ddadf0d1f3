// cresshift demo page: choose an image and a sampler, queue a run, poll its progress, show the three views.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { source: null, job: null, timer: null, lrUrl: null, zoom: { s: 1, x: 0, y: 0 } };

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function setProgress(fraction) {
  $("bar").style.width = `${Math.round(100 * Math.max(0, Math.min(1, fraction)))}%`;
}

function fillSelect(select, values, chosen) {
  select.innerHTML = "";
  for (const v of values) {
    const opt = document.createElement("option");
    opt.value = opt.textContent = v;
    select.appendChild(opt);
  }
  if (chosen !== undefined) select.value = chosen;
}

async function loadConfig() {
  const cfg = await (await fetch("/api/config")).json();
  fillSelect($("model"), cfg.models, cfg.models[0]);
  fillSelect($("solver"), cfg.solvers, cfg.defaults.solver);
  $("nfe").value = cfg.defaults.nfe;
  $("nfe").max = cfg.max_nfe;
  $("rho").value = cfg.defaults.rho;
  fillSelect($("grid"), cfg.grids, cfg.defaults.grid);
  $("seed").value = cfg.defaults.seed;
  for (const p of cfg.photos) {
    const opt = document.createElement("option");
    opt.value = p.name;
    opt.textContent = p.title;
    opt.dataset.credit = p.credit;
    $("photo").appendChild(opt);
  }
  const side = Math.round(Math.sqrt(cfg.max_pixels));
  setStatus(`Ready. Images up to ${side}x${side} LR pixels (4x that with a tile size).`);
}

function showLr(url, text) {
  if (state.lrUrl && state.lrUrl.startsWith("blob:")) URL.revokeObjectURL(state.lrUrl);
  state.lrUrl = url;
  $("lr").src = url;
  $("bicubic").removeAttribute("src");
  $("result").removeAttribute("src");
  $("info").hidden = true;
  $("download").hidden = true;
  $("source-info").textContent = text;
  resetZoom();
}

function onFile() {
  const file = $("image-file").files[0];
  if (!file) return;
  $("photo").value = "";
  $("credit").textContent = "";
  state.source = { image: file };
  showLr(URL.createObjectURL(file), `${file.name} (${Math.round(file.size / 1024)} KB)`);
}

function onPhoto() {
  const opt = $("photo").selectedOptions[0];
  if (!opt || !opt.value) return;
  $("image-file").value = "";
  state.source = { photo: opt.value };
  $("credit").textContent = `Photograph: ${opt.dataset.credit}. Held out: never trained on.`;
  showLr(`/api/photos/${encodeURIComponent(opt.value)}/lr.png`, `${opt.textContent}; LR = bicubic /4 of the HR crop`);
}

function formData() {
  const data = new FormData();
  if (state.source.image) data.append("image", state.source.image);
  else data.append("photo", state.source.photo);
  for (const name of ["model", "solver", "nfe", "rho", "grid", "seed", "tile"]) data.append(name, $(name).value);
  return data;
}

async function run(event) {
  event.preventDefault();
  if (!state.source) { setStatus("Choose an image first: upload one or pick a photograph.", true); return; }
  $("run").disabled = true;
  setProgress(0);
  setStatus("Sending...");
  try {
    const resp = await fetch("/api/jobs", { method: "POST", body: formData() });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error || resp.statusText);
    state.job = body.id;
    $("cancel").disabled = false;
    poll();
  } catch (err) {
    finish(`Error: ${err.message}`, true);
  }
}

function finish(text, isError = false) {
  clearTimeout(state.timer);
  state.job = null;
  $("run").disabled = false;
  $("cancel").disabled = true;
  setStatus(text, isError);
}

async function poll() {
  const id = state.job;
  if (!id) return;
  let job;
  try {
    job = await (await fetch(`/api/jobs/${id}`)).json();
  } catch (err) {
    finish(`Lost the server: ${err.message}`, true);
    return;
  }
  if (job.error && job.state !== "cancelled") { finish(`Error: ${job.error}`, true); setProgress(0); return; }
  if (job.state === "queued") {
    setStatus(`Waiting in the queue: ${job.ahead} run(s) ahead.`);
  } else if (job.state === "running") {
    setProgress(job.total ? job.done / job.total : 0);
    setStatus(`Running: solver step ${job.done} of ${job.total}.`);
  } else if (job.state === "cancelled") {
    setProgress(0);
    finish("Cancelled.");
    return;
  } else if (job.state === "done") {
    setProgress(1);
    showResult(id, job);
    finish(`Done in ${job.seconds.toFixed(2)} s with ${job.nfe} network calls.`);
    return;
  }
  state.timer = setTimeout(poll, 250);
}

function showResult(id, job) {
  $("lr").src = `/api/jobs/${id}/lr.png`;
  $("bicubic").src = `/api/jobs/${id}/bicubic.png`;
  $("result").src = `/api/jobs/${id}/sr.png`;
  $("info-nfe").textContent = `${job.nfe} (${$("solver").value}, budget ${$("nfe").value})`;
  $("info-seconds").textContent = job.seconds.toFixed(2);
  $("info-size").textContent = `${job.width / 4}x${job.height / 4} -> ${job.width}x${job.height}`;
  $("info-psnr").textContent = job.psnr_y == null ? "n/a (no HR: an upload)"
    : `${job.psnr_y.toFixed(2)} dB (bicubic ${job.bicubic_psnr_y.toFixed(2)} dB)`;
  $("info-grid").textContent = job.grid.map((t) => t.toFixed(4)).join(", ");
  $("info").hidden = false;
  const stem = state.source.image ? state.source.image.name.replace(/\.[^.]*$/, "") : state.source.photo;
  $("download").href = `/api/jobs/${id}/sr.png`;
  $("download").download = `${stem}_cresshift_x4.png`;
  $("download").hidden = false;
}

async function cancel() {
  if (!state.job) return;
  $("cancel").disabled = true;
  setStatus("Cancelling...");
  await fetch(`/api/jobs/${state.job}/cancel`, { method: "POST" });
}

// Linked zoom: one transform for the three stages.
function applyZoom() {
  const { s, x, y } = state.zoom;
  for (const stage of document.querySelectorAll(".stage")) stage.style.transform = `translate(${x}px, ${y}px) scale(${s})`;
}

function resetZoom() {
  state.zoom = { s: 1, x: 0, y: 0 };
  applyZoom();
}

function onWheel(event) {
  event.preventDefault();
  const rect = event.currentTarget.getBoundingClientRect();
  const px = event.clientX - rect.left, py = event.clientY - rect.top;
  const z = state.zoom;
  const s = Math.max(1, Math.min(32, z.s * Math.exp(-event.deltaY * 0.0015)));
  state.zoom = { s, x: px - (px - z.x) * (s / z.s), y: py - (py - z.y) * (s / z.s) };
  applyZoom();
}

function onDrag(event) {
  const view = event.currentTarget;
  const start = { x: event.clientX, y: event.clientY, zx: state.zoom.x, zy: state.zoom.y };
  view.setPointerCapture(event.pointerId);
  view.classList.add("dragging");
  const move = (e) => {
    state.zoom = { ...state.zoom, x: start.zx + e.clientX - start.x, y: start.zy + e.clientY - start.y };
    applyZoom();
  };
  const up = () => {
    view.classList.remove("dragging");
    view.removeEventListener("pointermove", move);
    view.removeEventListener("pointerup", up);
  };
  view.addEventListener("pointermove", move);
  view.addEventListener("pointerup", up);
}

for (const view of document.querySelectorAll(".view")) {
  view.addEventListener("wheel", onWheel, { passive: false });
  view.addEventListener("pointerdown", onDrag);
  view.addEventListener("dblclick", resetZoom);
}
$("image-file").addEventListener("change", onFile);
$("photo").addEventListener("change", onPhoto);
$("controls").addEventListener("submit", run);
$("cancel").addEventListener("click", cancel);
loadConfig().catch((err) => setStatus(`Cannot reach the server: ${err.message}`, true));
