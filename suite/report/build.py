"""The reporter: records + study manifests -> ``reports/`` (Markdown, HTML, tidy CSVs, figures).

It reads only what ``vanex study`` and the runs wrote, through ``vanex.records.reader``: each
study's manifest (``<results>/_studies/<study>-<profile>.json``) and each record. It imports
neither torch nor Hydra nor a task, so a report can be rebuilt anywhere the records are. A
study's page is the registered report sections that apply to it (``vanex.report.sections``), in
their order; then the published claims and the provenance of the whole report. A report is built
in a temporary folder and swapped in whole: no stale figure survives.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from vanex import conf
from vanex.errors import UserError
from vanex.records.bundle import BUNDLE, is_bundled_report, write_bundle
from vanex.records.reader import adhoc_manifests, read_study, thresholds, warn
from vanex.records.store import atomic_dir, clean_stale, dumps, record_dir, require_manifests, set_label
from vanex.report.sections import report_metrics, sections
from vanex.report.tables import legend

ID_COLUMNS = ["study", "task", "mitigations", "setting", "seed", "run_id"]
DIAGNOSIS_COLUMNS = ["status", "init", "training", "training_flags"]
SUMMARY_IDS = ["run_id", "profile", "git_commit", "study", "task", "mitigations", "seed", "status"]


def tidy_summary(cells: pd.DataFrame, records: dict[str, dict], settings: list[str], profile: str) -> pd.DataFrame:
    """summary.csv: one numeric value per row. Columns: run_id, profile, git_commit, study, task,
    mitigations, seed, status, one column per setting swept in any study (the run's own value, so a
    setting left at its default is written out; empty where it does not apply), metric, value.
    Verdicts are in diagnosis.csv."""
    found = cells[cells["status"] != "missing"].assign(profile=profile)
    found = found.reindex(columns=list(dict.fromkeys([*found.columns, *SUMMARY_IDS])))  # none found: empty
    for key in settings:
        found[key] = [records[rid]["settings"].get(key) for rid in found["run_id"]]
    skip = set(ID_COLUMNS + DIAGNOSIS_COLUMNS + SUMMARY_IDS) | set(settings)
    numeric = [c for c in found.columns if c not in skip and pd.api.types.is_numeric_dtype(found[c])]
    ids = SUMMARY_IDS + settings
    long = found.melt(id_vars=ids, value_vars=numeric, var_name="metric", value_name="value")
    long = long.dropna(subset=["value"])
    return long.sort_values(["study", "mitigations", *settings, "seed", "metric"], kind="stable").reset_index(drop=True)


def report_id(records: dict[str, dict], source: Path) -> str:
    """A stable id of the records a report summarises: a hash over each record's run_id, status,
    summary and probe series (not its wall time or host), so the same records give the same id."""
    digest = hashlib.sha256()
    for rid in sorted(records):
        run = records[rid]
        probes = (record_dir(source, rid) / "probes.csv").read_bytes()
        entry = [rid, run["status"], run["summary"], hashlib.sha256(probes).hexdigest()]
        digest.update(dumps(entry).encode())
    return digest.hexdigest()[:12]


def citation(rid: str, profile: str, records: list[dict]) -> str:
    """The citation text a report prints for itself (README: "Cite a report")."""
    commits = sorted({str(r["provenance"].get("git_commit") or "unknown")[:12] for r in records})
    version = sorted({str(r["provenance"].get("vanex")) for r in records})
    return (
        f"The vanex authors. vanex report {rid} ({profile} profile, {len(records)} runs), "
        f"vanex {', '.join(version)}, source commit {', '.join(commits)}. "
        "Software: vanex, MIT licence; cite the software itself with CITATION.cff."
    )


def bibtex(rid: str, profile: str, records: list[dict]) -> str:
    """The report as a BibTeX entry (``CITATION.bib``): its id, profile, run count, vanex version and source
    commits; the year is the newest source commit's, where this checkout's git knows it (else left out)."""
    commits = sorted({str(r["provenance"].get("git_commit") or "") for r in records} - {""})
    version = ", ".join(sorted({str(r["provenance"].get("vanex")) for r in records}))
    years = [y for c in commits if (y := _commit_year(c))]
    fields = [
        ("author", "{The vanex authors}"),
        ("title", f"{{vanex report {rid} ({profile} profile, {len(records)} runs)}}"),
        *([("year", max(years))] if years else []),
        ("version", version),
        ("note", f"Source commit {', '.join(c[:12] for c in commits) or 'unknown'}; the records ship with the report"),
        ("keywords", "vanishing gradients, exploding gradients, benchmark"),
    ]
    body = ",\n".join(f"  {key} = {{{value}}}" for key, value in fields)  # author, title: braced twice, kept as is
    return f"@misc{{vanex-report-{rid},\n{body}\n}}\n"


def _commit_year(commit: str) -> str | None:
    import subprocess

    import vanex

    try:
        out = subprocess.run(
            ["git", "-C", str(Path(vanex.__file__).resolve().parent), "show", "-s", "--format=%cs", commit],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()[:4] if out.returncode == 0 and out.stdout.strip()[:4].isdigit() else None


def _provenance(records: list[dict]) -> tuple[str, str | None]:
    """(the provenance section, a warning if records come from several source commits)."""
    keys = ("vanex", "git_commit", "git_dirty", "lock_file_sha256", "torch", "python", "cpu", "threads")
    lines = []
    for key in keys:
        values = Counter(str(r["provenance"].get(key)) for r in records)
        lines.append(f"- {key}: " + ", ".join(f"{v} ({n} runs)" if len(values) > 1 else v for v, n in values.items()))
    paths = Counter(
        str(r["provenance"]["numerics"]["aten_cpu_capability"]) + " / " + str(r["provenance"]["numerics"]["mode"])
        for r in records
    )
    lines.append(
        "- CPU code path (ATen capability / numerics): " + ", ".join(f"{v} ({n} runs)" for v, n in paths.items())
    )
    lines.append("- training wall time: per run in `timing.csv` (the one file that differs between reruns)")
    sources = Counter((r["provenance"].get("git_commit"), r["provenance"].get("git_dirty")) for r in records)
    warning = None
    if len(sources) > 1:
        listed = "; ".join(f"{c or 'unknown'}{' (dirty)' if d else ''}: {n} runs" for (c, d), n in sources.items())
        from vanex.records import code

        same = all(code.stale(r) is None for r in records)  # the fingerprints of the code each run used
        warning = f"records come from {len(sources)} different vanex sources: {listed}" + (
            "; the code that trained them is the same (every record's code identity matches this vanex)" if same else ""
        )
    return "\n".join(lines), warning


def write_report(
    results: str,
    out: str,
    profile: str,
    studies: list[str] | None,
    runs_dir: str | None = None,
    numbers_only: bool = False,
) -> Path:
    """Write the report of ``profile``'s study manifests in ``results`` (or of every record in
    ``runs_dir``) to ``out``; returns the path of its ``summary.md``. ``numbers_only``: the tables, claims
    and summaries without figures, HTML or records (what compare reads, in a fraction of the time)."""
    if runs_dir is not None:
        if not Path(runs_dir).is_dir():
            raise UserError(f"no records directory '{runs_dir}'")
        manifests, source = adhoc_manifests(runs_dir), Path(runs_dir)
        if not manifests:
            raise UserError(f"no records of the current schema in '{runs_dir}'")
    else:
        if not Path(results).is_dir():
            raise UserError(f"no records directory '{results}'; run `vanex study NAME` (or `nox`) first")
        if is_bundled_report(results):
            raise UserError(
                f"'{results}' is a report: the records it ships hold only the series the claims read "
                f"(`vanex claims --results {results}` judges them); to rebuild it, train its studies (`nox`)"
            )
        manifests, source = require_manifests(results, profile), Path(results)
    names = [m["study"] for m in manifests]
    for s in studies or []:
        if s not in names:
            raise UserError(
                f"no manifest for study '{s}' (profile {profile}); studies with records: {', '.join(names)}"
            )
    manifests = [m for m in manifests if not studies or m["study"] in studies]
    check_out(Path(out), source, profile)
    if runs_dir is not None and Path(results).is_dir():
        check_out(Path(out), Path(results), profile)  # --out never replaces nor sits inside --results either

    def fill(tmp: Path) -> None:
        from vanex.report.figures import undrawn

        with undrawn() if numbers_only else contextlib.nullcontext():
            read = _write(tmp, manifests, source, profile, html=not numbers_only)
        if runs_dir_is_study(source, manifests) and not numbers_only:  # the records ship, for `vanex claims`
            from vanex.report.claims import metrics_read

            write_bundle(tmp / BUNDLE, source, manifests, metrics_read, read)
        written = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        (tmp / MARKER).write_text(
            "written by `vanex report`; this whole folder is replaced when the report is rewritten, unless it\n"
            f"holds a file not listed here (then the report is refused)\n{PROFILE}{profile}\n{FILES}\n"
            + "".join(f"{f}\n" for f in written)
        )

    clean_stale(Path(out).absolute().parent, Path(out).name)  # what a report killed mid-write left beside it
    try:
        path = atomic_dir(Path(out), fill) / "summary.md"
    except OSError as exc:  # a full disk, a folder that stopped accepting writes: nothing half-written stays
        raise UserError(f"cannot write the report to {out} ({exc.strerror or exc}); the folder is unchanged") from None
    return path


MARKER = ".vanex-report"  # marks a folder as a report, which the next report may replace whole
FILES = "files:"  # in the marker: the files the report wrote follow this line
PROFILE = "profile: "  # in the marker: the profile of the report (a report of another replaces it only once removed)


def default_out(profile: str) -> str:
    """The report folder of ``profile`` unless --out names another: reports for the default profile."""
    return "reports" if profile == conf.default("profile") else f"reports-{profile}"


def check_out(out: Path, source: Path, profile: str) -> None:
    """Refuse an output folder the report would destroy or that holds the records: ``--out`` must be
    absent, empty, or a previous report of ``profile`` (its marker listing every file in it), and
    neither equal to nor containing nor inside the records folder."""
    out_abs, source_abs = out.resolve(), source.resolve()
    if Path.cwd().resolve().is_relative_to(out_abs):  # swapping it would leave this shell in a deleted folder
        raise UserError(f"--out '{out}' is or holds the folder you are in; give a folder outside it, by name")
    if out_abs == source_abs or source_abs.is_relative_to(out_abs) or out_abs.is_relative_to(source_abs):
        raise UserError(
            f"--out '{out}' would replace or sit inside the records in '{source}'; give a folder outside it"
        )
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"--out '{out}' exists and is not a folder; give a new, empty or report folder")
    if out.is_dir():
        entries = {p.name for p in out.iterdir()}
        if MARKER in entries:
            _check_previous_report(out, profile)
        elif entries:  # without the marker nothing tells a report's files from a user's of the same name
            shown = sorted(entries)
            raise UserError(
                f"--out '{out}' is not empty and not a vanex report ({', '.join(shown[:3])}"
                f"{', ...' if len(shown) > 3 else ''} would be deleted); give a new or empty folder, or a report's"
            )


def _check_previous_report(out: Path, profile: str) -> None:
    """Refuse a report folder that holds a file its report did not write (a user's notes, a figure
    added by hand, a copied marker): replacing the folder would delete it; and a report of another
    profile (a smoke report written over the committed quick one by a mistyped --out)."""
    try:
        lines = (out / MARKER).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    if FILES not in lines:
        raise UserError(
            f"--out '{out}' is a report whose files are not listed (an older vanex, or a damaged marker), so "
            "files of yours in it cannot be told apart and would be deleted; remove the folder or give another"
        )
    was = next((line[len(PROFILE) :] for line in lines if line.startswith(PROFILE)), profile)
    if was != profile:
        raise UserError(
            f"--out '{out}' holds a report of the {was} profile, which a {profile} report would replace; "
            f"give another folder (the default for {profile} is {default_out(profile)}), or remove it first"
        )
    listed = set(lines[lines.index(FILES) + 1 :]) | {MARKER}
    other = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if not p.is_dir()) if out.is_dir() else []
    other = [f for f in other if f not in listed]
    if other:
        raise UserError(
            f"--out '{out}' holds files the report did not write ({', '.join(other[:3])}"
            f"{', ...' if len(other) > 3 else ''}) and would delete them; move them or give another folder"
        )


def runs_dir_is_study(source: Path, manifests: list[dict]) -> bool:
    """Claims read study manifests; an ad-hoc ``--runs`` report has none."""
    return all(m["profile"] != "runs" for m in manifests)


def _write(out: Path, manifests: list[dict], source: Path, profile: str, html: bool = True) -> set[str]:
    """Write the report's files into ``out`` (``html``: index.html too); returns the run ids of the records
    it read (the others were missing, unreadable or refused, each named in a warning)."""
    from vanex.report.figures import set_styles
    from vanex.report.html import write_html

    with_claims = runs_dir_is_study(source, manifests)
    if with_claims:
        from vanex.report.claims import cell_claims, claims_frame, claims_markdown, evaluate_all
    set_styles(sorted({set_label(c["mitigations"]) for m in manifests for c in m["cells"]}))
    metrics, page = report_metrics(), sections()
    all_cells, all_records, parts, skipped = [], {}, [], 0
    for i, manifest in enumerate(manifests, 1):
        print(f"report: [{i}/{len(manifests)}] {manifest['study']} ({len(manifest['cells'])} runs)", file=sys.stderr)
        study = read_study(manifest, source, metrics)
        if with_claims:
            study.cell_claims = cell_claims(manifest)
        all_cells.append(study.cells)
        all_records.update(study.records)
        skipped += study.old
        parts.append(f"## Study `{study.name}` (task `{manifest['task']}`)\n")
        if manifest.get("description"):
            parts.append(manifest["description"] + "\n")
        for section in page:
            if section.applies(study):
                parts.extend(section.write(study, out))
    cells = pd.concat(all_cells, ignore_index=True)
    settings = sorted({k for m in manifests for k in m["swept"]})
    tidy_summary(cells, all_records, settings, profile).to_csv(out / "summary.csv", index=False)
    found = cells[cells["status"] != "missing"]
    found[[c for c in ID_COLUMNS + DIAGNOSIS_COLUMNS if c in found]].to_csv(out / "diagnosis.csv", index=False)
    records = [all_records[rid] for rid in sorted(all_records)]
    timing = [(r["run_id"], r["seed"], r["provenance"]["wall_time_s"], r["provenance"].get("cpu")) for r in records]
    pd.DataFrame(timing, columns=["run_id", "seed", "wall_time_s", "cpu"]).to_csv(out / "timing.csv", index=False)
    rid = report_id(all_records, source)
    header = [
        f"# vanex report {rid} ({profile} profile)\n",
        f"Generated by `vanex report` from the records in `{source}/`; regenerate with `nox`. "
        f"Do not edit by hand. Report id `{rid}` is a hash of the {len(records)} records it summarises "
        "(their settings, status, summary and probe series): the same records give the same id.\n",
        (
            f"**Not for citation:** {caveat}.\n"
            if (caveat := conf.not_evidence(profile))
            else f"**Cite this report:** {citation(rid, profile, records)} BibTeX: [CITATION.bib](CITATION.bib)\n"
        ),
        legend(asdict(thresholds(manifests[0]))),
    ]
    provenance, mixed = _provenance(records) if records else ("no records", None)
    if mixed:
        header.append(f"**Warning: {mixed}.**\n")
        warn(mixed)
    if not conf.not_evidence(profile):
        (out / "CITATION.bib").write_text(bibtex(rid, profile, records))
    if with_claims:
        print("report: judging the claims", file=sys.stderr)
        claims = evaluate_all(source, profile)
        claims_frame(claims).to_csv(out / "claims.csv", index=False)
        parts.append("## Published claims\n")
        parts.append(
            "Each claim is judged on every seed of the cells it reads (the control group marked; `vanex claims` "
            "prints the same), then again on the second numeric code path and at half and double the learning "
            "rate where those cells ran: **fragile** means the verdict flips there. A claim the records "
            "contradict stays, marked ✗.\n"
        )
        parts.append(claims_markdown(claims) + "\n")
    parts.append("## Provenance\n")
    parts.append(provenance + "\n")
    text = "\n".join(header + parts)
    (out / "summary.md").write_text(text)
    if html:
        write_html(text, out, title=f"vanex report {rid}")
    missing = int((cells["status"] == "missing").sum())
    if skipped:
        warn(f"{skipped} records of an older schema were skipped (shown as missing); rerun their studies")
    print(f"report: {len(records)} records, {missing} runs missing", file=sys.stderr)
    return set(all_records)
