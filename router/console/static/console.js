// The console's own behaviour, from a file (the Content-Security-Policy allows no inline script):
// - a button with data-confirm-input="ID" is enabled only once the input ID holds the value
//   of its data-confirm-value (a purge: type the count back);
// - a checkbox with data-select-all="NAME" checks or clears every checkbox named NAME.
// The server checks all of it again: this only spares a round trip.
(function () {
  "use strict";

  function refresh(root) {
    root.querySelectorAll("button[data-confirm-input]").forEach(function (button) {
      var input = document.getElementById(button.getAttribute("data-confirm-input"));
      if (!input) { return; }
      var wanted = button.getAttribute("data-confirm-value");
      var check = function () { button.disabled = input.value.replace(/[,\s]/g, "") !== wanted; };
      input.addEventListener("input", check);
      check();
    });
    root.querySelectorAll("input[data-select-all]").forEach(function (all) {
      all.addEventListener("change", function () {
        var name = all.getAttribute("data-select-all");
        document.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (box) {
          box.checked = all.checked;
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { refresh(document); });
  document.addEventListener("htmx:afterSwap", function (event) { refresh(event.target); });
})();
