// Basic accessibility checks run in the page: labels, names, alt text, headings,
// duplicate ids and WCAG AA text contrast (4.5:1, 3:1 for large text).
() => {
  const problems = [];
  const visible = (el) => {
    if (el.checkVisibility) return el.checkVisibility({ visibilityProperty: true });
    const s = getComputedStyle(el);
    return s.display !== "none" && s.visibility !== "hidden" && el.getClientRects().length > 0;
  };
  for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
    if (el.hidden || el.closest("[hidden]")) continue;
    const named = (el.labels && el.labels.length) || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
    if (!named) problems.push("form control without a label: " + el.outerHTML.slice(0, 100));
  }
  for (const img of document.querySelectorAll("img")) {
    if (!img.hasAttribute("alt")) problems.push("image without alt: " + img.outerHTML.slice(0, 100));
  }
  for (const el of document.querySelectorAll("button, a[href], summary")) {
    if (!visible(el)) continue;
    const name = (el.innerText || "").trim() || el.getAttribute("aria-label") || el.getAttribute("title");
    if (!name) problems.push("control without a name: " + el.outerHTML.slice(0, 100));
  }
  const h1 = document.querySelectorAll("h1").length;
  if (h1 !== 1) problems.push("expected one h1, found " + h1);
  if (!document.documentElement.lang) problems.push("<html> has no lang");
  const seen = new Set();
  for (const el of document.querySelectorAll("[id]")) {
    if (seen.has(el.id)) problems.push("duplicate id " + el.id);
    seen.add(el.id);
  }
  // Contrast of every visible text node's element against its effective background.
  const parse = (c) => {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.backgroundImage && s.backgroundImage !== "none") return null; // gradients: skip
      const c = parse(s.backgroundColor);
      if (c && c.a >= 0.99) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const checked = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const el = node.parentElement;
    if (!el || checked.has(el) || !node.textContent.trim() || !visible(el)) continue;
    if (el.closest("svg, .sr-only, .skip-link, [aria-disabled=true], .disabled")) continue;
    checked.add(el);
    const s = getComputedStyle(el);
    const fg = parse(s.color);
    const bg = background(el);
    if (!fg || !bg) continue;
    const opacity = parseFloat(s.opacity);
    if (opacity < 1) continue;
    const l1 = lum(fg), l2 = lum(bg);
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const size = parseFloat(s.fontSize);
    const bold = parseInt(s.fontWeight, 10) >= 700;
    const large = size >= 24 || (bold && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) {
      problems.push(`contrast ${ratio.toFixed(2)} for "${node.textContent.trim().slice(0, 40)}" (${s.color} on rgb(${bg.r},${bg.g},${bg.b}))`);
    }
  }
  return problems;
}
