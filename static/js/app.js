/* Shared behaviour of every page: copy buttons, tabs, countdowns, number formats.
   No inline script anywhere (Content-Security-Policy: script-src 'self'). */
(function () {
  "use strict";

  var intFmt = new Intl.NumberFormat("en-US");

  function usd(value) {
    // value: a decimal string of dollars ("0.001234") or null.
    if (value === null || value === undefined) return "unknown";
    var n = Number(value);
    var places = Math.abs(n) >= 1 ? 2 : 4;
    return "$" + n.toLocaleString("en-US", { minimumFractionDigits: places, maximumFractionDigits: places });
  }

  function duration(ms) {
    if (ms <= 0) return "now";
    var s = Math.floor(ms / 1000);
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d > 0) return d + " d " + h + " h";
    if (h > 0) return h + " h " + m + " min";
    if (m > 0) return m + " min " + (s % 60) + " s";
    return (s % 60) + " s";
  }

  function utcTime(date) {
    return date.toISOString().slice(11, 16) + " UTC";
  }

  function refreshCountdowns(root) {
    (root || document).querySelectorAll("[data-countdown]").forEach(function (el) {
      var at = new Date(el.getAttribute("data-countdown"));
      if (isNaN(at)) return;
      el.textContent = "in " + duration(at - Date.now());
    });
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Fallback for plain-http hosts other than localhost.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } finally { document.body.removeChild(area); }
    return Promise.resolve();
  }

  function initCopy() {
    document.addEventListener("click", function (event) {
      var button = event.target.closest("[data-copy]");
      if (!button) return;
      var target = document.querySelector(button.getAttribute("data-copy"));
      if (!target) return;
      var text = "value" in target && target.tagName !== "CODE" && target.tagName !== "PRE" ? target.value : target.textContent;
      var label = button.textContent;
      copyText(text.trim()).then(function () {
        button.classList.add("copied");
        button.textContent = "Copied";
        setTimeout(function () { button.classList.remove("copied"); button.textContent = label; }, 1600);
      });
    });
  }

  function initTabs() {
    document.querySelectorAll("[data-tabs]").forEach(function (container) {
      var tabs = Array.prototype.slice.call(container.querySelectorAll('[role="tab"]'));
      function select(tab, focus) {
        tabs.forEach(function (t) {
          var on = t === tab;
          t.setAttribute("aria-selected", on ? "true" : "false");
          t.tabIndex = on ? 0 : -1;
          document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
        });
        if (focus) tab.focus();
      }
      tabs.forEach(function (tab, i) {
        tab.addEventListener("click", function () { select(tab, false); });
        tab.addEventListener("keydown", function (event) {
          var next = null;
          if (event.key === "ArrowRight") next = tabs[(i + 1) % tabs.length];
          if (event.key === "ArrowLeft") next = tabs[(i - 1 + tabs.length) % tabs.length];
          if (event.key === "Home") next = tabs[0];
          if (event.key === "End") next = tabs[tabs.length - 1];
          if (next) { event.preventDefault(); select(next, true); }
        });
      });
      select(tabs[0], false);
    });
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error(url + " answered " + r.status);
      return r.json();
    });
  }

  // Poll while the tab is visible; a failure marks the page stale until the next success.
  function poll(fn, everyMs) {
    var timer = null;
    function tick() {
      if (document.hidden) { timer = setTimeout(tick, everyMs); return; }
      Promise.resolve().then(fn).catch(function () {}).then(function () { timer = setTimeout(tick, everyMs); });
    }
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) { clearTimeout(timer); tick(); }
    });
    timer = setTimeout(tick, everyMs);
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }

  window.Gateway = {
    intFmt: intFmt, usd: usd, duration: duration, utcTime: utcTime, getJSON: getJSON,
    poll: poll, el: el, refreshCountdowns: refreshCountdowns
  };

  document.addEventListener("DOMContentLoaded", function () {
    initCopy();
    initTabs();
    refreshCountdowns();
    setInterval(refreshCountdowns, 1000);
  });
})();
