"""The citable report: study tables (Markdown, LaTeX, CSV) with confidence intervals, figures as
PNG + PDF + CSV, the offline HTML page in a real browser, the report id and citation, and
`vanex compare`."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import vanex
from scipy import stats
from vanex.report import readme as readme_block
from vanex.report.figures import DPI, WIDTH
from vanex.report.html import markdown_to_html
from vanex.report.tables import _shown, cell_frame, display_frame, metric_range, study_latex, t_interval

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = {"study": "toy", "profile": "smoke", "swept": ["optim.lr", "task.depth"]}


def _cells() -> pd.DataFrame:
    rows = []
    for seed, (loss, ratio, status) in enumerate(
        [(0.5, -1.0, "completed"), (0.7, -1.2, "completed"), (0.6, -1.1, "completed")]
    ):
        rows.append(("relu", 0.05, 20, seed, status, loss, ratio, "stable", "healthy", 0.1))
    for seed in range(3):  # two diverged seeds, one completed
        status = "completed" if seed == 0 else "diverged"
        rows.append(
            (
                "baseline",
                0.05,
                20,
                seed,
                status,
                2.3 if seed == 0 else math.nan,
                -math.inf,
                "vanishing",
                "stalled",
                -math.inf,
            )
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            "mitigations", "optim.lr", "task.depth", "seed", "status", "final_train_loss",
            "init_log10_grad_ratio", "init", "training", "late_log10_grad_ratio",
        ],
    )  # fmt: skip
    setting = "optim.lr=" + frame["optim.lr"].astype(str) + ", task.depth=" + frame["task.depth"].astype(str)
    return frame.assign(setting=setting, run_id=[f"r{i}" for i in range(len(frame))])


def test_cell_table_has_every_setting_counts_and_student_t_intervals():
    frame = cell_frame(_cells(), MANIFEST, ["final_train_loss"], {"r0": ["some_claim"]})
    relu, base = frame.iloc[0], frame.iloc[1]
    assert (relu["optim.lr"], relu["task.depth"], relu["completed"], relu["diverged"]) == (0.05, 20, 3, 0)
    half = stats.t.ppf(0.975, 2) * np.std([0.5, 0.7, 0.6], ddof=1) / math.sqrt(3)
    assert relu["final_train_loss_mean"] == pytest.approx(0.6)
    assert relu["final_train_loss_ci_low"] == pytest.approx(0.6 - half)
    assert relu["final_train_loss_ci_high"] == pytest.approx(0.6 + half)
    assert relu["claims"] == "some_claim" and base["claims"] == ""
    assert (base["completed"], base["diverged"]) == (1, 2)
    assert base["final_train_loss_n"] == 1 and math.isnan(base["final_train_loss_ci_low"])  # one seed: no interval
    assert base["init_log10_grad_ratio_note"] == "zero (3/3)"
    shown = display_frame(frame, MANIFEST, ["final_train_loss"])
    assert list(shown.columns[:4]) == ["mitigations", "optim.lr", "task.depth", "n (done/div/fail)"]
    assert shown.iloc[1]["n (done/div/fail)"] == "3/2/0" and shown.iloc[1]["final_train_loss"] == "2.3 (1 seed)"
    assert shown.iloc[0]["final_train_loss"].startswith("0.6 [")


def test_shown_intervals_stay_in_range_need_three_seeds_and_have_digits_enough_to_differ():
    frame = cell_frame(_cells(), MANIFEST, ["final_train_loss"])
    row = frame.iloc[0].copy()
    row["final_train_loss_mean"], row["final_train_loss_ci_low"], row["final_train_loss_ci_high"] = 0.2, -0.3, 0.7
    assert _shown(row, "final_train_loss") == "0.2 [0, 0.7]"  # a loss is never below 0
    row["final_train_loss_ci_low"], row["final_train_loss_ci_high"] = 2.3021, 2.3045
    row["final_train_loss_mean"] = 2.3027
    assert _shown(row, "final_train_loss") == "2.303 [2.302, 2.304]"  # not "2.3 [2.3, 2.3]"
    row["final_train_loss_n"] = 2
    assert _shown(row, "final_train_loss") == "2.3 (2 seeds)"  # t = 12.7 at n = 2: no interval
    assert metric_range("test_accuracy") == (0, 1) and metric_range("init_log10_grad_ratio") == (-math.inf, math.inf)


def test_t_interval_of_one_value_has_no_width():
    mean, low, high = t_interval(np.array([1.5]))
    assert mean == 1.5 and math.isnan(low) and math.isnan(high)


def test_latex_table_is_booktabs_and_compiles_where_tex_is_installed(tmp_path):
    tex = study_latex(cell_frame(_cells(), MANIFEST, ["final_train_loss"]), MANIFEST, ["final_train_loss"])
    body = tex[tex.index(r"\begin{tabular}") : tex.rindex(r"\end{tabular}")]
    assert all(rule in body for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    columns = len(re.search(r"\\begin\{tabular\}\{(l+)\}\n", body).group(1))
    rows = [line for line in body.splitlines() if line.rstrip().endswith(r"\\")]
    assert len(rows) == 3 and all(line.count("&") == columns - 1 for line in rows)
    assert re.search(r"(?<!\\)[_%#$]", tex.replace(r"\_", "").replace("$", "")) is None  # specials escaped
    assert tex.isascii() and r"\caption{" in tex and r"\label{tab:toy}" in tex
    assert "optim.lr" not in tex and "depth" in tex  # human column names
    if shutil.which("pdflatex"):
        _fits_two_columns(tex, tmp_path)


def _fits_two_columns(tex: str, folder: Path) -> None:
    """Compile ``tex`` in a two-column article with booktabs; no overfull box, no float too large."""
    doc = "\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + tex + "\\end{document}\n"
    (folder / "t.tex").write_text(doc)
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=folder, capture_output=True, text=True
    )
    log = (folder / "t.log").read_text(errors="replace")
    assert run.returncode == 0, run.stdout[-2000:]
    assert "Overfull \\hbox" not in log and "Float too large" not in log, re.findall(
        r"Overfull.*|Float too large.*", log
    )


@pytest.mark.skipif(not shutil.which("pdflatex"), reason="no TeX installation (.ci/run installs Debian's)")
@pytest.mark.parametrize("table", sorted((ROOT / "reports" / "tables").glob("*.tex")), ids=lambda p: p.stem)
def test_every_committed_latex_table_fits_a_two_column_article(table, tmp_path):
    _fits_two_columns(table.read_text(), tmp_path)


def test_html_renders_tables_figures_and_inline_markdown(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (tmp_path / "figures").mkdir()
    plt.figure(figsize=(1, 1)).savefig(tmp_path / "figures" / "f.png")
    text = "# T\n\nSome *em* and **bold** `code` [link](x.csv) a<b.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    text += "![f](figures/f.png)\n\n- item\n"
    page = markdown_to_html(text, tmp_path)
    assert (
        '<h1 id="t">T</h1>' in page and "<em>em</em>" in page and "<strong>bold</strong>" in page and "a&lt;b" in page
    )
    assert "<td>1</td><td>2</td>" in page and 'src="data:image/png;base64,' in page and "<li>item</li>" in page
    with pytest.raises(FileNotFoundError):
        markdown_to_html("![g](figures/missing.png)", tmp_path)


def test_citation_cff_is_valid():
    cff = shutil.which("cffconvert", path=os.pathsep.join([str(Path(os.sys.executable).parent), os.environ["PATH"]]))
    assert cff, "cffconvert is a test dependency"
    run = subprocess.run([cff, "--validate", "-i", str(ROOT / "CITATION.cff")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    cff_text, project = (ROOT / "CITATION.cff").read_text(), (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "(.+)"$', project, re.M).group(1)
    assert f"\nversion: {version}\n" in cff_text and re.search(r"^date-released: \d{4}-\d\d-\d\d$", cff_text, re.M)


def test_readme_cites_the_committed_report_as_it_cites_itself():
    summary = (ROOT / "reports" / "summary.md").read_text()
    cite = re.search(
        r"^\*\*Cite this report:\*\* (.+?)(?: BibTeX: \[CITATION\.bib\]\(CITATION\.bib\))?$", summary, re.M
    ).group(1)
    rid = re.search(r"^# vanex report ([0-9a-f]{12}) ", summary, re.M).group(1)
    assert rid in cite and cite in (ROOT / "README.md").read_text()


def test_readme_contents_link_every_section():
    readme = (ROOT / "README.md").read_text()
    contents = readme[readme.index("**Contents:**") : readme.index("## ")]
    anchors = re.findall(r"\]\(#([^)]+)\)", contents)
    headings = re.findall(r"^## (.+)$", readme, re.M)
    slugs = [re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings]  # GitHub's anchors
    assert anchors == slugs, (anchors, slugs)
    cite = (ROOT / "reports" / "CITATION.bib").read_text()
    assert cite.startswith("@misc{vanex-report-") and "author = {{The vanex authors}}" in cite


def test_readme_claims_table_is_generated_from_the_committed_report():
    """The README's claims table is the one generated from reports/claims.csv (never copied by hand),
    and its notes explain every ✗ and fragile verdict of that report, and no other."""
    readme = (ROOT / "README.md").read_text()
    claims = readme_block.read_claims(ROOT / "reports")
    assert readme_block.rewrite(readme, claims) == readme, "run `python -m vanex.report.readme reports README.md`"
    notes = readme[readme.index(readme_block.END) : readme.index("## ", readme.index(readme_block.END))]
    explained = re.findall(r"^- `([a-z0-9_]+)`:", notes, re.M)
    assert sorted(explained) == sorted(claims.loc[claims["status"] != "✓", "name"])
    check = subprocess.run(
        [sys.executable, "-m", "vanex.report.readme", "--check", str(ROOT / "reports"), "-"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 2 and check.stderr.count("\n") == 1, check.stderr  # a bad path: one line


def test_readme_block_rewrite_replaces_only_its_block_and_refuses_a_readme_without_one():
    claims = pd.DataFrame(
        [
            {
                "name": "a_claim",
                "version": "2",
                "status": "✗",
                "numbers": "x ||g|| 1 [0, 2] (n=3)",
                "second_path": "✗: x 1 (n=3)",
                "neighbourhood": "×0.5 ✓: x 2; ×2 ✗: x 3",
            },
            {
                "name": "b_claim",
                "version": "1",
                "status": "✓",
                "numbers": "y 1",
                "second_path": "✓: y",
                "neighbourhood": "not run in this profile (optim.lr ×0.5, ×2)",
            },
        ]
    )
    text = f"before\n{readme_block.BEGIN}\nold\n{readme_block.END}\nafter\n"
    new = readme_block.rewrite(text, claims)
    assert new.startswith("before\n") and new.endswith(f"{readme_block.END}\nafter\n") and "old" not in new
    assert "**1 ✓, 1 ✗, 0 fragile** of 2." in new
    assert "| `a_claim` (v2) | ✗ | x ‖g‖ 1 [0, 2] (n=3) | ✗ | ×0.5 ✓, ×2 ✗ |" in new
    assert "| `b_claim` | ✓ | y 1 | ✓ | not run |" in new
    with pytest.raises(ValueError, match="no generated claims block"):
        readme_block.rewrite("no block", claims)


def test_the_committed_report_judges_its_claims_again_from_the_records_it_ships():
    out = vanex("claims", "--results", str(ROOT / "reports"))
    claims = pd.read_csv(ROOT / "reports" / "claims.csv")
    assert out.returncode == (1 if (claims["status"] == "✗").any() else 0), out.stderr
    blocks = [b.splitlines() for b in re.split(r"\n(?=\S)", out.stdout.strip())]
    judged = {b[0].split()[1]: (b[0].split()[0], b[3].strip()) for b in blocks}
    assert judged == {r.name: (r.status, r.numbers) for r in claims.itertuples()}


def test_the_markdown_claims_table_shows_version_control_cells_and_second_path():
    """`vanex claims --format markdown` (and the report's table) show each claim's version, the cells it
    reads with the control marked, and its verdict on the second numeric path (the two columns were missing)."""
    out = vanex("claims", "--results", str(ROOT / "reports"), "--claim", "zhang2019_fixup", "--format", "markdown")
    header, _, row = out.stdout.strip().splitlines()[-3:]
    columns = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")], strict=True))
    assert columns["version"] == "2"
    assert "(control): residual+no_norm, task.depth=56" in columns["cells"]
    assert columns["second numeric path"].startswith(("✓: fixup", "✗: fixup"))
    assert "| cells |" in (ROOT / "reports" / "summary.md").read_text()


# -- a smoke study, run twice (`twice`, tests/conftest.py): the report's files, the browser, compare --------


@pytest.mark.slow
def test_report_writes_tables_figures_and_tidy_summary(twice, tmp_path):
    report = twice / "report"
    assert {p.name for p in (report / "tables").iterdir()} == {"mlp_meanfield.csv", "mlp_meanfield.tex"}
    if shutil.which("pdflatex"):
        _fits_two_columns((report / "tables" / "mlp_meanfield.tex").read_text(), tmp_path)
    for png in (report / "figures").glob("*.png"):
        assert png.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
        from matplotlib.image import imread

        height, width = imread(png).shape[:2]
        assert width / DPI <= WIDTH["two"] + 0.05, png.name  # a two-column paper width at most
    assert (report / "figures" / "mlp_meanfield_gradient_flow.csv").exists()
    assert (report / "figures" / "mlp_meanfield_batchnorm.csv").exists()  # Yang et al.'s rate, drawn
    assert (
        "**Not for citation:** the smoke profile trains each run for 1% of its steps"
        in (report / "summary.md").read_text()
    )
    summary = pd.read_csv(report / "summary.csv")
    assert list(summary.columns[:8]) == [
        "run_id",
        "profile",
        "git_commit",
        "study",
        "task",
        "mitigations",
        "seed",
        "status",
    ]
    assert {"task.activation", "task.weight_scale", "metric", "value"} <= set(summary.columns)
    assert pd.api.types.is_float_dtype(summary["value"]) and set(summary["profile"]) == {"smoke"}
    table = pd.read_csv(report / "tables" / "mlp_meanfield.csv")
    assert {"completed", "diverged", "failed", "final_train_loss_ci_low", "training", "claims"} <= set(table.columns)


@pytest.mark.slow
def test_a_rerun_compares_equal_and_a_perturbed_record_is_found(twice, tmp_path):
    # the rerun b against a, given as `..`: a results folder of that name was reported into the scratch
    # folder's parent (refused: not empty); one compare checks both (each side of one is reported first)
    same = vanex("compare", "..", str(twice / "b"), "--profile", "smoke", cwd=twice / "a" / "_studies")
    assert same.returncode == 0 and same.stdout == "", same.stdout + same.stderr
    assert "nothing moved" in same.stderr
    perturbed = tmp_path / "c"
    shutil.copytree(twice / "b", perturbed)
    victim = sorted(perturbed.glob("*/run.json"))[0]
    record = json.loads(victim.read_text())
    record["summary"]["grad_ratio_init"] *= 1 + 1e-6
    victim.write_text(json.dumps(record))
    moved = vanex("compare", str(twice / "report"), str(perturbed), "--profile", "smoke")
    assert moved.returncode == 1, moved.stderr
    assert f"run {victim.parent.name} grad_ratio_init" in moved.stdout and "(exact)" in moved.stdout
    bad = vanex("compare", str(twice / "report"), str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "neither a report" in bad.stderr


@pytest.mark.slow
def test_a_report_ships_its_records_and_the_claims_are_judged_from_it_alone(twice, tmp_path):
    report, args = twice / "report", ("--profile", "smoke", "--allow-missing")
    from_results = vanex("claims", "--results", str(twice / "a"), *args)
    from_report = vanex("claims", "--results", str(report), *args)
    assert from_report.returncode == from_results.returncode, from_report.stderr
    assert "poole2016_chi1" in from_report.stdout and from_report.stdout == from_results.stdout
    from vanex.records.bundle import records_of
    from vanex.records.reader import read_study
    from vanex.records.store import load_manifests

    (manifest,) = load_manifests(twice / "a", "smoke")
    whole = read_study(manifest, twice / "a").cells
    with records_of(str(report)) as shipped:  # the diagnosis, computed again from the shipped series
        pd.testing.assert_frame_equal(read_study(manifest, Path(shipped)).cells, whole)
    again = vanex("report", "--results", str(twice / "a"), "--out", str(tmp_path / "again"), "--profile", "smoke")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "records.tar.gz").read_bytes() == (report / "records.tar.gz").read_bytes()
    rebuilt = vanex("report", "--results", str(report), "--out", str(tmp_path / "r2"), "--profile", "smoke")
    assert rebuilt.returncode == 2 and "is a report: the records it ships" in rebuilt.stderr
    evil = tmp_path / "evil"
    evil.mkdir()
    with tarfile.open(evil / "records.tar.gz", "w:gz") as tar:  # a member that would land outside the folder
        tar.add(sorted((twice / "a").glob("*/run.json"))[0], arcname="../outside/run.json")
    refused = vanex("claims", "--results", str(evil), *args)
    assert refused.returncode == 2 and "'../outside/run.json', which is not a record file" in refused.stderr
    assert not (tmp_path / "outside").exists()
    mismatch = vanex("compare", str(ROOT / "reports"), str(report))  # the committed quick report against smoke
    assert mismatch.returncode == 2 and "of the quick profile and" in mismatch.stderr, mismatch.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)
def test_html_report_opens_offline_in_headless_chromium(twice, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    report = twice / "report"
    page = (report / "index.html").read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page  # nothing to fetch
    options = Options()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,4000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get((report / "index.html").as_uri())
        figures_linked = re.findall(r"^!\[([^\]]+)\]", (report / "summary.md").read_text(), re.M)
        WebDriverWait(driver, 60).until(  # a loaded CI machine once read the images of a page still parsing
            lambda d: (
                d.execute_script("return document.readyState === 'complete' && document.images.length")
                >= len(figures_linked)
            )
        )
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"
        )
        tables = driver.execute_script("return document.querySelectorAll('table').length")
        assert sorted(alt for alt, _ in images) == sorted(figures_linked) and all(ok for _, ok in images), images
        assert tables == (report / "summary.md").read_text().count("\n|---")
        body = driver.find_element("tag name", "body").text  # a smoke report: a setup check, not citable
        assert "Not for citation" in body and "Cite this report" not in body
        shot = tmp_path / "index.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()


A4_LANDSCAPE_PX = 1047  # 297 mm less the two 10 mm margins of the report's @page, at 96 px per inch


@pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)
def test_the_committed_html_report_shows_and_prints_every_column(tmp_path):
    """At 1280 px every table of reports/index.html ends inside the page (a wide one scrolls in its own
    box); under print media at A4 landscape's width none overflows, so a printed copy loses no column.
    Without the print CSS 5 or more tables overflow there."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--window-size=1280,2000", f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    tables = """return Array.from(document.querySelectorAll('table')).map(t => [
        Math.round(t.getBoundingClientRect().right), t.scrollWidth, t.clientWidth, getComputedStyle(t).overflowX])"""
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get((ROOT / "reports" / "index.html").as_uri())
        width = driver.execute_script("return document.documentElement.clientWidth")
        screen = driver.execute_script(tables)
        assert len(screen) == (ROOT / "reports" / "summary.md").read_text().count("\n|---")
        assert [t for t in screen if t[0] > width or (t[1] > t[2] + 1 and t[3] not in ("auto", "scroll"))] == []
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        driver.set_window_size(A4_LANDSCAPE_PX, 2000)
        width = driver.execute_script("return document.documentElement.clientWidth")
        printed = driver.execute_script(tables)
        assert [t for t in printed if t[0] > width + 1 or t[1] > t[2] + 1] == [], width
    finally:
        driver.quit()


def _fake_report(
    folder: Path,
    loss: tuple[float, float, float],
    diverged: int = 0,
    claim: str = "✓",
    cpu: str = "AMD EPYC",
    ratio: float = 0.5,
    init: str = "stable",
    training: tuple[str, bool] = ("healthy", True),
    twin: float | None = None,
    twin_cpu: str | None = None,
) -> Path:
    """A minimal report folder as `vanex compare` reads it: one run (and its ``twin`` on the second
    numeric path, trained on ``twin_cpu``, by default ``cpu``), one cell, one claim."""
    (folder / "tables").mkdir(parents=True)
    timing = [("r1", 0, 1.0, cpu), ("r2", 0, 1.0, twin_cpu or cpu)][: 1 if twin is None else 2]
    pd.DataFrame(timing, columns=["run_id", "seed", "wall_time_s", "cpu"]).to_csv(folder / "timing.csv", index=False)
    runs = [("r1", "smoke", "abc", "toy", "deep_mlp", "relu", 0, "completed", 20, "pinned", "grad_ratio_init", ratio)]
    if twin is not None:  # the same run on the second numeric path
        runs.append(runs[0][:9] + ("generic", "grad_ratio_init", twin))
        runs[1] = ("r2", *runs[1][1:])
    pd.DataFrame(
        runs,
        columns=["run_id", "profile", "git_commit", "study", "task", "mitigations", "seed", "status", "task.depth"]
        + ["numerics", "metric", "value"],
    ).to_csv(folder / "summary.csv", index=False)
    mean, low, high = loss
    cell = {"mitigations": "relu", "task.depth": 20, "mitigation.tbptt.window": None, "seeds": 3}
    cell |= {"completed": 3 - diverged, "diverged": diverged, "failed": 0, "missing": 0}
    cell |= {"final_train_loss_mean": mean, "final_train_loss_ci_low": low, "final_train_loss_ci_high": high}
    cell |= {"final_train_loss_n": 3, "final_train_loss_note": "", "init": init, "init_settled": True}
    cell |= {"training": training[0], "training_settled": training[1]}
    # a second cell where a setting applies that the first one leaves empty (as tbptt's window in rnn_copy)
    other = cell | {"mitigations": "tbptt", "mitigation.tbptt.window": 10, "completed": 3, "diverged": 0}
    other |= {"final_train_loss_mean": 0.3, "final_train_loss_ci_low": 0.2, "final_train_loss_ci_high": 0.4}
    pd.DataFrame([cell, other]).to_csv(folder / "tables" / "toy.csv", index=False)
    pd.DataFrame([{"name": "some_claim", "status": claim}]).to_csv(folder / "claims.csv", index=False)
    return folder


def test_compare_uses_ci_overlap_for_trained_metrics_and_flags_counts_and_claims(tmp_path):
    from vanex.report.compare import compare

    base = str(_fake_report(tmp_path / "a", (0.50, 0.40, 0.60)))
    assert compare(base, base, "quick") == []
    assert compare(base, str(_fake_report(tmp_path / "b", (0.55, 0.45, 0.65))), "quick") == []  # intervals overlap
    moved = compare(base, str(_fake_report(tmp_path / "c", (0.80, 0.70, 0.90))), "quick")
    assert len(moved) == 1 and "final_train_loss" in moved[0] and "do not overlap" in moved[0]
    moved = compare(base, str(_fake_report(tmp_path / "d", (0.50, 0.40, 0.60), diverged=1, claim="✗")), "quick")
    assert any("completed: 3 -> 2" in m for m in moved) and any("diverged: 0 -> 1" in m for m in moved)
    assert "claim some_claim: ✓ -> ✗" in moved
    assert compare(base, str(_fake_report(tmp_path / "e", (0.50, 0.40, 0.60), ratio=0.5000001)), "quick") == [
        "run r1 grad_ratio_init: 0.5 -> 0.5000001 (exact)"
    ]
    shared = tmp_path / "f"  # a run that two studies share has a summary row in each
    _fake_report(shared, (0.50, 0.40, 0.60), ratio=0.5000001)
    summary = pd.read_csv(shared / "summary.csv")
    pd.concat([summary, summary.assign(study="other")]).to_csv(shared / "summary.csv", index=False)
    assert compare(str(shared), str(shared), "quick") == []
    assert compare(base, str(shared), "quick") == ["run r1 grad_ratio_init: 0.5 -> 0.5000001 (exact)"]
    (shared / "tables" / "zz.csv").mkdir()  # a folder named like a table is none (an IsADirectoryError before)
    assert compare(str(shared), str(shared), "quick") == []
    empty = _fake_report(tmp_path / "g", (0.50, 0.40, 0.60))  # results with manifests and no record yet
    pd.read_csv(empty / "summary.csv").head(0).to_csv(empty / "summary.csv", index=False)
    assert compare(base, str(empty), "quick") == [f"{empty} holds no runs (1 in {base})"]  # not "profiles differ"


def test_compare_across_cpu_models_allows_rounding_and_edge_flips_but_not_verdicts(tmp_path):
    """The reproducibility promise: on another CPU model step-0 values agree within a relative 1e-4,
    a seed may flip between completed and diverged (a note), verdicts and claims must agree."""
    from vanex.report.compare import compare

    base = str(_fake_report(tmp_path / "a", (0.50, 0.40, 0.60)))
    intel = dict(cpu="Intel Xeon", ratio=0.5000003)  # a few float32 roundings, as measured
    notes: list[str] = []
    flipped = _fake_report(tmp_path / "b", (0.50, 0.40, 0.60), diverged=1, **intel)
    assert compare(base, str(flipped), "quick", notes) == []
    assert any("CPU models differ" in n for n in notes) and any("diverged: 0 -> 1" in n for n in notes)
    far = _fake_report(tmp_path / "c", (0.50, 0.40, 0.60), cpu="Intel Xeon", ratio=0.5001)
    assert compare(base, str(far), "quick") == [
        "run r1 grad_ratio_init: 0.5 -> 0.5001 (relative tolerance 0.0001 across CPU models)"
    ]
    verdict = _fake_report(tmp_path / "d", (0.50, 0.40, 0.60), init="vanishing", **intel)
    assert any("init verdict: stable -> vanishing" in m for m in compare(base, str(verdict), "quick"))
    # a cell whose seeds disagree (mixed) may change its majority across CPU models: a note, not a difference;
    # on one CPU model, or where both sides are settled, a changed verdict is a difference
    mixed = str(_fake_report(tmp_path / "m", (0.50, 0.40, 0.60), training=("healthy", False)))
    notes = []
    assert (
        compare(
            mixed,
            str(_fake_report(tmp_path / "e", (0.5, 0.4, 0.6), training=("stalled", False), **intel)),
            "quick",
            notes,
        )
        == []
    )
    assert any("training verdict: healthy -> stalled (mixed: seeds disagree)" in n for n in notes)
    assert compare(mixed, str(_fake_report(tmp_path / "f", (0.5, 0.4, 0.6), training=("stalled", False))), "quick")
    settled = _fake_report(tmp_path / "g", (0.5, 0.4, 0.6), training=("stalled", True), **intel)
    assert "toy [relu, 20, –] training verdict: healthy -> stalled" in compare(base, str(settled), "quick")


def test_compare_reads_a_rounding_sensitive_run_per_cell_across_cpu_models(tmp_path):
    """A run whose two numeric paths differ at step 0 by more than the tolerance, on either side, is
    rounding-sensitive: across CPU models it is compared per cell, not run by run. Where its paths
    agree, or on one CPU model, the run-by-run rule stands."""
    from vanex.report.compare import compare

    def side(name: str, **kwargs) -> str:
        return str(_fake_report(tmp_path / name, (0.5, 0.4, 0.6), **kwargs))

    steady, chaotic = side("a", twin=0.5), side("b", twin=0.51)  # the second path: equal / 2% off
    moved_far = dict(cpu="Intel Xeon", ratio=0.5001)  # 2e-4 relative: beyond the tolerance
    assert compare(steady, side("c", twin=0.5001, **moved_far), "quick") == [
        f"run r{i} grad_ratio_init: 0.5 -> 0.5001 (relative tolerance 0.0001 across CPU models)" for i in (1, 2)
    ]
    notes: list[str] = []
    assert compare(chaotic, side("d", twin=0.5001, **moved_far), "quick", notes) == []
    assert any(n.startswith("2 runs are rounding-sensitive") for n in notes)
    assert compare(steady, side("e", twin=0.49, **moved_far), "quick") == []  # measured on the other side
    assert compare(chaotic, side("f", twin=0.51, ratio=0.5001), "quick") == [  # one CPU model: exact
        "run r1 grad_ratio_init: 0.5 -> 0.5001 (exact)"
    ]


def test_compare_is_exact_run_by_run_where_a_run_trained_on_one_cpu_model_on_both_sides(tmp_path):
    """A report may hold runs of several CPU models (runs added later on another machine): each run
    is compared exactly where both sides trained it on one model, within the tolerance elsewhere."""
    from vanex.report.compare import compare

    def side(name: str, ratio: float, twin_cpu: str) -> str:
        return str(_fake_report(tmp_path / name, (0.5, 0.4, 0.6), ratio=ratio, twin=0.5, twin_cpu=twin_cpu))

    mixed = side("mixed", 0.5, twin_cpu="Intel Xeon")  # r1 on an AMD EPYC, r2 on an Intel Xeon
    notes: list[str] = []
    assert compare(mixed, side("amd", 0.5, twin_cpu="AMD EPYC"), "quick", notes) == []
    assert any("CPU models differ" in n for n in notes)
    moved = side("amd-moved", 0.5000001, twin_cpu="AMD EPYC")  # r1: the same model, the 7th digit
    assert compare(mixed, moved, "quick") == ["run r1 grad_ratio_init: 0.5 -> 0.5000001 (exact)"]
    twin_moved = str(_fake_report(tmp_path / "twin", (0.5, 0.4, 0.6), twin=0.5000001))  # r2 across models
    assert compare(mixed, twin_moved, "quick") == []


def test_compare_of_the_quick_profile_on_an_amd_epyc_and_an_intel_xeon(tmp_path):
    """The cross-CPU rule on real reports: the quick profile of 8c20ec0's training code by `nox` on a
    2-core AMD EPYC and on a 2-core Intel Xeon (tests/data/cross_cpu_8c20ec0.tar.xz). What moves is
    the one claim whose verdict rounding decides; what is noted is what the rule allows, including
    the 132 rounding-sensitive runs, whose 20 step-0 values beyond 1e-4 it no longer reports. The
    rule still finds a changed step-0 value of a run that is not rounding-sensitive, and a moved
    cell mean of one that is."""
    from vanex.report.compare import compare

    with tarfile.open(Path(__file__).parent / "data" / "cross_cpu_8c20ec0.tar.xz") as tar:
        tar.extractall(tmp_path, filter="data")
    amd, intel = tmp_path / "amd-epyc", tmp_path / "intel-xeon"
    notes: list[str] = []
    assert compare(str(amd), str(intel), "quick", notes) == ["claim gers2000_forget_bias: fragile -> ✗"]
    assert "132 runs are rounding-sensitive" in notes[1] and sum("status: " in n for n in notes) == 4
    assert sum("(mixed: seeds disagree)" in n for n in notes) == 10 and sum("over other seeds" in n for n in notes) == 2

    summary = pd.read_csv(intel / "summary.csv")
    steady = (summary["run_id"] == "99f9991d19b6687a") & (summary["metric"] == "grad_ratio_init")
    assert steady.sum() == 1
    summary.loc[steady, "value"] *= 1.001
    summary.to_csv(intel / "summary.csv", index=False)
    table = pd.read_csv(intel / "tables" / "mlp_shattered.csv")
    cell = (table["mitigations"] == "batchnorm") & (table["numerics"] == "pinned") & (table["task.depth"] == 50)
    table.loc[cell, "init_log10_grad_ratio_mean"] += 1  # ten times the ratio
    table.loc[cell, ["init_log10_grad_ratio_ci_low", "init_log10_grad_ratio_ci_high"]] += 1
    table.to_csv(intel / "tables" / "mlp_shattered.csv", index=False)
    moved = compare(str(amd), str(intel), "quick")
    assert len(moved) == 3 and moved[0].startswith("run 99f9991d19b6687a grad_ratio_init")
    assert moved[1].startswith("mlp_shattered [batchnorm, pinned, 50] init_log10_grad_ratio") and "do not" in moved[1]


@pytest.mark.slow
def test_report_out_never_deletes_records_or_other_files(twice, tmp_path):
    """`report --out` replaces only an absent, empty or report folder; never the records, nor a folder
    holding them, nor one with other files (issue: `--out results` deleted every record)."""
    results = twice / "a"
    before = sorted(p.name for p in results.iterdir())
    proj = tmp_path / "proj"
    (proj / "results").mkdir(parents=True)
    (proj / "my_thesis.tex").write_text("years of work")
    paper = tmp_path / "paper"  # a user's folder whose names look like a report's, without its marker
    (paper / "figures").mkdir(parents=True)
    (paper / "figures" / "fig1_hand_made.png").write_text("mine")
    (paper / "summary.md").write_text("my draft")
    for out in (results, twice, results / "_studies", proj, paper):
        refused = vanex("report", "--results", str(results), "--out", str(out), "--profile", "smoke")
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert sorted(p.name for p in results.iterdir()) == before and (proj / "my_thesis.tex").is_file()
    assert (paper / "figures" / "fig1_hand_made.png").read_text() == "mine" and (paper / "summary.md").is_file()
    few, previous = tmp_path / "few", tmp_path / "previous"  # 3 of the runs: drawn in seconds, not 205 in 30 s
    shutil.copytree(results, few)
    manifest = few / "_studies" / "mlp_meanfield-smoke.json"
    study = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**study, "cells": study["cells"][:3]}))
    shutil.copytree(twice / "report", previous)
    again = vanex("report", "--results", str(few), "--out", str(previous), "--profile", "smoke")
    assert again.returncode == 0 and "report: 3 records" in again.stderr, again.stderr  # a previous report is replaced
    assert (previous / ".vanex-report").is_file() and "(3 runs)" in (previous / "summary.md").read_text()
    # ... unless it holds a file the report did not write: a note, a figure added by hand, or a copied marker
    for extra in ("mynotes.txt", "figures/mine.png"):
        copy = tmp_path / f"copy-{extra.replace('/', '-')}"
        shutil.copytree(twice / "report", copy)
        (copy / extra).write_text("mine")
        refused = vanex("report", "--results", str(results), "--out", str(copy), "--profile", "smoke")
        assert refused.returncode == 2 and f"holds files the report did not write ({extra})" in refused.stderr
        assert (copy / extra).read_text() == "mine"


def test_a_report_of_another_profile_is_not_replaced(tmp_path):
    """A smoke report once replaced the committed quick report, silently, when --out named it; a
    report folder is now replaced only by a report of its own profile (its marker says which)."""
    from vanex.errors import UserError
    from vanex.report.build import FILES, MARKER, PROFILE, check_out

    report = tmp_path / "reports"
    report.mkdir()
    (report / "summary.md").write_text("a quick report")
    (report / MARKER).write_text(f"written by vanex\n{PROFILE}quick\n{FILES}\nsummary.md\n")
    with pytest.raises(UserError, match=r"holds a report of the quick profile, which a smoke report would replace; "
                       r"give another folder \(the default for smoke is reports-smoke\)"):  # fmt: skip
        check_out(report, tmp_path / "results", "smoke")
    check_out(report, tmp_path / "results", "quick")  # its own profile's report replaces it


def test_report_out_at_or_above_the_working_folder_is_refused_at_once(tmp_path, monkeypatch):
    """`report --out .` was accepted as an empty folder, worked for its whole run, then failed to swap the
    folder the shell stands in ("Device or resource busy")."""
    from vanex.errors import UserError
    from vanex.report.build import check_out

    here = tmp_path / "out" / "sub"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    for out in (Path("."), Path(".."), tmp_path / "out"):
        with pytest.raises(UserError, match="is or holds the folder you are in; give a folder outside it"):
            check_out(out, tmp_path / "results", "smoke")
    check_out(Path("../elsewhere"), tmp_path / "results", "smoke")  # a new folder beside it is fine


def test_records_from_two_commits_say_whether_their_training_code_differs():
    """A report built from records of two commits warns, and says when the code that trained them is
    the same (a commit that changed no training code) or not."""
    from vanex.records import code
    from vanex.report.build import _provenance

    def record(commit: str, identity: dict) -> dict:
        numerics = {"aten_cpu_capability": "AVX2", "mode": "pinned"}
        return {"provenance": {"git_commit": commit, "git_dirty": False, "numerics": numerics, "code": identity}}

    same = {"core": code.core(), "modules": {}}
    _, warning = _provenance([record("a" * 40, same), record("b" * 40, same)])
    assert "2 different vanex sources" in warning and "the code that trained them is the same" in warning
    _, warning = _provenance([record("a" * 40, same), record("b" * 40, {"core": "other", "modules": {}})])
    assert "2 different vanex sources" in warning and "the same" not in warning


def test_no_two_of_35_sets_share_a_colour_and_a_line_style():
    from vanex.report.figures import set_styles, style

    names = [f"set{i}" for i in range(34)]
    set_styles(names)
    pairs = {(style(n)[0], str(style(n)[1])) for n in ["baseline", *names]}
    assert len(pairs) == 35 and len({style(n)[2] for n in names[:7]}) == 7  # every marker in use


def test_claims_csv_holds_each_interval_of_its_numbers_as_numbers():
    from vanex.report.tables import interval_text

    claims = pd.read_csv(ROOT / "reports" / "claims.csv")
    judged = claims[claims["status"] != "not run"]
    stated = judged["numbers"].str.contains(r"\(n=\d", regex=True)  # the claim states a mean [CI] (n=...)
    assert stated.any() and (judged["mean_1"].notna() == stated).all()  # then, and only then, as numbers too
    for _, row in judged.iterrows():
        i = 1
        while f"mean_{i}" in row and not pd.isna(row[f"mean_{i}"]):
            text = interval_text(row[f"mean_{i}"], row[f"ci_low_{i}"], row[f"ci_high_{i}"])
            assert f"{text} (n={int(row[f'n_{i}'])}" in row["numbers"], (row["name"], text)
            i += 1


def test_compare_names_both_versions_of_a_claim_whose_definition_changed(tmp_path):
    from vanex.report.compare import compare

    old = _fake_report(tmp_path / "old", (0.5, 0.4, 0.6), claim="fragile")
    new = _fake_report(tmp_path / "new", (0.5, 0.4, 0.6), claim="✗")
    for folder, version in ((old, 1), (new, 2)):
        claims = pd.read_csv(folder / "claims.csv").assign(version=version)
        claims.to_csv(folder / "claims.csv", index=False)
    assert compare(str(old), str(new), "quick") == ["claim some_claim: v1 fragile -> v2 ✗"]
    assert compare(str(new), str(_fake_report(tmp_path / "same", (0.5, 0.4, 0.6), claim="✓")), "quick") == [
        "claim some_claim: ✗ -> ✓"  # one side without versions (a report before them): statuses only
    ]
