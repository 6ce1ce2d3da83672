// Progressive enhancement of the console: every page works without it. It redraws the rows of running sync
// runs from their JSON endpoint until they finish.
"use strict";

(function () {
  const POLL_MS = 1000;

  function badge(status, active) {
    const span = document.createElement("span");
    span.className = "badge " + (active ? "warn" : status === "failed" ? "bad" : "ok");
    span.textContent = status;
    return span;
  }

  function redraw(row, run) {
    for (const cell of row.querySelectorAll("[data-field]")) {
      const name = cell.dataset.field;
      if (name === "status") {
        cell.replaceChildren(badge(run.status, run.active));
      } else if (name === "error") {
        cell.textContent = run.error || "";
      } else if (name in run.counters) {
        cell.textContent = String(run.counters[name]);
      }
    }
  }

  async function poll(row) {
    const url = row.dataset.poll;
    try {
      const answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (answer.status === 401) {
        window.location.reload(); // the session ended: the page itself redirects to sign-in
        return;
      }
      if (answer.ok) {
        const run = await answer.json();
        redraw(row, run);
        if (!run.active) {
          row.removeAttribute("data-poll");
          return;
        }
      }
    } catch (e) {
      // A network blip: try again at the next tick.
    }
    window.setTimeout(() => poll(row), POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const row of document.querySelectorAll("tr[data-poll]")) {
      poll(row);
    }
  });
})();
