// What the page shows: the assistant's state, the transcript, the latency of each turn,
// errors, personas and level meters. It only draws; app.js owns the session.

const STATE_LABELS = {
  idle: "Ready",
  connecting: "Connecting…",
  listening: "Listening",
  user_speaking: "You are speaking",
  thinking: "Thinking…",
  speaking: "Speaking",
};
const STAGES = ["endpoint_ms", "asr_ms", "llm_first_token_ms", "tts_first_chunk_ms"];
const MAX_ERRORS = 5;
const MAX_TURNS = 12;

const $ = (id) => document.getElementById(id);
const ms = (v) => (typeof v === "number" ? `${Math.round(v)} ms` : "–");
const meterWidth = (db) => `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;

const ENDED = {
  idle: "The call ended: nothing was heard for a while. Press Talk to start again.",
  max_duration: "The call ended: it reached its time limit. Press Talk to start again.",
};

export class View {
  constructor() {
    this.talk = $("talk");
    this.talkLabel = this.talk.querySelector(".talk-label");
    this.mute = $("mute");
    this.persona = $("persona");
    this.about = $("persona-about");
    this.recorded = $("recorded");
    this.state = $("state");
    this.errors = $("errors");
    this.v2v = $("v2v");
    this.v2vTurn = $("v2v-turn");
    this.stages = $("stages");
    this.turns = $("turns");
    this.messages = $("messages");
    this.micLevel = $("mic-level");
    this.remoteLevel = $("remote-level");
    this.audio = $("remote-audio");
    this.personas = [];
    this.userOpen = null; // the user's bubble still being spoken (partials)
    this.assistantOpen = null; // the assistant's reply still being spoken
    this.persona.addEventListener("change", () => this.describePersona());
  }

  // ---- controls ----------------------------------------------------------------------

  showState(state) {
    this.state.dataset.state = state;
    this.state.textContent = STATE_LABELS[state] || state;
  }

  /** `phase`: idle | connecting | live. */
  showPhase(phase) {
    const on = phase !== "idle";
    this.talk.setAttribute("aria-pressed", String(on));
    this.talk.classList.toggle("connecting", phase === "connecting");
    this.talkLabel.textContent = on ? "Stop" : "Talk";
    this.persona.disabled = on;
    this.mute.disabled = phase !== "live";
    if (!on) {
      this.userOpen = this.assistantOpen = null;
      this.showLevels(-Infinity, -Infinity);
    }
  }

  showMuted(on) {
    this.mute.setAttribute("aria-pressed", String(on));
    this.mute.textContent = on ? "Unmute" : "Mute";
  }

  showLevels(micDb, remoteDb) {
    this.micLevel.style.width = meterWidth(micDb);
    this.remoteLevel.style.width = meterWidth(remoteDb);
  }

  // ---- personas ----------------------------------------------------------------------

  /** Fill the picker from GET /personas (`[{id, name, description, default}]`). */
  showPersonas(personas) {
    this.personas = personas;
    this.persona.replaceChildren();
    if (personas.length === 0) this.persona.append(new Option("Server default", ""));
    for (const p of personas) {
      const opt = new Option(p.name || p.id, p.id, p.default, p.default);
      opt.title = p.description || "";
      this.persona.append(opt);
    }
    this.describePersona();
  }

  describePersona() {
    const p = this.personas.find((x) => x.id === this.persona.value);
    this.about.textContent = p ? p.description || "" : "";
  }

  showSession(ev) {
    if (ev.persona && ev.persona.name) this.about.textContent = `Talking with ${ev.persona.name}.`;
    this.showRecorded(ev.recorded || {});
  }

  /** Say when the session is recorded (the server's `records` settings). */
  showRecorded({ transcript, audio }) {
    this.recorded.hidden = !transcript;
    this.recorded.textContent = audio
      ? "This conversation is recorded: its transcript and its audio are kept."
      : transcript
        ? "This conversation is recorded: its transcript is kept."
        : "";
  }

  // ---- errors ------------------------------------------------------------------------

  showError({ message, code, fatal }) {
    const div = document.createElement("div");
    div.className = "error";
    div.textContent = message || "Something went wrong.";
    if (code) {
      const span = document.createElement("span");
      span.className = "code";
      span.textContent = fatal ? `${code}, session ended` : code;
      div.append(span);
    }
    this.errors.append(div);
    while (this.errors.childElementCount > MAX_ERRORS) this.errors.firstElementChild.remove();
  }

  /** The session ended itself, for `reason` (`idle`, `max_duration`). */
  showEnded(reason) {
    const why = ENDED[reason] || `The session ended (${reason}).`;
    const div = document.createElement("div");
    div.className = "ended";
    div.textContent = why;
    this.errors.append(div);
    while (this.errors.childElementCount > MAX_ERRORS) this.errors.firstElementChild.remove();
  }

  // ---- transcript --------------------------------------------------------------------

  bubble(role, turn) {
    const li = document.createElement("li");
    li.className = `msg ${role}`;
    li.dataset.turn = String(turn ?? "");
    li.dataset.text = "";
    this.messages.append(li);
    return li;
  }

  setText(li, text, final) {
    const m = this.messages;
    const atBottom = m.scrollHeight - m.scrollTop - m.clientHeight < 40;
    li.dataset.text = text;
    li.textContent = final && !text ? "(not heard)" : text;
    li.classList.toggle("partial", !final);
    li.classList.toggle("unheard", final && !text);
    if (atBottom) m.scrollTop = m.scrollHeight;
  }

  /** A `transcript` event: user partials are replaced in place by their final; the
   * assistant's text grows as it is spoken and ends as what was heard. */
  transcript(ev) {
    const text = ev.text || "";
    if (ev.role === "user") {
      if (!this.userOpen) this.userOpen = this.bubble("user", ev.turn);
      this.setText(this.userOpen, text, ev.final);
      if (ev.final) this.userOpen = null;
      return;
    }
    let li = this.assistantOpen;
    const sameTurn = li && li.dataset.turn === String(ev.turn ?? "");
    if (sameTurn && li.classList.contains("interrupted")) {
      // After `interrupted` only the final (what was heard) may change the bubble.
      if (ev.final) {
        this.setText(li, text, true);
        this.assistantOpen = null;
      }
      return;
    }
    if (!sameTurn) li = this.assistantOpen = this.bubble("assistant", ev.turn);
    let shown = text;
    // Partial text is the whole reply so far; a piece that does not continue what is shown
    // is taken as the next words.
    const before = li.dataset.text;
    if (!ev.final && before && !text.startsWith(before)) shown = `${before} ${text}`;
    this.setText(li, shown, ev.final);
    if (ev.final) this.assistantOpen = null;
  }

  /** An `interrupted` event: the reply shows what was heard, marked as cut short. */
  interrupted(ev) {
    const all = this.messages.querySelectorAll(".msg.assistant");
    const li = this.assistantOpen || all[all.length - 1];
    if (!li) return;
    this.setText(li, ev.heard || "", true);
    li.classList.add("interrupted");
    this.assistantOpen = li; // the turn's final transcript (the heard text) lands here too
  }

  // ---- latency -----------------------------------------------------------------------

  turnMetrics(ev) {
    this.v2v.textContent = ms(ev.voice_to_voice_ms);
    this.v2vTurn.textContent = `turn ${ev.turn}${ev.reason ? ` · ${ev.reason}` : ""}`;
    for (const key of STAGES) {
      this.stages.querySelector(`[data-key="${key}"]`).textContent = ms(ev[key]);
    }
    const li = document.createElement("li");
    li.textContent = `#${ev.turn} ${ms(ev.voice_to_voice_ms)}`;
    li.title = STAGES.map((k) => `${k}: ${ms(ev[k])}`).join(", ");
    this.turns.prepend(li);
    while (this.turns.childElementCount > MAX_TURNS) this.turns.lastElementChild.remove();
  }
}
