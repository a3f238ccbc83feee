// Progressive enhancement for the console; every page works without it.
// Elements with data-refresh="SECONDS" reload their page region by polling (live acks).
"use strict";
(function () {
  function refresh(element) {
    var seconds = parseFloat(element.getAttribute("data-refresh")) || 5;
    var url = element.getAttribute("data-refresh-url") || window.location.href;
    window.setTimeout(function () {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html) {
            var doc = new DOMParser().parseFromString(html, "text/html");
            var fresh = element.id ? doc.getElementById(element.id) : null;
            if (fresh) {
              element.replaceWith(fresh);
              element = fresh;
            }
          }
          // A region that is done (e.g. every service acknowledged) stops asking.
          if (element.hasAttribute("data-refresh")) { refresh(element); }
        })
        .catch(function () { refresh(element); });
    }, seconds * 1000);
  }
  function confirmations() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
    confirmations();
  });
})();
