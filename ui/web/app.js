// voice-agent browser page: one WebRTC session with the server, its events on screen.
// Wire protocol: docs/protocol.md (WS /ws: offer -> answer, then the session's events).
// Tests read `window.voiceAgent`: the state, every JSON message received, the remote level.
import { View } from "./view.js";

const AUDIBLE_DBFS = -40;
const METER_INTERVAL_MS = 50;
const ICE_GATHER_TIMEOUT_MS = 5000;
const MIC_CONSTRAINTS = {
  audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
};

const va = {
  phase: "idle", // idle | connecting | live
  state: "idle", // the assistant's state, from `state` events
  muted: false,
  session: null, // the `session` event
  events: [], // every JSON message received, in order (the answer too)
  errors: [], // every error shown: the server's `error` events and the page's own
  remoteLevel: -Infinity, // dBFS (RMS over ~43 ms) of the assistant's voice now
  remoteLevelMax: -Infinity,
  remoteAudibleMs: 0, // time the assistant's voice was above AUDIBLE_DBFS
  micLevel: -Infinity,
};
window.voiceAgent = va;

const view = new View();
const token = new URLSearchParams(location.search).get("token");

/** A URL relative to the page, carrying the page's `?token=` when it has one. */
function pageUrl(path) {
  const url = new URL(path, location.href);
  if (token) url.searchParams.set("token", token);
  return url;
}

function wsUrl() {
  const url = pageUrl("ws");
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function showError({ message, code, fatal }) {
  va.errors.push({ message, code, fatal: Boolean(fatal) });
  view.showError({ message, code, fatal });
}

function setState(state) {
  va.state = state;
  view.showState(state);
}

function setPhase(phase) {
  va.phase = phase;
  view.showPhase(phase);
  if (phase === "idle") {
    setMuted(false);
    setState("idle");
  } else if (phase === "connecting") {
    setState("connecting");
  }
}

async function loadPersonas() {
  let personas = [];
  try {
    const res = await fetch(pageUrl("personas"), { cache: "no-store" });
    if (!res.ok) throw new Error(`GET /personas: HTTP ${res.status}`);
    personas = await res.json();
  } catch (err) {
    showError({ message: `Could not load the personas (${err.message}).`, code: "client" });
  }
  view.showPersonas(personas);
}

function onEvent(ev) {
  switch (ev.type) {
    case "session":
      va.session = ev;
      view.showSession(ev);
      if (va.state === "connecting") setState("listening");
      break;
    case "state":
      if (va.phase !== "idle") setState(ev.state);
      break;
    case "transcript":
      view.transcript(ev);
      break;
    case "interrupted":
      view.interrupted(ev);
      break;
    case "turn_metrics":
      view.turnMetrics(ev);
      break;
    case "error":
      showError(ev);
      if (ev.fatal) stop({ bye: false });
      break;
    case "session_ended": // the session ended itself: `idle` or `max_duration`
      va.ended = ev.reason;
      view.showEnded(ev.reason);
      stop({ bye: false });
      break;
    default:
      break; // other types are kept in va.events; nothing to show
  }
}

// ---- audio levels ----------------------------------------------------------------------

let audioCtx = null;
let analysers = { mic: null, remote: null };
let meterTimer = null;
let lastTick = 0;

function audioContext() {
  if (!audioCtx) audioCtx = new AudioContext();
  if (audioCtx.state === "suspended") audioCtx.resume().catch(() => {});
  return audioCtx;
}

/** An analyser fed by `stream`, pulled through a silent gain so the browser keeps it running. */
function analyse(stream) {
  const ctx = audioContext();
  const source = ctx.createMediaStreamSource(stream);
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 2048;
  const silent = ctx.createGain();
  silent.gain.value = 0;
  source.connect(analyser);
  analyser.connect(silent);
  silent.connect(ctx.destination);
  return { source, analyser, silent, buf: new Float32Array(analyser.fftSize) };
}

function dispose(a) {
  if (!a) return;
  a.source.disconnect();
  a.analyser.disconnect();
  a.silent.disconnect();
}

function levelDbfs(a) {
  if (!a) return -Infinity;
  a.analyser.getFloatTimeDomainData(a.buf);
  let sum = 0;
  for (const x of a.buf) sum += x * x;
  const rms = Math.sqrt(sum / a.buf.length);
  return rms > 0 ? 20 * Math.log10(rms) : -Infinity;
}

function tick() {
  const now = performance.now();
  const dt = lastTick ? now - lastTick : 0;
  lastTick = now;
  va.micLevel = levelDbfs(analysers.mic);
  va.remoteLevel = levelDbfs(analysers.remote);
  if (va.remoteLevel > va.remoteLevelMax) va.remoteLevelMax = va.remoteLevel;
  if (va.remoteLevel > AUDIBLE_DBFS) va.remoteAudibleMs += dt;
  view.showLevels(va.muted ? -Infinity : va.micLevel, va.remoteLevel);
}

// ---- the connection --------------------------------------------------------------------

let pc = null;
let ws = null;
let mic = null;
let attempt = 0; // bumps on every start and stop, so a late callback of an old one is ignored

function setMuted(on) {
  if (mic) for (const t of mic.getAudioTracks()) t.enabled = !on;
  va.muted = mic ? mic.getAudioTracks().every((t) => !t.enabled) : on; // what the track does
  view.showMuted(on);
}

function iceGathered(conn) {
  if (conn.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      conn.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => conn.iceGatheringState === "complete" && finish();
    // Without ICE servers gathering is quick; after the timeout the offer goes with what it has.
    const timer = setTimeout(finish, ICE_GATHER_TIMEOUT_MS);
    conn.addEventListener("icegatheringstatechange", check);
  });
}

function socketOpen(url) {
  return new Promise((resolve, reject) => {
    const sock = new WebSocket(url);
    sock.addEventListener("open", () => resolve(sock), { once: true });
    sock.addEventListener(
      "close",
      (e) => reject(new Error(`the server closed the connection (code ${e.code})`)),
      { once: true },
    );
  });
}

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

async function start() {
  const my = ++attempt;
  setPhase("connecting");
  audioContext(); // inside the click, so autoplay rules let it run
  try {
    const stream = await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
    if (my !== attempt) {
      for (const t of stream.getTracks()) t.stop();
      return;
    }
    mic = stream;
    analysers.mic = analyse(stream);

    const conn = (pc = new RTCPeerConnection({ iceServers: [] }));
    for (const track of stream.getAudioTracks()) conn.addTrack(track, stream);
    conn.addEventListener("track", (e) => {
      const remote = e.streams[0] || new MediaStream([e.track]);
      view.audio.srcObject = remote; // Chromium's Web Audio reads zeros without a media element
      view.audio.play().catch(() => {});
      dispose(analysers.remote);
      analysers.remote = analyse(remote);
    });
    conn.addEventListener("connectionstatechange", () => {
      if (my === attempt && conn.connectionState === "failed") {
        showError({ message: "The audio connection failed.", code: "client", fatal: true });
        stop({ bye: false });
      }
    });

    const opening = socketOpen(wsUrl()); // while ICE gathers
    opening.catch(() => {}); // awaited below
    await conn.setLocalDescription(await conn.createOffer());
    await iceGathered(conn);
    const sock = await opening;
    if (my !== attempt) {
      sock.close(1000);
      return;
    }
    ws = sock;
    ws.addEventListener("message", (e) => onMessage(my, e));
    ws.addEventListener("close", (e) => onClose(my, e));
    const offer = { type: "offer", sdp: conn.localDescription.sdp };
    if (view.persona.value) offer.persona = view.persona.value;
    send(offer);
    lastTick = 0;
    meterTimer = setInterval(tick, METER_INTERVAL_MS);
  } catch (err) {
    if (my !== attempt) return;
    const blocked = err && err.name === "NotAllowedError";
    showError({
      message: blocked
        ? "The microphone is blocked: allow it for this page and press Talk again."
        : `Could not start: ${err.message || err}`,
      code: "client",
    });
    stop({ bye: false });
  }
}

async function onMessage(my, e) {
  if (my !== attempt) return;
  let msg;
  try {
    msg = JSON.parse(e.data);
  } catch {
    return; // /ws sends only JSON
  }
  va.events.push(msg);
  if (msg.type !== "answer") {
    onEvent(msg);
    return;
  }
  try {
    await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    if (my === attempt) setPhase("live");
  } catch (err) {
    if (my !== attempt) return;
    showError({ message: `The server's answer was unusable: ${err.message}`, code: "client" });
    stop({ bye: true });
  }
}

function onClose(my, e) {
  if (my !== attempt) return;
  const clean = e.code === 1000 || e.code === 1005;
  if (!clean && !va.errors.some((x) => x.fatal)) {
    const reason = e.reason ? `: ${e.reason}` : "";
    showError({ message: `The connection closed (code ${e.code}${reason}).`, code: "client" });
  }
  stop({ bye: false });
}

/** End the session: say bye, close the peer connection and the socket, release the mic. */
function stop({ bye = true } = {}) {
  attempt++;
  if (bye) send({ type: "bye" });
  if (ws) {
    ws.close(1000); // after what was sent (the bye)
    ws = null;
  }
  if (pc) {
    pc.close();
    pc = null;
  }
  if (mic) {
    for (const t of mic.getTracks()) t.stop();
    mic = null;
  }
  clearInterval(meterTimer);
  meterTimer = null;
  dispose(analysers.mic);
  dispose(analysers.remote);
  analysers = { mic: null, remote: null };
  view.audio.srcObject = null;
  setPhase("idle");
}

view.talk.addEventListener("click", () => (va.phase === "idle" ? start() : stop()));
view.mute.addEventListener("click", () => setMuted(!va.muted));
window.addEventListener("pagehide", () => va.phase !== "idle" && stop());

va.start = start;
va.stop = stop;
setPhase("idle");
loadPersonas();
