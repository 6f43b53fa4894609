"""The ``vanex`` command: run (the Hydra app), study, report, claims, compare, verify, show, list.

User errors (unknown names, mitigations that cannot apply, bad values) print one line and
exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import os
import re
import signal
import sys
import textwrap
from pathlib import Path

from vanex.conf import default, profiles
from vanex.errors import UserError, did_you_mean

USAGE = """usage: vanex <command> [args]    (vanex --version: the version and git commit)

commands:
  run [overrides...]        train one configuration (a Hydra app: -m for multirun, --cfg job, --help)
  study NAME [overrides...] run every cell of a study, skipping finished runs (see `vanex study -h`)
  report                    turn records into reports/ (see `vanex report -h`)
  claims                    check published claims against the records (see `vanex claims -h`)
  compare A B               what moved between two reports or result sets (see `vanex compare -h`)
  verify [FOLDER]           retrain recorded runs and check they come out as recorded (see `vanex verify -h`)
  show RUN                  one run's per-layer gradients, updates and activations over training (a figure)
  list [KIND]               registered tasks, mitigations, probes, claims, sections, studies (and who added each)
"""


class Parser(argparse.ArgumentParser):
    """argparse with vanex's errors: one line (what was wrong, where to look), exit status 2, no usage dump."""

    def error(self, message: str):  # type: ignore[override]
        required = "the following arguments are required: "
        if message.startswith(required):  # argparse names an empty nargs='*' positional too: it is not required
            optional = {a.dest for a in self._actions if a.nargs == "*"}
            message = required + ", ".join(n for n in message[len(required) :].split(", ") if n not in optional)
        raise UserError(f"{self.prog}: {message} (see {self.prog} -h)")


def _not_empty(args: argparse.Namespace, *names: str) -> None:
    """Refuse an option given as an empty string (``--out ''`` would otherwise mean the default folder)."""
    for name in names:
        if getattr(args, name, None) == "":
            raise UserError(f"--{name} is empty; give a folder")


def _profiles_help(what: str) -> str:
    return f"{what}: one of {', '.join(profiles())} (default: {default('profile')})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] == "--version":
        if argv[1:]:
            print(f"vanex: error: --version takes no arguments, got {' '.join(argv[1:])}", file=sys.stderr)
            return 2
        print(_version())
        return 0
    command, rest = argv[0], argv[1:]
    commands = {
        "run": cmd_run,
        "study": cmd_study,
        "report": cmd_report,
        "claims": cmd_claims,
        "compare": cmd_compare,
        "verify": cmd_verify,
        "show": cmd_show,
        "list": cmd_list,
    }
    try:  # the folders a refused run or study must not leave behind
        records = Path(_results_dir(rest)).absolute()
        new = [p for p in (records, *records.parents) if not p.exists()]
    except OSError:  # a path the system refuses (too long): the checks say so in one line
        new = []
    try:
        if command not in commands:
            raise UserError(f"unknown command '{command}'; valid commands: {', '.join(commands)}")
        _choose_numerics(rest)
        previous = signal.signal(signal.SIGTERM, _interrupt) if command in TERM_AS_CTRL_C else None
        try:
            code = commands[command](rest) or 0
            sys.stdout.flush()  # a reader that left (`| head`) is found here, not at exit
        finally:  # main also runs inside other programs (tests): their own TERM handling comes back
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return code
    except UserError as exc:
        print(f"vanex: error: {_unparsed(_unselected(did_you_mean(str(exc)), rest))}", file=sys.stderr)
        _remove_new(new if command in ("run", "study") else [])
        return exc.exit_code
    except SystemExit as exc:  # a single run refused inside Hydra's app exits there, with its one line said
        if exc.code not in (0, None) and command in ("run", "study"):
            _remove_new(new)
        raise
    except BrokenPipeError:  # e.g. `vanex show RUN | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (before OSError, of which it is one)
        return 0
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        print(f"vanex: error: a file name is too long ({exc.filename}); use a shorter path", file=sys.stderr)
        return 2
    except Exception as exc:  # an override Hydra or OmegaConf cannot resolve (e.g. ${oc.env:UNSET}): one line
        if not _hydra_error(exc):
            if (culprit := _broken_plugin(exc)) is None:
                raise
            print(f"vanex: error: {culprit}", file=sys.stderr)
            return 2
        print(f"vanex: error: cannot apply overrides: {str(exc).splitlines()[0]}", file=sys.stderr)
        _remove_new(new if command in ("run", "study") else [])
        return 2
    except KeyboardInterrupt:
        if command in ("run", "study"):
            print("vanex: interrupted; finished records are kept, run again to resume", file=sys.stderr)
        else:  # report writes its folder in one step: the previous one is still whole
            print(f"vanex: {command} interrupted; nothing was changed", file=sys.stderr)
        return 130


def _hydra_error(exc: BaseException) -> bool:
    """An error of Hydra or OmegaConf (an override or interpolation they cannot resolve): said in one line."""
    return type(exc).__module__.startswith(("omegaconf", "hydra"))


def _broken_plugin(exc: BaseException) -> str | None:
    """One line naming the third-party plugin behind an unexpected error: an entry point that cannot be
    loaded (a missing module or attribute, an error or a clashing name at import, a config root that is
    no package), whose code the traceback passes through, or one of whose classes lacks an attribute vanex
    reads; None where no plugin is to blame."""
    import traceback
    from importlib import resources, util
    from importlib.metadata import entry_points

    from vanex.registry import CLAIMS_GROUP, CONF_GROUP, PLUGIN_GROUP, SECTIONS_GROUP, _distribution

    frames = [frame.filename for frame in traceback.extract_tb(exc.__traceback__)]
    lacking = getattr(exc, "obj", None) if isinstance(exc, AttributeError) else None  # a class vanex read a field of
    if lacking is not None:
        lacking = (lacking if isinstance(lacking, type) else type(lacking)).__module__.split(".")[0]
    for group in (PLUGIN_GROUP, CLAIMS_GROUP, SECTIONS_GROUP, CONF_GROUP):
        for ep in entry_points(group=group):
            dist = _distribution(ep)  # as the registry credits its registrations
            if dist == "vanex":
                continue
            where, fix = f"plugin '{ep.name} = {ep.value}' ({group}, from {dist})", f"fix it or `pip uninstall {dist}`"
            try:
                if group == CONF_GROUP:
                    resources.files(ep.value).iterdir()  # a package: its folder holds the config groups
                else:
                    ep.load()  # imports its module again where the first import failed
            except Exception as err:
                return f"{where} cannot be loaded ({type(err).__name__}: {err}); {fix}"
            root = ep.value.split(":")[0].split(".")[0]
            spec = util.find_spec(root)
            places = tuple(spec.submodule_search_locations or [spec.origin or "?"]) if spec is not None else ()
            if places and any(name.startswith(places) for name in frames):  # its package's folder, or module file
                return f"{where} failed ({type(exc).__name__}: {exc}); {fix}"
            if lacking == root:  # one of its classes lacks a field vanex reads (a claim without `study`, say)
                return f"{where}: a class of it lacks what vanex reads ({exc}); {fix}"
    return None


TERM_AS_CTRL_C = ("run", "report", "claims", "compare", "verify")  # their clean-up (temporary folders) runs on a
# Ctrl-C; a TERM (a time limit, `kill`) gets the same. A study has its own: its workers and second-path process


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _unparsed(message: str) -> str:
    """An override Hydra's grammar cannot read (a value with é, say): name it, and how to quote it, not
    every override of the run (a study's cells have a dozen each)."""
    found = re.match(r"cannot parse overrides .*: LexerNoViableAltException: (.*)$", message)
    if not found:
        return message
    key, _, value = found.group(1).partition("=")
    return (
        f"cannot parse the override '{found.group(1)}': a value with characters Hydra's grammar does not take "
        f"unquoted (é, say) must be quoted, e.g. {key}=\"'{value}'\""
    )


def _unselected(message: str, args: list[str]) -> str:
    """A setting of a mitigation the command did not select (Hydra: "Could not override
    'mitigation.clip_norm.max_norm'"): say so, and how to select it."""
    found = re.search(r"Could not override 'mitigation\.([A-Za-z0-9_]+)\.", message)
    if not found:
        return message
    chosen = [a.split("=", 1)[1].strip("[]") for a in args if a.startswith("mitigation=")]
    selected = [m for m in ",".join(chosen).split(",") if m]
    name = found.group(1)
    from vanex.registry import MITIGATIONS

    if name not in MITIGATIONS.names():
        return f"unknown mitigation '{name}' in a setting; valid mitigations: {', '.join(MITIGATIONS.names())}"
    if name in selected:
        return message
    now = f"selected: {', '.join(selected)}" if selected else "none is"
    return (
        f"mitigation '{name}' is not selected ({now}), so its settings cannot be set: add it, "
        f"e.g. mitigation=[{','.join([*selected, name])}]"
    )


def _remove_new(folders: list[Path]) -> None:
    """Remove the folders (innermost first) that a refused command created and left empty (an empty lease
    folder counts as empty): a refusal leaves nothing behind."""
    for folder in folders:
        try:
            leases = folder / "_leases"
            if leases.is_dir() and not leases.is_symlink() and not any(leases.iterdir()):
                leases.rmdir()
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        except OSError:  # another vanex wrote into it meanwhile: it is theirs
            return


def _results_dir(argv: list[str]) -> str:
    """The records folder a run or study of ``argv`` writes to (its ``results_dir=`` override, or the default)."""
    from vanex.conf import value

    given = [a.partition("=")[2] for a in argv if a.lstrip("+~").startswith("results_dir=")]
    return given[-1] if given else str(value("results_dir"))


def _version() -> str:
    """vanex's version and the commit of the source it runs (what a record's provenance will say)."""
    import vanex
    from vanex.engine.provenance import source

    src = source()
    commit = (src.get("git_commit") or "unknown")[:12] + ("+dirty" if src.get("git_dirty") else "")
    return f"vanex {vanex.__version__} (git {commit})"


def _choose_numerics(argv: list[str]) -> None:
    """Apply a ``numerics=...`` override now, before anything imports torch (vanex.numerics)."""
    from vanex import numerics

    if numerics.active_mode() not in numerics.MODES:
        raise UserError(f"{numerics.MODE_ENV}='{numerics.active_mode()}' is not one of {', '.join(numerics.MODES)}")

    for arg in argv:
        if arg.startswith("numerics="):
            numerics.apply(arg.partition("=")[2])


RUN_HELP = """usage: vanex run [--profile NAME] [KEY=VALUE ...]      train one configuration
       vanex run -m KEY=A,B ...                         a sweep (Hydra multirun), one record per run

Settings are Hydra overrides of conf/config.yaml; the groups and their options:
{groups}
Every setting of a group: `vanex run task=rnn_copy --cfg job`. Examples:
  vanex run task=deep_mlp task.depth=20 'mitigation=[relu,he_init]'
  vanex run --profile smoke task=rnn_copy task.delay=20 optim.lr=0.01
Records go to results_dir (default: results); `vanex show RUN_ID` draws one; Hydra's own help: --hydra-help.
"""


def _run_help() -> str:
    from vanex.engine.config import group_options
    from vanex.registry import MITIGATIONS

    groups = {
        "task": group_options("task"),
        "mitigation (a list)": MITIGATIONS.names(),
        "optim": group_options("optim"),
        "profile": group_options("profile"),
    }
    lines = [f"  {name:20s} {', '.join(options)}" for name, options in groups.items()]
    return RUN_HELP.format(groups="\n".join(lines))


def cmd_run(argv: list[str]) -> int:
    from vanex.engine.config import check_overrides, searchpath_override

    if {"-h", "--help"} & set(argv):
        print(_run_help(), end="")
        return 0
    argv = _profile_option(argv)

    valued = ("--cfg", "-c", "--package", "-p")  # Hydra flags whose value follows them (`--cfg job`)
    info = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")  # what `--info` may take

    def value(i: int) -> bool:
        return i > 0 and (argv[i - 1] in valued or (argv[i - 1] in ("--info", "-i") and argv[i] in info))

    overrides = [a for i, a in enumerate(argv) if not a.startswith("-") and not value(i)]
    _check_run_flags(argv, overrides)
    if chdir := next((o for o in overrides if o.lstrip("+~").startswith("hydra.job.chdir")), None):
        raise UserError(f"{chdir}: vanex keeps the working folder (records go to results_dir from where you run it)")
    check_overrides(overrides)
    if not any(a.startswith("-") for a in argv):  # a single run: refuse bad settings in one line, before Hydra
        from vanex.engine.config import compose, prepare

        prepare(compose(overrides))
    elif {"-m", "--multirun"} & set(argv) and not any(o.startswith("hydra/sweeper=") for o in overrides):
        _check_sweep(overrides)
    sys.argv = ["vanex run", *argv, *searchpath_override()]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vanex-run-") as scratch:
        os.environ[TALLY] = tally = os.path.join(scratch, "outcomes")
        _hydra_app()
        outcomes = Path(tally).read_text().split() if os.path.exists(tally) else []
    if failed := outcomes.count("failed"):  # a multirun goes on past a refused or failed job, then says how many
        print(f"vanex: {failed} of {len(outcomes)} runs failed or were refused", file=sys.stderr)
        return 1
    return 0


RUN_FLAGS = {  # Hydra's own command-line flags, which `vanex run` passes on
    "-m": "-m/--multirun",
    "--cfg": "--cfg job|hydra|all",
    "--resolve": "--resolve",
    "--package": "--package",
    "--info": "--info",
    "--hydra-help": "--hydra-help",
}
HYDRA_ALIASES = {"--multirun": "-m", "-c": "--cfg", "-p": "--package", "-i": "--info"}
LAUNCHER_MODULES = {"joblib": "joblib", "submitit_local": "submitit", "submitit_slurm": "submitit", "ray": "ray"}


def _check_run_flags(argv: list[str], overrides: list[str]) -> None:
    """Refuse in one line what Hydra would answer with its usage text or a many-line error: an unknown
    flag, a bad --cfg, an unknown or uninstalled launcher."""
    import importlib.util

    for i, arg in enumerate(argv):
        flag = arg.split("=", 1)[0]
        flag = HYDRA_ALIASES.get(flag, flag)
        if arg.startswith("-") and flag not in RUN_FLAGS:
            raise UserError(
                f"unknown option '{arg}' of vanex run; valid: --profile NAME, {', '.join(RUN_FLAGS.values())}"
            )
        if flag == "--cfg":
            value = arg.split("=", 1)[1] if "=" in arg else argv[i + 1] if i + 1 < len(argv) else ""
            if value not in ("job", "hydra", "all"):
                raise UserError(f"--cfg takes job, hydra or all, not '{value}'")
    chosen = next((o.partition("=")[2] for o in overrides if o.startswith("hydra/launcher=")), None)
    if chosen is not None:
        from vanex.engine.study import LAUNCHER_PACKAGES, LAUNCHERS

        if chosen not in LAUNCHERS:
            raise UserError(f"unknown launcher '{chosen}'; valid launchers: {', '.join(LAUNCHERS)}")
        plugin = f"hydra_plugins.hydra_{LAUNCHER_MODULES[chosen]}_launcher" if chosen in LAUNCHER_MODULES else None
        if plugin and importlib.util.find_spec(plugin) is None:
            raise UserError(f"launcher '{chosen}' is not installed: pip install {LAUNCHER_PACKAGES[chosen]}")


def _profile_option(argv: list[str]) -> list[str]:
    """``--profile NAME`` (as every other command takes it) as the override ``profile=NAME``."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--profile":
            if i + 1 == len(argv):
                raise UserError(f"--profile needs a name: one of {', '.join(profiles())}")
            out.append(f"profile={argv[i + 1]}")
            i += 2
            continue
        out.append(f"profile={argv[i][10:]}" if argv[i].startswith("--profile=") else argv[i])
        i += 1
    return out


def _check_sweep(overrides: list[str]) -> None:
    """Refuse a sweep with a bad value in one line before any run trains: each swept value is checked
    with the other settings at their first value (combinations are checked as each job starts)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from vanex.engine.config import compose, prepare

    own = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        parsed = OverridesParser.create().parse_overrides(own)
    except HydraException:
        return  # Hydra says what is wrong with it, in its own words
    choices = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.input_line]
        for o in parsed
    ]
    firsts = [c[0] for c in choices]
    for i, values in enumerate(choices):
        for value in values[1:] if i else values:
            prepare(compose([*firsts[:i], value, *firsts[i + 1 :]]))


TALLY = "VANEX_RUN_TALLY"  # the file each job of `vanex run -m` adds its outcome to: a launcher's jobs
# (joblib, submitit_local) run in processes of their own, so a count in this process would miss them


def _tally(outcome: str) -> None:
    try:
        with open(os.environ[TALLY], "a") as f:  # one short append per job: whole lines, in any order
            f.write(outcome + "\n")
    except (KeyError, OSError):  # a job on another machine (SLURM) cannot reach this machine's file
        pass


def _hydra_app() -> None:
    import hydra
    from vanex.engine.config import conf_dir

    @hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
    def app(cfg) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        from vanex.engine.config import prepare
        from vanex.engine.leases import Lease
        from vanex.engine.runner import run
        from vanex.records.store import is_finished, load_run, record_dir

        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        try:
            spec = prepare(cfg)
            lease = Lease(spec.run.results_dir, spec.run_id)  # never trained twice at once (suite/engine/leases.py)
            if (holder := lease.acquire()) is not None:
                raise UserError(f"run {spec.run_id} is being trained by another vanex ({holder}); not started")
            try:  # a finished record of this code is kept, as a study keeps it (a newer vanex's is refused)
                if is_finished(spec.run.results_dir, spec.run_id):
                    record = load_run(path := record_dir(spec.run.results_dir, spec.run_id))
                    print(
                        f"vanex: run {spec.run_id} is already recorded by this code; not trained again "
                        f"(to train it again, remove {path} or give another results_dir)",
                        file=sys.stderr,
                    )
                else:
                    record = run(spec)
            finally:
                lease.release()
        except UserError as exc:
            print(f"vanex: error: {did_you_mean(str(exc))}", file=sys.stderr)
            if not multirun:
                sys.exit(exc.exit_code)
            return _tally("failed")
        print(_one_line(record, spec.run.results_dir))
        if record["status"] == "failed" and not multirun:
            sys.exit(1)
        _tally("failed" if record["status"] == "failed" else "ok")

    app()


def _one_line(record: dict, results_dir: str) -> str:
    s = record["summary"]
    diagnosis = record.get("diagnosis")
    verdict = f"init {diagnosis['init']['verdict']}, training {diagnosis['training']['verdict']}" if diagnosis else "-"

    def fmt(key: str) -> str:
        return "n/a" if s.get(key) is None else f"{s[key]:.4g}"

    from vanex.records.store import set_label

    mitigations = set_label(record["mitigations"])
    path = os.path.join(results_dir, record["run_id"])
    text = (
        f"{record['task']} {mitigations} seed={record['seed']}: {record['status']}, diagnosis {verdict}; "
        f"grad_ratio_init {fmt('grad_ratio_init')}, final_train_loss {fmt('final_train_loss')}; record {path}"
    )
    return text + (f"\nerror: {record['error']}" if record["error"] else "")


MAX_JOBS = 256  # worker processes of one study: each holds torch (~0.5 GB); more would exhaust a machine's memory
STUDY_OVERRIDES = ("results_dir", "progress", "device")  # where and how cells run, not what they train


def _check_jobs(jobs: int) -> None:
    if not 1 <= jobs <= MAX_JOBS:
        raise UserError(f"--jobs must be a number of processes from 1 to {MAX_JOBS}, not {jobs}")


def cmd_study(argv: list[str]) -> int:
    from vanex.engine.study import run_study
    from vanex.records.store import KEEP_STALE

    parser = Parser(prog="vanex study", description="Run a study's grid, skipping finished runs.")
    parser.add_argument("name", help="study name (conf/study/<name>.yaml); `vanex list` shows them")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every cell, e.g. results_dir=out")
    parser.add_argument("--profile", default=default("profile"), help=_profiles_help("budget profile"))
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="runs in parallel, in worker processes started once (default: CPU count)",
    )
    parser.add_argument(
        "--with",
        dest="with_sets",
        action="append",
        default=[],
        metavar="M1,M2",
        help="add a mitigation set to the study (repeatable), e.g. --with agc",
    )
    parser.add_argument(
        "--keep-stale",
        action="store_true",
        help="keep finished records made by other code (default: rerun them; `vanex report` marks kept ones)",
    )
    args = parser.parse_intermixed_args(argv)
    if args.keep_stale:
        os.environ[KEEP_STALE] = "1"  # read by every is_finished, in this process and the ones it starts
    _check_jobs(args.jobs)
    for override in args.overrides:
        key = override.lstrip("+~").partition("=")[0]
        if key in ("profile", "seed"):
            use = "--profile NAME" if key == "profile" else "the study file's seeds"
            raise UserError(f"'{override}' would rewrite every cell of the study silently; use {use} instead")
        if key not in STUDY_OVERRIDES and not key.startswith(("hydra.", "hydra/")):
            raise UserError(
                f"'{override}' would change every cell of study {args.name} under the same manifest name; a study "
                f"takes {', '.join(STUDY_OVERRIDES)} and launcher settings (hydra/launcher=..., hydra.launcher.*): "
                "put other settings in a study file's overrides (conf/study/NAME.yaml), or use `vanex run -m`"
            )
    with_sets = [[m for m in s.split(",") if m] for s in args.with_sets]
    if any(not s for s in with_sets):
        raise UserError(
            "--with needs mitigation names, e.g. --with agc or --with relu,he_init (`vanex list mitigations`)"
        )
    if any(o.partition("=")[2] == "cuda" and o.startswith("device=") for o in args.overrides):
        import torch

        if not torch.cuda.is_available():
            raise UserError("device=cuda: torch.cuda.is_available() is False here; use device=cpu or device=auto")
    failed = run_study(args.name, args.profile, args.overrides, args.jobs, with_sets)
    if failed:
        print(
            f"vanex: {failed} run(s) failed; their errors are above, and in their records where one could be "
            "written (rerun to retry them)",
            file=sys.stderr,
        )
    return 1 if failed else 0


def cmd_report(argv: list[str]) -> int:
    from vanex.report.build import default_out, write_report

    parser = Parser(prog="vanex report", description="Turn records into tables and figures.")
    parser.add_argument(
        "--results", default="results", help="records directory with study manifests (default: results)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output directory, replaced whole (default: reports for the default profile, else reports-PROFILE)",
    )
    parser.add_argument(
        "--profile",
        default=default("profile"),
        help=_profiles_help("profile whose study manifests to report"),
    )
    parser.add_argument("--study", action="append", default=None, help="report only these studies (repeatable)")
    parser.add_argument(
        "--runs",
        metavar="DIR",
        default=None,
        help="report every record in DIR (e.g. a `vanex run -m` sweep), grouped by settings",
    )
    args = parser.parse_args(argv)
    _not_empty(args, "results", "out", "runs")
    out = args.out or default_out(args.profile)
    path = write_report(args.results, out, args.profile, args.study, runs_dir=args.runs)
    print(f"report: {path.with_name('index.html')} (and in Markdown: {path.name})", file=sys.stderr)
    return 0


def cmd_claims(argv: list[str]) -> int:
    from vanex.report.claims import claims_markdown, evaluate_all

    parser = Parser(
        prog="vanex claims",
        description="Judge every published claim on the study records: ✓, ✗, fragile (flips at half or double "
        "the learning rate or on the second numeric code path) or not run. Exit status 1 when a claim that ran "
        "is ✗ (fragile does not fail).",
    )
    parser.add_argument(
        "--results",
        default="results",
        help="records directory with study manifests, or a report folder that ships its records "
        "(e.g. reports, the committed report)",
    )
    parser.add_argument(
        "--profile",
        default=default("profile"),
        help=_profiles_help("profile whose study manifests to read"),
    )
    parser.add_argument("--claim", action="append", default=None, help="check only these claims (repeatable)")
    parser.add_argument("--format", choices=("text", "markdown"), default="text", help="output format")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="exit 0 even when a claim is not run or a record is unreadable (by default both exit 1)",
    )
    parser.add_argument(
        "--lock",
        action="store_true",
        help="developers: record every built-in claim's version and definition fingerprint in claims.lock.json "
        "(refused for a claim whose definition changed without a version bump)",
    )
    args = parser.parse_args(argv)
    _not_empty(args, "results")
    if args.lock:
        return _lock_claims()
    committed = "" if args.results != "results" else ", or judge the committed report's records: --results reports"
    if not Path(args.results).is_dir():
        raise UserError(f"no records directory '{args.results}'; run `nox` or `vanex study NAME` first{committed}")
    from vanex.records.bundle import records_of
    from vanex.records.store import require_manifests
    from vanex.registry import CLAIMS

    for name in args.claim or []:
        CLAIMS.get(name)  # an unknown name is refused first, with the valid ones
    problems: list[str] = []
    with records_of(args.results) as records:  # a report folder: the records it ships
        if not args.allow_missing:
            try:
                require_manifests(records, args.profile)
            except UserError as exc:
                raise UserError(f"{exc}{committed}") from None
        results = evaluate_all(records, args.profile, args.claim, problems)
    from vanex.conf import not_evidence

    if caveat := not_evidence(args.profile):
        print(f"vanex claims: {caveat}", file=sys.stderr)
    if args.format == "markdown":
        print(claims_markdown(results))
    else:
        for r in results:
            print(f"{r.status:8s} {r.name} v{r.version}  [{r.paper}, {r.where}]")
            print(f"         {r.statement}")
            print(f"         cells: {r.cells}")
            print(f"         {r.numbers}")
            print(f"         lr ×0.5 / ×2: {r.neighbourhood}")
            print(f"         second numeric path: {r.second_path}")
            if r.previous:
                print(f"         earlier: {r.previous}")
    failed = [r.name for r in results if r.status == "✗"]
    if failed:
        print(
            f"vanex claims: {len(failed)} claim(s) contradicted by the records: {', '.join(failed)}",
            file=sys.stderr,
        )
    not_run = [r.name for r in results if r.status == "not run"]
    if not_run and not args.allow_missing:
        problems.append(f"{len(not_run)} claim(s) not run: {', '.join(not_run)} (--allow-missing accepts that)")
    for line in problems if not args.allow_missing else []:
        print(f"vanex claims: {line}", file=sys.stderr)
    return 1 if failed or (problems and not args.allow_missing) else 0


def _lock_claims() -> int:
    import json

    from vanex.report.claims import LOCK, relock

    lock = json.loads(LOCK.read_text()) if LOCK.is_file() else {}
    new = relock(lock)
    LOCK.write_text(json.dumps(new, indent=2) + "\n")
    changed = sorted(k for k in new if new[k] != lock.get(k))
    print(f"{LOCK}: {len(new)} claims, {len(changed)} (re)locked{': ' + ', '.join(changed) if changed else ''}")
    return 0


def cmd_compare(argv: list[str]) -> int:
    from vanex.report.compare import main as compare

    parser = Parser(
        prog="vanex compare",
        description="Compare two reports (folders written by `vanex report`) or result sets (folders with "
        "study manifests, reported first): step-0 gradient ratios exactly on one CPU model and within a relative "
        "1e-4 across models, trained metrics' 95 percent confidence intervals must overlap, verdicts and claim "
        "statuses must agree, and seed counts too on one CPU model (across models a completed/diverged flip is "
        "a note). Prints what moved; exit status 1 if anything did, 0 if nothing did, 2 on bad input or on two "
        "sides of different profiles.",
    )
    parser.add_argument("a", help="report or results folder, e.g. reports (the committed report)")
    parser.add_argument("b", help="report or results folder, e.g. results (a fresh rerun)")
    parser.add_argument(
        "--profile",
        default=default("profile"),
        help=_profiles_help("profile of a results folder's manifests"),
    )
    args = parser.parse_args(argv)
    if "" in (args.a, args.b):
        raise UserError("compare needs two folders, got an empty name")
    return compare(args.a, args.b, args.profile)


def cmd_verify(argv: list[str]) -> int:
    from vanex.engine.verify import verify

    parser = Parser(
        prog="vanex verify",
        description="Retrain recorded runs from the settings their records hold, in a temporary folder (nothing in "
        "FOLDER is written), and check each against its record: bit for bit where this machine has the CPU model and "
        "torch version that trained it; elsewhere its step-0 values within the relative 1e-4 that `vanex compare` "
        "allows across CPU models (unless its twin on the other numeric path, retrained here too, shows that rounding "
        "alone moves it further). Records that are not finished, of another schema or damaged are passed over, with a "
        "line saying how many. Exit status 0 if every selected run came out as recorded, 1 if one did not (or could "
        "not be checked here), 2 on bad input.",
    )
    parser.add_argument(
        "folder",
        metavar="FOLDER",
        nargs="?",
        default="reports",
        help="a results folder, or a report that ships records.tar.gz (default: reports)",
    )
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="ID",
        help="retrain this run, given by its id or enough of it to name one (repeatable; --sample and --max-seconds "
        "then do not apply)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=8,
        help="how many runs, drawn in turn from each task among those within --max-seconds (default: 8; 0: every "
        "one of those: 4,482 runs of the committed report at the default --max-seconds; its 4,351 within 5 s "
        "took 23 min on 2 cores)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=10.0,
        help="draw only runs whose record says they trained within this many seconds (default: 10)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (default: 0)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="runs in parallel, in worker processes (default: CPU count)",
    )
    args = parser.parse_args(argv)
    if args.folder == "":
        raise UserError("FOLDER is empty; give a results folder or a report folder, e.g. reports")
    _check_jobs(args.jobs)
    if args.sample < 0 or not args.max_seconds > 0:
        raise UserError("--sample must be 0 (all) or more, and --max-seconds above 0")
    return verify(args.folder, args.run, args.sample, args.max_seconds, args.seed, args.jobs)


def _task_defaults(task: str) -> dict:
    """A task's settings as its config file has them ({} where the task is no longer installed)."""
    from omegaconf import OmegaConf
    from vanex.engine.config import compose, flatten

    try:
        cfg = OmegaConf.to_container(compose([f"task={task}"]), resolve=True)
    except UserError:
        return {}
    return {**flatten("task.", cfg["task"]), **flatten("optim.", cfg["optim"])}


def cmd_show(argv: list[str]) -> int:
    from vanex.report import show

    parser = Parser(
        prog="vanex show",
        description="One run's training: what it was, how it ended, its diagnosis, and a figure of every layer's "
        "gradient norm, update ratio and activation statistics over training, with the global gradient norm and "
        "the batch loss (a recurrent task adds its gradient through time).",
    )
    parser.add_argument("run", metavar="RUN", help="a run id (or 4+ of its first hex digits), or a record folder")
    parser.add_argument("--results", default="results", help="records directory (default: results)")
    parser.add_argument(
        "--profile",
        default=None,
        help=_profiles_help("a run id's prefix names a record of this profile").replace(
            f" (default: {default('profile')})", " (default: any)"
        ),
    )
    parser.add_argument(
        "--out",
        default=None,
        help="the figure: a .png, .pdf or .svg file (default: vanex-show-RUN_ID.png here)",
    )
    args = parser.parse_args(argv)
    if args.profile is not None:
        from vanex.engine.config import group_file

        group_file("profile", args.profile)  # refuses a profile no config root defines (main suggests a close one)
    path = show.find_record(args.run, args.results, args.profile)
    run, probes, diagnosis = show.read(path)
    if run.get("run_id") != path.resolve().name:  # report and claims skip such a record; show says what it is
        print(
            f"vanex show: warning: record {path} says it is run {run.get('run_id')!r}, not its folder's name "
            "(copied or renamed); shown as the run it says it is",
            file=sys.stderr,
        )
    out = show.out_path(args.out, run["run_id"])
    print(show.describe(run, diagnosis, path, _task_defaults(run["task"])))
    if probes.empty:
        print("  no probe series in this record (a run that failed before its first step); no figure drawn")
        return 0
    print(f"  figure: {show.draw(run, probes, out)}")
    return 0


LISTED = ("tasks", "mitigations", "probes", "claims", "sections", "studies")


def cmd_list(argv: list[str]) -> int:
    parser = Parser(
        prog="vanex list",
        description="The registered tasks, mitigations, probes, claims and report sections, each with the "
        "distribution that added it, and the studies of every config root.",
    )
    parser.add_argument("kinds", nargs="*", metavar="KIND", help=f"only these: {', '.join(LISTED)} (default: all)")
    parser.add_argument("--names", action="store_true", help="names only, one per line (for scripts)")
    parser.add_argument(
        "--profile",
        default=None,
        help=_profiles_help(
            "with studies: each study's runs under this profile and how many of them are finished"
        ).replace(f" (default: {default('profile')})", " (default: not planned)"),
    )
    parser.add_argument("--results", default="results", help="with --profile: the records directory (default: results)")
    args = parser.parse_args(argv)
    for kind in args.kinds:
        if kind not in LISTED:
            raise UserError(f"unknown kind '{kind}'; valid kinds: {', '.join(LISTED)}")
    if args.profile is not None:
        from vanex.engine.config import group_file

        group_file("profile", args.profile)  # before anything is listed: a bad input is one line
    unplanned = []  # studies whose file cannot be planned: listed with the reason, the others still are
    for kind in args.kinds or LISTED:
        rows = _listing(kind)
        if kind == "studies" and args.profile is not None and not args.names:
            rows = [(name, origin, _planned(name, args.profile, args.results, unplanned)) for name, origin, _ in rows]
        if args.names:
            print("\n".join(name for name, _, _ in rows))
            continue
        print(f"{kind}:")
        width = max((len(name) for name, _, _ in rows), default=0)
        for name, origin, text in rows:
            print(f"  {name:{width}s}  [{origin}]  {text}".rstrip())
    if unplanned:
        print(f"vanex list: {len(unplanned)} study file(s) cannot be planned: {', '.join(unplanned)}", file=sys.stderr)
    return 1 if unplanned else 0


def _listing(kind: str) -> list[tuple[str, str, str]]:
    """(name, the distribution that added it, one line about it) of every ``kind``."""
    from vanex.registry import CLAIMS, MITIGATIONS, PROBES, SECTIONS, TASKS

    def first_line(obj) -> str:  # the docstring's first paragraph, shortened at a word with a visible mark
        return textwrap.shorten(inspect.cleandoc(obj.__doc__ or "").split("\n\n")[0], 110, placeholder=" …")

    if kind == "studies":
        from vanex.engine.config import group_file, group_options

        return [(name, _conf_origin(group_file("study", name)), "") for name in group_options("study")]
    registry = {"tasks": TASKS, "mitigations": MITIGATIONS, "probes": PROBES, "claims": CLAIMS, "sections": SECTIONS}
    rows = []
    for name in registry[kind].names():
        cls = registry[kind].get(name)
        text = (
            f"knobs: {', '.join(cls.knobs)}" if kind == "tasks" else cls.paper if kind == "claims" else first_line(cls)
        )
        rows.append((name, cls.origin, text))
    return rows


def _planned(study: str, profile: str, results: str, unplanned: list[str]) -> str:
    """'N runs, M finished in RESULTS' for ``study`` under ``profile`` (planned as `vanex study` plans it), or
    why its file cannot be planned (its name then joins ``unplanned``)."""
    import tempfile

    from vanex.engine.plan import plan
    from vanex.records.store import is_finished

    try:
        with tempfile.TemporaryDirectory(prefix="vanex-list-") as scratch:  # planning checks, or makes, its folder;
            _, runs = plan(study, profile, [f"results_dir={scratch}"])  # a listing reads RESULTS (ids: no folder)
    except Exception as exc:  # a UserError, or an override Hydra or OmegaConf cannot resolve (as main says it)
        if not isinstance(exc, UserError) and not _hydra_error(exc):
            raise
        unplanned.append(study)
        return f"{profile}: cannot be planned: {str(exc).splitlines()[0]}"
    return f"{profile}: {len(runs)} runs, {sum(is_finished(results, r.run_id) for r in runs)} finished in {results}"


def _conf_origin(path: Path) -> str:
    """The distribution whose config root holds ``path`` (vanex's own conf/, or a plugin's)."""
    from importlib.metadata import entry_points
    from importlib.resources import files

    for ep in entry_points(group="vanex.conf"):
        if Path(str(files(ep.value))) in path.parents:
            return ep.dist.name if ep.dist is not None else ep.value
    return "vanex"


if __name__ == "__main__":
    sys.exit(main())
