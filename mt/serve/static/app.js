// mt attention explorer: one sentence in, its translation, alignment links and cross-attention
// heatmap out. Plain DOM and hand-written SVG: no build step, nothing loaded from elsewhere.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const LANGUAGES = { en: "English", de: "German", fr: "French", cs: "Czech" };
  // The heatmap's colour scales, from no attention to the most: blues, towards ink on a light page
  // and towards light on a dark one.
  const SCALES = {
    light: [[239, 246, 255], [191, 219, 254], [96, 165, 250], [29, 78, 216], [23, 37, 84]],
    dark: [[30, 41, 59], [30, 64, 175], [59, 130, 246], [147, 197, 253], [239, 246, 255]],
  };
  const darkScheme = window.matchMedia("(prefers-color-scheme: dark)");

  const MIN_CELL = 26; // px: the smallest heatmap cell the page scales down to
  const $ = (id) => document.getElementById(id);
  const state = { info: null, result: null, focus: null, pinned: false };

  // Helpers -------------------------------------------------------------------------------------
  function svgElement(tag, attrs, parent) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (parent) parent.appendChild(node);
    return node;
  }

  const measure = document.createElement("canvas").getContext("2d");
  function textWidth(text, px, weight = 400) {
    measure.font = `${weight} ${px}px ${getComputedStyle(document.body).fontFamily}`;
    return measure.measureText(text).width;
  }

  // [r, g, b] for a share of the strongest cell, 0..1.
  function colour(share) {
    const scale = darkScheme.matches ? SCALES.dark : SCALES.light;
    const t = Math.min(1, Math.max(0, share)) * (scale.length - 1);
    const k = Math.min(scale.length - 2, Math.floor(t));
    const f = t - k;
    return scale[k].map((c, i) => Math.round(c + f * (scale[k + 1][i] - c)));
  }

  const isDark = ([r, g, b]) => 0.299 * r + 0.587 * g + 0.114 * b < 140; // wants light text

  function languageName(code) {
    return LANGUAGES[code] ? `${LANGUAGES[code]} (${code})` : code;
  }

  function option(select, value, text, selected) {
    const node = new Option(text, value, selected, selected);
    select.appendChild(node);
    return node;
  }

  // Model info and the form -----------------------------------------------------------------------
  async function loadInfo() {
    try {
      const response = await fetch("/health");
      const info = await response.json();
      if (!response.ok) throw new Error(info.error || response.statusText);
      state.info = info;
      const { decoder_layers: layers, heads } = info.model;
      $("model-info").textContent =
        `${languageName(info.src_lang)} → ${languageName(info.tgt_lang)} · ${layers} decoder layers × ${heads} heads · mt ${info.version}`;
      $("src-lang").textContent = languageName(info.src_lang);
      $("tgt-lang").textContent = languageName(info.tgt_lang);
      $("source-input").maxLength = info.limits.max_chars;
      $("source-input").placeholder = `Type a sentence in ${LANGUAGES[info.src_lang] || info.src_lang}…`;
      const beam = $("beam");
      for (let b = 1; b <= info.limits.max_beam; b++) option(beam, b, b, b === info.defaults.beam);
      fillNBest();
    } catch (err) {
      showError(`cannot reach the model: ${err.message}`);
    }
  }

  function fillNBest() {
    const select = $("n-best");
    const previous = Number(select.value) || 1;
    select.replaceChildren();
    const beam = Number($("beam").value) || 1;
    for (let n = 1; n <= beam; n++) option(select, n, n, n === Math.min(previous, beam));
  }

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = !message;
  }

  async function translate(event) {
    event.preventDefault();
    const text = $("source-input").value.trim();
    if (!text) return;
    const button = $("translate-button");
    button.disabled = true;
    button.textContent = "Translating…";
    showError("");
    try {
      const body = { text, beam: Number($("beam").value) || undefined, n_best: Number($("n-best").value) || 1, attention: true };
      const response = await fetch("/translate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const data = await response.json().catch(() => ({ error: response.statusText }));
      if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
      state.result = { ...data.results[0], ms: data.ms };
      state.focus = null;
      state.pinned = false;
      render();
    } catch (err) {
      showError(err.message);
    } finally {
      button.disabled = false;
      button.textContent = "Translate";
    }
  }

  // Rendering -------------------------------------------------------------------------------------
  function render() {
    const r = state.result;
    $("result").hidden = false;
    $("translation").textContent = r.translation;
    $("translation").lang = state.info ? state.info.tgt_lang : "";
    const score = r.score === null ? "no score" : `score ${r.score.toFixed(3)} (log-probability per token, length-normalized)`;
    $("score").textContent = `${score} · ${r.ms} ms`;
    const list = $("nbest");
    list.replaceChildren();
    for (const hyp of r.n_best) {
      const item = document.createElement("li");
      item.textContent = hyp.translation;
      const scoreSpan = document.createElement("span");
      scoreSpan.className = "score";
      scoreSpan.textContent = hyp.score.toFixed(3);
      item.appendChild(scoreSpan);
      list.appendChild(item);
    }
    fillViews();
    drawLinks();
    drawHeatmap();
  }

  function fillViews() {
    const select = $("view");
    const by = state.result.aligned_by;
    // The links come from chosen heads (recorded in the checkpoint, or set by options): that view first.
    const own = by.layer !== null || by.heads !== null;
    const previous = select.value || (own ? "aligned" : "mean");
    select.replaceChildren();
    const byHead = state.result.attention.by_head;
    if (own) option(select, "aligned", alignedLabel(by), previous === "aligned");
    option(select, "mean", "All layers · mean", previous === "mean");
    byHead.forEach((heads, layer) => {
      const group = document.createElement("optgroup");
      group.label = `Layer ${layer + 1}`;
      select.appendChild(group);
      option(group, `${layer}`, `Layer ${layer + 1} · mean of heads`, previous === `${layer}`);
      heads.forEach((_, head) => {
        option(group, `${layer}:${head}`, `Layer ${layer + 1} · head ${head + 1}`, previous === `${layer}:${head}`);
      });
    });
    if (!select.value) select.value = own ? "aligned" : "mean";
  }

  // "Links · Layer 2 · head 1 (supervised)": numbered from 1 like the other views.
  function alignedLabel(by) {
    const model = state.info ? state.info.model : { decoder_layers: 0, heads: 0 };
    const from1 = (k, n) => (k < 0 ? n + k : k) + 1;
    const layer = by.layer === null ? "All layers" : `Layer ${from1(by.layer, model.decoder_layers)}`;
    const heads = by.heads === null ? "mean of heads"
      : `head${by.heads.length > 1 ? "s" : ""} ${by.heads.map((h) => from1(h, model.heads)).join("+")}`;
    return `Links · ${layer} · ${heads} (${by.origin})`;
  }

  function currentMatrix() {
    const attention = state.result.attention;
    const view = $("view").value || "mean";
    if (view === "mean") return attention.mean;
    if (view === "aligned") return attention.aligned;
    const [layer, head] = view.split(":").map(Number);
    return head === undefined || Number.isNaN(head) ? attention.by_layer[layer] : attention.by_head[layer][head];
  }

  // Alignment: source words above target words, or side by side when a row would not fit.
  function drawLinks() {
    const box = $("links");
    box.replaceChildren();
    const { source_words: src, target_words: tgt, links } = state.result;
    if (!src.length || !tgt.length) {
      box.textContent = "Nothing to align.";
      return;
    }
    const px = 15, pad = 10, gap = 10, chip = 30;
    const widths = (words) => words.map((w) => textWidth(w, px) + 2 * pad);
    const srcW = widths(src), tgtW = widths(tgt);
    const rowWidth = (ws) => ws.reduce((a, b) => a + b, 0) + gap * Math.max(0, ws.length - 1);
    const available = box.clientWidth || 600;
    const horizontal = Math.max(rowWidth(srcW), rowWidth(tgtW)) + 8 <= available;
    let width, height;
    const place = { src: [], tgt: [] }; // centre x, y and half width of every chip
    if (horizontal) {
      width = available;
      height = 150;
      const row = (ws, y, side) => {
        let x = (width - rowWidth(ws)) / 2;
        ws.forEach((w) => { place[side].push({ x: x + w / 2, y, half: w / 2 }); x += w + gap; });
      };
      row(srcW, chip / 2 + 2, "src");
      row(tgtW, height - chip / 2 - 2, "tgt");
    } else {
      const colSrc = Math.max(...srcW), colTgt = Math.max(...tgtW);
      width = Math.max(available, colSrc + colTgt + 60);
      const step = chip + 8;
      height = Math.max(src.length, tgt.length) * step;
      src.forEach((_, i) => place.src.push({ x: colSrc / 2 + 2, y: i * step + step / 2, half: srcW[i] / 2 }));
      tgt.forEach((_, j) => place.tgt.push({ x: width - colTgt / 2 - 2, y: j * step + step / 2, half: tgtW[j] / 2 }));
    }
    const svg = svgElement("svg", {
      viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
      "aria-label": "word alignment between the source and the translation",
    }, box);
    for (const [i, j] of links) {
      const a = place.src[i], b = place.tgt[j];
      const ends = horizontal
        ? { x1: a.x, y1: a.y + chip / 2, x2: b.x, y2: b.y - chip / 2 }
        : { x1: a.x + a.half, y1: a.y, x2: b.x - b.half, y2: b.y };
      svgElement("line", { ...ends, class: "link", "data-src": i, "data-tgt": j }, svg);
    }
    const chips = (words, side) => words.forEach((word, k) => {
      const p = place[side][k];
      const g = svgElement("g", { class: "word", tabindex: 0, "data-side": side, "data-index": k }, svg);
      svgElement("rect", { x: p.x - p.half, y: p.y - chip / 2, width: 2 * p.half, height: chip, rx: 8 }, g);
      svgElement("text", { x: p.x, y: p.y }, g).textContent = word;
      g.addEventListener("mouseenter", () => { if (!state.pinned) focusWord(side, k); });
      g.addEventListener("mouseleave", () => { if (!state.pinned) focusWord(null); });
      g.addEventListener("focus", () => focusWord(side, k));
      g.addEventListener("blur", () => { if (!state.pinned) focusWord(null); });
      g.addEventListener("click", () => togglePin(side, k)); // taps on touch screens
    });
    chips(src, "src");
    chips(tgt, "tgt");
    applyFocus();
  }

  // Heatmap: rows are target words, columns source words, each row as shares of its attention.
  function drawHeatmap() {
    const box = $("heatmap");
    box.replaceChildren();
    const { source_words: src, target_words: tgt, links } = state.result;
    const matrix = currentMatrix();
    if (!matrix || !matrix.length || !src.length || !tgt.length) {
      box.textContent = "No attention to show.";
      return;
    }
    const px = 13, cell = 36;
    const labelW = Math.ceil(Math.max(...tgt.map((w) => textWidth(w, px)))) + 12;
    const longest = Math.max(...src.map((w) => textWidth(w, px)));
    const top = Math.ceil(longest * Math.SQRT1_2) + 14; // column labels at -45°
    const right = Math.ceil(Math.max(0, longest * Math.SQRT1_2 - cell / 2)) + 4;
    const width = labelW + src.length * cell + right, height = top + tgt.length * cell + 2;
    const svg = svgElement("svg", {
      viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
      "aria-label": "cross-attention heatmap, target words by source words",
    }, box);
    // Scaled down to fit the card, but not below readable cells: a long sentence on a phone
    // scrolls inside its card instead.
    svg.style.minWidth = `${Math.min(width, (width * MIN_CELL) / cell)}px`;
    const shares = matrix.map((row) => {
      const total = row.reduce((a, b) => a + b, 0) || 1;
      return row.map((value) => value / total);
    });
    const strongest = Math.max(...shares.flat()) || 1; // the darkest colour goes to the largest cell
    shares.forEach((row, j) => {
      row.forEach((share, i) => {
        const x = labelW + i * cell, y = top + j * cell;
        const rgb = colour(share / strongest);
        const rect = svgElement("rect", {
          x, y, width: cell, height: cell, fill: `rgb(${rgb})`, class: "cell", "data-row": j, "data-col": i,
        }, svg);
        svgElement("title", {}, rect).textContent = `${tgt[j]} ← ${src[i]}: ${(100 * share).toFixed(1)} %`;
        const percent = Math.round(100 * share);
        if (percent > 0) {
          const label = svgElement("text", { x: x + cell / 2, y: y + cell / 2, class: `value ${isDark(rgb) ? "light" : "dark"}` }, svg);
          label.textContent = percent;
        }
      });
      const label = svgElement("text", { x: labelW - 8, y: top + j * cell + cell / 2, class: "row-label", "data-index": j }, svg);
      label.textContent = tgt[j];
    });
    src.forEach((word, i) => {
      const x = labelW + i * cell + cell / 2, y = top - 6;
      const label = svgElement("text", { x, y, transform: `rotate(-45 ${x} ${y})`, class: "col-label", "data-index": i }, svg);
      label.textContent = word;
    });
    for (const [i, j] of links) {
      svgElement("rect", { x: labelW + i * cell + 1.5, y: top + j * cell + 1.5, width: cell - 3, height: cell - 3, rx: 3, class: "link-mark" }, svg);
    }
    applyFocus();
  }

  // Highlighting: a word, its links, the words they reach, and its heatmap row or column.
  function focusWord(side, index) {
    state.focus = side === null ? null : { side, index };
    applyFocus();
  }

  function togglePin(side, index) {
    const same = state.focus && state.focus.side === side && state.focus.index === index;
    state.pinned = !(same && state.pinned);
    focusWord(state.pinned ? side : null, index);
  }

  function applyFocus() {
    const links = $("links"), heatmap = $("heatmap");
    document.querySelectorAll("#links .active, #heatmap .active").forEach((n) => n.classList.remove("active"));
    const focus = state.focus;
    links.classList.toggle("focusing", Boolean(focus));
    heatmap.classList.toggle("focusing", Boolean(focus));
    if (!focus || !state.result) return;
    const own = focus.side === "src" ? "data-src" : "data-tgt";
    const other = focus.side === "src" ? "tgt" : "src";
    links.querySelector(`.word[data-side="${focus.side}"][data-index="${focus.index}"]`)?.classList.add("active");
    links.querySelectorAll(`line.link[${own}="${focus.index}"]`).forEach((line) => {
      line.classList.add("active");
      const partner = line.getAttribute(other === "src" ? "data-src" : "data-tgt");
      links.querySelector(`.word[data-side="${other}"][data-index="${partner}"]`)?.classList.add("active");
    });
    const axis = focus.side === "src" ? "data-col" : "data-row";
    heatmap.querySelectorAll(`.cell[${axis}="${focus.index}"]`).forEach((c) => c.classList.add("active"));
    const label = focus.side === "src" ? ".col-label" : ".row-label";
    heatmap.querySelector(`${label}[data-index="${focus.index}"]`)?.classList.add("active");
  }

  // Wiring ----------------------------------------------------------------------------------------
  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (state.result) drawLinks(); }, 100);
  });
  document.addEventListener("DOMContentLoaded", () => {
    $("translate-form").addEventListener("submit", translate);
    $("beam").addEventListener("change", fillNBest);
    $("view").addEventListener("change", () => { if (state.result) drawHeatmap(); });
    darkScheme.addEventListener("change", () => { if (state.result) drawHeatmap(); });
    loadInfo();
  });
})();
