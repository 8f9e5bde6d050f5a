"""HTML pair report: content, escaping, image regions and heat maps, funnel chart, CLI, and a
real headless Chromium rendering (DOM dump + screenshot)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from contextrl.cli import main as cli_main
from contextrl.errors import MiningError
from contextrl.miner.jobs import OutcomeContrastMiner
from contextrl.miner.pair import Context, ContrastivePair, Difference, Provenance, text_difference, write_pairs
from contextrl.miner.report import context_html, diff_heatmap_png, funnel_svg, load_funnel, render_report, write_report
from contextrl.miner.verify import verify_pair
from contextrl.trajectory import Step, Trajectory

IN_CI = os.environ.get("CI", "").lower() == "true"
FUNNEL = {"trajectories": 66000, "same_repo_commit": 21000, "same_file": 6400, "same_function": 2100, "related_issues": 1400, "kept": 990}


def traj(task: str, episode: str, resolved: bool, check: str) -> Trajectory:
    steps = (
        Step(0, "view", {"path": "pkg/limits.py"}, "1  def clamp(v, lo, hi):\n2      if v < lo:\n3          return lo\n4      return min(v, hi)"),
        Step(1, "bash", {"command": "pytest -q"}, f"FAILED test_limits.py::test_clamp - {check}", exit_code=1,
             thought="The lower bound is wrong <b>&</b> the test says so."),
        Step(2, "edit", {"path": "pkg/limits.py", "old_str": "if v < lo:", "new_str": "if v <= lo:" if resolved else "if v > lo:"}, "edited"),
        Step(3, "bash", {"command": "pytest -q"}, "3 passed" if resolved else "FAILED test_limits.py::test_clamp", exit_code=0 if resolved else 1),
    )
    diff = ("diff --git a/pkg/limits.py b/pkg/limits.py\n--- a/pkg/limits.py\n+++ b/pkg/limits.py\n@@ -2 +2 @@\n"
            f"-    if v < lo:\n+    {'if v <= lo:' if resolved else 'if v > lo:'}\n")
    return Trajectory(task_id=task, steps=steps, resolved=resolved, reward=float(resolved), outcome="submitted", diff=diff,
                      problem_statement="clamp(<lo>) returns the wrong value & <script>alert('x')</script>", episode_id=episode)


def image_pair(tmp: Path) -> ContrastivePair:
    """A VQA-style pair: same scene, the circle's colour decides the answer."""
    paths = []
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 60, 220))):
        im = Image.new("RGB", (96, 64), (245, 245, 240))
        d = ImageDraw.Draw(im)
        d.rectangle([6, 40, 30, 58], fill=(40, 160, 60))
        d.ellipse([50, 12, 82, 44], fill=colour)
        path = tmp / f"scene-{name}.png"
        im.save(path)
        paths.append(path)
    region = ((48, 10, 85, 47),)
    pair = ContrastivePair(kind="image", query="What colour is the circle?", answer="red",
                           positive=Context(image_path=str(paths[0]), supported_answer="red"),
                           negative=Context(image_path=str(paths[1]), supported_answer="blue"),
                           difference=Difference(positive=region, negative=region), provenance=Provenance("edit", tuple(map(str, paths))))
    return verify_pair(pair)


def make_pairs(tmp: Path) -> list[ContrastivePair]:
    trajs = [traj("acme__limits-1", "e0", True, "assert 0 == 1"), traj("acme__limits-1", "e1", False, "assert 0 == 1")]
    mined, _ = OutcomeContrastMiner().mine_shard(trajs)
    long_neg = Context(text="x = 1\n" * 40 + "y = 2\n")
    rejected = verify_pair(ContrastivePair(kind="trajectory", query="Which value does y get?", answer="2",
                                           positive=Context(text="y = 2\n"), negative=long_neg,
                                           difference=text_difference("y = 2\n", long_neg.text)))
    unverified = ContrastivePair(kind="trajectory", query="q", answer="a", positive=Context(text="a\nb\n"), negative=Context(text="a\nc\n"),
                                 difference=Difference(((1, 2),), ((1, 2),)))
    return [*mined, rejected, unverified, image_pair(tmp)]


def test_funnel_loading_and_svg(tmp_path):
    assert load_funnel(FUNNEL)[0] == ("trajectories", 66000)
    (tmp_path / "f.json").write_text('{"stages": [{"name": "a", "count": 3}, ["b", 1]]}')
    assert load_funnel(tmp_path / "f.json") == [("a", 3), ("b", 1)]
    with pytest.raises(MiningError, match="stage name and a count"):
        load_funnel({"a": "many"})
    svg = funnel_svg(load_funnel({"<stage & 1>": 10, "kept": 0}))
    assert svg.count('class="stage"') == 2 and "&lt;stage &amp; 1&gt;" in svg and "0 (0%)" in svg
    assert funnel_svg([]) == ""


def test_context_highlights_and_folds():
    text = "\n".join(f"line {i}" for i in range(40)) + "\n"
    out = context_html(text, [(20, 22), (35, 35)], context_lines=3)
    assert out.count('class="line hl"') == 2 and 'data-line="20"' in out and out.count('class="gap"') == 1
    assert out.count('<details class="elided">') == 2 and "17 unchanged line(s) 1&ndash;17" in out


def test_heatmap_marks_the_changed_region(tmp_path):
    pair = image_pair(tmp_path)
    png = diff_heatmap_png(pair.positive.image_path, pair.negative.image_path)
    im = Image.open(io.BytesIO(png)).convert("RGB")
    k = im.width // 96  # tiny images are scaled up
    assert k >= 2 and im.getpixel((66 * k, 28 * k)) != (0, 0, 0) and im.getpixel((10 * k, 50 * k)) == (0, 0, 0)


def test_report_content_and_escaping(tmp_path):
    pairs = make_pairs(tmp_path)
    page = render_report(pairs, funnel=FUNNEL, title="Run <7>")
    assert "<title>Run &lt;7&gt;</title>" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    for p in pairs:
        assert f'id="pair-{p.id}"' in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in page  # reasoning text is escaped too
    assert page.count('data-status="ok"') == 2 and 'data-status="rejected"' in page and 'data-status="unverified"' in page
    assert "rejected by length_ratio" in page and 'class="line hl"' in page and "<PATCH_MASKED>" not in page
    assert page.count("data:image/png;base64,") == 3 and page.count('class="region"') == 2
    assert 'class="opt-pos">' in page and "funnel-chart" in page
    assert page.count("<section") == len(pairs)
    short = render_report(pairs, max_pairs=2)
    assert short.count("<section") == 2 and "showing the first 2" in short


def test_cli_report(tmp_path, capsys):
    pairs = make_pairs(tmp_path)
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    (tmp_path / "funnel.json").write_text('{"trajectories": 2, "kept": 2}')
    rc = cli_main(["report", "pairs", str(tmp_path / "pairs.jsonl"), "--funnel", str(tmp_path / "funnel.json"), "--out", str(tmp_path / "r.html")])
    assert rc == 0 and f"({len(pairs)} pair(s))" in capsys.readouterr().out
    assert all(p.id in (tmp_path / "r.html").read_text() for p in pairs)
    assert cli_main(["report", "pairs", str(tmp_path / "pairs.jsonl"), "--funnel", str(tmp_path / "nope.json")]) == 2
    assert cli_main(["report", "pairs", str(tmp_path / "pairs.jsonl")]) == 0  # funnel.json next to the pairs is found
    assert 'data-stage="kept"' in (tmp_path / "pairs.html").read_text()


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path):
    exe = _chromium()
    if exe is None:
        if IN_CI:
            pytest.fail("CI=true but chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    pairs = make_pairs(tmp_path)
    out = tmp_path / "report.html"
    write_report(pairs, out, funnel=FUNNEL)
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"]
    dom = subprocess.run(flags + ["--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for p in pairs:
        assert f'id="pair-{p.id}"' in html
    assert html.count('class="line hl"') >= 4 and 'class="funnel-chart"' in html and html.count('class="region"') == 2
    assert f"{len(pairs)} of {len(pairs)} shown" in html  # the inline script ran
    shot = tmp_path / "report.png"
    run = subprocess.run(flags + [f"--screenshot={shot}", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    im = Image.open(shot).convert("RGB")
    assert im.size == (1280, 2000)
    colours = im.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # text, badges, highlights: far from blank
    assert im.getpixel((5, 5)) == (0x24, 0x29, 0x2F)  # the header bar was painted
    if os.environ.get("CONTEXTRL_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["CONTEXTRL_KEEP_SCREENSHOT"])
