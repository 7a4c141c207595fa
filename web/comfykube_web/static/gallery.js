// comfykube gallery: live updates for the grid and the job page.
// Data arrives as JSON over Server-Sent Events and goes into the page with textContent
// and DOM properties only (never innerHTML), so a prompt stays text.
"use strict";

(function () {
  const PHASES = ["Pending", "Queued", "Running", "Uploading", "Succeeded", "Failed", "Cancelled"];
  const TERMINAL = ["Succeeded", "Failed", "Cancelled"];
  const body = document.body;
  const page = body.dataset.page;

  function safeUrl(value, prefixes) {
    if (typeof value !== "string") return null;
    return prefixes.some((p) => value.startsWith(p)) ? value : null;
  }

  function field(root, name) {
    return root.querySelector('[data-field="' + name + '"]');
  }

  function setPhase(root, phase) {
    if (!PHASES.includes(phase)) phase = "Pending";
    PHASES.forEach((p) => root.classList.remove("phase-" + p.toLowerCase()));
    root.classList.add("phase-" + phase.toLowerCase());
    root.dataset.phase = phase;
    const badge = field(root, "phase");
    if (badge) badge.textContent = phase;
  }

  function setProgress(root, job) {
    const bar = field(root, "progress");
    if (bar) bar.value = Math.max(0, Math.min(100, Number(job.percent) || 0));
    const steps = field(root, "steps");
    if (steps) {
      const p = job.progress || {};
      steps.textContent = p.max ? p.value + "/" + p.max : "";
    }
  }

  function fill(card, job) {
    card.dataset.key = job.key;
    card.dataset.created = String(job.createdTs);
    setPhase(card, job.phase);
    setProgress(card, job);
    const link = field(card, "link");
    const path = safeUrl(job.path, ["/jobs/"]);
    if (link && path) link.href = path;
    const prompt = field(card, "prompt");
    if (prompt) {
      prompt.textContent = job.prompt;
      prompt.title = job.prompt;
    }
    for (const name of ["requester", "workflow", "namespace"]) {
      const el = field(card, name);
      if (el) el.textContent = job[name] || "";
    }
    const why = field(card, "message");
    if (why) why.textContent = (job.phase === "Failed" || job.phase === "Cancelled") ? job.reason + ": " + job.message : "";
    const img = field(card, "thumb");
    const thumb = safeUrl(job.thumb, ["https://", "http://"]);
    if (img && thumb && img.getAttribute("src") !== thumb) {
      img.src = thumb;
      img.classList.remove("none");
    }
  }

  function connect(url, onJobs) {
    const live = document.getElementById("live");
    const source = new EventSource(url);
    source.addEventListener("open", () => live && live.classList.add("on"));
    source.addEventListener("error", () => live && live.classList.remove("on"));
    source.addEventListener("reset", () => window.location.reload());
    source.addEventListener("jobs", (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (data && Array.isArray(data.jobs)) onJobs(data.jobs, data);
    });
    return source;
  }

  function grid() {
    const container = document.getElementById("grid");
    const template = document.getElementById("card-template");
    const firstPage = body.dataset.firstPage === "1";
    const cards = new Map();
    container.querySelectorAll("article.card").forEach((el) => cards.set(el.dataset.key, el));

    function insert(job) {
      const card = template.content.firstElementChild.cloneNode(true);
      fill(card, job);
      // Newest first: before the first card that is older than this one.
      let before = null;
      for (const el of container.children) {
        if (Number(el.dataset.created) < Number(job.createdTs)) {
          before = el;
          break;
        }
      }
      container.insertBefore(card, before);
      cards.set(job.key, card);
      const empty = document.getElementById("empty");
      if (empty) empty.remove();
    }

    const count = document.getElementById("count");
    connect(body.dataset.stream, (jobs, data) => {
      if (count && Number.isInteger(data.total)) count.textContent = data.total + (data.total === 1 ? " job" : " jobs");
      for (const job of jobs) {
        if (typeof job.key !== "string") continue;
        const card = cards.get(job.key);
        if (job.gone) {
          if (card) {
            card.remove();
            cards.delete(job.key);
          }
        } else if (card) {
          fill(card, job);
        } else if (firstPage) {
          const newest = container.firstElementChild;
          if (!newest || Number(job.createdTs) >= Number(newest.dataset.created) || cards.size < 1) insert(job);
        }
      }
    });

    document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
      select.addEventListener("change", () => select.form.submit());
    });
  }

  function jobPage() {
    const root = document.querySelector("article.job");
    const renderedPhase = body.dataset.phase;
    connect(body.dataset.stream, (jobs) => {
      for (const job of jobs) {
        if (job.key !== body.dataset.key) continue;
        if (job.gone) {
          setPhase(root, "Cancelled");
          continue;
        }
        setPhase(root, job.phase);
        setProgress(root, job);
        // Finished since the page was served: reload once to show the images (fresh links).
        if (TERMINAL.includes(job.phase) && !TERMINAL.includes(renderedPhase)) window.location.reload();
      }
    });
    const button = document.getElementById("copy-yaml");
    const manifest = document.getElementById("manifest");
    const copied = document.getElementById("copied");
    if (button && manifest) {
      button.addEventListener("click", () => {
        const text = manifest.textContent;
        const done = () => { if (copied) copied.textContent = "copied"; };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, () => selectText(manifest));
        } else {
          selectText(manifest);
        }
      });
    }
  }

  function selectText(el) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  if (page === "grid") grid();
  else if (page === "job") jobPage();
})();
