/* The admin overview's daily spend chart: data from the page's json_script element
   (no inline script: Content-Security-Policy script-src 'self'). */
(function () {
  "use strict";

  function usd(value) {
    var places = Math.abs(value) >= 1 || value === 0 ? 2 : 4;
    return "$" + value.toLocaleString("en-US", { minimumFractionDigits: places, maximumFractionDigits: places });
  }

  function draw() {
    var data = document.getElementById("overview-chart-data");
    var canvas = document.getElementById("overview-chart");
    if (!data || !canvas || !window.Chart) return;
    var points = JSON.parse(data.textContent);
    var style = getComputedStyle(document.documentElement);
    var accent = style.getPropertyValue("--primary").trim() || "#79aec8";
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: points.map(function (p) { return p.day.slice(5); }),
        datasets: [{ label: "Spend (USD)", data: points.map(function (p) { return Number(p.cost_usd); }), backgroundColor: accent, borderRadius: 3 }]
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: {
            title: function (items) { return points[items[0].dataIndex].day; },
            label: function (ctx) { var p = points[ctx.dataIndex]; return " " + usd(ctx.parsed.y) + " · " + p.requests + " calls"; }
          } }
        },
        scales: {
          x: { grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 8 } },
          y: { beginAtZero: true, ticks: { callback: function (v) { return usd(v); } } }
        }
      }
    });
    canvas.setAttribute("data-drawn", "true");
  }

  document.addEventListener("DOMContentLoaded", draw);
})();
