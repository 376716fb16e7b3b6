// The backfills page: its rows are re-rendered by the server every few seconds.
"use strict";
Backfill.every(3000, async () => {
  const response = await fetch("/?part=rows", { credentials: "same-origin" });
  if (response.redirected || !response.ok) return;
  document.getElementById("backfill-rows").innerHTML = await response.text();
});
