"""report.md and report.html as a reader meets them: valid Markdown tables, a page that fits a phone.

One real report (the shipped TSM exported at 64 px, stream FP32 on ONNX Runtime and OpenVINO:
a torch row and three runtime rows) is built through the CLI once per module. Markdown is
parsed by a real CommonMark + tables parser (markdown-it-py); the page is laid out by headless
Chromium at 1400 and 420 CSS px (the latter with mobile emulation, which honours
`<meta name="viewport">`) and measured by the browser itself. Fields that another part of the
report may or may not produce (verdict, notes, noise, random_weights, latency_noisy,
what_ran.model_file) are set or removed on a copy of the real report.json.
"""

from __future__ import annotations

import copy
import html
import json
import re
import shutil
import struct
from pathlib import Path

import pytest
from cdp import Chromium
from markdown_it import MarkdownIt
from probe import edgevid
from test_report import _chromium, _Trap

from edgevid.report.render_html import render_html, scatter_svg
from edgevid.report.render_md import LATENCY_COLUMNS, NOISY_MARK, render_markdown, table_rows

_MD = MarkdownIt("commonmark").enable("table")
OPTIONAL = ("verdict", "notes", "noise", "random_weights")


@pytest.fixture(scope="module")
def built(tmp_path_factory, report_cache) -> Path:
    """The output folder of one small report made by the real CLI."""
    from edgevid.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("render")
    generate_dataset(root / "data", seed=1, videos_per_class=2, frames=16, size=64, val_fraction=0.5, progress=False)
    proc = edgevid(["report", "--model", "tsm", "--precisions", "fp32", "--modes", "stream", "--backends",
                    "onnxruntime,openvino", "--size", "64", "--data", root / "data", "--videos", "3", "--rounds", "2",
                    "--block", "3", "--no-efficiency", "--cache", report_cache, "-o", root / "out", "-q"], cwd=root)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return root / "out"


@pytest.fixture(scope="module")
def report(built) -> dict:
    return json.loads((built / "report.json").read_text())


def _bare(report: dict) -> dict:
    """The report without any of the optional fields."""
    r = copy.deepcopy(report)
    for key in OPTIONAL:
        r.pop(key, None)
    for row in r["rows"]:
        row.pop("latency_noisy", None)
        (row.get("what_ran") or {}).pop("model_file", None)
    return r


def _table_blocks(text: str) -> list[str]:
    """Every run of lines that start with `|`."""
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    return blocks


def _parse_table(block: str) -> tuple[list[str], list[list[str]]]:
    """(header cells, body rows) of one Markdown table as the parser reads them, as rendered text."""
    tokens = _MD.parse(block)
    assert [t.type for t in tokens].count("table_open") == 1, f"not one table:\n{block[:500]}"
    rows, cell_kind, row = [], None, None
    for t in tokens:
        if t.type == "tr_open":
            row = []
        elif t.type in ("th_open", "td_open"):
            cell_kind = t.type
        elif t.type == "inline" and cell_kind:
            row.append(html.unescape(re.sub(r"<[^>]+>", "", _MD.renderInline(t.content))))
        elif t.type == "tr_close":
            rows.append(row)
    return rows[0], rows[1:]


def test_every_markdown_table_parses_with_all_its_columns(built, report):
    text = (built / "report.md").read_text()
    blocks = _table_blocks(text)
    assert len(blocks) >= 2  # variants, per-class
    for block in blocks:
        divider_columns = block.splitlines()[1].count("|") - 1
        header, body = _parse_table(block)
        assert len(header) == divider_columns, header
        assert all(len(r) == len(header) for r in body)
    header, body = _parse_table(blocks[0])
    assert header == table_rows(report)[0]  # "max |Δlogit|" is one cell
    assert [r[0] for r in body] == [r["label"] for r in report["rows"]]


def test_a_label_or_class_with_pipes_survives_in_every_table(report):
    r = _bare(report)
    label, cls = r"ONNX | Runtime \| odd", "left|right"
    r["rows"][1]["label"] = label
    r["data"]["classes"] = [cls] + r["data"]["classes"]
    r["rows"][1]["accuracy"]["per_class"][cls] = 0.5
    blocks = _table_blocks(render_markdown(r))
    _, body = _parse_table(blocks[0])
    assert body[1][0] == label and len(body[1]) == len(table_rows(r)[0])
    header, body = _parse_table(blocks[-1])  # per-class: labels are its header
    assert header[2] == label and body[0][0] == cls and body[0][2] == "50.0"
    assert f"<td>{html.escape(label)}</td>" in render_html(r)


def test_the_agreement_column_says_what_it_counts(built, report):
    text = (built / "report.md").read_text()
    header = table_rows(report)[0]
    agree = next(h for h in header if h.startswith("agree"))
    assert "% of preds" in agree
    n = report["rows"][1]["agreement"]["predictions"]
    definition = next(line for line in text.splitlines() if line.startswith(f"{agree}:"))
    assert f"{n} per variant" in definition and "top-1" in definition
    assert text.index("| variant |") < text.index(definition)  # under the table


def test_what_ran_names_the_file_each_backend_loaded(report):
    r = copy.deepcopy(report)
    ran = [row for row in r["rows"] if row.get("what_ran")]
    assert {row["backend"] for row in ran} == {"onnxruntime", "openvino"}
    for row in ran:
        row["what_ran"]["model_file"] = "model.onnx" if row["backend"] == "onnxruntime" else "model.xml"
    text, page = render_markdown(r), render_html(r)
    for row in ran:
        path = f"{row['artifact']['path']}/{row['what_ran']['model_file']}"
        assert f"- {row['label']}: " in text and f"`{path}`" in text
        assert f"<code>{html.escape(path)}</code>" in page
    bare = render_markdown(_bare(report))
    assert f"`{ran[0]['artifact']['path']}`" in bare and "/model.onnx`" not in bare
    ran[0]["what_ran"]["model_file"] = "/cache/engines/abc.engine"  # a TensorRT engine from its cache
    assert "`/cache/engines/abc.engine`" in render_markdown(r)


def test_optional_fields_render_in_place_and_nothing_when_absent(report):
    bare = _bare(report)
    text, page = render_markdown(bare), render_html(bare)
    for absent in ("## Verdict", "Latency not reliable", "random weights", f"{NOISY_MARK}: "):
        assert absent not in text
    assert not any(c.endswith(NOISY_MARK) for row in _parse_table(_table_blocks(text)[0])[1] for c in row)
    assert "class=\"warn\"" not in page and "class=\"n noisy\"" not in page and "Verdict" not in page

    full = _bare(report)
    full["verdict"] = {"text": "Ship OpenVINO stream FP32."}
    full["notes"] = ["A note on | pipes.", "Second note."]
    full["noise"] = {"noisy": True, "summary": "others used 1.2 cores", "advice": "close other work."}
    full["random_weights"] = True
    full["rows"][2]["latency_noisy"] = True
    text = render_markdown(full)
    order = [text.index(s) for s in ("# edgevid report", "random weights: accuracy is meaningless, the latency is "
                                     "real", "## Verdict", "Ship OpenVINO", "**Latency not reliable**: Others used "
                                     "1.2 cores. Close other work.", "## Findings", "A note on | pipes.",
                                     "Second note.", "## Variants")]
    assert order == sorted(order)
    _, body = _parse_table(_table_blocks(text)[0])
    marked = [(i, j) for i, row in enumerate(body) for j, c in enumerate(row) if c.endswith(NOISY_MARK)]
    assert marked and {i for i, _ in marked} == {2} and {j for _, j in marked} <= set(LATENCY_COLUMNS)
    assert body[2][6].endswith(NOISY_MARK)  # p50
    assert any(line.startswith(f"{NOISY_MARK}: ") for line in text.splitlines())

    page = render_html(full)
    assert page.count("class=\"warn\"") == 2
    assert page.index("random weights") < page.index("Verdict") < page.index("Latency not reliable") \
        < page.index("Findings") < page.index("Second note.") < page.index("Variants")
    assert page.count("class=\"n noisy\" title=") == len(marked)


def test_scatter_markers_on_one_spot_stay_apart(report):
    r = _bare(report)
    twin = copy.deepcopy(r["rows"][1])
    twin.update(label="twin", backend="openvino")
    r["rows"].append(twin)  # same latency and top-1 as row 1: drawn in place, one would hide the other
    svg = scatter_svg(r, "narrow")
    spots = [tuple(round(float(v), 1) for v in m)
             for m in re.findall(r'<g id="[^"]*PathCollection_\d+">.*?<use [^>]*x="([\d.]+)" y="([\d.]+)"', svg,
                                 re.S)]
    assert len(spots) == len(r["rows"])
    assert len(set(spots)) == len(spots)
    same_x = [s for s in spots if s[0] == spots[1][0]]
    assert len(same_x) == 2 and abs(same_x[0][1] - same_x[1][1]) >= 8  # a marker's height (~9 pt) apart


# Every visible text node: its rendered font size in CSS px. An SVG's text is scaled with the SVG,
# so its computed size is in user units, times the scale of its screen transform.
_MEASURE = """(() => {
  const root = document.documentElement, sizes = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const el = walk.currentNode.parentElement, text = walk.currentNode.textContent.trim();
    if (!text || el.getClientRects().length === 0) continue;
    let px = parseFloat(getComputedStyle(el).fontSize);
    const svg = el instanceof SVGElement;
    if (svg) { const m = el.getScreenCTM(); px *= Math.sqrt(Math.abs(m.a * m.d - m.b * m.c)); }
    sizes.push({px, text: text.slice(0, 40), svg});
  }
  const content = document.body.clientWidth - parseFloat(getComputedStyle(document.body).paddingLeft)
    - parseFloat(getComputedStyle(document.body).paddingRight);
  const charts = [...document.querySelectorAll('.chart')].filter(c => c.getClientRects().length)
    .map(c => c.querySelector('svg').getBoundingClientRect().width);
  const box = document.querySelector('table').parentElement;
  return {viewport: document.querySelector('meta[name=viewport]')?.content ?? null, innerWidth,
          scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, content, charts, sizes,
          box: {overflowX: getComputedStyle(box).overflowX, scrollWidth: box.scrollWidth, clientWidth: box.clientWidth},
          legend: document.querySelectorAll('ul.legend li').length};
})()"""


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_html_fits_a_desktop_and_a_phone_in_chromium(built, report, tmp_path, tmp_path_factory):
    binary = _chromium()
    if binary is None:
        pytest.skip("chromium is not installed (CI installs Debian's chromium package; apt-get install chromium)")
    trap = _Trap()
    browser = Chromium(binary, ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                f"--user-data-dir={tmp_path / 'profile'}", f"--proxy-server=http://127.0.0.1:{trap.port}",
                                "--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * ~NOTFOUND"])
    timed = sum(1 for r in report["rows"] if (r.get("latency_ms") or {}).get("p50"))
    try:
        for width, mobile in ((1400, False), (420, True)):
            page = browser.page((built / "report.html").as_uri(), width, 900, mobile)
            m = page.evaluate(_MEASURE)
            assert m["viewport"] == "width=device-width, initial-scale=1"
            assert m["innerWidth"] == width  # on a phone, a page without the viewport meta lays out at 980 px
            assert m["scrollWidth"] <= m["clientWidth"], f"the page scrolls sideways at {width} px"
            smallest = min(m["sizes"], key=lambda s: s["px"])
            assert smallest["px"] >= 10, f"{smallest} at {width} px"
            assert sum(s["svg"] for s in m["sizes"]) >= 12  # the charts' text was measured, not skipped
            assert len(m["charts"]) == 2 and all(w >= 0.95 * m["content"] for w in m["charts"]), (m["charts"], m)
            assert m["legend"] == timed
            assert m["box"]["overflowX"] == "auto"
            if width == 420:  # the 15-column table is wider than a phone: its own box scrolls, not the page
                assert m["box"]["scrollWidth"] > m["box"]["clientWidth"]
            shot = page.screenshot(tmp_path / f"report-{width}.png")
            w, h = _png_size(shot)
            assert w == width and h > 1500 and shot.stat().st_size > 50_000
            shutil.copyfile(shot, tmp_path_factory.getbasetemp() / f"report-{width}.png")  # for a human look
    finally:
        browser.close()
        trap.close()
    assert trap.connections == 0, "the page made a network request"
