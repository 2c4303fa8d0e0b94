// The console's only script: makes marked parts of a page live over server-sent
// events. Every page works without it.
"use strict";
for (const el of document.querySelectorAll("[data-live-html]")) {
  // The server sends the part's new HTML, rendered and escaped as the page is.
  const source = new EventSource(el.dataset.liveHtml);
  source.addEventListener("html", (e) => { el.innerHTML = e.data; });
}
for (const el of document.querySelectorAll("[data-live-progress]")) {
  const bar = el.querySelector("progress");
  const text = el.querySelector("[data-text]");
  const source = new EventSource(el.dataset.liveProgress);
  source.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    bar.value = p.percent;
    text.textContent = p.text;
    if (p.done) { source.close(); window.location.reload(); }
  });
}
for (const el of document.querySelectorAll("[data-live-tap]")) {
  const rows = el.querySelector("tbody");
  const keep = 200;
  const source = new EventSource(el.dataset.liveTap);
  source.addEventListener("tap", (e) => {
    const event = JSON.parse(e.data);
    const row = document.createElement("tr");
    const cells = event.missed !== undefined
      ? ["", "", "", "", event.missed + " events missed (the page fell behind)"]
      : [new Date().toISOString().slice(11, 19), event.stage, event.site, event.lsid || event.item,
         event.stage === "parse"
           ? [event.end_time ? "ended " + event.end_time : "in progress",
              event.bytes + " bytes", "to " + (event.destinations || []).join(", ")].join(" · ")
           : [event.destination, event.outcome, event.error || ""].join(" ")];
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    }
    if (event.outcome === "failed") row.className = "bad";
    rows.prepend(row);
    while (rows.rows.length > keep) rows.deleteRow(-1);
  });
}
