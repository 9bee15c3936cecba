/* Caps page: keep bars, percentages and states current from GET /api/usage/caps/status. */
(function () {
  "use strict";
  var WARNING = 80;

  function meterState(percent) {
    if (percent >= 100) return "exceeded";
    return percent >= WARNING ? "warning" : "ok";
  }

  // Per limit kind: [used, limit, used text, limit text].
  function figures(row, kind) {
    var G = window.Gateway, used = row.current_usage, limits = row.limits;
    if (kind === "requests") return [used.requests, limits.max_requests, G.intFmt.format(used.requests), G.intFmt.format(limits.max_requests)];
    if (kind === "tokens") return [used.tokens, limits.max_tokens, G.intFmt.format(used.tokens), G.intFmt.format(limits.max_tokens)];
    var cents = Number(used.cost_cents);
    return [cents, limits.max_cost_cents, G.usd(cents / 100), G.usd(limits.max_cost_cents / 100)];
  }

  function formTouched() {
    return Array.prototype.some.call(document.querySelectorAll("form input, form select"), function (input) {
      if (input.type === "hidden") return false;
      if (input.type === "checkbox") return input.checked !== input.defaultChecked;
      if (input.tagName === "SELECT") {
        var initial = Array.prototype.findIndex.call(input.options, function (o) { return o.defaultSelected; });
        return input.selectedIndex !== Math.max(0, initial);
      }
      return input.value !== input.defaultValue || input === document.activeElement;
    });
  }

  function update(status) {
    var changedState = false;
    (status.caps || []).forEach(function (row) {
      var card = document.querySelector('.cap-card[data-cap-id="' + row.id + '"]');
      if (!card) return;
      card.querySelectorAll(".meter").forEach(function (meter) {
        var f = figures(row, meter.getAttribute("data-kind"));
        if (f[1] === null || f[1] === undefined) return;
        var percent = f[0] / f[1] * 100;
        var state = meterState(percent);
        meter.className = "meter meter-" + state;
        meter.querySelector(".meter-used").textContent = f[2];
        var text = percent.toFixed(1) + "%";
        meter.querySelector(".meter-percent").textContent = text;
        var bar = meter.querySelector("progress");
        bar.value = Math.min(100, percent);
        bar.textContent = text;
        bar.setAttribute("aria-label", bar.getAttribute("aria-label").replace(/[\d.]+% used$/, text + " used"));
      });
      var state = row.is_exceeded ? "exceeded" : meterState(row.percentage_used);
      if (!card.classList.contains("state-" + state)) changedState = true;
    });
    // A card changed state (e.g. just exceeded): reload once to show its explanation.
    if (changedState && !formTouched()) window.location.reload();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var list = document.getElementById("caps-list");
    if (!list || !window.Gateway) return;
    var url = list.getAttribute("data-status-url");
    window.Gateway.poll(function () { return window.Gateway.getJSON(url).then(update); }, 5000);
  });
})();
