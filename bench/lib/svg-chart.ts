/**
 * A grouped horizontal bar chart as a standalone SVG (no dependencies):
 * one group per category, one bar per series, on a log10 axis (the values
 * span milliseconds to seconds). Missing values are left out of a group.
 */
export interface ChartSeries {
  name: string;
  color: string;
  /** Hatched bars (e.g. numbers not measured in this run). */
  hatched?: boolean;
}

export interface ChartGroup {
  label: string;
  /** One value per series (seconds), or null. */
  values: (number | null)[];
  /** Optional [min, max] whiskers per series. */
  ranges?: ([number, number] | null)[];
}

export interface ChartOptions {
  title: string;
  subtitle?: string;
  unit: string;
  series: ChartSeries[];
  groups: ChartGroup[];
  /** Room for the group labels (default 230 px). */
  leftMargin?: number;
  /** Target per group (drawn as a dashed tick), or null. */
  targets?: (number | null)[];
  width?: number;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export function groupedBarChart(o: ChartOptions): string {
  const width = o.width ?? 1100;
  const left = o.leftMargin ?? 230;
  const right = 40;
  const top = o.subtitle ? 74 : 56;
  const barH = 13;
  const gap = 3;
  const groupGap = 16;
  const legendH = 26 + 18 * Math.ceil(o.series.length / 3);
  const groupH = (g: ChartGroup): number => g.values.filter((v) => v !== null).length * (barH + gap) + groupGap;
  const plotH = o.groups.reduce((h, g) => h + groupH(g), 0);
  const height = top + plotH + 40 + legendH;
  const all = o.groups.flatMap((g) => [...g.values, ...(g.ranges ?? []).flatMap((r) => r ?? [])]).filter((v): v is number => v !== null && v > 0);
  const targets = (o.targets ?? []).filter((v): v is number => v !== null && v > 0);
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...all, ...targets))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...all, ...targets))));
  const plotW = width - left - right;
  const x = (v: number): number => left + ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plotW;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  out.push('<defs>');
  for (const [i, s] of o.series.entries()) {
    if (s.hatched) out.push(`<pattern id="hatch${i}" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="${s.color}" fill-opacity="0.25"/><line x1="0" y1="0" x2="0" y2="6" stroke="${s.color}" stroke-width="3"/></pattern>`);
  }
  out.push('</defs>');
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="16" y="24" font-size="16" font-weight="bold">${esc(o.title)}</text>`);
  if (o.subtitle) out.push(`<text x="16" y="44" fill="#555">${esc(o.subtitle)}</text>`);
  // Axis grid: decades and 2×, 5× ticks.
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    for (const m of [1, 2, 5]) {
      const v = d * m;
      if (v > hi * 1.0001) break;
      const xv = x(v);
      out.push(`<line x1="${xv.toFixed(1)}" y1="${top - 6}" x2="${xv.toFixed(1)}" y2="${top + plotH}" stroke="${m === 1 ? '#bbb' : '#e5e5e5'}"/>`);
      const label = v >= 1 ? `${+v.toPrecision(3)} ${o.unit}` : v >= 1e-3 ? `${+(v * 1000).toPrecision(3)} m${o.unit}` : `${+(v * 1e6).toPrecision(3)} µ${o.unit}`;
      out.push(`<text x="${xv.toFixed(1)}" y="${top + plotH + 16}" text-anchor="middle" fill="#555" font-size="11">${esc(label)}</text>`);
    }
  }
  let y = top;
  for (const [gi, g] of o.groups.entries()) {
    const h = groupH(g) - groupGap;
    const lines = g.label.split('\n');
    lines.forEach((ln, i) => out.push(`<text x="${left - 8}" y="${(y + h / 2 + 4 + (i - (lines.length - 1) / 2) * 14).toFixed(1)}" text-anchor="end" ${i === 0 ? 'font-weight="bold"' : 'fill="#444"'}>${esc(ln)}</text>`));
    for (const [si, v] of g.values.entries()) {
      if (v === null) continue;
      const s = o.series[si]!;
      const w = Math.max(1, x(v) - left);
      out.push(`<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${s.hatched ? `url(#hatch${si})` : s.color}" stroke="${s.color}" stroke-width="${s.hatched ? 1 : 0}"/>`);
      const r = g.ranges?.[si];
      if (r) {
        const [a, b] = [x(r[0]), x(r[1])];
        out.push(`<line x1="${a.toFixed(1)}" y1="${y + barH / 2}" x2="${b.toFixed(1)}" y2="${y + barH / 2}" stroke="#222"/>`);
        out.push(`<line x1="${a.toFixed(1)}" y1="${y + 3}" x2="${a.toFixed(1)}" y2="${y + barH - 3}" stroke="#222"/><line x1="${b.toFixed(1)}" y1="${y + 3}" x2="${b.toFixed(1)}" y2="${y + barH - 3}" stroke="#222"/>`);
      }
      const text = v >= 1 ? `${v.toFixed(2)} ${o.unit}` : `${(v * 1000).toFixed(v < 0.01 ? 1 : 0)} m${o.unit}`;
      const tx = Math.max(x(v), r ? x(r[1]) : 0) + 4;
      out.push(`<text x="${tx.toFixed(1)}" y="${y + barH - 2}" font-size="10.5" fill="#333">${esc(text)}</text>`);
      y += barH + gap;
    }
    const t = o.targets?.[gi];
    if (t) {
      const xt = x(t);
      out.push(`<line x1="${xt.toFixed(1)}" y1="${y - h - 3}" x2="${xt.toFixed(1)}" y2="${y}" stroke="#d62728" stroke-width="2" stroke-dasharray="4,3"/>`);
    }
    y += groupGap;
  }
  // Legend.
  let ly = top + plotH + 38;
  const colW = (width - left) / 3;
  for (const [i, s] of o.series.entries()) {
    const lx = left + (i % 3) * colW;
    if (i > 0 && i % 3 === 0) ly += 18;
    out.push(`<rect x="${lx}" y="${ly}" width="14" height="11" fill="${s.hatched ? `url(#hatch${i})` : s.color}" stroke="${s.color}"/>`);
    out.push(`<text x="${lx + 20}" y="${ly + 10}">${esc(s.name)}</text>`);
  }
  if (o.targets?.some((t) => t)) {
    ly += 18;
    out.push(`<line x1="${left}" y1="${ly + 6}" x2="${left + 14}" y2="${ly + 6}" stroke="#d62728" stroke-width="2" stroke-dasharray="4,3"/>`);
    out.push(`<text x="${left + 20}" y="${ly + 10}">target (time)</text>`);
  }
  out.push('</svg>');
  // The legend may need one more line than estimated.
  return out.join('\n').replace(`height="${height}" viewBox="0 0 ${width} ${height}"`, `height="${ly + 24}" viewBox="0 0 ${width} ${ly + 24}"`).replace(`<rect width="${width}" height="${height}" fill="white"/>`, `<rect width="${width}" height="${ly + 24}" fill="white"/>`);
}
