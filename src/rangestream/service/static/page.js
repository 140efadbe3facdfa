// The page behind GET /: resolve (watch/info), play and download (watch), show progress (watch/progress).
// No dependencies; every request goes to this service (relative URLs, so a path prefix works).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.search).get("token");
  const POLL_MS = 500;
  const POLL_MAX = 7200; // an hour of polling at most per fetch
  let poll = null;
  let run = 0; // increments per submit: late answers of an older run are ignored

  function setState(state) { document.body.dataset.state = state; }

  function showError(text) {
    $("error").textContent = text || "";
    $("error").hidden = !text;
    if (text) setState("error");
  }

  function status(text) { $("status").textContent = text; }

  function humanBytes(n) {
    if (n == null) return "?";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function params() {
    const p = new URLSearchParams();
    if ($("pair").open) {
      p.set("video", $("video").value.trim());
      p.set("audio", $("audio").value.trim());
    } else {
      p.set("url", $("url").value.trim());
    }
    p.set("height", $("height").value);
    p.set("format", $("format").value);
    if (token) p.set("token", token);
    return p;
  }

  function withParams(path, base, extra) {
    const p = new URLSearchParams(base);
    for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
    return path + "?" + p.toString();
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      if (body && body.error) return body.error;
    } catch (e) { /* not JSON */ }
    return "the server answered HTTP " + resp.status;
  }

  function cell(row, text) { const td = document.createElement("td"); td.textContent = text; row.appendChild(td); }

  function renderFormats(formats) {
    const body = $("formats").querySelector("tbody");
    body.replaceChildren();
    for (const f of formats) {
      const row = document.createElement("tr");
      cell(row, f.role);
      cell(row, [f.format_id, f.ext].filter(Boolean).join(" · ") || "?");
      cell(row, f.height ? (f.width ? f.width + "×" : "") + f.height : "–");
      cell(row, [f.vcodec, f.acodec].filter(Boolean).join(", ") || "unknown");
      cell(row, humanBytes(f.size));
      body.appendChild(row);
    }
  }

  function renderProgress(job) {
    const box = $("progress");
    box.replaceChildren();
    for (const input of job.inputs || []) {
      const div = document.createElement("div");
      div.className = "bar";
      const label = document.createElement("span");
      label.textContent = input.name;
      const bar = document.createElement("progress");
      bar.max = input.size || 1;
      bar.value = input.size ? input.bytes : 0;
      const text = document.createElement("span");
      text.textContent = " " + humanBytes(input.bytes) + (input.size ? " of " + humanBytes(input.size) : "");
      div.append(label, bar, text);
      box.appendChild(div);
    }
    const bits = [job.state, humanBytes(job.output_bytes) + " sent"];
    if (job.mb_per_s != null) bits.push(job.mb_per_s.toFixed(2) + " MB/s");
    if (job.refreshes) bits.push(job.refreshes + (job.refreshes === 1 ? " expired URL renewed" : " expired URLs renewed"));
    if (job.retries) bits.push(job.retries + " retries");
    $("totals").textContent = bits.join(" · ");
    $("totals").dataset.state = job.state;
  }

  function stopPolling() { if (poll) { clearTimeout(poll); poll = null; } }

  function startPolling(base, job, mine) {
    stopPolling();
    let count = 0;
    const tick = async () => {
      if (mine !== run || ++count > POLL_MAX) return;
      let finished = false;
      try {
        const resp = await fetch(withParams("watch/progress", token ? { token } : {}, { job }), { cache: "no-store" });
        if (resp.ok) {
          const data = await resp.json();
          if (mine !== run) return;
          renderProgress(data);
          finished = ["done", "failed", "cancelled"].includes(data.state);
          if (data.state === "done") status("Fetched completely; the download link fetches it again as one file.");
          if (data.state === "failed" && data.error) showError(data.error);
        }
      } catch (e) { /* the next tick tries again */ }
      if (!finished && mine === run) poll = setTimeout(tick, POLL_MS);
    };
    poll = setTimeout(tick, 100);
  }

  async function submit(event) {
    event.preventDefault();
    const mine = ++run;
    stopPolling();
    showError("");
    const base = params();
    const player = $("player");
    player.removeAttribute("src");
    player.load();
    $("result").hidden = true;
    $("go").disabled = true;
    setState("resolving");
    status("Looking up the formats…");
    try {
      const resp = await fetch(withParams("watch/info", base), { cache: "no-store" });
      if (mine !== run) return;
      if (!resp.ok) { showError(await errorText(resp)); status(""); return; }
      const info = await resp.json();
      show(info, base, mine);
    } catch (e) {
      if (mine === run) { showError("The service could not be reached: " + e.message); status(""); }
    } finally {
      if (mine === run) $("go").disabled = false;
    }
  }

  function show(info, base, mine) {
    $("title").textContent = info.title || "(untitled)";
    renderFormats(info.formats || []);
    $("progress").replaceChildren();
    $("totals").textContent = "";
    const download = $("download");
    download.href = withParams("watch", base, { download: "1" });
    download.setAttribute("download", info.filename);
    $("filename").textContent = info.filename;
    $("result").hidden = false;
    const player = $("player");
    if (!info.playable) {
      setState("ready");
      status("This container does not play in browsers: use the download link.");
      return;
    }
    setState("loading");
    status("Fetching and muxing; it plays as it arrives.");
    player.src = withParams("watch", base, { job: info.job });
    startPolling(base, info.job, mine);
    player.play().catch(() => { /* autoplay refused: the controls still work */ });
  }

  function playerEvents() {
    const player = $("player");
    player.addEventListener("playing", () => { if (document.body.dataset.state !== "error") setState("playing"); });
    player.addEventListener("ended", () => setState("ended"));
    player.addEventListener("error", () => {
      if (!player.getAttribute("src")) return;
      // The media element hides the HTTP answer: the progress endpoint has the reason.
      if ($("error").hidden) showError("The player could not play this: " +
        (player.error && player.error.message ? player.error.message : "unsupported or broken stream"));
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    setState("idle");
    $("form").addEventListener("submit", submit);
    playerEvents();
  });
})();
