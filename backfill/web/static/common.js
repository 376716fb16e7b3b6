// Shared by the pages: the API with the CSRF token, state colours, formatting, toasts.
"use strict";
const Backfill = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  async function api(method, path, body) {
    const init = { method, headers: { "Accept": "application/json" }, credentials: "same-origin" };
    if (method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRF-Token"] = csrf();
      init.body = JSON.stringify(body || {});
    }
    const response = await fetch("/api/v1" + path, init);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
    if (!response.ok) {
      if (response.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); }
      const error = new Error((data && data.error) || response.statusText);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  const styles = getComputedStyle(document.documentElement);
  const colour = (state) => styles.getPropertyValue("--s-" + state).trim() || "#e5e7eb";

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.round(seconds);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h " + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  }

  const when = (iso) => iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "–";

  function toast(message, bad) {
    const box = document.getElementById("toast");
    const item = document.createElement("div");
    item.className = "msg" + (bad ? " bad" : "");
    item.textContent = message;
    box.appendChild(item);
    setTimeout(() => item.remove(), bad ? 9000 : 5000);
  }

  // Calls `tick` now and again `ms` after each call ends (or 3 times as long as the
  // call took, if longer: a slow server is polled less), while the tab is visible.
  function every(ms, tick) {
    let timer = null;
    const run = async () => {
      clearTimeout(timer);
      if (document.hidden) return;
      const started = performance.now();
      try { await tick(); } catch (e) { console.error(e); }
      timer = setTimeout(run, Math.max(ms, 3 * (performance.now() - started)));
    };
    document.addEventListener("visibilitychange", () => { if (!document.hidden) run(); });
    run();
  }

  const escape = (text) => String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

  // A path segment: ":" and "+" are plain in a path (a logical date reads as itself).
  const segment = (text) => encodeURIComponent(text).replace(/%3A/g, ":").replace(/%2B/g, "+");

  return { api, colour, duration, when, toast, every, escape, segment };
})();
