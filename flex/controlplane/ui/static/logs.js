// Live logs on an environment's page: the chosen source (build, hooks, container) followed over a streaming
// fetch with the session cookie; only the last N lines stay in the page. Lines are text, never markup.
"use strict";

(function () {
  function start(card) {
    var out = document.getElementById("logs");
    var state = document.getElementById("logs-state");
    var select = document.getElementById("logs-source");
    var max = parseInt(card.dataset.maxLines, 10) || 1000;
    var controller = null, retry = null, generation = 0;

    function say(text) { state.textContent = text; }

    function trim() {
      var extra = out.childNodes.length - max;
      for (var i = 0; i < extra; i++) { out.removeChild(out.firstChild); }
    }

    var tail = null;  // the line still being written: the next chunk continues it

    function append(text) {
      var stick = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      var lines = text.split("\n");
      for (var i = 0; i < lines.length; i++) {
        if (!tail) { tail = document.createElement("span"); out.appendChild(tail); }
        tail.textContent += lines[i];
        if (i < lines.length - 1) { tail.textContent += "\n"; tail = null; }
      }
      trim();
      if (stick) { out.scrollTop = out.scrollHeight; }
    }

    function follow() {
      var mine = ++generation;
      if (controller) { controller.abort(); }
      clearTimeout(retry);
      controller = new AbortController();
      out.replaceChildren();
      tail = null;
      card.dataset.source = select.value;
      say("connecting…");
      var decoder = new TextDecoder();
      fetch(card.dataset.logs + "?source=" + encodeURIComponent(select.value),
            { credentials: "same-origin", signal: controller.signal, headers: { "Accept": "text/plain" } })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); throw new Error("signed out"); }
          if (!r.ok) {
            return r.text().then(function (text) {
              var err = new Error(text || ("error " + r.status));
              err.final = r.status === 403 || r.status === 404;  // trying again will not change these
              throw err;
            });
          }
          say("live");
          card.dataset.state = "live";
          var reader = r.body.getReader();
          function pump() {
            return reader.read().then(function (chunk) {
              if (chunk.done || mine !== generation) { return; }
              append(decoder.decode(chunk.value, { stream: true }));
              return pump();
            });
          }
          return pump().then(function () { throw new Error("the log stream ended"); });
        })
        .catch(function (err) {
          if (mine !== generation || err.name === "AbortError") { return; }
          if (err.final) { card.dataset.state = "refused"; say(String(err.message)); return; }
          card.dataset.state = "waiting";
          say(String(err.message || err) + " — trying again in 3 s");
          retry = setTimeout(follow, 3000);
        });
    }

    select.addEventListener("change", follow);
    follow();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var card = document.getElementById("logs-card");
    if (card) { start(card); }
  });
})();
