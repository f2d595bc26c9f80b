// keygate console: the copy button of a new key's secret. Everything else
// works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.dataset.copy);
    var said = button.parentElement.querySelector(".copied");
    if (!field || !navigator.clipboard) {
      return;
    }
    // Browsers offer the clipboard on HTTPS and localhost only; elsewhere
    // the hint to select and copy stays.
    var hint = button.parentElement.querySelector(".copy-hint");
    if (hint) { hint.hidden = true; }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(field.value).then(function () {
        if (said) { said.textContent = "Copied."; }
      }, function () {
        field.select();
        if (said) { said.textContent = "Copying failed: select the secret and copy it."; }
      });
    });
  });
});
