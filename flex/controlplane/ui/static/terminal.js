// The terminal on an environment's page: xterm.js over the exec WebSocket (docs/access.md's framing), opened
// with the browser's session cookie (the server checks Origin). No inline script (CSP).
"use strict";

(function () {
  var STDIN = 0, STDOUT = 1, STDERR = 2, STATUS = 3, RESIZE = 4;
  var enc = new TextEncoder();

  function frame(channel, bytes) {
    var out = new Uint8Array(bytes.length + 1);
    out[0] = channel;
    out.set(bytes, 1);
    return out;
  }

  // xterm.js writes its layout and colours into <style> elements, which our CSP (style-src 'self') blocks;
  // mirror each one into a constructed stylesheet, which the CSP allows (no 'unsafe-inline' for the page).
  function adoptStyles(root) {
    var mirrors = new Map();  // <style> element -> {sheet, text}
    function sync() {
      var added = false;
      root.querySelectorAll("style").forEach(function (el) {
        var m = mirrors.get(el);
        if (!m) { m = { sheet: new CSSStyleSheet(), text: null }; mirrors.set(el, m); added = true; }
        if (m.text !== el.textContent) { m.text = el.textContent; m.sheet.replaceSync(m.text || ""); }
      });
      if (added) {
        document.adoptedStyleSheets = Array.from(mirrors.values(), function (m) { return m.sheet; });
      }
    }
    new MutationObserver(function (records) {
      for (var i = 0; i < records.length; i++) {
        var t = records[i].target;
        var el = t.nodeType === 1 ? t : t.parentNode;
        if (el && (el.tagName === "STYLE" || records[i].addedNodes.length && el.querySelector("style"))) { sync(); return; }
      }
    }).observe(root, { subtree: true, childList: true, characterData: true });
    return sync;
  }

  function start(card) {
    var button = document.getElementById("term-open");
    var state = document.getElementById("term-state");
    var box = document.getElementById("terminal");
    var term = null, fit = null, ws = null, syncStyles = adoptStyles(box);

    function say(text, ended) {
      state.textContent = text;
      state.className = ended ? "term-ended" : "";
    }

    function sendSize() {
      box.dataset.cols = String(term.cols);
      box.dataset.rows = String(term.rows);
      if (ws && ws.readyState === WebSocket.OPEN) {
        ws.send(frame(RESIZE, enc.encode(JSON.stringify({ cols: term.cols, rows: term.rows }))));
      }
    }

    function ensureTerminal() {
      if (term) { term.reset(); return; }
      box.hidden = false;
      term = new window.Terminal({ cursorBlink: true, convertEol: false, scrollback: 5000,
                                   fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" });
      fit = new window.FitAddon.FitAddon();
      term.loadAddon(fit);
      term.open(box);
      syncStyles();
      fit.fit();
      term.onResize(sendSize);
      term.onData(function (data) {
        if (ws && ws.readyState === WebSocket.OPEN) { ws.send(frame(STDIN, enc.encode(data))); }
      });
      term.onBinary(function (data) {
        if (!ws || ws.readyState !== WebSocket.OPEN) { return; }
        var bytes = new Uint8Array(data.length);
        for (var i = 0; i < data.length; i++) { bytes[i] = data.charCodeAt(i) & 255; }
        ws.send(frame(STDIN, bytes));
      });
      new ResizeObserver(function () { if (!box.hidden) { fit.fit(); } }).observe(box);
    }

    function open() {
      // the status above is live: say why there is no shell to open rather than fail the handshake
      var phase = document.querySelector("#env-live .head .phase");
      if (phase && phase.textContent.trim() !== "running") {
        say("The environment is " + phase.textContent.trim() + ": a terminal opens once it is running " +
            "(see Status above; Start it if it is stopped).", true);
        return;
      }
      ensureTerminal();
      button.disabled = true;
      say("Connecting…", false);
      var scheme = location.protocol === "https:" ? "wss:" : "ws:";
      var sock = new WebSocket(scheme + "//" + location.host + card.dataset.exec);
      var status = null, opened = false;
      ws = sock;
      sock.binaryType = "arraybuffer";
      sock.onopen = function () {
        sock.send(JSON.stringify({ command: ["/bin/sh", "-c", "command -v bash >/dev/null && exec bash -l || exec sh -l"],
                                   tty: true, stdin: true, cols: term.cols, rows: term.rows }));
        box.dataset.cols = String(term.cols);
        box.dataset.rows = String(term.rows);
        say("Connected", false);
        opened = true;
        card.dataset.state = "open";
        term.focus();
      };
      sock.onmessage = function (ev) {
        if (typeof ev.data === "string") { return; }
        var data = new Uint8Array(ev.data);
        if (!data.length) { return; }
        if (data[0] === STDOUT || data[0] === STDERR) { term.write(data.subarray(1)); return; }
        if (data[0] === STATUS) {
          try { status = JSON.parse(new TextDecoder().decode(data.subarray(1))); } catch (e) { status = {}; }
        }
      };
      sock.onclose = function (ev) {
        if (ws !== sock) { return; }
        ws = null;
        button.disabled = false;
        button.textContent = "Open a new terminal";
        card.dataset.state = "closed";
        if (status && status.error) {
          say("Ended: " + status.error.message + (status.error.hint ? " (" + status.error.hint + ")" : ""), true);
        } else if (status && typeof status.exitCode === "number") {
          say("The shell exited with code " + status.exitCode + ".", true);
        } else if (!opened) {
          say("Could not connect. Is the environment running and its runner online (see Status above)? " +
              "Reload the page if you signed out.", true);
        } else {
          say("Connection closed (" + ev.code + "). Its runner may have restarted: open a new terminal.", true);
        }
        term.write("\r\n\x1b[2m[" + state.textContent + "]\x1b[0m\r\n");
      };
    }

    button.addEventListener("click", open);
    window.addEventListener("beforeunload", function () { if (ws) { ws.close(); } });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var card = document.getElementById("terminal-card");
    if (card && window.Terminal && window.FitAddon) { start(card); }
  });
})();
