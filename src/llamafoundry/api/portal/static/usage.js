// The Usage page's charts (Chart.js, vendored): one stacked bar chart per series, one colour per deployment.
// The numbers are in the table below each chart set; the charts only draw them.
"use strict";

const PALETTE = ["#0f6cbd", "#c50f1f", "#107c10", "#8764b8", "#ca5010", "#038387", "#986f0b", "#5c2e91"];

document.addEventListener("DOMContentLoaded", () => {
  const data = JSON.parse(document.getElementById("usage-data").textContent);
  const colour = (index) => PALETTE[index % PALETTE.length];
  document.querySelectorAll("canvas[data-series]").forEach((canvas) => {
    const series = data.series[canvas.dataset.series];
    const datasets = data.deployments.map((name, index) => ({
      label: name, data: series[name], backgroundColor: colour(index), borderColor: colour(index), borderWidth: 1,
    }));
    new Chart(canvas, {
      type: "bar",
      data: { labels: data.periods, datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } },
        plugins: { legend: { position: "bottom" } },
      },
    });
  });
});
