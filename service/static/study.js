// Study page: live progress by polling GET /studies/{id} every 2 s until a final status, and the
// plotly charts (lr curves, lr x beta3 surfaces) drawn from the report JSON. With protected reads
// the requests carry the session cookie of the sign-in form (and the kept token, if any).
(function () {
  "use strict";
  var root = document.getElementById("study");
  if (!root) return;
  var id = root.dataset.studyId;
  var base = root.dataset.base || "";
  var FINAL = ["completed", "cancelled", "failed"];
  var STATES = ["queued", "running", "completed", "diverged", "failed", "cancelled"];
  var lastKey = null;
  var auth = window.adamodLabAuth || function () { return {}; };

  function fmt(x) { return x === null || x === undefined ? "–" : Number(x).toPrecision(3); }

  function drawCurves(report) {
    var el = document.getElementById("lr-curves");
    var configs = (report.configs || []).filter(function (c) { return (c.curve || []).length; });
    if (!window.Plotly || !el) return;
    var empty = document.getElementById("lr-curves-empty");
    empty.hidden = configs.length > 0;
    if (!configs.length) return;
    var traces = configs.map(function (c) {
      return {
        type: "scatter", mode: "lines+markers", name: c.label,
        x: c.curve.map(function (p) { return p.lr; }),
        y: c.curve.map(function (p) { return p.median; }),
        customdata: c.curve.map(function (p) {
          return [(p.values || []).map(fmt).join(", "), p.n_seeds, p.n_diverged];
        }),
        hovertemplate: "<b>%{fullData.name}</b><br>lr %{x:.3g}<br>median L %{y:.4g}<br>" +
          "per seed (%{customdata[1]} seeds, %{customdata[2]} diverged): %{customdata[0]}<extra></extra>"
      };
    });
    var layout = {
      margin: { t: 30, r: 20 }, hovermode: "closest",
      xaxis: { type: "log", title: { text: "learning rate (log scale)" } },
      yaxis: { title: { text: "median capped validation loss L" } },
      legend: { orientation: "h", y: -0.2 }
    };
    if (report.target && report.target.loss !== null && report.target.loss !== undefined) {
      layout.shapes = [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: report.target.loss,
        y1: report.target.loss, line: { dash: "dot", color: "#888" } }];
    }
    Plotly.react(el, traces, layout, { displaylogo: false, responsive: true });
  }

  function drawSurfaces(report) {
    var box = document.getElementById("surfaces");
    if (!window.Plotly || !box) return;
    var surfaces = report.surfaces || [];
    while (box.children.length > surfaces.length) box.removeChild(box.lastChild);
    surfaces.forEach(function (s, i) {
      var el = box.children[i];
      if (!el) { el = document.createElement("div"); el.className = "surface"; box.appendChild(el); }
      var title = s.optimizer + " (warmup " + s.warmup_steps + ", " + s.schedule + "): median L over lr × β3";
      Plotly.react(el, [{
        type: "heatmap", z: s.median_loss, x: s.lrs.map(fmt), y: s.beta3s.map(String),
        colorscale: "Viridis", reversescale: true, colorbar: { title: { text: "median L" } },
        hovertemplate: "lr %{x}<br>β3 %{y}<br>median L %{z:.4g}<extra></extra>"
      }], {
        title: { text: title, font: { size: 14 } }, margin: { t: 40 },
        xaxis: { title: { text: "learning rate" }, type: "category" },
        yaxis: { title: { text: "β3" }, type: "category" }
      }, { displaylogo: false, responsive: true });
    });
  }

  function draw(report) { drawCurves(report); drawSurfaces(report); }

  function showProgress(study) {
    var p = study.progress || {};
    var done = ["completed", "diverged", "failed", "cancelled"].reduce(function (n, k) { return n + (p[k] || 0); }, 0);
    var status = document.getElementById("study-status");
    status.textContent = study.status;
    status.className = "status " + study.status;
    root.dataset.status = study.status;
    var bar = document.getElementById("progress-bar");
    bar.max = p.total || 0; bar.value = done;
    document.getElementById("progress-text").textContent = done + " / " + (p.total || 0) + " trials done";
    document.getElementById("progress-counts").textContent =
      STATES.map(function (k) { return k + " " + (p[k] || 0); }).join(", ");
    document.getElementById("started").textContent = study.started_at ? study.started_at.replace("T", " ").slice(0, 19) : "–";
    document.getElementById("finished").textContent = study.finished_at ? study.finished_at.replace("T", " ").slice(0, 19) : "–";
    document.getElementById("cancel-box").hidden = FINAL.indexOf(study.status) >= 0;
  }

  function refresh() {
    var report = fetch(base + "/studies/" + id + "/report", { headers: auth() })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) draw(data); });
    var tables = fetch(base + "/ui/studies/" + id + "/tables", { headers: auth() })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) document.getElementById("tables").innerHTML = html; });
    return Promise.all([report, tables]);
  }

  function tick() {
    fetch(base + "/studies/" + id, { headers: auth() })
      .then(function (r) {
        if (r.status === 401) return null;  // protected reads and the session ended
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (study) {
        if (study === null) return null;
        showProgress(study);
        var key = JSON.stringify([study.status, study.progress]);
        var changed = key !== lastKey;
        lastKey = key;
        return (changed ? refresh() : Promise.resolve()).then(function () { return study; });
      })
      .then(function (study) {
        if (study === null) {  // polling again cannot help: the page itself needs a sign-in
          document.getElementById("signed-out").hidden = false;
          root.dataset.polling = "signed-out";
          return;
        }
        if (FINAL.indexOf(study.status) >= 0) { root.dataset.polling = "stopped"; return; }
        setTimeout(tick, 2000);
      })
      .catch(function (error) {  // a restarting server: say so, keep trying
        console.error("study page: " + error);
        setTimeout(tick, 2000);
      });
  }

  function cancel() {
    var state = document.getElementById("cancel-state");
    fetch(base + "/studies/" + id, { method: "DELETE", headers: auth() })
      .then(function (r) {
        if (r.status === 401) { state.textContent = "a valid API token is needed: enter it above"; return; }
        if (!r.ok) { state.textContent = "cancel failed: HTTP " + r.status; return; }
        state.textContent = "cancelled";
        return r.json().then(showProgress);
      })
      .catch(function (e) { state.textContent = "cancel failed: " + e; });
  }

  draw(JSON.parse(document.getElementById("report-data").textContent));
  document.getElementById("cancel-button").addEventListener("click", cancel);
  if (FINAL.indexOf(root.dataset.status) < 0) {
    document.getElementById("cancel-box").hidden = false;
    root.dataset.polling = "on";
    setTimeout(tick, 2000);
  }
})();
