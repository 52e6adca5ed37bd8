// Charts with the vendored Chart.js (loaded on first use; no network beyond this API).
let loading = null;

export function loadChartJs() {
  if (window.Chart) return Promise.resolve(window.Chart);
  loading ||= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = "/static/vendor/chart.umd.min.js";
    script.onload = () => resolve(window.Chart);
    script.onerror = () => {
      loading = null;
      reject(new Error("the chart library did not load"));
    };
    document.head.append(script);
  });
  return loading;
}

const COLORS = ["#2857c5", "#c2410c"];

/** A bar chart on `canvas` (replacing the one there); `label` describes it to screen readers. */
export async function barChart(canvas, { labels, series, xTitle, yTitle, label }) {
  const Chart = await loadChartJs();
  Chart.getChart(canvas)?.destroy();
  canvas.setAttribute("aria-label", label);
  return new Chart(canvas, {
    type: "bar",
    data: {
      labels,
      datasets: series.map((s, i) => ({ label: s.name, data: s.values, backgroundColor: COLORS[i % COLORS.length], yAxisID: i ? "y1" : "y" })),
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: { legend: { display: series.length > 1 } },
      scales: {
        x: { title: { display: Boolean(xTitle), text: xTitle }, ticks: { maxRotation: 60, autoSkip: true } },
        y: { title: { display: Boolean(yTitle), text: yTitle }, beginAtZero: true },
        ...(series.length > 1 ? { y1: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: series[1].name } } } : {}),
      },
    },
  });
}
