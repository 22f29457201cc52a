// Draws a walplayer summary (the JSON in #summary) into the page: tables
// as text, charts as SVG. Data only ever goes in through textContent and
// attribute values, never as markup. Each chart's <svg> says what it drew
// (data-points per series, data-bars), so a test can check it.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var MIB = 1024 * 1024;
  var summary = JSON.parse(document.getElementById("summary").textContent);
  var root = document.getElementById("report");

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    return e;
  }
  function num(v) { return typeof v === "number" && isFinite(v) ? v : 0; }
  function fmtBytes(b) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], v = num(b), u = 0;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return u === 0 ? v + " B" : v.toFixed(2) + " " + units[u];
  }
  function fmtNs(ns) {
    var v = num(ns);
    if (v >= 1e9) return (v / 1e9).toFixed(v >= 1e10 ? 1 : 2) + " s";
    if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 1 : 2) + " ms";
    if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 1 : 2) + " µs";
    return v + " ns";
  }
  function fmtNum(v, digits) {
    if (typeof v !== "number") return v === undefined || v === null ? "" : String(v);
    return Number.isInteger(v) ? v.toLocaleString("en-US") : v.toFixed(digits === undefined ? 2 : digits);
  }
  function section(title, id) {
    var s = el("section");
    if (id) s.id = id;
    s.appendChild(el("h2", title));
    root.appendChild(s);
    return s;
  }
  function table(parent, headers, rows, cls) {
    var t = el("table", null, cls);
    var head = el("tr");
    headers.forEach(function (h) { head.appendChild(el("th", h)); });
    t.appendChild(el("thead")).appendChild(head);
    var body = t.appendChild(el("tbody"));
    rows.forEach(function (r) {
      var tr = el("tr");
      r.forEach(function (c) {
        if (c && typeof c === "object" && c.text !== undefined) {
          tr.appendChild(el("td", c.text, c.cls));
        } else {
          tr.appendChild(el("td", c));
        }
      });
      body.appendChild(tr);
    });
    parent.appendChild(t);
    return t;
  }
  function keyValues(parent, pairs) {
    var dl = el("dl", null, "kv");
    pairs.forEach(function (p) {
      dl.appendChild(el("dt", p[0]));
      dl.appendChild(el("dd", p[1]));
    });
    parent.appendChild(dl);
  }
  // Runs one part of the page; a part that fails is reported, the others
  // are still drawn.
  function part(name, draw) {
    try { draw(); } catch (e) { console.error(name + ": " + (e && e.stack ? e.stack : e)); }
  }

  // A round step for about `n` ticks over [0, max].
  function niceStep(max, n) {
    var raw = max / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  }

  // A line chart: series of [x, y] points over x in [0, max x], y from 0.
  function lineChart(parent, id, title, series, fmtY, xLabel) {
    var W = 1000, H = 280, L = 80, R = 20, T = 16, B = 44;
    var box = el("figure", null, "chart");
    box.appendChild(el("figcaption", title));
    var svg = svgEl("svg", { id: id, viewBox: "0 0 " + W + " " + H, role: "img" });
    svg.setAttribute("aria-label", title);
    var xmax = 1, ymax = 0;
    series.forEach(function (s) {
      s.points.forEach(function (p) { xmax = Math.max(xmax, p[0]); ymax = Math.max(ymax, p[1]); });
    });
    if (ymax <= 0) ymax = 1;
    var ystep = niceStep(ymax, 5);
    ymax = Math.ceil(ymax / ystep) * ystep;
    var sx = function (x) { return L + (x / xmax) * (W - L - R); };
    var sy = function (y) { return H - B - (y / ymax) * (H - T - B); };
    for (var y = 0; y <= ymax + ystep / 2; y += ystep) {
      svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: sy(y), y2: sy(y), "class": "grid" }));
      var label = svgEl("text", { x: L - 6, y: sy(y) + 4, "text-anchor": "end", "class": "tick" });
      label.textContent = fmtY(y);
      svg.appendChild(label);
    }
    var xstep = Math.max(1, niceStep(xmax, 10));
    for (var x = 0; x <= xmax; x += xstep) {
      var xl = svgEl("text", { x: sx(x), y: H - B + 16, "text-anchor": "middle", "class": "tick" });
      xl.textContent = fmtNum(Math.round(x));
      svg.appendChild(xl);
    }
    var xt = svgEl("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", "class": "axis" });
    xt.textContent = xLabel;
    svg.appendChild(xt);
    svg.appendChild(svgEl("line", { x1: L, x2: L, y1: T, y2: H - B, "class": "axis-line" }));
    svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, "class": "axis-line" }));
    var drawn = [];
    var legend = el("div", null, "legend");
    series.forEach(function (s, i) {
      var d = s.points.map(function (p, j) {
        return (j === 0 ? "M" : "L") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1);
      }).join(" ");
      var path = svgEl("path", { d: d || "M0 0", "class": "series s" + i, "data-points": s.points.length });
      svg.appendChild(path);
      s.points.forEach(function (p) {
        svg.appendChild(svgEl("circle", { cx: sx(p[0]), cy: sy(p[1]), r: s.points.length > 60 ? 1.5 : 3, "class": "dot s" + i }));
      });
      drawn.push(s.points.length);
      var key = el("span", s.name, "key s" + i);
      legend.appendChild(key);
    });
    svg.setAttribute("data-points", drawn.join(","));
    box.appendChild(svg);
    box.appendChild(legend);
    parent.appendChild(box);
  }

  // A bar chart of histogram buckets ({leNs, count}), one bar per bucket.
  function histogramChart(parent, id, title, buckets) {
    var W = 1000, H = 260, L = 70, R = 20, T = 16, B = 60;
    var box = el("figure", null, "chart");
    box.appendChild(el("figcaption", title));
    var svg = svgEl("svg", { id: id, viewBox: "0 0 " + W + " " + H, role: "img" });
    svg.setAttribute("aria-label", title);
    var max = 1;
    buckets.forEach(function (b) { max = Math.max(max, num(b.count)); });
    var ystep = niceStep(max, 4);
    var ymax = Math.ceil(max / ystep) * ystep;
    var sy = function (y) { return H - B - (y / ymax) * (H - T - B); };
    for (var y = 0; y <= ymax + ystep / 2; y += ystep) {
      svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: sy(y), y2: sy(y), "class": "grid" }));
      var label = svgEl("text", { x: L - 6, y: sy(y) + 4, "text-anchor": "end", "class": "tick" });
      label.textContent = fmtNum(Math.round(y));
      svg.appendChild(label);
    }
    var slot = (W - L - R) / Math.max(1, buckets.length);
    var every = Math.max(1, Math.ceil(buckets.length / 12));
    buckets.forEach(function (b, i) {
      var x = L + i * slot, h = sy(0) - sy(num(b.count));
      var rect = svgEl("rect", { x: x + slot * 0.1, y: sy(num(b.count)), width: slot * 0.8, height: Math.max(h, 1), "class": "bar" });
      var tip = svgEl("title");
      tip.textContent = "≤ " + fmtNs(b.leNs) + ": " + fmtNum(num(b.count));
      rect.appendChild(tip);
      svg.appendChild(rect);
      if (i % every === 0) {
        var t = svgEl("text", { x: x + slot / 2, y: H - B + 16, "text-anchor": "middle", "class": "tick" });
        t.textContent = "≤" + fmtNs(b.leNs);
        svg.appendChild(t);
      }
    });
    var xt = svgEl("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle", "class": "axis" });
    xt.textContent = "upper bound of each bucket (log-spaced)";
    svg.appendChild(xt);
    svg.setAttribute("data-bars", buckets.length);
    box.appendChild(svg);
    parent.appendChild(box);
  }

  var mode = typeof summary.mode === "string" ? summary.mode : "play";
  var timeline = Array.isArray(summary.timeline) ? summary.timeline : [];
  var lagged = mode === "simulate";

  part("header", function () {
    var h = el("header");
    h.appendChild(el("h1", "walplayer report"));
    var what = mode + (summary.runId ? " run " + summary.runId : " run");
    h.appendChild(el("p", what, "subtitle"));
    root.appendChild(h);
  });

  part("configuration", function () {
    var s = section("Run configuration", "configuration");
    var known = ["mode", "runId", "address", "cluster", "jobs", "jobsPerAgent", "blockSizeKib",
      "clustersPerAgent", "interrupted", "startSkewNs", "filesNotStarted", "filesUnreported"];
    var totalsKeys = ["filesOk", "filesFailed", "filesSkipped", "filesVerified", "bytes",
      "wallSeconds", "mibPerSecond", "filesPerSecond", "clusters", "segmentsAcked",
      "segmentsUnacknowledged", "producedBytes", "sentBytes", "ackedBytes", "ackRate",
      "backlogMaxBytes", "errorsTotal", "sloPass"];
    var pairs = [];
    known.forEach(function (k) {
      if (summary[k] === undefined) return;
      pairs.push([k, k === "startSkewNs" ? fmtNs(summary[k]) : fmtNum(summary[k])]);
    });
    // Settings a newer walplayer adds are shown as they are.
    Object.keys(summary).forEach(function (k) {
      var v = summary[k];
      if (known.indexOf(k) >= 0 || totalsKeys.indexOf(k) >= 0) return;
      if (v === null || typeof v === "object") return;
      pairs.push([k, fmtNum(v)]);
    });
    keyValues(s, pairs);
  });

  part("totals", function () {
    var s = section("Totals", "totals");
    var names = ["minNs", "meanNs", "p50Ns", "p90Ns", "p99Ns", "p999Ns", "maxNs"];
    var heads = names.map(function (n) { return n.replace(/Ns$/, ""); });
    var row = function (label, l) {
      return [label].concat(names.map(function (n) { return fmtNs((l || {})[n]); }));
    };
    if (lagged) {
      keyValues(s, [
        ["clusters", fmtNum(num(summary.clusters))],
        ["segments acknowledged", fmtNum(num(summary.segmentsAcked))],
        ["whole segments never acknowledged", fmtNum(num(summary.segmentsUnacknowledged))],
        ["WAL produced", fmtBytes(summary.producedBytes)],
        ["WAL acknowledged", fmtBytes(summary.ackedBytes)],
        ["acknowledged / produced", fmtNum(num(summary.ackRate), 4)],
        ["largest backlog of a cluster", fmtBytes(summary.backlogMaxBytes)],
        ["failed Put attempts", fmtNum(num(summary.errorsTotal))],
        ["wall time", fmtNum(num(summary.wallSeconds)) + " s"]
      ]);
      table(s, [""].concat(heads), [
        row("segment lag", summary.lag),
        row("time to first block", summary.ttfb),
        row("schedule error", summary.scheduleError)
      ]);
      return;
    }
    keyValues(s, [
      ["files stored", fmtNum(num(summary.filesOk))],
      ["files failed", fmtNum(num(summary.filesFailed))],
      ["files skipped", fmtNum(num(summary.filesSkipped))],
      ["files verified", fmtNum(num(summary.filesVerified))],
      ["bytes stored", fmtBytes(summary.bytes)],
      ["wall time", fmtNum(num(summary.wallSeconds)) + " s"],
      ["throughput", fmtNum(num(summary.mibPerSecond), 1) + " MiB/s"],
      ["files per second", fmtNum(num(summary.filesPerSecond), 1)]
    ]);
    table(s, ["time per file"].concat(heads), [row("all files", summary.latency)]);
  });

  part("workload", function () {
    var w = summary.workload;
    if (!w || typeof w !== "object") return;
    var s = section("Workload", "workload");
    keyValues(s, Object.keys(w).map(function (k) {
      var v = w[k];
      return [k, Array.isArray(v) ? v.join(", ") : fmtNum(v)];
    }));
  });

  part("search", function () {
    var search = summary.search;
    if (!search || !Array.isArray(search.steps)) return;
    var s = section("Capacity search", "search");
    s.appendChild(el("p", search.maxClusters === null || search.maxClusters === undefined
      ? "No step met every SLO."
      : "The largest cluster count that met every SLO: " + fmtNum(search.maxClusters) + ".", "note"));
    table(s, ["clusters", "produced MiB/s", "acknowledged MiB/s", "lag p50", "lag p99", "backlog max", "errors", "result"],
      search.steps.map(function (r) {
        return [fmtNum(num(r.clusters)), fmtNum(num(r.producedMibPerSecond), 2), fmtNum(num(r.ackedMibPerSecond), 2),
          fmtNs(num(r.lagP50Ms) * 1e6), fmtNs(num(r.lagP99Ms) * 1e6), fmtBytes(r.backlogMaxBytes),
          fmtNum(num(r.errors)), { text: r.pass ? "pass" : "FAIL", cls: r.pass ? "pass" : "fail" }];
      }), "search");
  });

  part("slos", function () {
    if (!Array.isArray(summary.slos) || summary.slos.length === 0) return;
    var s = section("Service level objectives", "slos");
    table(s, ["objective", "measured", "result"], summary.slos.map(function (o) {
      return [o.expr, o.measured, { text: o.pass ? "pass" : "FAIL", cls: o.pass ? "pass" : "fail" }];
    }), "slos");
  });

  part("throughput", function () {
    var s = section("Throughput over time", "throughput");
    var series = [
      { name: "sent", points: timeline.map(function (p) { return [num(p.t), num(p.sentBytes) / MIB]; }) },
      { name: "acknowledged", points: timeline.map(function (p) { return [num(p.t), num(p.ackedBytes) / MIB]; }) }
    ];
    if (timeline.some(function (p) { return p.producedBytes !== undefined; })) {
      series.push({ name: "produced", points: timeline.map(function (p) { return [num(p.t), num(p.producedBytes) / MIB]; }) });
    }
    lineChart(s, "chart-throughput", "MiB/s, each second of the run", series,
      function (v) { return fmtNum(Math.round(v * 10) / 10, 1); }, "seconds since the start");
    if (timeline.length === 0) {
      s.appendChild(el("p", "This summary has no timeline.", "note"));
    } else if (mode === "distributed") {
      s.appendChild(el("p", "The coordinator sees each file when it finishes: sent is the bytes acknowledged that second.", "note"));
    }
  });

  part("latency", function () {
    var what = lagged ? "Lag" : "Latency";
    var s = section(what + " over time", "latency");
    var timed = timeline.filter(function (p) { return typeof p.p50Ns === "number"; });
    lineChart(s, "chart-latency",
      (lagged ? "segment lag of the segments acknowledged" : "time per file of the files finished") + " each second", [
        { name: "p50", points: timed.map(function (p) { return [num(p.t), num(p.p50Ns)]; }) },
        { name: "p99", points: timed.map(function (p) { return [num(p.t), num(p.p99Ns)]; }) }
      ], fmtNs, "seconds since the start");
  });

  part("histograms", function () {
    var s = section("Histograms", "histograms");
    if (!lagged || Array.isArray(summary.latencyHistogram)) {
      var lat = Array.isArray(summary.latencyHistogram) ? summary.latencyHistogram : [];
      histogramChart(s, "chart-latency-histogram", "time per file: files per bucket", lat);
    }
    if (Array.isArray(summary.lagHistogram)) {
      histogramChart(s, "chart-lag-histogram", "segment lag: segments per bucket", summary.lagHistogram);
    }
  });

  part("agents", function () {
    var agents = summary.agents || (summary.distributed || {}).agents;
    if (!Array.isArray(agents)) return;
    var s = section("Agents", "agents");
    table(s, ["agent", "state", lagged ? "segments" : "stored", "failed", "unreported", "bytes", "MiB/s", "p50", "p99", "protocol violations"],
      agents.map(function (a) {
        var l = a.latency || {};
        return [a.name, { text: a.state, cls: a.state === "finished" ? "" : "fail" }, fmtNum(num(a.filesOk)),
          fmtNum(num(a.filesFailed)), fmtNum(num(a.filesUnreported)), fmtBytes(a.bytes),
          fmtNum(num(a.mibPerSecond), 1), a.latency ? fmtNs(l.p50Ns) : "", a.latency ? fmtNs(l.p99Ns) : "",
          fmtNum(num(a.protocolViolations))];
      }));
  });

  part("clusters", function () {
    if (!Array.isArray(summary.clusters) || summary.clusters.length === 0) return;
    var worst = summary.clusters.slice().sort(function (a, b) {
      var f = num(b.filesFailed) - num(a.filesFailed);
      return f !== 0 ? f : num((b.latency || {}).p99Ns) - num((a.latency || {}).p99Ns);
    }).slice(0, 20);
    var s = section("Worst clusters", "clusters");
    s.appendChild(el("p", "The " + worst.length + " of " + summary.clusters.length +
      " clusters with the most failures, then the highest p99.", "note"));
    table(s, ["cluster", "agent", "stored", "failed", "MiB/s", "p50", "p99", "p99.9"], worst.map(function (c) {
      var l = c.latency || {};
      return [c.cluster, c.agent, fmtNum(num(c.filesOk)), { text: fmtNum(num(c.filesFailed)), cls: num(c.filesFailed) > 0 ? "fail" : "" },
        fmtNum(num(c.mibPerSecond), 1), c.latency ? fmtNs(l.p50Ns) : "", c.latency ? fmtNs(l.p99Ns) : "",
        c.latency ? fmtNs(l.p999Ns) : ""];
    }));
  });

  part("simulated-clusters", function () {
    if (!lagged || !Array.isArray(summary.worstClusters) || summary.worstClusters.length === 0) return;
    var s = section("Worst clusters", "clusters");
    s.appendChild(el("p", "The " + summary.worstClusters.length + " of " + fmtNum(num(summary.clusters)) +
      " clusters with the highest lag p99, then the largest backlog; every cluster is in the summary's clusterStats.", "note"));
    table(s, ["cluster", "WAL rate", "segments", "lag p50", "lag p99", "lag max", "backlog max", "errors"],
      summary.worstClusters.map(function (c) {
        return [c.name, fmtBytes(c.rateBytesPerSecond) + "/s", fmtNum(num(c.segments)),
          fmtNs(num(c.lagP50Ms) * 1e6), fmtNs(num(c.lagP99Ms) * 1e6), fmtNs(num(c.lagMaxMs) * 1e6),
          fmtBytes(c.backlogMaxBytes), { text: fmtNum(num(c.errors)), cls: num(c.errors) > 0 ? "fail" : "" }];
      }));
  });

  part("errors", function () {
    var s = section("Errors by kind", "errors");
    var errors = Array.isArray(summary.errors) ? summary.errors : [];
    if (errors.length === 0) {
      s.appendChild(el("p", lagged ? "No Put failed." : "No file failed.", "note"));
      return;
    }
    table(s, ["kind", "message", lagged ? "Put attempts" : "files"], errors.map(function (e) {
      return [e.kind, e.message, fmtNum(num(e.count))];
    }), "errors");
  });

  document.body.setAttribute("data-rendered", "true");
})();
