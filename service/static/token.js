// The API token for mutating actions (cancel): entered once, kept in sessionStorage for this tab.
(function () {
  "use strict";
  var KEY = "adamodLabToken";
  var form = document.getElementById("token-form");
  if (!form) return;
  var input = document.getElementById("token-input");
  var state = document.getElementById("token-state");
  function show() { state.textContent = sessionStorage.getItem(KEY) ? "token kept" : "no token"; }
  form.hidden = false;
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (input.value) sessionStorage.setItem(KEY, input.value);
    input.value = "";
    show();
  });
  document.getElementById("token-forget").addEventListener("click", function () {
    sessionStorage.removeItem(KEY);
    show();
  });
  show();
  window.adamodLabAuth = function () {
    var token = sessionStorage.getItem(KEY);
    return token ? { Authorization: "Bearer " + token } : {};
  };
})();
