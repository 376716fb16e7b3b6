// A TI's page: its state and tries, and the log of the chosen try, followed while it runs.
// A mapped task's TI (map index >= 0) links to its siblings: the task's other TIs in that run.
"use strict";
(() => {
  const root = document.getElementById("ti");
  const backfill = root.dataset.backfill, task = root.dataset.task, date = root.dataset.date;
  const mapIndex = Number(root.dataset.mapIndex);
  const path = `${Backfill.segment(task)}/${Backfill.segment(date)}`;
  const base = `/backfills/${backfill}/task_instances/${path}`;
  const query = `map_index=${mapIndex}`;
  const ACTIVE = ["queued", "running", "scheduled", "up_for_retry", "up_for_reschedule", "none"];
  let chosen = null;  // the try whose log is shown; null: the latest
  let ti = null;
  window.tiPage = { loads: 0 };

  function showTI() {
    const state = document.getElementById("ti-state");
    state.textContent = ti.state;
    state.className = "state s-" + ti.state;
    document.getElementById("ti-date").textContent = Backfill.when(ti.logical_date);
    document.getElementById("ti-try").textContent = `${ti.try_number} of ${ti.max_tries + 1}`;
    document.getElementById("ti-host").textContent = ti.hostname || "–";
    document.getElementById("ti-start").textContent = Backfill.when(ti.start_date);
    document.getElementById("ti-end").textContent = Backfill.when(ti.end_date);
    document.getElementById("ti-pool").textContent = ti.pool;
    document.getElementById("ti-run").textContent = ti.run_id;
    const error = document.getElementById("ti-error");
    error.hidden = !ti.last_error;
    error.textContent = ti.last_error || "";
    document.getElementById("result-section").hidden = ti.result === null;
    document.getElementById("ti-result").textContent = JSON.stringify(ti.result, null, 2);
    showSiblings();
    const latest = chosen || ti.try_number;
    document.getElementById("tries").innerHTML = ti.tries.map((t) =>
      `<tr class="${t.try_number === latest ? "selected" : ""}"><td>${t.try_number}</td>` +
      `<td class="mono small">${Backfill.escape(t.claimed_by || "–")}</td>` +
      `<td class="mono small">${Backfill.when(t.started)}</td><td class="mono small">${Backfill.when(t.ended)}</td>` +
      `<td>${t.state ? `<span class="state s-${t.state}">${t.state}</span>` : '<span class="state s-running">running</span>'}</td>` +
      `<td><button class="small" data-try="${t.try_number}">log</button></td></tr>`).join("")
      || '<tr><td colspan="6" class="muted">no try yet</td></tr>';
    for (const button of document.querySelectorAll("#tries button[data-try]")) {
      button.addEventListener("click", () => { chosen = Number(button.dataset.try); refresh(); });
    }
  }

  function showSiblings() {
    const box = document.getElementById("siblings");
    box.hidden = ti.siblings.length === 0;
    const live = ti.siblings.filter((s) => s.state !== "removed").length;
    document.getElementById("sibling-count").textContent = `${live} task instance(s), map index:`;
    document.getElementById("sibling-links").innerHTML = ti.siblings.map((s) =>
      `<a class="state s-${s.state}${s.map_index === ti.map_index ? " current" : ""}" title="${s.state}" ` +
      `href="/backfills/${backfill}/tasks/${path}?map_index=${s.map_index}">${s.map_index}</a>`).join("");
  }

  async function showLog() {
    const number = chosen || ti.try_number;
    const title = document.getElementById("log-title");
    const pre = document.getElementById("log");
    if (number < 1) { title.textContent = ""; pre.textContent = "No try has started yet."; return; }
    const log = await Backfill.api("GET", `${base}/logs?${query}&try_number=${number}`);
    const following = !log.state && ACTIVE.includes(ti.state);
    title.textContent = `try ${number}` + (log.claimed_by ? `, ${log.claimed_by}` : "") + (following ? " (following)" : "");
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const cut = log.cut_bytes ? `[... ${log.cut_bytes} bytes cut: a try's log keeps its last BACKFILL_LOG_MAX_BYTES ...]\n` : "";
    const empty = log.ended ? "(this try logged nothing)" : log.started ? "(nothing logged yet)" : "(not started yet)";
    pre.textContent = cut + (log.log || empty);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }

  async function refresh() {
    try {
      ti = await Backfill.api("GET", `${base}?${query}`);
    } catch (e) {  // no such TI (or map index): say so where the error goes
      const error = document.getElementById("ti-error");
      error.hidden = false;
      error.textContent = e.message;
      throw e;
    }
    showTI();
    await showLog();
    window.tiPage.loads += 1;
    window.tiPage.state = ti.state;
    window.tiPage.try_number = ti.try_number;
  }

  const clearButton = document.getElementById("btn-clear-ti");
  if (clearButton) {
    clearButton.addEventListener("click", async () => {
      const downstream = document.getElementById("clear-downstream").checked;
      const shown = ti.map_index >= 0 ? `${task}[${ti.map_index}]` : task;
      if (!confirm(`Clear ${shown} at ${Backfill.when(ti.logical_date)}${downstream ? " and its downstream tasks" : ""}? It runs again.`)) return;
      const escaped = task.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      const body = { task_regex: `^${escaped}$`, start: ti.logical_date, end: ti.logical_date, downstream };
      if (ti.map_index >= 0) body.map_indexes = [ti.map_index];
      try {
        const done = await Backfill.api("POST", `/backfills/${backfill}/clear`, body);
        Backfill.toast(`cleared ${done.cleared} task instance(s); a coordinator runs them again`);
        if (done.warning) Backfill.toast(done.warning, true);
        chosen = null;
      } catch (e) { Backfill.toast(e.message, true); }
      await refresh();
    });
  }
  Backfill.every(1500, refresh);
})();
