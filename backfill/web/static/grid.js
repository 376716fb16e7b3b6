// A backfill's page: the grid (dates x tasks, a canvas that draws only the rows in view,
// so 1,000 dates x 50 tasks costs what 40 do), its status, and the buttons. A mapped
// task's cell (its TIs in that run, folded by the server: the most telling state) has a
// dark corner mark; its tooltip counts its TIs by state, and a click opens the TI that
// shows that state.
"use strict";
(() => {
  const root = document.getElementById("backfill");
  const id = root.dataset.id;
  const canWrite = root.dataset.canWrite === "true";
  const head = document.getElementById("grid-head");
  const canvas = document.getElementById("grid");
  const scroller = document.getElementById("grid-scroll");
  const spacer = document.getElementById("grid-spacer");
  const tip = document.getElementById("tip");
  const ROW = 16, MIN_CELL = 6, MAX_CELL = 22, POLL_MS = 2000, BAND = 18;
  const FINISHED = ["success", "skipped", "upstream_failed", "failed", "removed"];
  let data = null, layout = null, scrolledToFrontier = false;
  let mappedRows = {};  // row -> its mapped cells ([row, col, map_index, counts]), per load
  window.backfillGrid = { loads: 0, lastLoadMs: null, lastDrawMs: null };  // for tests and curious eyes

  function dateLabel(iso, short) {
    return short ? iso.slice(0, 10) : iso.slice(0, 16).replace("T", " ");
  }

  function computeLayout() {
    const ctx = head.getContext("2d");
    ctx.font = "11px system-ui, sans-serif";
    const short = data.dates.every((d) => d.slice(11, 19) === "00:00:00");
    const labelW = short ? 96 : 128;
    const room = Math.max(300, document.querySelector("main").clientWidth - 40 - labelW);
    const cell = Math.max(MIN_CELL, Math.min(MAX_CELL, Math.floor(room / Math.max(1, data.tasks.length))));
    const longest = Math.max(30, ...data.tasks.map((t) => ctx.measureText(t).width));
    const band = data.groups.length ? BAND : 0;  // a row of task-group bands on top
    const headH = Math.min(150, Math.ceil(longest * Math.sin(Math.PI / 4)) + 16) + band;
    return { short, labelW, cell, headH, band, width: labelW + cell * data.tasks.length + 8 };
  }

  function size(c, w, h) {
    const ratio = window.devicePixelRatio || 1;
    if (c.width !== Math.round(w * ratio) || c.height !== Math.round(h * ratio)) {
      c.width = Math.round(w * ratio); c.height = Math.round(h * ratio);
      c.style.width = w + "px"; c.style.height = h + "px";
    }
    const ctx = c.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return ctx;
  }

  function drawHead() {
    const { labelW, cell, headH } = layout;
    const width = layout.width + headH;  // a name leans right, beyond the last column
    const ctx = size(head, width, headH);
    ctx.clearRect(0, 0, width, headH);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#374151";
    data.tasks.forEach((task, i) => {
      ctx.save();
      ctx.translate(labelW + i * cell + cell / 2 + 3, headH - 4);
      ctx.rotate(-Math.PI / 4);
      ctx.fillText(task, 0, 0);
      ctx.restore();
    });
    ctx.fillStyle = "#6b7280";
    ctx.fillText(layout.short ? "logical date" : "logical date (UTC)", 4, headH - 4);
    data.groups.forEach((group, i) => {  // task groups: a labelled band over their columns
      const x = labelW + group.start * cell, w = (group.end - group.start) * cell - 2;
      const next = data.groups[i + 1];  // a label may run on over ungrouped columns
      const room = (next ? labelW + next.start * cell : width) - x - 4;
      ctx.fillStyle = "#e0e7ff";
      ctx.fillRect(x, 1, w, BAND - 4);
      ctx.save();
      ctx.beginPath();
      ctx.rect(x, 0, Math.max(w, room), BAND);
      ctx.clip();
      ctx.fillStyle = "#3730a3";
      ctx.fillText(group.group, x + 3, BAND - 7);
      ctx.restore();
    });
  }

  function draw() {
    const started = performance.now();
    const { labelW, cell, width } = layout;
    const rows = data.dates.length;
    const view = Math.max(ROW, Math.min(rows * ROW, scroller.clientHeight));
    const first = Math.min(Math.floor(scroller.scrollTop / ROW), Math.max(0, rows - Math.floor(view / ROW)));
    const last = Math.min(rows, first + Math.ceil(view / ROW) + 1);
    // The canvas covers the rows in view (and the one partly in view below them), no more.
    const height = (last - first) * ROW;
    const ctx = size(canvas, width, height);
    canvas.style.top = first * ROW + "px";
    const colours = {};  // char code -> colour
    data.states.forEach((s, i) => { colours[data.codes.charCodeAt(i)] = Backfill.colour(s); });
    const runColours = data.run_states.map(Backfill.colour);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px ui-monospace, monospace";
    ctx.textBaseline = "middle";
    const gap = cell >= 10 ? 2 : 1;
    const mark = Math.max(4, Math.min(8, Math.floor(cell / 2)));  // a mapped cell's corner
    for (let r = first; r < last; r++) {
      const y = (r - first) * ROW;
      ctx.fillStyle = runColours[data.runs[r]];
      ctx.fillRect(0, y + 2, 3, ROW - 4);
      ctx.fillStyle = "#374151";
      ctx.fillText(dateLabel(data.dates[r], layout.short), 7, y + ROW / 2);
      const row = data.cells[r];
      for (let c = 0; c < row.length; c++) {
        const code = row.charCodeAt(c);
        if (code === 46) continue;  // "." no TI of this task on this date
        ctx.fillStyle = colours[code];
        ctx.fillRect(labelW + c * cell, y + 1, cell - gap, ROW - 2);
      }
      for (const [, c] of mappedRows[r] || []) {  // few: a mapped task's cells only
        // A white corner edged in dark: seen on every state's colour.
        const right = labelW + (c + 1) * cell - gap;
        corner(ctx, right, y + 1, mark, "#111827");
        corner(ctx, right, y + 1, mark - 2, "#ffffff");
      }
    }
    window.backfillGrid.lastDrawMs = performance.now() - started;
    window.backfillGrid.first = first;
  }

  function corner(ctx, right, top, size, colour) {
    ctx.fillStyle = colour;
    ctx.beginPath();
    ctx.moveTo(right - size, top);
    ctx.lineTo(right, top);
    ctx.lineTo(right, top + size);
    ctx.fill();
  }

  function render() {
    layout = computeLayout();
    const rows = data.dates.length * ROW;
    spacer.style.height = rows + "px";
    // The rows in view fill the window's height at most; the canvas draws only those.
    scroller.style.height = Math.min(rows, Math.max(8 * ROW, Math.floor(window.innerHeight * 0.68))) + "px";
    scroller.style.width = (layout.width + 18) + "px";
    drawHead();
    draw();
    document.getElementById("grid-size").textContent =
      `${data.dates.length} dates × ${data.tasks.length} tasks = ${(data.dates.length * data.tasks.length).toLocaleString()} cells`;
    if (!scrolledToFrontier) {
      scrolledToFrontier = true;
      const active = ["queued", "running"].map((s) => data.codes[data.states.indexOf(s)]);
      const frontier = data.cells.findIndex((row) => active.some((code) => row.includes(code)));
      if (frontier > 5) scroller.scrollTop = (frontier - 3) * ROW;
    }
  }

  function cellAt(event) {
    const box = canvas.getBoundingClientRect();
    const x = event.clientX - box.left, y = event.clientY - box.top;
    const col = Math.floor((x - layout.labelW) / layout.cell);
    const row = (window.backfillGrid.first || 0) + Math.floor(y / ROW);
    if (col < 0 || col >= data.tasks.length || row < 0 || row >= data.dates.length) return null;
    const code = data.cells[row].charCodeAt(col);
    if (code === 46) return null;
    const state = data.states[data.codes.indexOf(String.fromCharCode(code))];
    const mapped = (mappedRows[row] || []).find((m) => m[1] === col);
    return { task: data.tasks[col], date: data.dates[row], state, mapped: mapped && describeMapped(mapped) };
  }

  // A mapped cell: the TI a click opens, and `3 mapped — 2 success, 1 failed`.
  function describeMapped([, , mapIndex, counts]) {
    const pairs = counts.split(" ").map((pair) => pair.split(":"))
      .map(([code, n]) => [data.states[data.codes.indexOf(code)], Number(n)]);
    const total = pairs.reduce((sum, [, n]) => sum + n, 0);
    return { mapIndex, text: `${total} mapped — ` + pairs.map(([s, n]) => `${n} ${s}`).join(", ") };
  }

  canvas.addEventListener("mousemove", (event) => {
    const hit = data && cellAt(event);
    if (!hit) { tip.hidden = true; return; }
    tip.textContent = `${hit.task} · ${Backfill.when(hit.date)} · ` + (hit.mapped ? hit.mapped.text : hit.state);
    tip.style.left = (event.clientX + 14) + "px";
    tip.style.top = (event.clientY + 12) + "px";
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  canvas.addEventListener("click", (event) => {
    const hit = data && cellAt(event);
    if (hit) location.href = tiUrl(hit.task, hit.date, hit.mapped ? hit.mapped.mapIndex : -1);
  });
  scroller.addEventListener("scroll", () => { if (data) requestAnimationFrame(draw); });
  window.addEventListener("resize", () => { if (data) render(); });

  // What a cell shows, read back from the canvas's pixels: how a test (or a curious
  // operator, in the console) sees the colour an operator sees. Null: not drawn now.
  window.backfillGrid.pixel = (task, date) => {
    const row = data.dates.indexOf(date), col = data.tasks.indexOf(task);
    const first = window.backfillGrid.first || 0;
    const y = (row - first) * ROW + ROW / 2, x = layout.labelW + col * layout.cell + 2;
    if (row < 0 || col < 0 || y < 0 || y >= canvas.clientHeight) return null;
    const ratio = window.devicePixelRatio || 1;
    const [r, g, b] = canvas.getContext("2d").getImageData(x * ratio, y * ratio, 1, 1).data;
    return "#" + [r, g, b].map((v) => v.toString(16).padStart(2, "0")).join("");
  };
  window.backfillGrid.colour = (state) => Backfill.colour(state);
  // Where a cell is on the screen (its centre, in client coordinates); null: not drawn now.
  window.backfillGrid.where = (task, date) => {
    const row = data.dates.indexOf(date) - (window.backfillGrid.first || 0), col = data.tasks.indexOf(task);
    if (row < 0 || col < 0 || (row + 1) * ROW > canvas.clientHeight) return null;
    const box = canvas.getBoundingClientRect();
    return { x: box.left + layout.labelW + col * layout.cell + layout.cell / 2 - 1, y: box.top + row * ROW + ROW / 2 };
  };

  // A TI's page; a mapped task's TI by its map index (without one, the page opens the
  // task's most telling TI in that run).
  const tiUrl = (task, date, mapIndex) =>
    `/backfills/${id}/tasks/${Backfill.segment(task)}/${Backfill.segment(date)}` +
    (mapIndex >= 0 ? `?map_index=${mapIndex}` : "");

  function showStatus(status) {
    const state = document.getElementById("state");
    state.textContent = status.state;
    state.className = "state s-" + status.state;
    const tis = status.task_instances;
    const total = Object.values(tis).reduce((a, b) => a + b, 0);
    const done = FINISHED.reduce((a, s) => a + (tis[s] || 0), 0);
    // The finished TIs by outcome, in their colours: green, red, orange, pink at a glance.
    document.getElementById("progress-bar").innerHTML = FINISHED
      .filter((s) => tis[s])
      .map((s) => `<div style="width:${100 * tis[s] / total}%;background:${Backfill.colour(s)}" title="${s} ${tis[s]}"></div>`)
      .join("");
    document.getElementById("progress-text").textContent =
      `${done} of ${total} task instances finished · ${status.progress.runs_finished} of ${status.progress.runs_total} runs`;
    document.getElementById("legend").innerHTML = data.states
      .filter((s) => tis[s])
      .map((s) => `<span class="key" data-state="${s}"><span class="swatch" style="background:${Backfill.colour(s)}"></span>${s} <b>${tis[s]}</b></span>`)
      .join("");
    document.getElementById("rate").textContent = status.rate_per_minute == null ? "–" : status.rate_per_minute.toFixed(1) + " TIs/min";
    document.getElementById("eta").textContent = Backfill.duration(status.eta_seconds);
    document.getElementById("driver").textContent = status.driver ? status.driver.owner : "none";
    document.getElementById("updated").textContent = Backfill.when(status.updated_at);
    showNotes(status);
    showFailed(status);
    if (canWrite) enableButtons(status.state);
  }

  function showNotes(status) {
    const notes = [];
    if (status.broker_down_since) notes.push(`<p class="error">The broker is unreachable since ${Backfill.escape(status.broker_down_since)}; the driver retries.</p>`);
    for (const [reason, count] of Object.entries(status.waiting || {})) {
      notes.push(`<p class="small muted">waiting: ${count} × ${Backfill.escape(reason)}</p>`);
    }
    for (const [reason, group] of Object.entries(status.deadlock || {})) {
      notes.push(`<p class="error">deadlocked: ${group.count} × ${Backfill.escape(reason)}</p>`);
    }
    for (const hint of status.hints || []) notes.push(`<p class="small">hint: ${Backfill.escape(hint)}</p>`);
    if (!status.driver && ["queued", "running"].includes(status.state)) {
      notes.push(`<p class="small muted">No coordinator drives this backfill now: run <code>backfill coordinator</code>, or <code>backfill resume ${id}</code>.</p>`);
    }
    document.getElementById("notes").innerHTML = notes.join("");
  }

  function showFailed(status) {
    document.getElementById("failed-total").textContent = status.failed_total ? `(${status.failed_total})` : "";
    const rows = status.failed.map((f) =>
      `<tr><td><a href="${tiUrl(f.task_id, f.logical_date, f.map_index)}">` +
      `${Backfill.escape(f.map_index >= 0 ? `${f.task_id}[${f.map_index}]` : f.task_id)}</a></td>` +
      `<td class="mono">${Backfill.when(f.logical_date)}</td><td>${f.try_number}</td>` +
      `<td class="small">${Backfill.escape(f.last_error || "an upstream task failed")}</td></tr>`);
    document.getElementById("failed-rows").innerHTML = rows.join("") || '<tr><td colspan="4" class="muted">none</td></tr>';
  }

  function enableButtons(state) {
    const live = ["queued", "running", "paused"].includes(state);
    document.getElementById("btn-pause").disabled = state !== "running";
    document.getElementById("btn-resume").disabled = state !== "paused";
    document.getElementById("btn-cancel").disabled = !live;
    document.getElementById("btn-abort").disabled = !live;
    document.getElementById("btn-clear").disabled = state === "cancelled";
  }

  async function load() {
    const started = performance.now();
    data = await Backfill.api("GET", `/backfills/${id}/grid`);
    window.backfillGrid.lastLoadMs = performance.now() - started;
    mappedRows = {};
    for (const entry of data.mapped) (mappedRows[entry[0]] ||= []).push(entry);
    render();
    showStatus(data.status);
    window.backfillGrid.loads += 1;
    if (window.backfillGrid.firstDrawAt === undefined) window.backfillGrid.firstDrawAt = performance.now();
    window.backfillGrid.state = data.status.state;
  }

  const questions = {
    pause: "Pause this backfill? Queued and running task instances finish; nothing new is dispatched.",
    resume: "Resume this backfill? A backfill coordinator drives it again.",
    cancel: "Cancel this backfill for good? Queued task instances are withdrawn; running ones finish.",
    abort: "Abort this backfill? Running tries are stopped and fail; queued ones are withdrawn.",
  };

  async function act(action) {
    if (!confirm(questions[action])) return;
    const path = action === "abort" ? "cancel" : action;
    try {
      await Backfill.api("POST", `/backfills/${id}/${path}`, action === "abort" ? { abort: true } : {});
      Backfill.toast(`backfill ${id}: ${action} done`);
    } catch (e) { Backfill.toast(e.message, true); }
    await load();
  }

  function clearBody(dryRun) {
    const form = document.getElementById("clear-form");
    const value = (name) => form.elements[name].value.trim() || null;
    return {
      task_regex: value("task_regex"), start: value("start"), end: value("end"),
      states: [...form.querySelectorAll('input[name="states"]:checked')].map((b) => b.value),
      downstream: form.elements.downstream.checked, dry_run: dryRun,
    };
  }

  async function clearTIs(dryRun) {
    const preview = document.getElementById("clear-preview");
    try {
      const result = await Backfill.api("POST", `/backfills/${id}/clear`, clearBody(true));
      const n = result.selected.length;
      if (dryRun) { preview.textContent = `${n} task instance(s) would be cleared.`; preview.className = "small"; return; }
      if (!confirm(`Clear ${n} task instance(s) and reopen backfill ${id}?`)) return;
      const done = await Backfill.api("POST", `/backfills/${id}/clear`, clearBody(false));
      Backfill.toast(`cleared ${done.cleared} task instance(s)`);
      if (done.warning) Backfill.toast(done.warning, true);
      document.getElementById("clear-dialog").close();
      await load();
    } catch (e) { preview.textContent = e.message; preview.className = "small error"; }
  }

  if (canWrite) {
    for (const action of ["pause", "resume", "cancel", "abort"]) {
      document.getElementById("btn-" + action).addEventListener("click", () => act(action));
    }
    document.getElementById("btn-clear").addEventListener("click", () => {
      document.getElementById("clear-preview").textContent = "";
      document.getElementById("clear-dialog").showModal();
    });
    document.getElementById("clear-preview-btn").addEventListener("click", () => clearTIs(true));
    document.getElementById("clear-confirm").addEventListener("click", () => clearTIs(false));
    document.getElementById("clear-close").addEventListener("click", () => document.getElementById("clear-dialog").close());
  }
  Backfill.every(POLL_MS, load);
})();
