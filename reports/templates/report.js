/* The case table, its filters and the matrix cell panel. Library strings are only ever
   inserted with textContent, never as HTML. No request leaves the page. */
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const dimIndex = {};
  D.dims.forEach(function (d, i) { dimIndex[d] = i; });
  const PAGE = 200;
  const state = { col: "", verdict: "", quantity: "", dims: {}, text: "", cell: null, limit: PAGE };
  // A row: [column, case, verdict, headroom, max |error|, detail, quantity]; quantity indexes D.quantities.
  function quantityOf(r) { return D.quantities[r[6] || 0]; }

  function el(tag, props) {
    const node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        if (k === "text") node.textContent = props[k];
        else if (k === "cls") node.className = props[k];
        else node.setAttribute(k, props[k]);
      });
    }
    for (let i = 2; i < arguments.length; i++) {
      const kid = arguments[i];
      if (kid === null || kid === undefined) continue;
      node.appendChild(typeof kid === "string" ? document.createTextNode(kid) : kid);
    }
    return node;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "string") return v;
    if (v === 0) return "0";
    return Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(2) : String(Number(v.toPrecision(3)));
  }
  function caseValue(ci, dim) { return D.values[dim][D.cases[ci][1][dimIndex[dim]]]; }
  function featureMatches(f, ci) {
    if (!f.dim) return true;
    const v = caseValue(ci, f.dim);
    return f.op === ">=" ? v >= f.value : v === f.value;
  }
  const featureByKey = {};
  D.features.forEach(function (f) { featureByKey[f.key] = f; });

  // Worst first: verdicts are listed by severity, then larger headroom first.
  const order = D.rows.map(function (_, i) { return i; });
  order.sort(function (a, b) {
    const ra = D.rows[a], rb = D.rows[b];
    if (ra[2] !== rb[2]) return ra[2] - rb[2];
    return (rb[3] === null ? -1 : rb[3]) - (ra[3] === null ? -1 : ra[3]);
  });

  function rowMatches(r) {
    if (state.col !== "" && r[0] !== Number(state.col)) return false;
    if (state.verdict !== "" && D.verdicts[r[2]] !== state.verdict) return false;
    if (state.quantity !== "" && quantityOf(r) !== state.quantity) return false;
    if (state.cell && (r[0] !== state.cell.col || quantityOf(r) !== state.cell.quantity ||
        !featureMatches(featureByKey[state.cell.feature], r[1]))) return false;
    for (const dim in state.dims) {
      if (state.dims[dim] !== "" && D.cases[r[1]][1][dimIndex[dim]] !== Number(state.dims[dim])) return false;
    }
    if (state.text && D.cases[r[1]][0].toLowerCase().indexOf(state.text) < 0) return false;
    return true;
  }

  // ---- filters -------------------------------------------------------------
  function select(name, label, options, onChange) {
    const s = el("select", { name: name, id: "filter-" + name });
    s.appendChild(el("option", { value: "", text: "any" }));
    options.forEach(function (o) { s.appendChild(el("option", { value: String(o[0]), text: o[1] })); });
    s.addEventListener("change", function () { onChange(s.value); state.limit = PAGE; draw(); });
    return el("label", null, label, s);
  }
  const filters = document.getElementById("filters");
  filters.appendChild(select("backend", "backend", D.columns.map(function (c, i) { return [i, c.key]; }), function (v) { state.col = v; }));
  const present = {};
  D.rows.forEach(function (r) { present[D.verdicts[r[2]]] = true; });
  filters.appendChild(select("verdict", "verdict", D.verdicts.filter(function (v) { return present[v]; }).map(function (v) { return [v, v]; }), function (v) { state.verdict = v; }));
  const quantities = {};
  D.rows.forEach(function (r) { quantities[quantityOf(r)] = true; });
  if (Object.keys(quantities).length > 1) {
    filters.appendChild(select("quantity", "quantity", D.quantities.filter(function (q) { return quantities[q]; }).map(function (q) { return [q, q]; }), function (v) { state.quantity = v; }));
  }
  D.dims.forEach(function (dim) {
    if (D.values[dim].length < 2) return;
    filters.appendChild(select(dim, dim, D.values[dim].map(function (v, i) { return [i, String(v)]; }), function (v) { state.dims[dim] = v; }));
  });
  const text = el("input", { type: "search", id: "filter-text", placeholder: "part of a case id" });
  text.addEventListener("input", function () { state.text = text.value.trim().toLowerCase(); state.limit = PAGE; draw(); });
  filters.appendChild(el("label", null, "case id", text));
  const cellChip = el("span", { id: "filter-cell", cls: "chip", hidden: "" });
  filters.appendChild(cellChip);
  const reset = el("button", { type: "button", id: "filter-reset", text: "clear filters" });
  reset.addEventListener("click", function () {
    state.col = ""; state.verdict = ""; state.quantity = ""; state.dims = {}; state.text = ""; state.cell = null; state.limit = PAGE;
    filters.querySelectorAll("select").forEach(function (s) { s.value = ""; });
    text.value = "";
    draw();
  });
  filters.appendChild(reset);

  // ---- case table ----------------------------------------------------------
  const tbody = document.querySelector("#case-table tbody");
  const count = document.getElementById("case-count");
  const more = document.getElementById("more");
  more.addEventListener("click", function () { state.limit += 10 * PAGE; draw(); });

  function checksTable(checks) {
    const t = el("table", { cls: "checks" });
    t.appendChild(el("tr", null, el("th", { text: "tensor" }), el("th", { text: "worst element" }), el("th", { text: "expected" }),
      el("th", { text: "actual" }), el("th", { text: "abs err" }), el("th", { text: "rel err" }), el("th", { text: "ULP" }),
      el("th", { text: "tolerance" }), el("th", { text: "headroom" })));
    checks.forEach(function (c) {
      const where = c.worst_index ? Object.keys(c.worst_index).map(function (k) { return k + "=" + c.worst_index[k]; }).join(", ") : "–";
      t.appendChild(el("tr", null, el("td", { text: c.name }), el("td", { text: where }), el("td", { text: fmt(c.expected) }),
        el("td", { text: fmt(c.actual) }), el("td", { text: fmt(c.max_abs) }), el("td", { text: fmt(c.max_rel) }),
        el("td", { text: fmt(c.max_ulp) }), el("td", { text: fmt(c.tolerance) }), el("td", { text: fmt(c.headroom) })));
    });
    return t;
  }
  function copyButton(command) {
    const b = el("button", { type: "button", cls: "copy", text: "copy" });
    b.addEventListener("click", function (event) {
      event.stopPropagation();
      const done = function () { b.textContent = "copied"; };
      const fallback = function () {
        const range = document.createRange();
        range.selectNodeContents(b.previousSibling);
        const sel = window.getSelection();
        sel.removeAllRanges(); sel.addRange(range);
        b.textContent = "selected: press Ctrl+C";
      };
      if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(command).then(done, fallback);
      else fallback();
    });
    return b;
  }
  // One occurrence of a case (a result or a cross-device comparison): reason, checks, tolerance, rerun.
  function occurrenceBox(s, several, rerun) {
    const checks = s.checks || [];
    const box = el("div", { cls: "occurrence" });
    const head = el("div", null, el("span", { cls: "chip v-" + s.verdict, text: s.verdict }));
    if (several) head.appendChild(el("span", { cls: "muted", text: "run " + s.run + " from " + s.source }));
    box.appendChild(head);
    if (s.reason) box.appendChild(el("pre", { cls: "reason", text: s.reason }));
    if (checks.length) box.appendChild(checksTable(checks));
    if (s.tolerance && s.tolerance.atol !== undefined) {
      // A gradient check's tolerance is per tensor (each check's row has its own); the scalars are shown here.
      const keys = Object.keys(s.tolerance).filter(function (k) { return s.tolerance[k] === null || typeof s.tolerance[k] !== "object"; });
      const parts = keys.map(function (k) { return k + " " + fmt(s.tolerance[k]); });
      const perTensor = typeof s.tolerance.atol === "object" ? "atol per tensor (see each check), " : "";
      box.appendChild(el("div", { cls: "muted", text: "tolerance: " + perTensor + parts.join(", ") }));
    }
    if (rerun) {
      const code = el("code", { cls: "rerun-command", text: rerun });
      box.appendChild(el("div", { cls: "rerun" }, el("span", { text: "rerun:" }), code, copyButton(rerun)));
    }
    return box;
  }
  function detailCell(r) {
    const td = el("td", { colspan: "6" });
    const seen = D.details[r[5]];
    seen.forEach(function (s) {
      const rerun = s.rerun === 1 ? D.columns[r[0]].rerun[quantityOf(r)] + D.cases[r[1]][0] : s.rerun;
      td.appendChild(occurrenceBox(s, seen.length > 1, rerun));
    });
    return td;
  }
  // The cross-device section's disagreeing cases: the server wrote the reason, the checks table replaces it.
  document.querySelectorAll("#cross-device .xd-detail").forEach(function (div) {
    const seen = D.cross_device[Number(div.dataset.detail)] || [];
    if (!seen.length) return;
    div.textContent = "";
    seen.forEach(function (s) {
      const box = occurrenceBox(s, seen.length > 1, s.rerun);
      if (seen.length === 1) box.firstChild.remove();  // the row above already shows the verdict
      div.appendChild(box);
    });
  });
  function caseRow(ri) {
    const r = D.rows[ri];
    const verdict = D.verdicts[r[2]];
    const tr = el("tr", { "data-row": String(ri), "data-verdict": verdict, "data-quantity": quantityOf(r) },
      el("td", { text: D.columns[r[0]].key }), el("td", { cls: "mono", text: D.cases[r[1]][0] }), el("td", { text: quantityOf(r) }),
      el("td", null, el("span", { cls: "chip v-" + verdict, text: verdict })), el("td", { text: fmt(r[3]) }), el("td", { text: fmt(r[4]) }));
    if (r[5] >= 0) {
      tr.classList.add("expandable");
      tr.setAttribute("tabindex", "0");
      const toggle = function () {
        const next = tr.nextSibling;
        if (next && next.classList && next.classList.contains("detail")) { next.remove(); tr.classList.remove("open"); return; }
        tr.classList.add("open");
        tr.after(el("tr", { cls: "detail" }, detailCell(r)));
      };
      tr.addEventListener("click", toggle);
      tr.addEventListener("keydown", function (e) { if (e.key === "Enter") toggle(); });
    }
    return tr;
  }
  function draw() {
    const matching = order.filter(function (i) { return rowMatches(D.rows[i]); });
    const frag = document.createDocumentFragment();
    matching.slice(0, state.limit).forEach(function (i) { frag.appendChild(caseRow(i)); });
    tbody.replaceChildren(frag);
    count.textContent = "showing " + Math.min(matching.length, state.limit) + " of " + matching.length + " matching (" + D.rows.length + " in all)";
    more.hidden = matching.length <= state.limit;
    if (state.cell) {
      cellChip.hidden = false;
      cellChip.textContent = "cell: " + columnLabel(state.cell.col, state.cell.quantity) + " × " + featureByKey[state.cell.feature].label;
    } else cellChip.hidden = true;
  }

  // ---- matrix cell panel ---------------------------------------------------
  const panel = document.getElementById("cell-panel");
  function columnLabel(col, quantity) { return D.columns[col].key + (quantity === "forward" ? "" : " (" + quantity + ")"); }
  function showCell(td) {
    document.querySelectorAll("td.cell.selected").forEach(function (c) { c.classList.remove("selected"); });
    td.classList.add("selected");
    const col = Number(td.dataset.col), feature = featureByKey[td.dataset.feature];
    const quantity = td.dataset.quantity || "forward";
    const rows = order.filter(function (i) { const r = D.rows[i]; return r[0] === col && quantityOf(r) === quantity && featureMatches(feature, r[1]); });
    const close = el("button", { type: "button", cls: "close", text: "close" });
    close.addEventListener("click", function () { panel.hidden = true; td.classList.remove("selected"); });
    const inTable = el("button", { type: "button", id: "cell-to-table", text: "filter the case table to this cell" });
    inTable.addEventListener("click", function () {
      state.cell = { col: col, feature: feature.key, quantity: quantity }; state.limit = PAGE; draw();
      document.getElementById("cases").scrollIntoView();
    });
    const list = el("table", { id: "cell-cases" });
    rows.slice(0, 100).forEach(function (i) {
      const r = D.rows[i];
      const verdict = D.verdicts[r[2]];
      const first = r[5] >= 0 ? (D.details[r[5]][0].reason || "").split("\n")[0] : "";
      const link = el("a", { href: "#cases", cls: "mono", text: D.cases[r[1]][0] });
      link.addEventListener("click", function (e) {
        e.preventDefault();
        state.cell = null; state.col = String(r[0]); state.text = D.cases[r[1]][0].toLowerCase(); state.limit = PAGE;
        state.quantity = quantity;
        document.getElementById("filter-backend").value = state.col;
        const quantitySelect = document.getElementById("filter-quantity");
        if (quantitySelect) quantitySelect.value = quantity;
        text.value = D.cases[r[1]][0];
        draw();
        const tr = tbody.querySelector('tr[data-row="' + i + '"]');
        if (tr && tr.classList.contains("expandable")) tr.click();
        document.getElementById("cases").scrollIntoView();
      });
      list.appendChild(el("tr", { "data-verdict": verdict }, el("td", null, el("span", { cls: "chip v-" + verdict, text: verdict })),
        el("td", null, link), el("td", { text: "headroom " + fmt(r[3]) }), el("td", { cls: "muted", text: first })));
    });
    panel.replaceChildren.apply(panel, [close, el("b", { text: columnLabel(col, quantity) + " × " + feature.label + ": " + rows.length + " case" + (rows.length === 1 ? "" : "s") }), " ", inTable,
      rows.length ? list : el("p", { cls: "muted", text: "no case of this column has this feature" }),
      rows.length > 100 ? el("p", { cls: "muted", text: "first 100 shown; the case table lists all" }) : null].filter(Boolean));
    panel.hidden = false;
  }
  document.querySelectorAll("table.matrix td.cell").forEach(function (td) {
    td.addEventListener("click", function () { showCell(td); });
    td.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); showCell(td); } });
  });

  // ---- quantity switch: one matrix at a time (without the script both show) -----------------------------
  const switcher = document.getElementById("quantity-switch");
  function showQuantity(quantity) {
    switcher.querySelectorAll("button").forEach(function (b) { b.setAttribute("aria-pressed", String(b.dataset.quantity === quantity)); });
    document.querySelectorAll(".matrix-wrap").forEach(function (wrap) { wrap.hidden = wrap.dataset.quantity !== quantity; });
    panel.hidden = true;
    document.querySelectorAll("td.cell.selected").forEach(function (c) { c.classList.remove("selected"); });
  }
  if (switcher) {
    switcher.querySelectorAll("button").forEach(function (b) { b.addEventListener("click", function () { showQuantity(b.dataset.quantity); }); });
    showQuantity(switcher.querySelector('button[aria-pressed="true"]').dataset.quantity);
  }

  draw();
})();
