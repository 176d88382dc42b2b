"""λ and τ chosen on the validation split: the search, the rules for what is searched, the tables and the CLI."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from clirun import run_cli
from tatr_core.analysis import tuning
from tatr_core.analysis.tables import METHOD_ROWS, method_table, to_csv, to_latex, to_markdown
from tatr_core.errors import TatrError
from tatr_core.runs import evaluate_method


@pytest.mark.parametrize("method,params,expected", [
    ("task_arithmetic", {}, ["lam"]),
    ("tatr", {}, ["lam", "tau"]),                                  # TATR's own τ = 1%
    ("tatr", {"tau": 0.0}, ["lam"]),                               # the plug-in off: plain Task Arithmetic
    ("tatr", {"sensitivity": "positive"}, ["lam"]),                # selects by sign: τ does not grade it
    ("tatr", {"sensitivity": "zero-shot"}, ["lam", "tau"]),
    ("ties", {}, ["lam"]),
    ("ties", {"tau": 0.01}, ["lam", "tau"]),                       # TIES & TATR
    ("average", {}, []),
    ("average", {"tau": 0.01}, ["tau"]),
    ("adamerging", {"tau": 0.01}, []),                             # trains: keeps its λ init and τ
    ("surgery", {}, []),                                           # its base merge's λ stays the paper's
    ("fisher", {}, []),
    ("pretrained", {}, []),
])
def test_what_is_chosen_on_validation(method, params, expected):
    assert tuning.tunable(method, params) == expected


def _fake_evaluations(monkeypatch, accuracy):
    calls = []

    def fake(zoo, batch, **kw):  # one round of the search: its points together
        records = []
        for call in batch:
            calls.append((call["split"], call))
            records.append({"average_accuracy": accuracy(call["lam"], call.get("tau", 0.0))})
        return records

    monkeypatch.setattr(tuning, "run_methods", fake)
    monkeypatch.setattr(tuning, "check_validation_split", lambda zoo, split="val": None)
    return calls


def test_coordinate_search_finds_the_best_point_on_the_validation_split(monkeypatch):
    calls = _fake_evaluations(monkeypatch, lambda lam, tau: -(lam - 0.6) ** 2 - 10 * (tau - 0.02) ** 2)
    out = tuning.tune(None, "tatr")
    assert out["chosen"] == {"lam": 0.6, "tau": 0.02}
    assert len(out["trace"]) == len(calls) == 10 + 6 + 10 and all(split == "val" for split, _ in calls)
    # λ at TATR's own τ first, then τ at the λ found, then λ again
    assert [p["tau"] for p in out["trace"][:10]] == [0.01] * 10
    assert [p["lam"] for p in out["trace"][10:16]] == [0.6] * 6
    assert out["val_accuracy"] == max(p["val_accuracy"] for p in out["trace"])


def test_ties_in_validation_accuracy_go_to_the_smaller_value(monkeypatch):
    _fake_evaluations(monkeypatch, lambda lam, tau: 0.5)
    assert tuning.tune(None, "tatr")["chosen"] == {"lam": 0.1, "tau": 0.001}
    assert tuning.tune(None, "task_arithmetic", lam_grid=[0.3, 0.2])["chosen"] == {"lam": 0.3}  # grid order
    assert tuning.tune(None, "fisher") == {"method": "fisher", "chosen": {}, "val_accuracy": None, "trace": [],
                                           "split": "val"}


def test_a_zoo_without_a_validation_split_is_refused_with_the_way_out():
    zoo = SimpleNamespace(tasks={"a": SimpleNamespace(splits={"test": None}), "b": SimpleNamespace(splits={"val": None})})
    with pytest.raises(TatrError, match=r"needs a 'val' split, which a lacks.*--fixed"):
        tuning.check_validation_split(zoo)


def test_tuning_on_the_micro_zoo_matches_explicit_evaluations(micro_zoo):
    grid = [0.2, 0.5, 0.9]
    out = tuning.tune(micro_zoo, "task_arithmetic", lam_grid=grid)
    val = [evaluate_method(micro_zoo, "task_arithmetic", lam=lam, split="val")["average_accuracy"] for lam in grid]
    assert [p["val_accuracy"] for p in out["trace"]] == val
    assert out["chosen"] == {"lam": grid[val.index(max(val))]}


def test_method_table_reports_test_accuracy_at_the_values_chosen_on_validation(micro_zoo):
    rows = [r for r in METHOD_ROWS if r[0] in ("Pre-trained", "Task Arithmetic", "TATR", "Ties-Merging & TATR",
                                               "Task Arithmetic & LiNeS")]
    table = method_table(micro_zoo, rows, tune=True, sample=40)
    by_label = {row["label"]: row for row in table["rows"]}
    assert by_label["Pre-trained"]["chosen"] == {}
    for label, method, kw in (("Task Arithmetic", "task_arithmetic", {}), ("TATR", "tatr", {}),
                              ("Ties-Merging & TATR", "ties", {"tau": 0.01})):
        chosen = tuning.tune(micro_zoo, method, sample=40, **kw)["chosen"]
        assert by_label[label]["chosen"] == chosen and set(chosen) == ({"lam"} if label == "Task Arithmetic"
                                                                       else {"lam", "tau"})
        test = evaluate_method(micro_zoo, method, sample=40, **{**kw, **chosen})
        assert by_label[label]["values"]["Avg"] == pytest.approx(100 * test["average_accuracy"])
    # a LiNeS row searches its β in place of λ (LiNeS replaces λ), from LiNeS' grid
    lines = tuning.tune(micro_zoo, "task_arithmetic", sample=40, lines_beta=0.5)
    assert set(lines["chosen"]) == {"lines_beta"} and [p["lines_beta"] for p in lines["trace"]] == [
        0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert by_label["Task Arithmetic & LiNeS"]["chosen"] == lines["chosen"]
    assert "chosen on val" in to_markdown(table) and r"$\lambda$ or $\beta$, $\tau$ (val)" in to_latex(table)
    assert to_csv(table).splitlines()[0].endswith("lam (val),tau (val),lines_beta (val)")
    assert "β " in to_markdown(table)
    fixed = method_table(micro_zoo, rows, sample=40)
    assert "chosen on val" not in to_markdown(fixed) and all(not row["chosen"] for row in fixed["rows"])


def test_cli_tune_and_the_fixed_table(micro_zoo, tmp_path):
    r = run_cli("tune", "--zoo", "micro", "--method", "task_arithmetic", "--lam-grid", "0.2", "0.5", "--sample", "40",
                "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["chosen"] == tuning.tune(micro_zoo, "task_arithmetic", lam_grid=[0.2, 0.5], sample=40)["chosen"]
    assert out["test"]["params"]["lam"] == out["chosen"]["lam"]
    r = run_cli("tune", "--zoo", "micro", "--method", "surgery")
    assert r.returncode == 2 and "nothing to choose on validation" in r.stderr
    r = run_cli("tune", "--zoo", "micro", "--method", "tatr", "--tau-grid", "0.01", "1.5")
    assert r.returncode == 2 and "τ must be a fraction in [0, 1)" in r.stderr
    r = run_cli("table", "sensitivity-variants", "--zoo", "micro", "--sample", "40", "--fixed")
    assert r.returncode == 0 and "chosen on val" not in r.stdout
