"""A pipeline as a small left-to-right SVG (server-rendered, no script). Pure."""
from __future__ import annotations

from html import escape

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 46, 60, 18, 12
COLORS = {"completed": "#2e7d32", "failed": "#c62828", "cancelled": "#757575", "running": "#1565c0",
          "waiting": "#8d6e63", "queued": "#6a1b9a", "uploading": "#6a1b9a", "pending": "#6a1b9a"}


def layers(steps: list[dict]) -> dict[str, int]:
    """Column of each step: 0 for roots, else one more than its deepest dependency."""
    by_id = {st["job_id"]: st for st in steps}
    depth: dict[str, int] = {}

    def level(job_id: str, seen: frozenset = frozenset()) -> int:
        if job_id in depth:
            return depth[job_id]
        parents = [d for d in by_id[job_id]["depends_on"] if d in by_id and d not in seen]
        depth[job_id] = 1 + max((level(p, seen | {job_id}) for p in parents), default=-1)
        return depth[job_id]

    for st in steps:
        level(st["job_id"])
    return depth


def svg(steps: list[dict], link=lambda job_id: f"/jobs/{job_id}") -> str:
    depth = layers(steps)
    rows: dict[int, int] = {}
    pos = {}
    for st in steps:
        col = depth[st["job_id"]]
        row = rows.get(col, 0)
        rows[col] = row + 1
        pos[st["job_id"]] = (PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    width = PAD * 2 + (max(depth.values(), default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values(), default=1) * (BOX_H + GAP_Y) - GAP_Y
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="pipeline-graph" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="pipeline graph">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#888"/></marker></defs>']
    for st in steps:
        x2, y2 = pos[st["job_id"]]
        for parent in st["depends_on"]:
            if parent in pos:
                x1, y1 = pos[parent]
                dash = ' stroke-dasharray="4 3"' if st.get("on") == "any" else ""
                out.append(f'<line x1="{x1 + BOX_W}" y1="{y1 + BOX_H / 2}" x2="{x2}" y2="{y2 + BOX_H / 2}" '
                           f'stroke="#888" stroke-width="1.5"{dash} marker-end="url(#arrow)"/>')
    for st in steps:
        x, y = pos[st["job_id"]]
        color = COLORS.get(st["status"], "#455a64")
        label = escape(str(st.get("step") or st["name"])[:22])
        out.append(f'<a href="{escape(link(st["job_id"]))}" class="pipeline-node" data-status="{escape(st["status"])}">'
                   f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#fff" stroke="{color}" '
                   f'stroke-width="2"/><text x="{x + 10}" y="{y + 19}" font-size="13" font-weight="600">{label}</text>'
                   f'<text x="{x + 10}" y="{y + 36}" font-size="11" fill="{color}">{escape(st["status"])} · '
                   f'{escape(str(st["provider"]))}</text></a>')
    out.append("</svg>")
    return "".join(out)
