// speakerid serve page: plain JS, no build step. Records from the microphone with WebAudio
// (ScriptProcessor), encodes 16-bit PCM mono WAV here (soundfile reads it; MediaRecorder's
// webm/opus it may not), and calls the JSON API with the key from the key field.
"use strict";
const $ = (id) => document.getElementById(id);
const BAR_MIN = -10, BAR_MAX = 10; // decision-score range drawn on the bar (LLR when calibrated)
let key = localStorage.getItem("speakerid-key") || "";
$("apikey").value = key;

function log(msg) { $("log").textContent = msg; }

async function api(method, path, body, contentType) {
  const headers = { "Authorization": "Bearer " + key };
  if (contentType) headers["Content-Type"] = contentType;
  const res = await fetch(path, { method, headers, body });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: { code: "bad_response", message: text } }; }
  if (!res.ok) {
    const err = (data && data.error) || { code: String(res.status), message: res.statusText };
    throw new Error(err.code + ": " + err.message);
  }
  return data;
}

function profileId() { return $("profile-id").value.trim(); }

function showProfile(p) {
  $("profile-id").value = p.id;
  const need = p.speech_seconds + p.seconds_needed;
  $("enroll-progress").max = need > 0 ? need : 1;
  $("enroll-progress").value = p.speech_seconds;
  $("enroll-status").textContent = p.status + ": " + p.speech_seconds.toFixed(1) + " s of speech, " +
    p.seconds_needed.toFixed(1) + " s still needed (" + p.clips + " clip(s))";
}

async function listProfiles() {
  try {
    const data = await api("GET", "/v1/profiles?limit=20");
    $("profiles").textContent = data.total + " profile(s): " +
      data.items.map((p) => (p.display_name || p.id.slice(0, 8)) + " [" + p.status + "]").join(", ");
  } catch (e) { log(e.message); }
}

$("save-key").onclick = () => {
  key = $("apikey").value.trim();
  localStorage.setItem("speakerid-key", key);
  $("key-status").textContent = "key set";
  listProfiles();
};

$("create-profile").onclick = async () => {
  try {
    const name = $("display-name").value.trim();
    const p = await api("POST", "/v1/profiles", JSON.stringify(name ? { display_name: name } : {}), "application/json");
    showProfile(p); log(""); listProfiles();
  } catch (e) { log(e.message); }
};

$("refresh-profile").onclick = async () => {
  try { showProfile(await api("GET", "/v1/profiles/" + encodeURIComponent(profileId()))); log(""); } catch (e) { log(e.message); }
};

$("reset-profile").onclick = async () => {
  try { showProfile(await api("POST", "/v1/profiles/" + encodeURIComponent(profileId()) + "/reset")); log(""); }
  catch (e) { log(e.message); }
};

// ---- audio: send a Blob (recorded WAV or a picked file) to enrol / verify / identify
async function send(target, blob) {
  const type = blob.type && blob.type.startsWith("audio/") ? blob.type : "application/octet-stream";
  try {
    if (target === "enroll") {
      $("enroll-status").textContent = "enrolling...";
      const p = await api("POST", "/v1/profiles/" + encodeURIComponent(profileId()) + "/enrollments", blob, type);
      showProfile(p); listProfiles();
    } else if (target === "verify") {
      $("verify-result").textContent = "verifying...";
      showVerify(await api("POST", "/v1/profiles/" + encodeURIComponent(profileId()) + "/verify", blob, type));
    } else {
      $("identify-result").textContent = "identifying...";
      showIdentify(await api("POST", "/v1/identify", blob, type));
    }
    log("");
  } catch (e) {
    log(e.message);
    if (target === "enroll") $("enroll-status").textContent = "error";
    else $(target + "-result").textContent = "error";
  }
}

function place(x) { return Math.max(0, Math.min(100, 100 * (x - BAR_MIN) / (BAR_MAX - BAR_MIN))); }

function showVerify(r) {
  const el = $("verify-result");
  el.textContent = r.decision;
  el.className = "result " + r.decision;
  $("score-fill").style.width = place(r.decision_score) + "%";
  $("score-fill").style.background = r.decision === "accept" ? "#1a7f37" : "#b42318";
  $("score-threshold").style.left = place(r.threshold) + "%";
  $("score-threshold").style.display = "block";
  $("verify-score").textContent = "cosine " + r.score.toFixed(3) +
    (r.llr === null ? "" : ", llr " + r.llr.toFixed(2)) + "; threshold " + r.threshold.toFixed(2) +
    " (" + r.threshold_source + ")";
}

function showIdentify(r) {
  const el = $("identify-result");
  const best = r.candidates.find((c) => c.profile_id === r.decision);
  el.textContent = r.decision === "unknown" ? "unknown" : (best && best.display_name) || r.decision;
  el.className = "result " + (r.decision === "unknown" ? "reject" : "accept");
  $("identify-candidates").innerHTML = "";
  for (const c of r.candidates) {
    const li = document.createElement("li");
    li.textContent = (c.display_name || c.profile_id) + ": score " + c.decision_score.toFixed(2) +
      (c.accept ? " (above threshold)" : "");
    $("identify-candidates").appendChild(li);
  }
}

for (const t of ["enroll", "verify", "identify"]) {
  $(t + "-file").onchange = (ev) => { if (ev.target.files[0]) send(t, ev.target.files[0]); };
}

// ---- recording: WebAudio -> float samples -> 16-bit PCM WAV
let rec = null;

function encodeWav(chunks, rate) {
  const n = chunks.reduce((s, c) => s + c.length, 0);
  const buf = new ArrayBuffer(44 + 2 * n), v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + 2 * n, true); str(8, "WAVE"); str(12, "fmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, rate, true); v.setUint32(28, 2 * rate, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
  str(36, "data"); v.setUint32(40, 2 * n, true);
  let o = 44;
  for (const c of chunks) for (let i = 0; i < c.length; i++, o += 2) {
    const s = Math.max(-1, Math.min(1, c[i]));
    v.setInt16(o, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([buf], { type: "audio/wav" });
}

async function startRecording(button) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  const ctx = new (window.AudioContext || window.webkitAudioContext)();
  const source = ctx.createMediaStreamSource(stream);
  const proc = ctx.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  proc.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
  source.connect(proc); proc.connect(ctx.destination);
  const seconds = Math.max(1, Math.min(60, Number($("rec-seconds").value) || 8));
  rec = { button, stream, ctx, proc, source, chunks, timer: setTimeout(() => stopRecording(), seconds * 1000) };
  button.textContent = "Stop and send"; button.classList.add("recording");
}

async function stopRecording() {
  const r = rec; rec = null;
  if (!r) return;
  clearTimeout(r.timer);
  r.source.disconnect(); r.proc.disconnect();
  r.stream.getTracks().forEach((t) => t.stop());
  const rate = r.ctx.sampleRate;
  await r.ctx.close();
  r.button.textContent = "Record"; r.button.classList.remove("recording");
  await send(r.button.dataset.target, encodeWav(r.chunks, rate));
}

for (const id of ["record-enroll", "record-verify", "record-identify"]) {
  $(id).onclick = async (ev) => {
    try {
      if (rec) { if (rec.button === ev.target) await stopRecording(); return; }
      await startRecording(ev.target);
    } catch (e) { log("microphone: " + e.message); }
  };
}
if (key) listProfiles();
