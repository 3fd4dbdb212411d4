// SVG charts drawn from /v1/stats minutes: stacked bars of finished tasks per minute, and
// lines of start lag. Each chart has a <title> and <desc>, a legend, and its data as a table.

import { clock, h, num, svg, table, td, uid } from "./dom.js";

const MARGIN = { top: 14, right: 14, bottom: 50, left: 62 };

/** The drawing's size in SVG units: narrower on a phone, so that its text stays readable
 * once the drawing is scaled to the screen's width. */
function geometry() {
  const width = window.innerWidth < 700 ? 380 : 640;
  const height = window.innerWidth < 700 ? 230 : 250;
  return {
    width,
    height,
    plotW: width - MARGIN.left - MARGIN.right,
    plotH: height - MARGIN.top - MARGIN.bottom,
    labelEvery: width < 500 ? 20 : 10, // minutes between time labels
  };
}

/** Round ticks from 0 to at least `max`: {top, step, decimals}. */
export function niceScale(max, { integer = false } = {}) {
  if (!(max > 0)) return { top: 1, step: integer ? 1 : 0.25, decimals: integer ? 0 : 2 };
  const raw = max / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / magnitude;
  let step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * magnitude;
  if (integer) step = Math.max(1, Math.round(step));
  const top = Math.ceil(max / step - 1e-9) * step;
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  return { top, step, decimals };
}

function frame({ g, titleText, descText, scale, yLabel, minutes }) {
  const titleId = uid("chart-title");
  const descId = uid("chart-desc");
  const root = svg(
    "svg",
    {
      class: "chart",
      viewBox: `0 0 ${g.width} ${g.height}`,
      role: "img",
      "aria-labelledby": `${titleId} ${descId}`,
    },
    svg("title", { id: titleId }, titleText),
    svg("desc", { id: descId }, descText),
  );
  const grid = svg("g", { class: "axis", "aria-hidden": "true" });
  for (let v = 0; v <= scale.top + scale.step / 2; v += scale.step) {
    const y = MARGIN.top + g.plotH - (v / scale.top) * g.plotH;
    grid.append(
      svg("line", { class: "grid", x1: MARGIN.left, x2: MARGIN.left + g.plotW, y1: y, y2: y }),
      svg(
        "text",
        { x: MARGIN.left - 8, y: y + 4, "text-anchor": "end" },
        v.toFixed(scale.decimals),
      ),
    );
  }
  const slot = g.plotW / Math.max(1, minutes.length);
  minutes.forEach((minute, i) => {
    // A label at every ten (or twenty) minute mark of the local clock.
    if (new Date(minute.start).getMinutes() % g.labelEvery !== 0) return;
    const x = MARGIN.left + i * slot + slot / 2;
    grid.append(
      svg("line", {
        class: "tick",
        x1: x,
        x2: x,
        y1: MARGIN.top + g.plotH,
        y2: MARGIN.top + g.plotH + 5,
      }),
      svg(
        "text",
        { x, y: MARGIN.top + g.plotH + 18, "text-anchor": "middle" },
        clock(minute.start),
      ),
    );
  });
  grid.append(
    svg("line", {
      class: "baseline",
      x1: MARGIN.left,
      x2: MARGIN.left + g.plotW,
      y1: MARGIN.top + g.plotH,
      y2: MARGIN.top + g.plotH,
    }),
    svg(
      "text",
      {
        class: "axis-label",
        x: MARGIN.left + g.plotW / 2,
        y: g.height - 8,
        "text-anchor": "middle",
      },
      "minute (your local time)",
    ),
    svg(
      "text",
      {
        class: "axis-label",
        x: -(MARGIN.top + g.plotH / 2),
        y: 16,
        transform: "rotate(-90)",
        "text-anchor": "middle",
      },
      yLabel,
    ),
  );
  root.append(grid);
  return { root, slot };
}

function legend(series) {
  return h(
    "ul",
    { class: "legend" },
    series.map((s) =>
      h(
        "li",
        {},
        svg(
          "svg",
          { class: "swatch", viewBox: "0 0 24 12", width: 24, height: 12, "aria-hidden": "true" },
          s.kind === "line"
            ? svg("line", { class: `line ${s.className}`, x1: 1, x2: 23, y1: 6, y2: 6 })
            : svg("rect", { class: `bar ${s.className}`, x: 4, y: 1, width: 16, height: 10 }),
        ),
        s.label,
      ),
    ),
  );
}

function dataTable(caption, columns, minutes, cells) {
  return h(
    "details",
    { class: "chart-data" },
    h("summary", {}, "Show the data as a table"),
    table({
      caption,
      columns: [
        { label: "Minute starting" },
        ...columns.map((c) => ({ label: c, className: "num" })),
      ],
      rows: minutes.map((m) =>
        h(
          "tr",
          {},
          h(
            "th",
            { scope: "row" },
            h("time", { datetime: m.start, title: m.start }, clock(m.start)),
          ),
          cells(m).map((c) => td(c, "num")),
        ),
      ),
    }),
  );
}

function span(minutes) {
  if (!minutes.length) return "";
  return `from ${clock(minutes[0].start)} to ${clock(minutes[minutes.length - 1].start)}`;
}

/** Stacked bars: tasks completed and failed per minute. */
export function completionsChart(minutes) {
  const totals = minutes.map((m) => (m.completed ?? 0) + (m.failed ?? 0));
  const completed = minutes.reduce((a, m) => a + (m.completed ?? 0), 0);
  const failed = minutes.reduce((a, m) => a + (m.failed ?? 0), 0);
  const busiest = totals.indexOf(Math.max(0, ...totals));
  const scale = niceScale(Math.max(0, ...totals), { integer: true });
  const descText =
    completed + failed === 0
      ? `No task finished in the last hour (${span(minutes)}).`
      : `Tasks finished per minute ${span(minutes)}: ${completed} completed and ${failed} ` +
        `failed in all; the busiest minute, ${clock(minutes[busiest].start)}, had ` +
        `${totals[busiest]}.`;
  const g = geometry();
  const { root, slot } = frame({
    g,
    titleText: "Tasks finished per minute, last hour",
    descText,
    scale,
    yLabel: "tasks per minute",
    minutes,
  });
  const bars = svg("g", { class: "bars" });
  const y = (v) => (v / scale.top) * g.plotH;
  minutes.forEach((m, i) => {
    const c = m.completed ?? 0;
    const f = m.failed ?? 0;
    if (c + f === 0) return;
    const x = MARGIN.left + i * slot + slot * 0.12;
    const width = slot * 0.76;
    const base = MARGIN.top + g.plotH;
    bars.append(
      svg(
        "g",
        {},
        svg("title", {}, `${clock(m.start)}: ${c} completed, ${f} failed`),
        c ? svg("rect", { class: "bar completed", x, width, y: base - y(c), height: y(c) }) : null,
        f
          ? svg("rect", {
              class: "bar failed",
              x,
              width,
              y: base - y(c) - y(f),
              height: y(f),
            })
          : null,
      ),
    );
  });
  root.append(bars);
  return h(
    "figure",
    { class: "chart-figure" },
    h("figcaption", {}, h("h3", {}, "Finished tasks per minute")),
    legend([
      { label: "completed", className: "completed" },
      { label: "failed", className: "failed" },
    ]),
    root,
    dataTable("Tasks finished per minute", ["Completed", "Failed"], minutes, (m) => [
      num(m.completed ?? 0),
      num(m.failed ?? 0),
    ]),
  );
}

function seconds(value, decimals = 3) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(decimals);
}

/** Lines: start lag p50 and p99 per minute, in seconds; gaps where no task started. */
export function lagChart(minutes) {
  const values = minutes
    .flatMap((m) => [m.lag_p50_s, m.lag_p99_s])
    .filter((v) => v !== null && v !== undefined);
  const max = Math.max(0, ...values);
  const scale = niceScale(max);
  let descText = `No task started in the last hour (${span(minutes)}).`;
  if (values.length) {
    const p50s = minutes.map((m) => m.lag_p50_s).filter((v) => v !== null && v !== undefined);
    let worst = 0;
    minutes.forEach((m, i) => {
      if ((m.lag_p99_s ?? -1) > (minutes[worst].lag_p99_s ?? -1)) worst = i;
    });
    descText =
      `Start lag per minute ${span(minutes)}: the median (p50) ranged from ` +
      `${seconds(Math.min(...p50s))} to ${seconds(Math.max(...p50s))} seconds; the 99th ` +
      `percentile peaked at ${seconds(minutes[worst].lag_p99_s)} seconds at ` +
      `${clock(minutes[worst].start)}.`;
  }
  const g = geometry();
  const { root, slot } = frame({
    g,
    titleText: "Start lag, p50 and p99, last hour",
    descText,
    scale,
    yLabel: "start lag (seconds)",
    minutes,
  });
  const series = [
    { key: "lag_p50_s", label: "p50 (median)", className: "p50", kind: "line" },
    { key: "lag_p99_s", label: "p99", className: "p99", kind: "line" },
  ];
  for (const s of series) {
    const group = svg("g", { class: `series ${s.className}` });
    let points = [];
    const flush = () => {
      if (points.length > 1) {
        group.append(svg("polyline", { class: `line ${s.className}`, points: points.join(" ") }));
      }
      points = [];
    };
    minutes.forEach((m, i) => {
      const v = m[s.key];
      if (v === null || v === undefined) {
        flush();
        return;
      }
      const x = MARGIN.left + i * slot + slot / 2;
      const y = MARGIN.top + g.plotH - (v / scale.top) * g.plotH;
      points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
      group.append(
        svg(
          "circle",
          { class: `dot ${s.className}`, cx: x, cy: y, r: 2.5 },
          svg("title", {}, `${clock(m.start)}: ${s.label} ${seconds(v)} s`),
        ),
      );
    });
    flush();
    root.append(group);
  }
  if (!values.length) {
    root.append(
      svg(
        "text",
        {
          class: "empty",
          x: MARGIN.left + g.plotW / 2,
          y: MARGIN.top + g.plotH / 2,
          "text-anchor": "middle",
        },
        "No task started in the last hour",
      ),
    );
  }
  return h(
    "figure",
    { class: "chart-figure" },
    h("figcaption", {}, h("h3", {}, "Start lag (time from due to started)")),
    legend(series),
    root,
    dataTable("Start lag per minute, in seconds", ["p50 (s)", "p99 (s)"], minutes, (m) => [
      seconds(m.lag_p50_s),
      seconds(m.lag_p99_s),
    ]),
  );
}
