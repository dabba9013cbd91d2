// The page of `iomm serve`: plain JavaScript against the documented API (docs/serve.md), no build step.
'use strict';

const $ = (id) => document.getElementById(id);
let apiKey = localStorage.getItem('iomm-api-key') || '';

function headers(extra = {}) {
  return apiKey ? { ...extra, Authorization: 'Bearer ' + apiKey } : extra;
}

function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
  if (/API key/.test(message)) $('key-box').hidden = false;
}

// POSTs with "stream": true and calls on[event](data) for each server-sent event; resolves after the last one.
async function streamJob(url, body, on) {
  const res = await fetch(url, { method: 'POST', headers: headers(body instanceof FormData ? {} : { 'Content-Type': 'application/json' }),
                                 body: body instanceof FormData ? body : JSON.stringify(body) });
  const type = res.headers.get('Content-Type') || '';
  if (!type.startsWith('text/event-stream')) {
    const err = await res.json().catch(() => null);
    throw new Error(err && err.error ? err.error.message : `HTTP ${res.status}`);
  }
  on.job && on.job(res.headers.get('X-Job-Id'));
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = 'message', data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data += line.slice(6);
      }
      if (data && on[event]) on[event](JSON.parse(data));
    }
  }
}

function numberOrNull(input) {
  const v = input.value.trim();
  return v === '' ? null : Number(v);
}

async function cancelJob(id) {
  if (id) await fetch('/v1/jobs/' + id, { method: 'DELETE', headers: headers() });
}

function setProgress(bar, text, ev) {
  const total = ev.steps * ev.n;
  const done = ev.image * ev.steps + ev.step;
  bar.style.width = (100 * done / total).toFixed(1) + '%';
  text.textContent = `image ${ev.image + 1}/${ev.n} · step ${ev.step}/${ev.steps}`;
}

function galleryCard(ev) {
  const p = ev.parameters;
  const card = document.createElement('div');
  card.className = 'card';
  card.dataset.seed = String(ev.seed);
  const img = document.createElement('img');
  img.className = 'pixel';
  img.src = 'data:image/png;base64,' + ev.b64_json;
  img.alt = p.prompt;
  const prompt = document.createElement('p');
  prompt.className = 'prompt';
  prompt.textContent = p.prompt;
  const dl = document.createElement('dl');
  for (const [k, v] of [['seed', p.seed], ['steps', p.steps], ['cfg', p.cfg_scale], ['sampler', p.sampler],
                        ['model', p.model_fingerprint.slice(7, 19)]]) {
    const dt = document.createElement('dt'); dt.textContent = k;
    const dd = document.createElement('dd'); dd.textContent = v;
    dl.append(dt, dd);
  }
  const link = document.createElement('a');
  link.href = img.src;
  link.download = `iomm-${p.seed}.png`;
  link.textContent = 'download PNG';
  card.append(img, prompt, dl, link);
  return card;
}

// ---- Generate ----
let generateJob = null;

async function generate(e) {
  e.preventDefault();
  const body = { prompt: $('prompt').value, steps: numberOrNull($('steps')), cfg_scale: numberOrNull($('cfg')),
                 sampler: $('sampler').value, n: numberOrNull($('n')), stream: true, preview: $('preview').checked };
  const seed = numberOrNull($('seed'));
  if (seed !== null) body.seed = seed;
  for (const k of Object.keys(body)) if (body[k] === null || Number.isNaN(body[k])) delete body[k];
  showError($('error'), '');
  $('generate').disabled = true;
  $('cancel').disabled = false;
  $('progress').hidden = false;
  $('bar').style.width = '0';
  $('progress-text').textContent = 'queued…';
  $('preview-img').removeAttribute('src');
  try {
    await streamJob('/v1/images/generations', body, {
      job: (id) => { generateJob = id; },
      started: () => { $('progress-text').textContent = 'started'; },
      progress: (ev) => {
        setProgress($('bar'), $('progress-text'), ev);
        if (ev.preview) $('preview-img').src = ev.preview;
      },
      image: (ev) => {
        $('gallery-empty').hidden = true;
        $('gallery').prepend(galleryCard(ev));
        $('preview-img').src = 'data:image/png;base64,' + ev.b64_json;
      },
      done: () => { $('progress-text').textContent = 'done'; },
      error: (ev) => showError($('error'), ev.error.message),
      cancelled: (ev) => { $('progress-text').textContent = 'cancelled'; showError($('error'), ev.error.message); },
    });
  } catch (err) {
    showError($('error'), err.message);
    $('progress').hidden = true;
  } finally {
    generateJob = null;
    $('generate').disabled = false;
    $('cancel').disabled = true;
  }
}

// ---- Edit ----
let editJob = null;

async function edit(e) {
  e.preventDefault();
  const file = $('edit-image').files[0];
  if (!file) return showError($('edit-error'), 'Choose a reference image first.');
  const form = new FormData();
  form.append('image', file);
  form.append('prompt', $('edit-prompt').value);
  for (const [field, id] of [['seed', 'edit-seed'], ['steps', 'edit-steps'], ['cfg_scale', 'edit-cfg']])
    if ($(id).value.trim() !== '') form.append(field, $(id).value.trim());
  form.append('sampler', $('edit-sampler').value);
  form.append('stream', 'true');
  showError($('edit-error'), '');
  $('edit-run').disabled = true;
  $('edit-cancel').disabled = false;
  $('edit-progress').hidden = false;
  $('edit-bar').style.width = '0';
  $('edit-after').removeAttribute('src');
  $('edit-progress-text').textContent = 'queued…';
  try {
    await streamJob('/v1/images/edits', form, {
      job: (id) => { editJob = id; },
      progress: (ev) => setProgress($('edit-bar'), $('edit-progress-text'), ev),
      image: (ev) => {
        $('edit-after').src = 'data:image/png;base64,' + ev.b64_json;
        const p = ev.parameters;
        $('edit-params').textContent = `“${p.prompt}” · seed ${p.seed} · ${p.steps} steps · cfg ${p.cfg_scale} · ${p.sampler}`;
      },
      done: () => { $('edit-progress-text').textContent = 'done'; },
      error: (ev) => showError($('edit-error'), ev.error.message),
      cancelled: (ev) => showError($('edit-error'), ev.error.message),
    });
  } catch (err) {
    showError($('edit-error'), err.message);
  } finally {
    editJob = null;
    $('edit-run').disabled = false;
    $('edit-cancel').disabled = true;
  }
}

function showBefore() {
  const file = $('edit-image').files[0];
  if (file) $('edit-before').src = URL.createObjectURL(file);
}

// ---- page ----
function selectTab(name) {
  for (const t of ['generate', 'edit']) {
    $('tab-' + t).classList.toggle('active', t === name);
    $('panel-' + t).hidden = t !== name;
  }
}

async function loadModel() {
  try {
    const res = await fetch('/v1/models', { headers: headers() });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error.message);
    const m = body.data[0];
    $('model').textContent = `${m.id} · ${m.resolution}×${m.resolution} · ${m.fingerprint.slice(0, 19)}`;
    for (const id of ['steps', 'edit-steps']) $(id).max = m.limits.max_steps;
    $('n').max = m.limits.max_n;
  } catch (err) {
    $('model').textContent = 'model unavailable: ' + err.message;
    if (/API key/.test(err.message)) $('key-box').hidden = false;
  }
}

async function pollHealth() {
  try {
    const res = await fetch('/health', { headers: headers() });
    if (res.ok) {
      const h = await res.json();
      $('queue').textContent = `queue ${h.queue.waiting}/${h.queue.capacity}` + (h.queue.running ? ' · busy' : ' · idle');
    }
  } catch (err) { /* the server may be restarting */ }
}

$('generate-form').addEventListener('submit', generate);
$('edit-form').addEventListener('submit', edit);
$('cancel').addEventListener('click', () => cancelJob(generateJob));
$('edit-cancel').addEventListener('click', () => cancelJob(editJob));
$('edit-image').addEventListener('change', showBefore);
$('tab-generate').addEventListener('click', () => selectTab('generate'));
$('tab-edit').addEventListener('click', () => selectTab('edit'));
$('key-toggle').addEventListener('click', () => { $('key-box').hidden = !$('key-box').hidden; });
$('api-key').value = apiKey;
$('key-save').addEventListener('click', () => {
  apiKey = $('api-key').value;
  localStorage.setItem('iomm-api-key', apiKey);
  $('key-box').hidden = true;
  loadModel();
});
loadModel();
pollHealth();
setInterval(pollHealth, 3000);
