// docpipe review workspace: small enhancements; every view works without them.
"use strict";

// A summary sentence, when clicked, highlights the sentence it quotes and scrolls it into view
// (the link's #anchor already does this without script; this keeps the highlight when the
// same sentence is clicked twice).
document.addEventListener("click", (event) => {
  const link = event.target.closest("a.source-link");
  if (!link) return;
  const row = document.getElementById(link.dataset.target);
  if (!row) return;
  event.preventDefault();
  document.querySelectorAll("tr.highlighted").forEach((r) => r.classList.remove("highlighted"));
  row.classList.add("highlighted");
  row.scrollIntoView({ block: "center" });
  history.replaceState(null, "", "#" + row.id);
});

// Batch counts refresh while the batch is still being processed.
const counts = document.querySelector("[data-counts]");
if (counts) {
  setInterval(async () => {
    try {
      const response = await fetch(counts.dataset.counts, { credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      for (const key of ["complete", "partial", "failed", "pending"]) {
        const cell = counts.querySelector(`[data-count="${key}"]`);
        if (cell && data[key] !== null && data[key] !== undefined) cell.textContent = String(data[key]);
      }
    } catch (_) { /* offline for a moment: try again next time */ }
  }, 5000);
}
