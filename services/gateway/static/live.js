// The page's Live section: a WebRTC session with POST /v1/live. The microphone (or nothing) goes
// out, the face and its sound come back; typed text goes on a data channel and is spoken, or asked
// of the chat model, as is a question spoken while "Hold to ask aloud" is held.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const live = { pc: null, channel: null, session: null, stream: null };

  function headers() {
    const key = $("api-key").value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function status(text) {
    $("live-status").textContent = text;
  }

  // Screen readers hear the session's milestones only, through the page's announcer (app.js).
  function milestone(text) {
    status(text);
    if (typeof announce === "function") announce(text);
  }

  function portrait() {
    return $("live-image").files[0] || $("image-file").files[0] || null;
  }

  async function iceServers() {
    try {
      const resp = await fetch("/v1/live/ice", { headers: headers() });
      if (resp.ok) return (await resp.json()).ice_servers;
    } catch (e) { /* no ICE servers: loopback and LANs need none */ }
    return [];
  }

  // The gateway answers once (no trickle ICE): offer with every candidate gathered.
  function gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000);
    });
  }

  function connected(on) {
    $("live-mic").disabled = on;
    $("live-start").disabled = on;
    $("live-stop").disabled = !on;
    $("live-text").disabled = !on;
    $("live-say").disabled = !on;
    $("live-ask").disabled = !on;
    $("live-listen").disabled = !on || !live.stream;
  }

  async function start(useMic) {
    const image = portrait();
    if (!image) { status("Choose a portrait first."); return; }
    await stop();
    connected(true);
    status("Connecting…");
    const pc = new RTCPeerConnection({ iceServers: await iceServers() });
    live.pc = pc;
    if (useMic) {
      try {
        // the face follows the voice's loudness: no automatic gain or noise gate in between
        live.stream = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false },
        });
      } catch (e) {
        status("The microphone was not allowed: type a sentence instead.");
      }
    }
    if (live.stream) live.stream.getAudioTracks().forEach((t) => pc.addTrack(t, live.stream));
    else pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addTransceiver("video", { direction: "recvonly" });
    live.channel = pc.createDataChannel("text");
    live.channel.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.event === "error") status(msg.message);
      else if (msg.event === "listening") status("Listening… release the button when you are done.");
      else if (msg.event === "answer") status(`You: ${msg.question} — Answer: ${msg.answer}`);
      else status(`Speaking (${msg.seconds} s)…`);
    };
    const remote = new MediaStream();
    pc.ontrack = (ev) => {
      remote.addTrack(ev.track);
      $("live-video").srcObject = remote;
      // with the microphone the sound that comes back is your own voice: shown, not played
      $("live-video").muted = Boolean(live.stream);
      $("live-video").hidden = false;
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") { milestone("The connection was lost."); stop(); }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const size = $("live-size").value;
    const form = new FormData();
    form.append("sdp", pc.localDescription.sdp);
    form.append("type", "offer");
    form.append("image", image);
    form.append("width", size);
    form.append("height", size);
    form.append("emotion", $("live-emotion").value);
    form.append("voice", $("live-voice").value);
    let resp;
    try {
      resp = await fetch("/v1/live", { method: "POST", body: form, headers: headers() });
    } catch (e) {
      status("Cannot reach the talkserve server.");
      await stop();
      return;
    }
    const body = await resp.json().catch(() => null);
    if (!resp.ok) {
      const err = body && body.error;
      status(resp.status === 401 ? "This server needs a valid API key: paste yours in the API key box above."
        : (err && err.message) || `The server answered HTTP ${resp.status}.`);
      await stop();
      return;
    }
    live.session = body;
    window.__liveSession = body;
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    connected(true);  // now that it is known whether the microphone is on
    milestone(`Live: ${live.stream ? "speak, or " : ""}type a sentence. Made by ${body.engine}.`);
  }

  function send(body) {
    if (!live.channel || live.channel.readyState !== "open") return false;
    live.channel.send(JSON.stringify(body));
    return true;
  }

  function say(what) {
    const text = $("live-text").value.trim();
    if (!text || !send({ [what]: text })) return;
    $("live-text").value = "";
    status(what === "ask" ? "Asking the chat…" : "Speaking…");
  }

  async function stop() {
    const { pc, session, stream } = live;
    live.pc = live.channel = live.session = live.stream = null;
    if (stream) stream.getTracks().forEach((t) => t.stop());
    if (pc) pc.close();
    if (session) {
      fetch(`/v1/live/${session.session_id}`, { method: "DELETE", headers: headers() }).catch(() => {});
      milestone("Ended.");
    }
    connected(false);
  }

  $("live-mic").addEventListener("click", () => start(true));
  $("live-start").addEventListener("click", () => start(false));
  $("live-stop").addEventListener("click", stop);
  $("live-say").addEventListener("click", () => say("say"));
  $("live-ask").addEventListener("click", () => say("ask"));
  $("live-text").addEventListener("keydown", (ev) => { if (ev.key === "Enter") say("say"); });
  $("live-listen").addEventListener("pointerdown", () => send({ listen: "start" }));
  $("live-listen").addEventListener("pointerup", () => {
    if (send({ listen: "stop" })) status("Recognising your question…");
  });
  window.addEventListener("beforeunload", stop);
})();
