"""HTML report of mined pairs: one self-contained page (inline CSS/JS, images as data URIs).

    from contextrl.miner.report import write_report
    write_report("mined/pairs.jsonl", "mined/report.html", funnel="mined/funnel.json")

Per pair: the query and the answer, the option letters the policy would see (drawn as in
`selection_prompt`), the two contexts side by side (C+ | C-) with the decisive difference
highlighted (line ranges from ``pair.difference``; lines far from it fold into expandable
runs), region boxes and a difference heat map for image pairs, the verification verdict with
each check's reason, and provenance. The filter funnel is an inline SVG bar chart. All text
is HTML-escaped; nothing is fetched from the network when the page is opened.
"""

from __future__ import annotations

import base64
import html
import io
import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from contextrl.errors import MiningError
from contextrl.miner.pair import ContrastivePair, read_pairs, split_lines
from contextrl.miner.render import selection_prompt
from contextrl.miner.verify import looks_like_patch

MAX_INLINE_PIXELS = 1024
"""Images wider or taller than this are downscaled before being inlined."""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


# --------------------------------------------------------------------------- funnel


def load_funnel(funnel: str | Path | Mapping[str, int] | Sequence | None) -> list[tuple[str, int]]:
    """Funnel stages as ``[(name, count)]`` from a mapping, a ``[(name, count)]`` list, an
    object with ``to_dict()``, or a JSON file holding any of these (or ``{"stages": [...]}``)."""
    if funnel is None:
        return []
    if hasattr(funnel, "to_dict"):
        funnel = funnel.to_dict()
    if isinstance(funnel, (str, Path)):
        try:
            funnel = json.loads(Path(funnel).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise MiningError(f"funnel {funnel}: cannot read it as JSON ({e})") from e
    if isinstance(funnel, Mapping) and "stages" in funnel and not isinstance(funnel["stages"], (int, float)):
        funnel = funnel["stages"]
    items = funnel.items() if isinstance(funnel, Mapping) else funnel
    out = []
    for item in items:
        if isinstance(item, Mapping):
            item = (item.get("name", item.get("stage")), item.get("count"))
        try:
            name, count = item
            out.append((str(name), int(count)))
        except (TypeError, ValueError):
            raise MiningError(f"funnel entry {item!r}: expected a stage name and a count") from None
    return out


def funnel_svg(stages: Sequence[tuple[str, int]], width: int = 760) -> str:
    """An inline SVG horizontal bar chart: one bar per stage, with its count and, where it is not
    above the first stage's count, its share of it."""
    if not stages:
        return ""
    label_w, row_h, top = 230, 26, 6
    bar_w = width - label_w - 150
    peak = max(max(c for _, c in stages), 1)
    first = stages[0][1] or 1
    rows = []
    for i, (name, count) in enumerate(stages):
        y = top + i * row_h
        w = max(1.0, bar_w * count / peak) if count else 0
        rows.append(
            f'<g class="stage" data-stage="{_e(name)}"><title>{_e(name)}: {count}</title>'
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{_e(name)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" rx="3"></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 16}">{count:,}{f" ({100 * count / first:.3g}%)" if count <= first else ""}</text></g>')
    height = top * 2 + row_h * len(stages)
    return (f'<svg class="funnel-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="filter funnel">{"".join(rows)}</svg>')


# --------------------------------------------------------------------------- images


def _open_rgb(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def _data_uri(path: Path) -> str:
    """The image as a data URI (PNG; downscaled when larger than MAX_INLINE_PIXELS)."""
    im = _open_rgb(path)
    if max(im.size) > MAX_INLINE_PIXELS:
        im.thumbnail((MAX_INLINE_PIXELS, MAX_INLINE_PIXELS))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def diff_heatmap_png(positive: str | Path, negative: str | Path, regions: Iterable[Sequence[int]] = ()) -> bytes:
    """A PNG heat map of |C+ - C-| per pixel (black: equal, red -> yellow -> white: most
    different), with `regions` (x0, y0, x1, y1 in C+ pixels) outlined in cyan. A C- of a
    different size is resized to C+'s size first."""
    import numpy as np
    from PIL import Image, ImageDraw

    a, b = _open_rgb(Path(positive)), _open_rgb(Path(negative))
    if b.size != a.size:
        b = b.resize(a.size)
    d = np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean(axis=2)
    v = d / d.max() if d.max() > 0 else d
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=2)
    im = Image.fromarray((rgb * 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for x0, y0, x1, y1 in regions:
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=(0, 220, 255))
    if max(im.size) < 160:  # tiny images: scale up so the map is visible
        k = -(-160 // max(im.size))
        im = im.resize((im.width * k, im.height * k), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _resolve(path: str, base: Path | None) -> Path:
    p = Path(path)
    if not p.is_absolute() and not p.exists() and base is not None and (base / p).exists():
        return base / p
    return p


def _image_side(path: Path, regions: Sequence[Sequence[int]]) -> str:
    try:
        uri, size = _data_uri(path), _open_rgb(path).size
    except Exception as e:  # a missing or corrupt image is shown, not fatal
        return f'<div class="missing">cannot load image {_e(path)}: {_e(e)}</div>'
    w, h = size
    rects = "".join(f'<rect class="region" x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}"></rect>' for x0, y0, x1, y1 in regions)
    return (f'<div class="imgbox"><img src="{uri}" alt="{_e(path.name)}" width="{w}" height="{h}">'
            f'<svg viewBox="0 0 {w} {h}" preserveAspectRatio="none">{rects}</svg></div>'
            f'<div class="prov">{_e(path)} ({w}&times;{h}); {len(regions)} region(s)</div>')


# --------------------------------------------------------------------------- text


def _lines_html(lines: list[str], start: int, marked: set[int], gaps: set[int]) -> str:
    out = []
    for i, line in enumerate(lines, start):
        if i in gaps:
            out.append('<span class="gap" title="the other context has lines here"></span>')
        cls = "line hl" if i in marked else "line"
        out.append(f'<span class="{cls}" data-line="{i}"><span class="no">{i + 1}</span>{_e(line)}\n</span>')
    return "".join(out)


def context_html(text: str, spans: Sequence[Sequence[int]], context_lines: int = 6) -> str:
    """Numbered lines of one text context; lines inside `spans` get class ``hl``, empty spans
    a gap marker, and runs farther than `context_lines` from any span fold into <details>."""
    lines = split_lines(text)
    marked = {i for s, e in spans for i in range(s, e)}
    gaps = {s for s, e in spans if s == e}
    anchors = sorted(marked | gaps | {min(g, max(len(lines) - 1, 0)) for g in gaps})
    keep = [not anchors or any(abs(i - a) <= context_lines for a in anchors) for i in range(len(lines))]
    out, i = [], 0
    while i < len(lines):
        j = i
        while j < len(lines) and keep[j] == keep[i]:
            j += 1
        body = f"<pre>{_lines_html(lines[i:j], i, marked, gaps)}</pre>"
        out.append(body if keep[i] or j - i < 3 else f'<details class="elided"><summary>&hellip; {j - i} unchanged line(s) {i + 1}&ndash;{j} &hellip;</summary>{body}</details>')
        i = j
    if len(lines) in gaps:
        out.append('<pre><span class="gap" title="the other context has lines here"></span></pre>')
    return "".join(out) or '<pre class="note">(empty context)</pre>'


def _answer_html(answer: str) -> str:
    if not looks_like_patch(answer):
        return _e(answer)
    out = []
    for line in answer.split("\n"):
        cls = "hunk" if line.startswith("@@") else "add" if line.startswith("+") and not line.startswith("+++") else \
            "del" if line.startswith("-") and not line.startswith("---") else ""
        out.append(f'<span class="{cls}">{_e(line)}</span>' if cls else _e(line))
    return "\n".join(out)


# --------------------------------------------------------------------------- page


def _status(pair: ContrastivePair) -> str:
    return "unverified" if pair.verdict is None else "ok" if pair.verdict.ok else "rejected"


def _verdict_html(pair: ContrastivePair) -> str:
    if pair.verdict is None:
        return '<p class="note">not verified</p>'
    rows = "".join(f'<tr class="check {"pass" if c.passed else "fail"}"><td class="{"pass" if c.passed else "fail"}">'
                   f'{"&#10003;" if c.passed else "&#10007;"}</td><td>{_e(c.name)}</td><td>{_e(c.detail)}</td></tr>'
                   for c in pair.verdict.reasons)
    failed = [c.name for c in pair.verdict.failed]
    head = "accepted" if pair.verdict.ok else "rejected by " + ", ".join(failed)
    return (f'<details class="verdict" open><summary>Verification: {_e(head)} ({len(pair.verdict.reasons)} checks)</summary>'
            f'<table class="checks"><tr><th></th><th>check</th><th>reason</th></tr>{rows}</table></details>')


def pair_html(pair: ContrastivePair, number: int, *, seed: int = 0, base_dir: Path | None = None, context_lines: int = 6) -> str:
    """One pair as a <section>: header, Q/A, option letters, the two sides, verdict, provenance."""
    status = _status(pair)
    label = "accepted" if status == "ok" else status
    pos_opt = selection_prompt(pair, seed).positive_option
    neg_opt = "B" if pos_opt == "A" else "A"
    diff = pair.difference
    if pair.kind == "image":
        pp, np_ = _resolve(pair.positive.image_path, base_dir), _resolve(pair.negative.image_path, base_dir)
        sides = [_image_side(pp, diff.positive), _image_side(np_, diff.negative)]
        try:
            heat = base64.b64encode(diff_heatmap_png(pp, np_, diff.positive)).decode("ascii")
            extra = (f'<div class="heatmap"><h3>Difference heat map (|C+ &minus; C&minus;|, declared regions outlined)</h3>'
                     f'<img src="data:image/png;base64,{heat}" alt="difference heat map"></div>')
        except Exception as e:  # unreadable images already show an error above
            extra = f'<div class="missing">no heat map: {_e(e)}</div>'
    else:
        sides = [f'<div class="ctx">{context_html(pair.positive.text or "", diff.positive, context_lines)}</div>',
                 f'<div class="ctx">{context_html(pair.negative.text or "", diff.negative, context_lines)}</div>']
        extra = ""
    n_pos = len(diff.positive)
    sup = pair.negative.supported_answer
    conf = f' &mdash; supports {_e(sup[:80])}{"&hellip;" if len(sup) > 80 else ""}' if sup and pair.kind == "image" else ""
    prov = pair.provenance
    search = _e(f"{pair.id} {pair.query[:200]} {prov.miner}".lower())
    return f"""<section class="pair {status}" id="pair-{pair.id}" data-id="{pair.id}" data-status="{status}" data-search="{search}">
<h2><a href="#pair-{pair.id}">#{number}</a> <code class="pid">{pair.id}</code> <span class="badge {status}">{label}</span>
<span class="tag">{_e(pair.kind)}</span>{f'<span class="tag">{_e(prov.miner)}</span>' if prov.miner else ""}<span class="tag">{n_pos} decisive span(s)</span></h2>
<div class="qa"><div><h3>Query</h3><pre class="query">{_e(pair.query)}</pre></div><div><h3>Answer</h3><pre class="answer">{_answer_html(pair.answer)}</pre></div></div>
<p class="options">The policy sees C+ as option <b class="opt-pos">{pos_opt}</b> and C&minus; as option <b class="opt-neg">{neg_opt}</b> (order drawn with seed {seed}); the correct choice is <b>{pos_opt}</b>.</p>
<div class="sides"><div class="side pos"><h3>C+ &middot; option {pos_opt} &middot; supports the answer</h3>{sides[0]}</div>
<div class="side neg"><h3>C&minus; &middot; option {neg_opt} &middot; confounder{conf}</h3>{sides[1]}</div></div>
{extra}{_verdict_html(pair)}
<div class="prov">sources: {_e(", ".join(prov.sources) or "-")}{f"; params: {_e(json.dumps(dict(prov.params), sort_keys=True, default=str))}" if prov.params else ""}</div>
</section>"""


def render_report(
    pairs: Iterable[ContrastivePair],
    *,
    funnel: Any = None,
    title: str | None = None,
    base_dir: str | Path | None = None,
    max_pairs: int | None = 200,
    seed: int = 0,
    context_lines: int = 6,
) -> str:
    """The whole page as a string. Counts cover every pair; at most `max_pairs` are drawn."""
    stages = load_funnel(funnel)
    base = Path(base_dir) if base_dir is not None else None
    sections, counts, kinds, total = [], {"ok": 0, "rejected": 0, "unverified": 0}, {}, 0
    for pair in pairs:
        total += 1
        counts[_status(pair)] += 1
        kinds[pair.kind] = kinds.get(pair.kind, 0) + 1
        if max_pairs is None or len(sections) < max_pairs:
            sections.append(pair_html(pair, total, seed=seed, base_dir=base, context_lines=context_lines))
    title = title or "contextrl: mined contrastive pairs"
    stats = (f"<span>{total} pair(s)</span><span>{counts['ok']} accepted</span><span>{counts['rejected']} rejected</span>"
             f"<span>{counts['unverified']} unverified</span><span>{_e(', '.join(f'{k}: {v}' for k, v in kinds.items()))}</span>")
    if len(sections) < total:
        stats += f"<span>showing the first {len(sections)}</span>"
    funnel_part = (f'<div class="funnel"><h3>Filter funnel</h3>{funnel_svg(stages)}</div>' if stages else "")
    body = "\n".join(sections) or '<p class="note">no pairs</p>'
    template = resources.files("contextrl.miner").joinpath("assets/report.html").read_text(encoding="utf-8")
    return (template.replace("{{TITLE}}", _e(title)).replace("{{STATS}}", stats)
            .replace("{{FUNNEL}}", funnel_part).replace("{{PAIRS}}", body))


def write_report(
    pairs: str | Path | Iterable[ContrastivePair],
    out: str | Path,
    *,
    funnel: Any = None,
    title: str | None = None,
    max_pairs: int | None = 200,
    seed: int = 0,
    context_lines: int = 6,
) -> int:
    """Write the report for a pairs file (or pairs) to `out` atomically; returns the number of
    pairs read. Relative image paths are resolved against the pairs file's directory too."""
    base = Path(pairs).parent if isinstance(pairs, (str, Path)) else None
    seen = [0]

    def counted() -> Iterable[ContrastivePair]:  # streams: only the drawn pairs' HTML is kept
        for p in read_pairs(pairs) if isinstance(pairs, (str, Path)) else pairs:
            seen[0] += 1
            yield p

    page = render_report(counted(), funnel=funnel, title=title, base_dir=base, max_pairs=max_pairs, seed=seed, context_lines=context_lines)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return seen[0]
