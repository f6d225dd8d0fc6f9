// flex web UI: live updates from the watch stream, copy buttons. No inline script anywhere (CSP); every
// piece of HTML inserted here comes from the server's own autoescaped templates, never from event data.
"use strict";

(function () {
  function fetchHtml(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } }).then(function (r) {
      if (r.status === 401) { window.location.reload(); throw new Error("signed out"); }
      return r.text();
    });
  }

  function fragment(html) {
    var t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content;
  }

  // Keyed refresh: one request per id in flight; an event arriving meanwhile refreshes once more afterwards.
  function refresher(load) {
    var busy = {}, again = {};
    return function run(id) {
      if (busy[id]) { again[id] = true; return; }
      busy[id] = true;
      load(id).catch(function () {}).then(function () {
        busy[id] = false;
        if (again[id]) { again[id] = false; run(id); }
      });
    };
  }

  function watch(url, onEvent, state) {
    var source = new EventSource(url, { withCredentials: true });
    ["ADDED", "MODIFIED", "DELETED"].forEach(function (type) {
      source.addEventListener(type, function (ev) {
        var data;
        try { data = JSON.parse(ev.data); } catch (e) { return; }
        onEvent(type, data.object || {});
      });
    });
    source.addEventListener("ERROR", function () { source.close(); window.location.reload(); });
    source.onopen = function () { if (state) { state.textContent = "live"; state.className = "live"; } };
    source.onerror = function () { if (state) { state.textContent = "reconnecting…"; state.className = "live off"; } };
    return source;
  }

  function liveList(table) {
    var tbody = table.tBodies[0], filters = table.dataset.filters, count = document.getElementById("env-count");
    var state = document.getElementById("live-state");
    function recount() {
      if (count) { count.textContent = String(tbody.rows.length); }
      var empty = document.getElementById("empty");
      if (empty && tbody.rows.length) { empty.remove(); }
    }
    var refresh = refresher(function (id) {
      return fetchHtml(table.dataset.row + encodeURIComponent(id) + (filters ? "?" + filters : "")).then(function (html) {
        var old = document.getElementById("row-" + id);
        if (!html.trim()) { if (old) { old.remove(); } recount(); return; }
        var row = fragment(html).firstElementChild;
        if (old) { old.replaceWith(row); } else { tbody.appendChild(row); }
        recount();
      });
    });
    watch(table.dataset.watch, function (type, obj) {
      var id = obj.metadata && obj.metadata.id;
      if (!id) { return; }
      if (type === "DELETED") {
        var old = document.getElementById("row-" + id);
        if (old) { old.remove(); recount(); }
        return;
      }
      refresh(id);
    }, state);
  }

  function liveDetail(box) {
    var refresh = refresher(function () {
      return fetchHtml(box.dataset.live).then(function (html) {
        var focused = document.activeElement && document.activeElement.closest("form");
        var action = focused ? focused.getAttribute("action") : null;
        box.replaceChildren(fragment(html));
        if (window.htmx) { window.htmx.process(box); }
        if (action) {
          var again = box.querySelector('form[action="' + CSS.escape(action) + '"] button');
          if (again) { again.focus(); }
        }
      });
    });
    // the backups list changes with the environment (a request is a new generation, a report is its status)
    var card = document.getElementById("backups-card");
    var backups = refresher(function () {
      return fetchHtml(card.dataset.live).then(function (html) {
        var old = document.getElementById("backups");
        if (old) { old.replaceWith(fragment(html)); }
        if (window.htmx) { window.htmx.process(card); }
      });
    });
    watch(box.dataset.watch, function (type, obj) {
      if (obj.metadata && obj.metadata.id === box.dataset.env) {
        refresh(box.dataset.env);
        if (card) { backups(box.dataset.env); }
      }
    }, null);
  }

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest && ev.target.closest("button[data-copy]");
    if (!button) { return; }
    var text = document.getElementById(button.dataset.copy).textContent;
    var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
    } else {
      var range = document.createRange();
      range.selectNodeContents(document.getElementById(button.dataset.copy));
      var sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
      button.textContent = "Selected: press Ctrl+C";
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("envs");
    if (table && table.dataset.watch) { liveList(table); }
    var box = document.getElementById("env-live");
    if (box && box.dataset.watch) { liveDetail(box); }
  });
})();
