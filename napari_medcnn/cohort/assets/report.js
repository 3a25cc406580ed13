(function () {
  "use strict";
  var table = document.getElementById("results");
  var done = function () {
    document.documentElement.setAttribute("data-ready", "true");
  };
  if (!table) { done(); return; }
  var tbody = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var rows = Array.prototype.slice.call(tbody.rows);
  var threshold = parseFloat(table.getAttribute("data-threshold"));
  var collator = new Intl.Collator(undefined, {numeric: true, sensitivity: "base"});
  var count = document.getElementById("count");
  var search = document.getElementById("q");
  var buttons = Array.prototype.slice.call(
    document.querySelectorAll(".filters button"));
  rows.forEach(function (tr, i) {
    tr._i = i;
    tr._text = tr.textContent.toLowerCase();
  });
  var state = {key: table.getAttribute("data-sorted"), dir: "desc",
               filter: "all", q: ""};
  var tests = {
    all: function () { return true; },
    positive: function (tr) {
      return parseFloat(tr.getAttribute("data-pos")) >= threshold;
    },
    outside: function (tr) { return tr.getAttribute("data-domain") === "out"; },
    uncertain: function (tr) { return tr.classList.contains("unc"); },
    failed: function (tr) { return tr.getAttribute("data-status") !== "ok"; }
  };
  function value(tr, col, numeric) {
    var td = tr.cells[col];
    var v = td ? td.getAttribute("data-v") : null;
    if (v === null || v === "") { return null; }
    if (numeric) { var x = parseFloat(v); return isNaN(x) ? null : x; }
    return v;
  }
  function sortBy(key, dir) {
    var col = heads.findIndex(function (th) {
      return th.getAttribute("data-key") === key;
    });
    if (col < 0) { return; }
    var numeric = heads[col].getAttribute("data-type") === "num";
    var sign = dir === "asc" ? 1 : -1;
    var keyed = rows.map(function (tr) { return [value(tr, col, numeric), tr]; });
    keyed.sort(function (a, b) {
      var x = a[0], y = b[0];
      if (x === null || y === null) {  // empty cells last, either way
        return (x === null) - (y === null) || a[1]._i - b[1]._i;
      }
      var c = numeric ? x - y : collator.compare(x, y);
      return sign * c || a[1]._i - b[1]._i;
    });
    var frag = document.createDocumentFragment();
    keyed.forEach(function (k) { frag.appendChild(k[1]); });
    tbody.appendChild(frag);
    heads.forEach(function (th) { th.removeAttribute("aria-sort"); });
    heads[col].setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
    state.key = key;
    state.dir = dir;
    table.setAttribute("data-sorted", key + ":" + dir);
  }
  function apply() {
    if (!tests[state.filter]) { state.filter = "all"; }
    var q = state.q.toLowerCase(), shown = 0;
    rows.forEach(function (tr) {
      var keep = tests[state.filter](tr) && (!q || tr._text.indexOf(q) >= 0);
      tr.hidden = !keep;
      if (keep) { shown++; }
    });
    buttons.forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.filter === state.filter));
    });
    count.textContent = shown + " of " + rows.length + " items";
  }
  function remember() {
    var p = new URLSearchParams();
    p.set("sort", state.key);
    p.set("dir", state.dir);
    if (state.filter !== "all") { p.set("filter", state.filter); }
    if (state.q) { p.set("q", state.q); }
    try { history.replaceState(null, "", "#" + p.toString()); } catch (e) {}
  }
  heads.forEach(function (th) {
    th.querySelector("button").addEventListener("click", function () {
      var key = th.getAttribute("data-key");
      var dir = key === state.key ? (state.dir === "asc" ? "desc" : "asc")
        : (th.getAttribute("data-type") === "num" ? "desc" : "asc");
      sortBy(key, dir);
      remember();
    });
  });
  buttons.forEach(function (b) {
    b.addEventListener("click", function () {
      state.filter = b.dataset.filter;
      apply();
      remember();
    });
  });
  search.addEventListener("input", function () {
    state.q = search.value.trim();
    apply();
    remember();
  });
  var hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("sort")) {
    sortBy(hash.get("sort"), hash.get("dir") === "asc" ? "asc" : "desc");
  }
  state.filter = hash.get("filter") || "all";
  state.q = hash.get("q") || "";
  search.value = state.q;
  apply();
  done();
})();
