"""The README's real-data tables against the committed results files they name (benchmarks/results_file.py).

Every row of a table in README "Real data: MELD text only" and "Real data: EmoryNLP text only" names the results
file it comes from and the commit that ran it, as ``[KEY](benchmarks/results/FILE.json) @ COMMIT``, or says it was
not yet re-run from a committed tree (or is the paper's figure). A named file must record that commit with a clean
tree, and every figure in the row must be the file's, rounded as printed. Every row of README "Speed" names the
results files it comes from and their commit (clean tree); README "Two commands" and "Images, built and run" quote
one results file each (benchmarks/demo_results.py, benchmarks/images_results.py). Only committed files are read:
the README and benchmarks/results/.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Real data: MELD text only"
SECTIONS = (SECTION, "## Real data: EmoryNLP text only")
LINK = re.compile(r"\[([^\]]+)\]\((benchmarks/results/[\w.-]+\.json)\) @ ([0-9a-f]{7,40})")
NOT_RERUN = "not yet re-run from a committed tree"
PAPER = "the paper's figure"
NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def section_tables(text: str, title: str) -> list[list[dict[str, str]]]:
    """The Markdown tables between `title` and the next level-2 heading, each a list of {header: cell}."""
    body = text.split(title, 1)[1].split("\n## ", 1)[0]
    tables: list[list[dict[str, str]]] = []
    lines = body.splitlines()
    for i, line in enumerate(lines):
        is_header = line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].replace("|", "")) <= set("-: ")
        if not is_header or (i > 0 and lines[i - 1].startswith("|")):
            continue
        headers = cells(line)
        rows = []
        for row in lines[i + 2:]:
            if not row.startswith("|"):
                break
            rows.append(dict(zip(headers, cells(row), strict=True)))
        tables.append(rows)
    return tables


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def numbers(cell: str) -> list[str]:
    return NUMBER.findall(cell.replace("**", "").replace("−", "-"))


def pct(x: float, places: int = 1, sign: bool = False) -> str:
    return f"{100 * x:{'+' if sign else ''}.{places}f}"


@cache
def results_file(path: str) -> dict[str, Any]:
    return json.loads((REPO / path).read_text())


def committed_results_file(path: str, commit: str, benchmark: str) -> dict[str, Any]:
    """The results file at `path`, checked to be `benchmark`'s, run at `commit` on a clean tree."""
    doc = results_file(path)
    assert doc["benchmark"] == benchmark, f"{path} is {doc['benchmark']}'s, not {benchmark}'s"
    assert doc["git"]["commit"].startswith(commit), f"{path} ran {doc['git']['commit'][:7]}, not {commit}"
    assert doc["git"]["dirty"] is False, f"{path}: run from a tree with changes: {doc['git']['changed']}"
    return doc


def section_words(text: str, title: str) -> str:
    """The text between `title` and the next level-2 heading, its whitespace runs made single spaces."""
    return " ".join(text.split(title, 1)[1].split("\n## ", 1)[0].split())


def entry(doc: dict[str, Any], key: str) -> dict[str, Any]:
    found = [e for e in (*doc["figures"]["rows"], *doc["figures"].get("paired", [])) if e["key"] == key]
    assert len(found) == 1, f"{key!r}: {len(found)} entries in the results file"
    return found[0]


def expected(doc: dict[str, Any], key: str, column: str) -> list[str]:
    """A column's figures as the README prints them, from the results file's entry `key`."""
    e = entry(doc, key)
    if column == GLANCE:  # the recipe's test weighted F1, then the linear probe's on the same features
        probe = entry(doc, key.split("/")[0] + "/linear-probe")
        return [pct(e["test"]["weighted_f1"]), pct(probe["test"]["weighted_f1"])]
    if column in ("Dev", "Test"):  # accuracy / weighted F1 (± its spread over seeds) / macro F1
        s = e[column.lower()]
        spread = [pct(s["weighted_f1_std"])] if s.get("units", 1) > 1 else []
        return [pct(s["accuracy"]), pct(s["weighted_f1"]), *spread, pct(s["macro_f1"])]
    if column == "Test per-class F1":
        return [pct(v, 0) for v in e["test"]["per_class_f1"].values()]
    if column == "Seeds":
        return [str(seed) for seed in e["seeds"]]
    if column in ("Dev W-F1 difference", "Test W-F1 difference"):  # mean ± standard error over seeds
        d = e[column.split()[0].lower()]
        return [pct(d["mean"], 2, sign=True), pct(d["se"], 2)]
    if column == "Test, per seed":
        return [pct(x, 2, sign=True) for x in e["test"]["weighted_f1_diff"]]
    if column == "Context kept":
        return [str(sum(bool(k) for k in e["context_kept"])), str(len(e["context_kept"]))]
    raise AssertionError(f"unknown column {column!r}")


def readme_rows() -> list[dict[str, str]]:
    text = (REPO / "README.md").read_text()
    return [row for section in SECTIONS for table in section_tables(text, section) for row in table
            if "Results" in row]


GLANCE = "Test W-F1: profile / probe"  # the "at a glance" table
FIGURE_COLUMNS = ("Dev", "Test", "Test per-class F1", "Seeds", "Dev W-F1 difference", "Test W-F1 difference",
                  "Test, per seed", "Context kept", GLANCE)


def linked_rows() -> list[tuple[str, dict[str, str]]]:
    return [(row["Results"], row) for row in readme_rows() if LINK.search(row["Results"])]


def test_every_row_names_its_results_file_or_says_it_has_none() -> None:
    rows = readme_rows()
    assert len(rows) >= 3
    for row in rows:
        assert LINK.search(row["Results"]) or row["Results"] in (NOT_RERUN, PAPER), row
    assert len(linked_rows()) >= 3


@pytest.mark.parametrize(("cell", "row"), linked_rows(), ids=[c for c, _ in linked_rows()])
def test_row_figures_are_the_results_files(cell: str, row: dict[str, str]) -> None:
    match = LINK.search(cell)
    assert match is not None
    key, path, commit = match.groups()
    doc = results_file(path)
    assert doc["git"]["commit"].startswith(commit), f"{path} was run at {doc['git']['commit']}, not {commit}"
    assert doc["git"]["dirty"] is False, f"{path}: run from a tree with changes: {doc['git']['changed']}"
    assert doc["hjcag"]["in_this_checkout"], f"{path}: hjcag imported from {doc['hjcag']['path']}"
    checked = [column for column in FIGURE_COLUMNS if column in row]
    assert checked, row
    for column in checked:
        assert numbers(row[column]) == expected(doc, key, column), f"{key}, {column}: README {row[column]!r}"


def test_the_parser_reads_what_the_readme_writes() -> None:
    table = "## Real data: MELD text only\n\n| Dev | Results |\n|---|---|\n| 1.0 / **2.5 ± 0.3** / 4 | x |\n\n## Next"
    [[row]] = section_tables(table, SECTION)
    assert numbers(row["Dev"]) == ["1.0", "2.5", "0.3", "4"]
    assert numbers("+1.25 −0.50") == ["+1.25", "-0.50"]


def test_the_demo_figures_are_a_committed_demo_results_file() -> None:
    """README "Two commands" quotes `make demo`'s scores from benchmarks/demo_results.py's file of a clean commit."""
    body = section_words((REPO / "README.md").read_text(), "## Two commands")
    match = LINK.search(body)
    assert match is not None and match.group(1) == "demo", "the demo figures name no results file"
    _, path, commit = match.groups()
    f = committed_results_file(path, commit, "demo")["figures"]
    alone = f["robustness_accuracy"]
    quoted = (f"**{f['accuracy']['mean']:.1f} ± {f['accuracy']['std']:.1f} % accuracy / "
              f"{f['weighted_f1']['mean']:.1f} % weighted F1 / {f['macro_f1']['mean']:.1f} % macro F1**; the same "
              f"models with a modality missing at test time (the robustness table, `only_*` in `dvc metrics show`) "
              f"keep {alone['text+visual']:.1f} % without audio, {alone['audio+visual']:.1f} % without text, "
              f"{alone['text+audio']:.1f} % without visual, and {alone['text']:.1f} / {alone['audio']:.1f} / "
              f"{alone['visual']:.1f} % with text / audio / visual alone")
    assert quoted in body
    assert f["n_utterances"] == 890 and f"{f['n_utterances']} utterances" in body


SPEED_LINK = re.compile(r"\]\((benchmarks/results/[\w.-]+\.json)\)")
COMMIT = re.compile(r"@ ([0-9a-f]{7,40})\b")


def speed_rows() -> list[dict[str, str]]:
    text = (REPO / "README.md").read_text()
    return [row for table in section_tables(text, "## Speed") for row in table]


@pytest.mark.parametrize("row", speed_rows(), ids=lambda row: row["What"][:60])
def test_every_speed_row_names_committed_results_files(row: dict[str, str]) -> None:
    """README "Speed": each row links the results files its figures come from, and the commit (clean tree) of each."""
    paths, commits = SPEED_LINK.findall(row["Figure"]), COMMIT.findall(row["Figure"])
    assert paths and commits, f"the row names no results file and commit: {row['What']!r}"
    for path in paths:
        git = results_file(path)["git"]
        assert git["dirty"] is False, f"{path} was run on a changed tree"
        assert any(git["commit"].startswith(c) for c in commits), f"{path} ran {git['commit'][:7]}, not {commits}"


IMAGES = "## Images, built and run"


def image_step_figures(f: dict[str, Any]) -> dict[str, tuple[list[str], str]]:
    """Each row of the steps table, by the start of its first cell: (the numbers in that cell, its time)."""
    tests = f["image_test_steps"]
    return {
        "`make install`": ([], f"{f['make_install']['seconds']:.0f} s"),
        "`make images` again": ([str(f["images_after_code_change"]["components"]["build_seconds"])],
                                f"{f['make_images_after_code_change']['seconds']:.0f} s"),
        "`make images`": ([], f"{f['make_images']['seconds']:.0f} s"),
        "`make image-test`": ([str(tests[k]) for k in ("serving", "extractors", "components (gate)")],
                              f"{f['make_image_test']['seconds']:.0f} s"),
        "install to a passed image test": ([], f"{f['install_images_image_test_seconds'] / 60:.1f} min"),
    }


def test_the_image_figures_are_a_committed_images_results_file() -> None:
    """README "Images, built and run": sizes, build times and steps from benchmarks/images_results.py's file of a
    clean commit, every row of both tables."""
    text = (REPO / "README.md").read_text()
    body = section_words(text, IMAGES)
    match = LINK.search(body)
    assert match is not None and match.group(1) == "results", "the image figures name no results file"
    _, path, commit = match.groups()
    f = committed_results_file(path, commit, "images")["figures"]
    images, steps = section_tables(text, IMAGES)
    by_repo = {row["tag"].split("/")[-1].split(":")[0]: row for row in f["images"].values()}
    assert [re.match(r"`([\w-]+)`", row["Image"]).group(1) for row in images] == list(by_repo)  # type: ignore[union-attr]
    for row in images:
        built = by_repo[row["Image"].split("`")[1]]
        assert (row["Size (uncompressed)"], row["Build"]) == (built["size"], f"{built['build_seconds']} s"), row
    figures = image_step_figures(f)
    assert len(steps) == len(figures)
    for row in steps:
        key = next(k for k in figures if row["Step"].startswith(k))
        numbers_in_cell, time = figures[key]
        assert (numbers(row["Step"]) if numbers_in_cell else [], row["Time"]) == (numbers_in_cell, time), row
    stores = f"{f['store_bytes_after_images'] / 1e9:.1f} GB after `make images` and {f['store_bytes'] / 1e9:.1f} GB"
    assert stores in body


def linked_table_rows(title: str, benchmark: str) -> list[tuple[dict[str, str], str, dict[str, Any]]]:
    """The first table under `title`: each row, the key its Results link names, and the figures of the file it links
    (`benchmark`'s, of a clean commit)."""
    [table, *_] = section_tables((REPO / "README.md").read_text(), title)
    rows = []
    for row in table:
        match = LINK.search(row["Results"])
        assert match is not None, row
        key, path, commit = match.groups()
        rows.append((row, key, committed_results_file(path, commit, benchmark)["figures"]))
    return rows


MISSING = "### Missing modalities"
MISSING_COLUMNS = {"Without text": "audio+visual", "Without audio": "text+visual", "Without visual": "text+audio"}


def test_the_missing_modality_table_is_a_committed_results_file() -> None:
    """README "Missing modalities": each row's accuracies are benchmarks/missing_modalities.py's, of a clean commit,
    as printed (2 places); the two-modality row reads each column from the model trained without that modality."""
    rows = linked_table_rows(MISSING, "missing_modalities")
    assert len(rows) == 3
    for row, key, f in rows:
        if key == "two modalities":
            want = [""] + [f"{f['trained_' + m.replace('+', '_')]['accuracy']['mean']:.2f}"
                           for m in MISSING_COLUMNS.values()]
        else:
            run = f[key]
            want = [f"{run['accuracy']['mean']:.2f} ± {run['accuracy']['std']:.2f}"] + [
                f"{run['robustness_accuracy'][m]:.2f}" for m in MISSING_COLUMNS.values()]
        got = [row["All present"], *(row[c] for c in MISSING_COLUMNS)]
        assert got == want, f"{key}: README {got}, results file {want}"


CONTEXT = "### Conversation context (beyond the paper)"
CONTEXT_COLUMNS = {"No context": "none", "gru, warm start (as shipped)": "gru", "gru, trained jointly": "gru_joint"}


def context_cell(run: dict[str, Any]) -> str:
    """A run as README "Conversation context" prints it: accuracy / weighted F1, and for a context run the paired
    differences from the no-context run (mean ± standard error) and, warm-started, where the context was kept."""
    cell = f"{run['accuracy']['mean']:.2f} / {run['weighted_f1']['mean']:.2f}"
    if "paired" not in run:
        return cell
    a, w = run["paired"]["accuracy"], run["paired"]["weighted_f1"]
    kept = f"; context kept in {run['context_kept']} of {run['units']}" if run["context_warm_start"] else ""
    return f"{cell} ({a['mean']:+.2f} ± {a['se']:.2f} / {w['mean']:+.2f} ± {w['se']:.2f}{kept})"


def test_the_conversation_context_table_is_a_committed_results_file() -> None:
    """README "Conversation context": each demo row's three runs are benchmarks/context_demo.py's, of a clean
    commit, as printed."""
    rows = linked_table_rows(CONTEXT, "context_demo")
    assert len(rows) == 2
    for row, key, figures in rows:
        data = figures[key]
        got = [row[column] for column in CONTEXT_COLUMNS]
        want = [context_cell(data[run]) for run in CONTEXT_COLUMNS.values()]
        assert got == want, f"{key}: README {got}, results file {want}"
