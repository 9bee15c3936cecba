/* Dashboard: live figures, the chart, caps and recent calls, polled from the JSON API
   (/api/usage/summary, /api/usage/caps/status, /api/usage/records) every few seconds. */
(function () {
  "use strict";
  var EVERY_MS = 5000;
  var G, stats, chart = null, range = "today", latest = {};

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function isoDay(d) { return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()); }

  function ranges() {
    var now = new Date();
    var first = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
    var last = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 0));
    return {
      today: { from: isoDay(now), to: isoDay(now), group_by: "hour" },
      month: { from: isoDay(first), to: isoDay(last), group_by: "day" }
    };
  }

  function summaryUrl(q) {
    return stats.getAttribute("data-summary-url") + "?from=" + q.from + "&to=" + q.to + "&group_by=" + q.group_by;
  }

  function capTokens(t) { return t.input_tokens + t.output_tokens + t.cache_write_tokens; }

  function setLive(name, text) {
    document.querySelectorAll('[data-live="' + name + '"]').forEach(function (node) {
      if (node.textContent !== text) {
        node.textContent = text;
        if (node.classList.contains("stat-value")) {
          node.classList.remove("flash");
          void node.offsetWidth;  // restart the animation
          node.classList.add("flash");
        }
      }
    });
  }

  function showTotals(prefix, totals) {
    setLive(prefix + ".cost", G.usd(totals.cost_usd));
    setLive(prefix + ".tokens", G.intFmt.format(capTokens(totals)));
    setLive(prefix + ".cache_read_tokens", G.intFmt.format(totals.cache_read_tokens));
    setLive(prefix + ".requests", G.intFmt.format(totals.requests));
    setLive(prefix + ".unknown_cost_requests", String(totals.unknown_cost_requests));
  }

  // Every hour of the day / day of the month, zero where no call was made.
  function series(summary, which) {
    var byStart = {};
    summary.by_period.forEach(function (p) { byStart[new Date(p.period_start).getTime()] = p; });
    var labels = [], cost = [], tokens = [];
    var start = new Date(summary.from), end = new Date(summary.to);
    for (var t = start.getTime(); t < end.getTime();) {
      var d = new Date(t), p = byStart[t];
      labels.push(which === "today" ? pad(d.getUTCHours()) + ":00" : d.getUTCDate() + " " + d.toLocaleString("en-US", { month: "short", timeZone: "UTC" }));
      cost.push(p ? Number(p.cost_usd) : 0);
      tokens.push(p ? capTokens(p) : 0);
      t += which === "today" ? 3600e3 : 86400e3;
    }
    return { labels: labels, cost: cost, tokens: tokens };
  }

  // Axis ticks: enough digits to tell small amounts apart.
  function usdTick(v) {
    if (v === 0) return "$0";
    return Math.abs(v) < 0.01 ? "$" + Number(v.toPrecision(2)) : G.usd(v);
  }

  function drawChart() {
    var summary = latest[range];
    if (!summary || !window.Chart) return;
    var s = series(summary, range);
    var empty = summary.by_period.length === 0;
    document.getElementById("chart-empty").hidden = !empty;
    if (chart) {
      chart.data.labels = s.labels;
      chart.data.datasets[0].data = s.cost;
      chart.data.datasets[1].data = s.tokens;
      chart.update("none");
      return;
    }
    var canvas = document.getElementById("usage-chart");
    chart = new window.Chart(canvas, {
      data: {
        labels: s.labels,
        datasets: [
          { type: "bar", label: "Cost (USD)", data: s.cost, yAxisID: "cost", backgroundColor: "rgba(79, 70, 229, .75)", borderRadius: 3, order: 2 },
          { type: "line", label: "Tokens", data: s.tokens, yAxisID: "tokens", borderColor: "#0ea5a4", backgroundColor: "#0ea5a4", pointRadius: 0, pointHitRadius: 8, cubicInterpolationMode: "monotone", borderWidth: 2, order: 1 }
        ]
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 12, usePointStyle: true } },
          tooltip: { callbacks: { label: function (ctx) {
            return ctx.dataset.yAxisID === "cost" ? " Cost " + G.usd(ctx.parsed.y) : " Tokens " + G.intFmt.format(ctx.parsed.y);
          } } }
        },
        scales: {
          x: { grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
          cost: { position: "left", beginAtZero: true, ticks: { callback: usdTick }, grid: { color: "#eef0f5" } },
          tokens: { position: "right", beginAtZero: true, grid: { display: false }, ticks: { callback: function (v) { return G.intFmt.format(v); } } }
        }
      }
    });
  }

  function showModels(summary) {
    var body = document.getElementById("by-model");
    var rows = summary.by_model.slice().sort(function (a, b) { return Number(b.cost_usd || 0) - Number(a.cost_usd || 0); });
    var total = rows.reduce(function (sum, r) { return sum + Number(r.cost_usd || 0); }, 0);
    body.textContent = "";
    if (!rows.length) {
      body.appendChild(G.el("tr", { "class": "empty" }, [G.el("td", { colspan: "5", text: "No calls this month yet." })]));
      return;
    }
    rows.forEach(function (r) {
      var share = total > 0 ? Number(r.cost_usd || 0) / total * 100 : 0;
      var bar = G.el("progress", { "class": "bar share", max: "100", value: String(share), "aria-label": r.model + ": " + Math.round(share) + "% of cost" });
      body.appendChild(G.el("tr", {}, [
        G.el("td", {}, [G.el("code", { text: r.model })]),
        G.el("td", { "class": "num", text: G.intFmt.format(r.requests) }),
        G.el("td", { "class": "num", text: G.intFmt.format(capTokens(r)) }),
        G.el("td", { "class": "num", text: r.unknown_cost_requests === r.requests ? "unknown" : G.usd(r.cost_usd) }),
        G.el("td", { "class": "bar-col" }, [bar])
      ]));
    });
  }

  function showRecent(page) {
    var body = document.getElementById("recent-calls");
    body.textContent = "";
    if (!page.results.length) {
      body.appendChild(G.el("tr", { "class": "empty" }, [G.el("td", { colspan: "7", text: "No calls yet. Make one with an API key and it shows up here within seconds." })]));
      return;
    }
    page.results.forEach(function (r) {
      var ok = r.upstream_status < 300;
      body.appendChild(G.el("tr", {}, [
        G.el("td", { "class": "nowrap", text: r.started_at.replace("T", " ").slice(0, 19) }),
        G.el("td", {}, [G.el("code", { text: r.model_id })]),
        G.el("td", {}, [r.api_key_hint ? G.el("span", { "class": "muted", text: r.api_key_hint }) : G.el("span", { "class": "muted", text: r.auth_kind })]),
        G.el("td", { "class": "num", text: G.intFmt.format(r.input_tokens) }),
        G.el("td", { "class": "num", text: G.intFmt.format(r.output_tokens) }),
        G.el("td", { "class": "num", text: G.usd(r.cost_usd) }),
        G.el("td", {}, [G.el("span", { "class": "badge " + (ok ? "badge-ok" : "badge-err"), text: String(r.upstream_status) })])
      ]));
    });
  }

  function capLine(row) {
    var parts = [], used = row.current_usage, lim = row.limits;
    if (lim.max_requests !== null) parts.push(G.intFmt.format(used.requests) + " / " + G.intFmt.format(lim.max_requests) + " req");
    if (lim.max_tokens !== null) parts.push(G.intFmt.format(used.tokens) + " / " + G.intFmt.format(lim.max_tokens) + " tok");
    if (lim.max_cost_cents !== null) parts.push(G.usd(Number(used.cost_cents) / 100) + " / " + G.usd(lim.max_cost_cents / 100));
    return parts.join(" · ");
  }

  function showCaps(rows) {
    // Who set the cap: the user's own carry no label.
    var SOURCE_LABELS = { admin: " (admin)", policy: " (policy)", team: " (team)" };
    var box = document.getElementById("caps-mini");
    box.textContent = "";
    if (!rows.length) {
      box.appendChild(G.el("p", { "class": "muted", text: "No caps apply to you." }));
      return;
    }
    rows.forEach(function (row) {
      var pct = row.percentage_used;
      var state = row.is_exceeded ? "exceeded" : pct >= 80 ? "warning" : "ok";
      var title = row.cap_type.charAt(0).toUpperCase() + row.cap_type.slice(1) + (SOURCE_LABELS[row.set_by] || "");
      var reset = new Date(row.reset_time);
      var note = row.is_exceeded && row.enforced ? "Reached: calls refused until " + G.utcTime(reset) : "Resets at " + G.utcTime(reset);
      box.appendChild(G.el("div", { "class": "meter meter-" + state, "data-cap-id": String(row.id) }, [
        G.el("div", { "class": "mini-head" }, [G.el("strong", { text: title + " cap" }), G.el("span", { "class": "meter-percent", text: pct + "%" })]),
        G.el("p", { "class": "mini-figures", text: capLine(row) }),
        G.el("progress", { "class": "bar", max: "100", value: String(Math.min(100, pct)), "aria-label": title + " cap: " + pct + "% used" }),
        G.el("p", { "class": "mini-reset" }, [note + " (", G.el("span", { "data-countdown": row.reset_time, text: "in " + G.duration(reset - Date.now()) }), ")"])
      ]));
    });
  }

  function refresh() {
    var r = ranges();
    var live = document.getElementById("live-status");
    return Promise.all([
      G.getJSON(summaryUrl(r.today)),
      G.getJSON(summaryUrl(r.month)),
      G.getJSON(stats.getAttribute("data-records-url") + "?limit=10"),
      G.getJSON(stats.getAttribute("data-caps-url")).catch(function () { return null; })
    ]).then(function (results) {
      latest.today = results[0];
      latest.month = results[1];
      showTotals("today", results[0].totals);
      showTotals("month", results[1].totals);
      document.getElementById("unknown-cost").hidden = !results[1].totals.unknown_cost_requests;
      drawChart();
      showModels(results[1]);
      showRecent(results[2]);
      if (results[3]) showCaps(results[3].caps || []);
      live.textContent = "Live · updated " + new Date().toLocaleTimeString();
      live.classList.remove("stale");
    }).catch(function (err) {
      live.textContent = "Reconnecting…";
      live.classList.add("stale");
      throw err;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    G = window.Gateway;
    stats = document.getElementById("stats");
    if (!stats || !G) return;
    document.querySelectorAll(".seg[data-range]").forEach(function (button) {
      button.addEventListener("click", function () {
        range = button.getAttribute("data-range");
        document.querySelectorAll(".seg[data-range]").forEach(function (b) { b.setAttribute("aria-pressed", b === button ? "true" : "false"); });
        drawChart();
      });
    });
    refresh().catch(function () {});
    G.poll(refresh, EVERY_MS);
  });
})();
