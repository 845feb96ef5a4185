"""params.yaml is checked as a whole on load, from the typed dataclasses: every field of every section (also one
added later) is type-checked, a section built in code checks its own rules with the loader's messages, YAML's `1e-3`
is a number, and the KFP path (params as text) goes through the same checks."""

from __future__ import annotations

import copy
import dataclasses
import errno
import os
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest
import yaml

from hjcag.errors import ConfigError, os_error_message
from hjcag.params import ParamsFile, check_params_document, load_params, params_from_dict
from hjcag.pipeline.io import resolve_params
from hjcag.schema import Checked, Parsed, rule_of

REPO = Path(__file__).resolve().parents[1]
SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(ParamsFile)
            if dataclasses.is_dataclass(f.default_factory)}


def shipped() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_the_shipped_params_yaml_is_valid_under_every_profile() -> None:
    doc = shipped()
    check_params_document(doc)
    for profile in doc["profiles"]:
        assert load_params(REPO / "params.yaml", profile).profile == profile


def params_dataclasses() -> list[type]:
    """Every dataclass params.yaml is made of, found from ParamsFile's fields (a section added later is found too);
    a field parsed by a function of its own (tune.space) holds no section."""
    found: list[type] = []
    todo: list[type] = [ParamsFile]
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found.append(cls)
        hints = get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if not isinstance(rule_of(field), Parsed):
                todo += [t for t in types_in(hints[field.name]) if dataclasses.is_dataclass(t)]
    return found


def types_in(tp: Any) -> list[Any]:
    return [tp, *(t for arg in get_args(tp) for t in types_in(arg))]


def rule_breaker(field: dataclasses.Field[Any], tp: Any) -> Any:
    """A value of `field`'s type (shape and scalar) that its rule refuses."""
    if get_origin(tp) in (Union, UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
    origin, args = get_origin(tp), get_args(tp)
    scalar = args[-1] if origin is dict else args[0] if origin is tuple else tp
    candidates = {int: [0, -1], float: [-0.5, 0.0, 1.0], str: ["no-such-value"]}[scalar]
    bad = next((v for v in candidates if rule_of(field)(v) is not None), None)
    assert bad is not None, f"{field.name}: no value of {candidates} breaks its rule; add one that does"
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    if origin is dict:
        return {**default, next(iter(default), "x"): bad}
    if origin is tuple:
        return (bad, *default[1:]) if args[-1] is not Ellipsis else (bad,)
    return bad


def as_document(cls: type, name: str, value: Any) -> dict[str, Any]:
    """`name` = `value` where params.yaml holds it (``features.finetune_lr`` under ``features: {finetune: {lr}}``)."""
    for nested, prefix in getattr(cls, "NESTED_PREFIXES", {}).items():
        if name.startswith(prefix):
            value, name = {name[len(prefix):]: value}, nested
    doc: dict[str, Any] = {name: value}
    for key in reversed([k for k in cls.SECTION.split(".") if k]):
        doc = {key: doc}
    return doc


def test_every_section_checks_itself_when_built() -> None:
    """A section built in code is valid, as one loaded from params.yaml is: found from ParamsFile, so a new section
    without the checks fails here."""
    unchecked = [cls.__name__ for cls in params_dataclasses() if not issubclass(cls, Checked)]
    assert unchecked == [], f"sections that do not check themselves when built (derive from Checked): {unchecked}"
    for cls in params_dataclasses():
        cls()  # the defaults pass their own rules


@pytest.mark.parametrize("cls", params_dataclasses(), ids=lambda cls: cls.__name__)
def test_a_section_built_against_a_rule_is_refused_with_the_loaders_message(cls: type) -> None:
    """Driven by the fields' metadata: a rule added later is covered without a list to keep in step."""
    hints = get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if rule_of(field) is None or isinstance(rule_of(field), Parsed):
            continue
        bad = rule_breaker(field, hints[field.name])
        with pytest.raises(ConfigError) as built:
            dataclasses.replace(cls(), **{field.name: bad})
        with pytest.raises(ConfigError) as loaded:
            check_params_document(as_document(cls, field.name, bad), source="params.yaml")
        assert str(loaded.value) == f"params.yaml: {built.value}"


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_field_of_every_section_is_type_checked(section: str) -> None:
    """Driven by the dataclasses: a field added later is covered without a list to keep in step."""
    cls = SECTIONS[section]
    checked = 0
    for field in dataclasses.fields(cls):
        if isinstance(rule_of(field), Parsed) or field.type in ("Any", "dict[str, Any] | None"):
            continue  # free-form (visual_arch) or parsed by a function of its own (tune.space)
        doc = shipped()
        wrong: Any = {"not": "a scalar"} if not str(field.type).startswith(("dict", "MediaConfig")) else 7
        doc.setdefault(section, {})[field.name] = wrong
        with pytest.raises(ConfigError, match=rf"{section}\.{field.name} is "):
            params_from_dict(doc, source="params.yaml")
        checked += 1
    assert checked > 0


@pytest.mark.parametrize(("section", "key", "value", "fragment"), [
    ("train", "epochs", 0, "> 0"),
    ("train", "batch_size", -8, "> 0"),
    ("train", "epochs", True, "a whole number"),  # YAML's true is not 1
    ("train", "epochs", 2.5, "a whole number"),
    ("train", "val_fraction", 1.0, "in (0, 1)"),
    ("train", "device", "gpu", "one of ['auto', 'cpu', 'cuda'] (or cuda:N)"),
    ("train", "class_weights", "inverse", "one of ['none', 'balanced', 'sqrt']"),
    ("train", "lr", float("nan"), "a number"),
    ("model", "widths", {"t": 0}, "model.widths.t is 0; it must be > 0"),
    ("model", "widths", {"x": 8}, "unknown key 'x' in model.widths"),
    ("features", "audio_set", "IS09", "one of ['IS10_paraling'"),
    ("features", "progress", "yes please", "true or false"),
    ("gates", "min_weighted_f1", -0.1, "in [0, 1]"),
    ("validation", "policy", "ignore", "one of ['fail', 'quarantine']"),
    ("tune", "metric", "accuracy", "one of ['val_weighted_f1', 'val_loss']"),
    ("data", "kind", "voxceleb", "one of ['meld', 'iemocap', 'manifest']"),
])
def test_a_bad_value_is_named_with_what_it_takes(section: str, key: str, value: Any, fragment: str) -> None:
    doc = shipped()
    doc[section][key] = value
    with pytest.raises(ConfigError, match=r"^params\.yaml: ") as caught:
        params_from_dict(doc, source="params.yaml")
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_yaml_exponents_without_a_dot_are_numbers_and_every_problem_is_listed_in_one_line() -> None:
    text = (REPO / "params.yaml").read_text().replace("lr: 1.0e-5", "lr: 1e-4")
    doc = yaml.safe_load(text)
    assert doc["train"]["lr"] == "1e-4"  # YAML 1.1: a string
    assert params_from_dict(doc, "iemocap").train.lr == pytest.approx(1e-4)

    doc = copy.deepcopy(shipped())
    doc["train"].update(epochs="ten", lr="fast")
    doc["gates"]["min_accuracy"] = 2
    with pytest.raises(ConfigError) as caught:
        params_from_dict(doc, source="params.yaml")
    message = str(caught.value)
    assert message.startswith("params.yaml: train.epochs is 'ten'; it takes a whole number (default: 200)")
    assert "(also check train.lr, gates.min_accuracy)" in message


def test_a_check_across_fields_names_the_profile() -> None:
    doc = shipped()
    doc["profiles"]["demo"]["validation"] = {"media": {"min_duration_s": 90.0}}  # above the default maximum
    with pytest.raises(ConfigError, match=r"params\.yaml \(profile 'demo'\): validation\.media needs 0 <= "
                                          r"min_duration_s <= max_duration_s"):
        params_from_dict(doc, source="params.yaml")


def test_the_kfp_path_checks_params_text_the_same_way() -> None:
    text = (REPO / "params.yaml").read_text().replace("gates:\n  min_accuracy", "gate:\n  min_accuracy", 1)
    with pytest.raises(ConfigError, match=r"^the params_yaml pipeline parameter: unknown section 'gate'; "
                                          r"did you mean 'gates'\?"):
        resolve_params(text, "demo")
    with pytest.raises(ConfigError, match=r"^the params_yaml pipeline parameter: not valid YAML: "):
        resolve_params("seed: [3", "demo")
    params = resolve_params((REPO / "params.yaml").read_text(), "meld")
    assert params.gates.min_accuracy == pytest.approx(0.63)


def test_a_full_disk_is_one_line_naming_the_path() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as caught:
            os.write(fd, b"x")  # a real ENOSPC, without a file name, as a failed write() has
    finally:
        os.close(fd)
    assert caught.value.errno == errno.ENOSPC
    message = os_error_message(caught.value, "build/run", "--out")
    assert message is not None and message.startswith("no space left on the disk of 'build/run'; free some space")
    assert "pass another --out" in message
    assert os_error_message(OSError(errno.EIO, "Input/output error")) is None  # not the user's: keeps its traceback


def test_a_missing_params_file_points_at_the_installed_defaults(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Run outside a checkout, the default ./params.yaml is missing: the error names where the installed hjcag's
    defaults are, to copy; an explicit absolute path that is missing names only itself (no working directory)."""
    monkeypatch.chdir(tmp_path)
    shipped = Path(__file__).resolve().parents[1] / "params.yaml"
    with pytest.raises(ConfigError) as missing:
        load_params()
    assert str(missing.value) == (f"params file 'params.yaml' not found in {tmp_path}. Pass --params PATH (the "
                                  f"defaults of the installed hjcag are {shipped}: copy it here to start your own) "
                                  "or run from the repository root.")
    with pytest.raises(ConfigError) as explicit:
        load_params(tmp_path / "mine.yaml")
    assert str(explicit.value) == (f"params file '{tmp_path / 'mine.yaml'}' not found. Pass --params PATH or run "
                                   "from the repository root.")


def test_own_data_fine_tunes_the_encoder_as_the_recipe_that_transferred() -> None:
    """`generic` trains meld's recipe; its encoder fine-tuning is meld's too (3 epochs, one run, square-root weights,
    shown to transfer to EmoryNLP), not the paper's up to three runs of 10 epochs."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    generic, meld = (params_from_dict(doc, profile).features for profile in ("generic", "meld"))
    paper = params_from_dict({k: v for k, v in doc.items() if k != "profile"}).features  # the top level alone
    finetune = [f.name for f in dataclasses.fields(generic) if f.name.startswith("finetune_")]
    assert [getattr(generic, f) for f in finetune] == [getattr(meld, f) for f in finetune]
    assert [getattr(generic, f) for f in finetune] != [getattr(paper, f) for f in finetune]
