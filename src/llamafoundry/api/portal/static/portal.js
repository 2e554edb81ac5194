// Small enhancements of the server-rendered pages: copy buttons, showing a masked key, confirmation dialogs,
// keyboard tabs (WAI-ARIA tabs pattern) and the Deploy form's weights source. Plain JavaScript, no build step.
"use strict";

function announce(button, text) {
  const label = button.textContent;
  button.textContent = text;
  setTimeout(() => { button.textContent = label; }, 1500);
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea"); // plain http on another host: no Clipboard API there
  area.value = text;
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

function initCopy(root) {
  root.querySelectorAll("[data-copy-from]").forEach((button) => {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copyFrom);
      const text = "value" in source && source.value !== undefined ? source.value : source.textContent;
      try {
        await copyText(text);
        announce(button, "Copied");
      } catch (error) {
        announce(button, "Copy failed");
      }
    });
  });
}

function initReveal(root) {
  root.querySelectorAll("[data-reveal]").forEach((button) => {
    button.addEventListener("click", () => {
      const input = document.getElementById(button.dataset.reveal);
      const shown = input.type === "password";
      input.type = shown ? "text" : "password";
      button.textContent = shown ? "Hide" : "Show";
      button.setAttribute("aria-pressed", String(shown));
    });
  });
}

function initDialogs(root) {
  root.querySelectorAll("[data-dialog]").forEach((button) => {
    const dialog = document.getElementById(button.dataset.dialog);
    button.addEventListener("click", () => dialog.showModal());
    dialog.querySelectorAll("[data-close]").forEach((close) => {
      close.addEventListener("click", () => dialog.close());
    });
    dialog.addEventListener("close", () => button.focus());
  });
}

function initTabs(root) {
  root.querySelectorAll("[data-tabs]").forEach((tabset) => {
    const tabs = Array.from(tabset.querySelectorAll('[role="tab"]'));
    const select = (tab, focus) => {
      tabs.forEach((other) => {
        const selected = other === tab;
        other.setAttribute("aria-selected", String(selected));
        other.tabIndex = selected ? 0 : -1;
        document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
      });
      if (focus) tab.focus();
    };
    tabs.forEach((tab, index) => {
      tab.addEventListener("click", () => select(tab, false));
      tab.addEventListener("keydown", (event) => {
        const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 };
        if (!(event.key in moves)) return;
        event.preventDefault();
        select(tabs[(moves[event.key] + tabs.length) % tabs.length], true);
      });
    });
    select(tabs.find((t) => t.getAttribute("aria-selected") === "true") || tabs[0], false);
  });
}

function initSourceChoice(root) {
  const radios = Array.from(root.querySelectorAll("input[data-shows]"));
  if (!radios.length) return;
  const update = () => radios.forEach((radio) => {
    const part = document.getElementById(radio.dataset.shows);
    if (part) part.hidden = !radio.checked;
  });
  radios.forEach((radio) => radio.addEventListener("change", update));
  update();
}

document.addEventListener("DOMContentLoaded", () => {
  initCopy(document);
  initReveal(document);
  initDialogs(document);
  initTabs(document);
  initSourceChoice(document);
});
