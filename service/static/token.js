// The API token for mutating actions (cancel): entered once, kept in sessionStorage for this tab.
// Reads need no script: with protected reads the server's sign-in form sets a session cookie
// (reads only); the token typed there is kept here too, so that Cancel needs no second entry.
(function () {
  "use strict";
  var KEY = "adamodLabToken";
  var signIn = document.getElementById("signin-form");
  if (signIn) {
    signIn.addEventListener("submit", function () {
      var value = document.getElementById("signin-token").value;
      if (value) sessionStorage.setItem(KEY, value);
    });
  }
  var signOut = document.getElementById("sign-out-form");
  if (signOut) {
    signOut.addEventListener("submit", function () { sessionStorage.removeItem(KEY); });
  }
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
