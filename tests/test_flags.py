"""Every flag of ``merge`` and ``eval`` reaches the computation (issue 26.1: ``merge --seed`` once did not).

The flags come from the command line's own parsers, so a flag added later without a row here fails
:func:`test_every_flag_has_a_row`.  For each flag and each method that uses it, the command runs with
two values: the recipe (``merge``'s metadata, ``eval``'s JSON) must record the value given, and the
output (the merged tensors, the accuracies) must change.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tatr_core.checkpoints import load_image_encoder, save_safetensors
from tatr_core.cli import build_parser
from tatr_core.cli.common import parameter_users
from tatr_core.merge import REGISTRY
from tatr_core.analysis.sweeps import plugin_sweeps
from tiny_models import perturbed, tiny_clip
from clirun import run_cli

FREE = [m for m in REGISTRY.values() if not m.uses_data]

#: the two values each parameter flag is run with (the second differs from every method's default)
VALUES = {
    "lam": ("0.3", "0.8"), "density": ("0.2", "0.6"), "merge_func": ("sum", "mean"), "rank_fraction": ("0.05", "0.5"),
    "drop_rate": ("0.1", "0.5"), "base": ("task_arithmetic", "ties"), "tall_lambda": ("0.0", "1.0"),
    "min_tasks": ("1", "2"), "variant": ("vision", "released"), "outlier": ("0.0", "0.2"),
    "common_fraction": ("0.2", "0.8"), "rank_ratio": ("0.1", "0.5"), "cart_lambda": ("0.5", "1.5"),
    "steps": ("2", "5"), "lr": ("0.0001", "0.001"), "lines_beta": ("0.2", "0.9"), "tau": ("0.05", "0.3"),
    "seed": ("1", "2"), "exemplars": ("8", "16"), "alpha": ("0.5", "0.9"), "granularity": ("task", "layer"),
    "init": ("0.2", "0.5"), "batch": ("4", "8"), "batches": ("1", "2"), "rank": ("2", "4"),
    "split": ("test", "val"), "sample": ("20", "40"),
}
#: flags that are no parameter of the computation, and why
NOT_PARAMETERS = {
    "help": "prints the help", "pretrained": "an input file", "finetuned": "the input files",
    "out": "where the output goes", "zoo": "the input zoo", "method": "the method itself",
    "json": "the output's format (every other row reads it)", "no_cache": "recomputes: the same numbers (tested below)",
}
#: flags that need others to be used: (flag, method) -> extra arguments
NEEDS = {
    ("density", "dare"): ["--base", "ties"], ("merge_func", "dare"): ["--base", "ties"],
    ("sensitivity", "*"): ["--tau", "0.3"], ("tau", "*"): ["--sensitivity", "zero-shot"],
}
#: the merge flags beyond the methods' own, with the methods they are tried on
MERGE_EXTRA = {"sensitivity": ["task_arithmetic", "ties"], "grads": ["task_arithmetic"],
               "signed_grads": ["task_arithmetic"], "layout": ["task_arithmetic"]}


def flags(command: str) -> list[str]:
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return [a.dest for a in sub.choices[command]._actions]


def users(flag: str, methods) -> list[str]:
    """The methods among ``methods`` that use parameter ``flag``: they declare it, or a plug-in of theirs does."""
    if flag == "tau":
        return [m.name for m in methods if m.plugin]
    declared = parameter_users(methods).get(flag)
    plugged = [m.name for m in methods if any(p.name == flag for p in plugin_sweeps(m.name))]
    return (([m.name for m in declared[1]] if declared else []) + plugged) or []


def test_every_flag_has_a_row():
    known = set(VALUES) | set(NOT_PARAMETERS) | set(MERGE_EXTRA) | set(EVAL_RUN)
    for command in ("merge", "eval"):
        missing = [f for f in flags(command) if f not in known]
        assert not missing, f"{command} flags without a row in tests/test_flags.py: {missing}"


# --------------------------------------------------------------------------------------------- merge
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("flags")
    pre = save_safetensors(tiny_clip(0).visual.state_dict(), d / "pre.safetensors")
    fts = [save_safetensors(perturbed(tiny_clip(0), 200 + k).visual.state_dict(), d / f"ft{k}.safetensors")
           for k in range(3)]
    g = torch.Generator().manual_seed(5)
    whole = d / "pre-whole-clip.pt"  # a whole open_clip CLIP (text tower too): --layout input keeps its keys
    torch.save(tiny_clip(0).state_dict(), whole)
    out = {"pre": pre, "pre_whole": whole, "fts": fts, "dir": d}
    for name in ("a", "b"):
        signed = [{k: torch.randn(v.shape, generator=g) for k, v in tiny_clip(0).visual.state_dict().items()}
                  for _ in range(3)]
        out[f"signed_grads_{name}"] = [save_safetensors(sd, d / f"signed_{name}{k}.safetensors")
                                       for k, sd in enumerate(signed)]
        out[f"grads_{name}"] = [save_safetensors({k: v.abs() for k, v in sd.items()}, d / f"grads_{name}{n}.safetensors")
                                for n, sd in enumerate(signed)]
    return out


def merged(files, tmp_path, name: str, method: str, *args, pre: str = "pre") -> tuple[dict, dict]:
    out = tmp_path / f"{name}.safetensors"
    if method == "tatr" and "--sensitivity" not in args:  # its default gradient sensitivity needs --grads
        args = (*args, "--sensitivity", "zero-shot")
    r = run_cli("merge", "--pretrained", files[pre], "--finetuned", *files["fts"], "--method", method, *args,
                "--out", out)
    assert r.returncode == 0, (method, args, r.stderr)
    with safe_open(str(out), "pt") as fh:
        recipe = json.loads(fh.metadata()["tatr_recipe"])
    return recipe, load_image_encoder(out)


def differ(a: dict, b: dict) -> bool:
    return sorted(a) != sorted(b) or any(not torch.equal(a[k], b[k]) for k in a)


def merge_cases() -> list[tuple[str, str]]:
    cases = [(flag, method) for flag in flags("merge") if flag in VALUES for method in users(flag, FREE)]
    cases += [(flag, method) for flag, methods in MERGE_EXTRA.items() for method in methods]
    return cases


@pytest.mark.parametrize("flag,method", merge_cases())
def test_a_merge_flag_reaches_the_merge(files, tmp_path, flag, method):
    extra = NEEDS.get((flag, method), NEEDS.get((flag, "*"), []))
    if flag in ("grads", "signed_grads"):  # two sets of gradient files: the merge follows the files given
        sens = "gradient" if flag == "grads" else "positive"
        runs = [["--tau", "0.3", "--sensitivity", sens, f"--{flag.replace('_', '-')}", *files[f"{flag}_{n}"]]
                for n in ("a", "b")]
        wanted = [[str(f) for f in files[f"{flag}_{n}"]] for n in ("a", "b")]
    elif flag == "sensitivity":
        runs = [[*extra, "--sensitivity", "zero-shot"], [*extra, "--sensitivity", "gradient", "--grads", *files["grads_a"]]]
        wanted = ["zero-shot", "gradient"]
    elif flag == "layout":
        runs, wanted = [["--layout", "input"], ["--layout", "vision"]], ["input", "vision"]
    else:
        option = f"--{flag.replace('_', '-')}"
        runs = [[*extra, option, value] for value in VALUES[flag]]
        wanted = list(VALUES[flag])
    pre = "pre_whole" if flag == "layout" else "pre"
    (rec_a, a), (rec_b, b) = (merged(files, tmp_path, f"run{n}", method, *args, pre=pre) for n, args in enumerate(runs))
    for rec, value in zip((rec_a, rec_b), wanted):
        got = rec.get(flag, rec["params"].get(flag))
        assert str(got) == value or got == value or (isinstance(got, (int, float)) and got == float(value)), \
            (flag, method, rec)
    if flag == "layout":  # the same numbers in another layout: the file's keys differ (a whole CLIP's, the tower's)
        keys = []
        for n in range(2):
            with safe_open(str(tmp_path / f"run{n}.safetensors"), "pt") as fh:
                keys.append(set(fh.keys()))
        assert keys[0] != keys[1] and any(k.startswith("visual.") for k in keys[0]) and "conv1.weight" in keys[1]
    else:
        assert differ(a, b), f"--{flag} {wanted} gave the same merged model for {method}"


def test_the_seed_is_recorded_and_used_only_by_the_methods_that_draw(files, tmp_path):
    """``--seed`` reaches DARE's drops (above); a method without random draws ignores it and does not record it."""
    rec, a = merged(files, tmp_path, "s1", "ties", "--seed", "1")
    rec2, b = merged(files, tmp_path, "s2", "ties", "--seed", "2")
    assert "seed" not in rec["params"] and not differ(a, b)


# --------------------------------------------------------------------------------------------- eval
#: keep the data-using methods short: a few steps, a few exemplars
SHORT = {"adamerging": ["--steps", "2", "--batch", "4", "--batches", "1"],
         "adamerging++": ["--steps", "2", "--batch", "4", "--batches", "1"],
         "surgery": ["--steps", "2", "--batch", "4"], "fisher": ["--exemplars", "8"], "regmean": ["--exemplars", "8"],
         "regmean++": ["--exemplars", "8"], "wudi": ["--steps", "5"]}
#: run options of eval (every method): tried on one method each
EVAL_RUN = {"seed": "dare", "split": "task_arithmetic", "sample": "task_arithmetic", "exemplars": "tatr",
            "tasks": "task_arithmetic", "precision": "task_arithmetic"}


def evaluated(method: str, *args) -> dict:
    r = run_cli("eval", "--zoo", "micro", "--method", method, *args, "--json")
    assert r.returncode == 0, (method, args, r.stderr)
    return json.loads(r.stdout)


def eval_cases() -> list[tuple[str, str]]:
    """Every parameter flag on every data-using method that uses it (``merge`` covers the training-free
    ones with every method), on the first training-free method otherwise, and the run options."""
    out = []
    for flag in flags("eval"):
        if flag in EVAL_RUN:
            out.append((flag, EVAL_RUN[flag]))
        elif flag in VALUES:
            data = [m for m in users(flag, [s for s in REGISTRY.values() if s.uses_data])]
            out += [(flag, m) for m in data] or [(flag, users(flag, FREE)[0])]
    return out


@pytest.mark.parametrize("flag,method", eval_cases())
def test_an_eval_flag_reaches_the_evaluation(micro_zoo, flag, method):
    short = [a for a in SHORT.get(method, [])]
    option = f"--{flag.replace('_', '-')}"
    if option in short:  # the flag itself replaces the short setting
        i = short.index(option)
        del short[i:i + 2]
    extra = NEEDS.get((flag, method), NEEDS.get((flag, "*"), []))
    if flag == "tasks":
        values = [micro_zoo.task_names[:2], micro_zoo.task_names[1:]]
        runs = [[option, *v] for v in values]
    elif flag == "precision":
        values = ["fp32", "bf16"]
        runs = [[option, v] for v in values]
    else:
        values = list(VALUES[flag])
        runs = [[*short, *extra, option, v] for v in values]
    a, b = (evaluated(method, *args) for args in runs)
    for rec, value in zip((a, b), values):
        if flag == "tasks":
            assert list(rec["tasks"]) == value
            continue
        got = rec.get(flag, rec["params"].get(flag))
        assert str(got) == value or got == float(value), (flag, method, rec)
    if flag == "precision":  # bf16 rounds the logits: the losses move, even where the accuracy does not
        assert any(a["tasks"][t]["loss"] != b["tasks"][t]["loss"] for t in a["tasks"])
    elif flag != "tasks":
        assert a["tasks"] != b["tasks"], f"--{flag} {values} gave the same evaluation for {method}"


def test_no_cache_recomputes_the_same_numbers(micro_zoo):
    cached = evaluated("ties", "--sample", "20")
    fresh = evaluated("ties", "--sample", "20", "--no-cache")
    assert fresh == cached
