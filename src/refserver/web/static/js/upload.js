/* Upload page: drag-and-drop many PDFs; each goes to POST /upload (XHR, for upload
   progress) and is then followed through its processing steps by polling /job/{id}. */
(function () {
  "use strict";
  var zone = document.getElementById("dropzone");
  if (!zone) return;
  var input = document.getElementById("file-input");
  var list = document.getElementById("upload-list");
  var summary = document.getElementById("upload-summary");
  var csrf = document.body.getAttribute("data-csrf") || "";
  var maxBytes = Number(zone.getAttribute("data-max-mb") || "100") * 1024 * 1024;
  var PARALLEL = 2;
  var POLL_MS = 500;
  var waiting = [];
  var active = 0;
  var items = [];

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function human(bytes) {
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1048576) return (bytes / 1024).toFixed(1) + " KiB";
    return (bytes / 1048576).toFixed(1) + " MiB";
  }

  function makeItem(file) {
    var li = el("li", "upload-item queued");
    var name = el("span", "name", file.name);
    var bar = el("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Progress of " + file.name);
    var state = el("span", "state", "Waiting · " + human(file.size));
    li.appendChild(name);
    li.appendChild(bar);
    li.appendChild(state);
    list.insertBefore(li, list.firstChild);
    var item = { file: file, li: li, bar: bar, state: state, status: "queued" };
    items.push(item);
    return item;
  }

  function setState(item, status, text, percent) {
    item.status = status;
    item.li.className = "upload-item " + status;
    item.li.setAttribute("data-status", status);
    item.state.textContent = text;
    if (percent !== undefined && percent !== null) item.bar.value = Math.max(0, Math.min(100, percent));
    updateSummary();
  }

  function updateSummary() {
    var done = 0, failed = 0, busy = 0;
    items.forEach(function (it) {
      if (it.status === "completed") done++;
      else if (it.status === "failed") failed++;
      else busy++;
    });
    summary.textContent = items.length + " file(s): " + done + " done, " + busy + " in progress, " + failed + " failed.";
  }

  function detailOf(xhr) {
    try {
      var body = JSON.parse(xhr.responseText);
      var d = body && body.detail;
      if (typeof d === "string") return d;
      if (Array.isArray(d)) return d.map(function (x) { return x.msg || JSON.stringify(x); }).join("; ");
    } catch (e) { /* fall through */ }
    if (xhr.status === 401) return "Your session has ended: sign in again.";
    if (xhr.status === 403) return "Not allowed (editor role and a fresh page are needed).";
    return "Upload failed (HTTP " + xhr.status + ").";
  }

  function addFiles(files) {
    Array.prototype.forEach.call(files, function (file) {
      var item = makeItem(file);
      if (file.size > maxBytes) {
        setState(item, "failed", "Too large: " + human(file.size) + " (limit " + human(maxBytes) + ").", 0);
        return;
      }
      waiting.push(item);
    });
    pump();
  }

  function pump() {
    while (active < PARALLEL && waiting.length) {
      active++;
      send(waiting.shift());
    }
  }

  function finished() {
    active--;
    pump();
  }

  function send(item) {
    var xhr = new XMLHttpRequest();
    var form = new FormData();
    form.append("file", item.file, item.file.name);
    xhr.open("POST", "/upload");
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = function (e) {
      if (!e.lengthComputable) return;
      var pct = Math.round((e.loaded / e.total) * 100);
      setState(item, "uploading", "Uploading… " + pct + "%", pct);
    };
    xhr.onload = function () {
      if (xhr.status === 429) {
        // Too many uploads at once: wait as the server asks, then try this file again.
        var wait = Math.max(1, Number(xhr.getResponseHeader("Retry-After")) || 5);
        setState(item, "queued", "Server busy: retrying in " + wait + " s…", 0);
        finished();
        setTimeout(function () { waiting.unshift(item); pump(); }, wait * 1000);
        return;
      }
      if (xhr.status !== 200) {
        setState(item, "failed", detailOf(xhr), 0);
        finished();
        return;
      }
      var answer = JSON.parse(xhr.responseText);
      item.jobId = answer.job_id;
      item.li.setAttribute("data-job", answer.job_id);
      setState(item, "processing", "Uploaded · " + (answer.message || "queued"), 0);
      finished();
      poll(item);
    };
    xhr.onerror = function () {
      setState(item, "failed", "Network error while uploading; check the connection and try again.", 0);
      finished();
    };
    setState(item, "uploading", "Uploading… 0%", 0);
    xhr.send(form);
  }

  function showDone(item, job) {
    item.state.textContent = "";
    var summary = job.result_summary || {};
    var text = "Done";
    if (summary.pages !== undefined) text += " · " + summary.pages + " page(s)";
    if (summary.ocr_pages) text += ", " + summary.ocr_pages + " by OCR";
    if (summary.duplicate_file) text += " · identical file already stored";
    if (summary.duplicate_of) text += " · probable duplicate";
    item.state.appendChild(document.createTextNode(text + " · "));
    if (job.paper_id) {
      var a = el("a", "", "Open paper");
      a.href = "/admin/papers/" + encodeURIComponent(job.paper_id);
      item.state.appendChild(a);
    }
  }

  function poll(item) {
    fetch("/job/" + encodeURIComponent(item.jobId), {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    })
      .then(function (r) {
        if (!r.ok) throw new Error(r.status === 401 ? "Your session has ended: sign in again." : "Could not read the job (HTTP " + r.status + ").");
        return r.json();
      })
      .then(function (job) {
        var pct = job.progress_percentage || 0;
        if (job.status === "completed") {
          setState(item, "completed", "Done", 100);
          showDone(item, job);
          return;
        }
        if (job.status === "failed" || job.status === "cancelled") {
          var failedStep = (job.steps_failed || [])[0];
          var msg = job.status === "cancelled" ? "Cancelled." : "Failed" + (failedStep ? " at " + failedStep.replace(/_/g, " ") : "") + ": " + (job.error_message || "unknown error");
          setState(item, "failed", msg, pct);
          return;
        }
        var step = (job.current_step || job.status || "queued").replace(/_/g, " ");
        setState(item, "processing", (job.status === "queued" ? "Queued" : "Processing: " + step) + " · " + Math.round(pct) + "%", pct);
        setTimeout(function () { poll(item); }, POLL_MS);
      })
      .catch(function (err) {
        setState(item, "failed", String(err.message || err), null);
      });
  }

  input.addEventListener("change", function () {
    addFiles(input.files);
    input.value = "";
  });
  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (e) {
      e.preventDefault();
      zone.classList.add("dragover");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function (e) {
      e.preventDefault();
      zone.classList.remove("dragover");
    });
  });
  zone.addEventListener("drop", function (e) {
    if (e.dataTransfer && e.dataTransfer.files) addFiles(e.dataTransfer.files);
  });
  // A file dropped outside the zone must not navigate away from the page.
  window.addEventListener("dragover", function (e) { e.preventDefault(); });
  window.addEventListener("drop", function (e) { e.preventDefault(); });
})();
