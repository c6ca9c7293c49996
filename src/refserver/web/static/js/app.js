/* Small progressive enhancements for every admin page (no inline scripts: CSP). */
(function () {
  "use strict";

  // Page viewer: ← and → turn pages while focus is inside the viewer.
  var keyboardTurn = null;
  document.addEventListener("keydown", function (event) {
    var viewer = document.getElementById("viewer");
    if (!viewer || !viewer.contains(document.activeElement)) return;
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    var id = event.key === "ArrowLeft" ? "viewer-prev" : event.key === "ArrowRight" ? "viewer-next" : null;
    var link = id && document.getElementById(id);
    if (!link) return;
    event.preventDefault();
    keyboardTurn = id;
    link.click();
  });

  // After HTMX swaps the viewer in, keep keyboard focus where the user was.
  document.addEventListener("htmx:afterSettle", function () {
    if (!keyboardTurn) return;
    var again = document.getElementById(keyboardTurn) || document.getElementById("viewer");
    keyboardTurn = null;
    if (again) again.focus();
  });

  // A failed HTMX request (e.g. a 403 after the session expired) must not fail silently.
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var message = "Request failed (" + xhr.status + ")";
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && body.detail) message = String(body.detail);
    } catch (e) { /* not JSON: keep the status line */ }
    var main = document.getElementById("main");
    if (!main) return;
    var box = document.getElementById("htmx-error");
    if (!box) {
      box = document.createElement("p");
      box.id = "htmx-error";
      box.className = "flash flash-error";
      box.setAttribute("role", "alert");
      main.insertBefore(box, main.firstChild);
    }
    box.textContent = message;
  });
})();
