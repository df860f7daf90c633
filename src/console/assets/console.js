// Switchboard console: live updates without a framework. Every page works
// without this script; with it, forms marked data-live post in the background
// and the page's main part is swapped for the answer, and the simulator asks
// every 2 s whether its bot reloaded.
(function () {
  "use strict";

  function swapMain(html, url, keepInput) {
    var typing = document.querySelector("form.send input[name=text]");
    var typed = keepInput && typing ? typing.value : "";
    var doc = new DOMParser().parseFromString(html, "text/html");
    var next = doc.getElementById("main");
    var main = document.getElementById("main");
    if (!next || !main) { window.location.href = url; return; }
    main.replaceWith(next);
    if (url && url !== window.location.href) { history.replaceState(null, "", url); }
    wire(next);
    var input = next.querySelector("form.send input[name=text]");
    if (input && typed) { input.value = typed; }
  }

  function scrollChat(root) {
    var lines = root.querySelector("#lines");
    if (lines) { lines.scrollTop = lines.scrollHeight; }
    var input = root.querySelector("form.send input[name=text]");
    if (input) { input.focus(); }
  }

  function live(form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var buttons = form.querySelectorAll("button");
      buttons.forEach(function (b) { b.disabled = true; });
      fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        credentials: "same-origin",
        headers: { "Accept": "text/html" }
      }).then(function (response) {
        return response.text().then(function (html) { swapMain(html, response.url); });
      }).catch(function () { form.submit(); });
    });
  }

  var timer = null;
  function poll(sim) {
    if (timer) { clearInterval(timer); }
    timer = setInterval(function () {
      if (document.hidden || !document.body.contains(sim)) { return; }
      fetch(sim.getAttribute("data-poll"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (version) {
          if (version !== null && version.trim() !== sim.getAttribute("data-version")) {
            fetch(window.location.href, { credentials: "same-origin" })
              .then(function (r) { return r.text(); })
              .then(function (html) { swapMain(html, window.location.href, true); });
          }
        }).catch(function () {});
    }, 2000);
  }

  function wire(root) {
    root.querySelectorAll("form[data-live]").forEach(live);
    var sim = root.querySelector("[data-poll]");
    if (sim) { poll(sim); }
    scrollChat(root);
  }

  document.addEventListener("DOMContentLoaded", function () { wire(document); });
})();
