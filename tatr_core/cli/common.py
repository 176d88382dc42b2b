"""What the commands share: the progress bar, loading a zoo, the run options' flags, the flags
generated from declared parameters (:class:`tatr_core.merge.registry.Param`), atomic text output."""
from __future__ import annotations

import argparse
import logging
import resource
import sys
from pathlib import Path
from typing import Iterable

from .. import options
from ..cache import write_bytes_atomic
from ..errors import TatrError, shown
from ..executors import LOCAL, check_reachable, get_executor
from ..merge import PLUGINS, REGISTRY
from ..merge.registry import MAX_SEED, Param, plugin_parameters
from ..options import EXECUTORS, PRECISIONS
from ..zoo import load_zoo


def seed_value(text: str) -> int:
    """An argparse type: a whole number in [0, 2³² − 1] (the seeds every generator here takes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number, got {shown(text)}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed is a whole number in [0, {MAX_SEED}], got {shown(text)}")
    return value


def print_json(obj) -> None:
    """``obj`` as one line of valid JSON: a non-finite number (NaN, ±Inf) is written as null, with a warning."""
    import json
    import math

    bad: list[str] = []

    def clean(value, where: str):
        if isinstance(value, float) and not math.isfinite(value):
            bad.append(where)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    cleaned = clean(obj, "")
    if bad:
        logging.getLogger("tatr_core").warning("%d non-finite number(s) written as null: %s", len(bad),
                                               ", ".join(bad[:5]) + (" …" if len(bad) > 5 else ""))
    print(json.dumps(cleaned, allow_nan=False))


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


class BarProgress:
    """A tqdm bar on stderr driven by ``progress(fraction, message)`` callbacks."""

    def __init__(self, label: str):
        from tqdm import tqdm

        self.bar = tqdm(total=1000, desc=label, file=sys.stderr, mininterval=0.5,
                        bar_format="{desc}: {percentage:3.0f}%|{bar:30}| {elapsed} {postfix}")

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.n = int(1000 * min(max(fraction, 0.0), 1.0))
        self.bar.set_postfix_str(message[:70], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "BarProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_zoo(spec: str):
    """The zoo ``spec`` names (``mini``, ``micro`` or a manifest path), with a progress bar while it loads."""
    with BarProgress(f"zoo {spec}") as bar:
        return load_zoo(spec, bar)


def write_text(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


# ------------------------------------------------------------------------------ run options
def add_executor_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the points run (docs/ray.md)")
    g.add_argument("--executor", choices=list(EXECUTORS), default=None,
                   help="local: in this process (default, or $TATR_EXECUTOR); ray: Ray actors that each hold the zoo")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="ray: auto (the cluster `ray start --head` started here), host:port or ray://host:port; "
                        "default $TATR_RAY_ADDRESS, else a private local Ray with this machine's CPUs and GPUs")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="ray: number of workers (default $TATR_RAY_WORKERS, else one per GPU, or per CPU without GPUs)")


def add_precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=list(PRECISIONS), default=None,
                   help="evaluation arithmetic: auto (bf16 autocast on a GPU where it predicts as float32 does, "
                        "else float32; default, or $TATR_PRECISION), fp32, bf16. Conflict matrices and "
                        "landscapes evaluate losses in float32 unless bf16 is asked for")


def run_options(args: argparse.Namespace) -> options.RunOptions:
    """The run options of a command: the environment's (:func:`tatr_core.options.current`), with its flags."""
    current = options.current()
    executor = getattr(args, "executor", None)
    address, workers = getattr(args, "ray_address", None), getattr(args, "workers", None)
    if (address or workers is not None) and (executor or current.executor) != "ray":
        raise TatrError("--ray-address and --workers need --executor ray")
    return current.replace(precision=getattr(args, "precision", None), executor=executor, ray_address=address,
                           workers=workers)


def executor_of(args: argparse.Namespace):
    """The executor a command's points run on (an unreachable Ray address is an error up front, even when
    every point is already cached)."""
    if not hasattr(args, "executor"):
        return LOCAL
    executor = get_executor()
    if executor.name == "ray" and executor.address:
        check_reachable(executor.address)
    return executor


# ------------------------------------------------------------------------------ declared parameters
#: parameters with flags of their own: they serve more than one method's parameter (the gradients
#: behind the trust region, every random draw of a run)
RUN_LEVEL = ("exemplars", "seed")


def parameter_users(methods) -> dict[str, tuple]:
    """{name: (the first declaration, [methods declaring it])} over ``methods``' parameters."""
    out: dict[str, tuple] = {}
    for m in methods:
        for param in m.parameters:
            if param.name not in RUN_LEVEL:
                out.setdefault(param.name, (param, []))[1].append(m)
    return out


def flag(group, param: Param, help_text: str, choices=None) -> None:
    """One flag for a declared parameter: ``--name`` with its type, choices, metavar and help."""
    name = f"--{param.name.replace('_', '-')}"
    if param.kind is bool:
        group.add_argument(name, dest=param.name, action="store_const", const=True, default=None, help=help_text)
        return
    group.add_argument(name, dest=param.name, type=param.kind, choices=choices or (list(param.choices) or None),
                       default=None, nargs="+" if param.many else None,
                       metavar=None if (choices or param.choices) else param.name.upper(), help=help_text)


def add_parameter_flags(p: argparse.ArgumentParser, methods) -> None:
    """One flag per parameter the methods declare: type, choices and help come from the declarations; the
    default is each method's own (left out, the method decides)."""
    g = p.add_argument_group("method parameters (defaults are each method's own)")
    for name, (param, users) in parameter_users(list(methods)).items():
        choices = sorted({c for m in users for c in m.declared[name].choices}) or None
        defaults = {m.name: m.declared[name].default for m in users}
        if len(set(map(str, defaults.values()))) == 1:
            default_text = f"default {next(iter(defaults.values()))}"
        else:
            default_text = "defaults " + ", ".join(f"{m} {d}" for m, d in defaults.items())
        flag(g, param, f"{param.help}: {param.must()}; for {', '.join(defaults)} ({default_text})", choices)


#: the plug-in parameters with flags of their own in every command (τ and the sensitivity)
OWN_FLAGS = ("tau", "sensitivity")


def add_plugin_flags(p: argparse.ArgumentParser) -> None:
    """One flag per parameter a plug-in declares (LiNeS' --lines-beta), beside --tau and --sensitivity."""
    g = p.add_argument_group("plug-ins (tatr_core.merge.PLUGINS)")
    for plugin in PLUGINS.values():
        for param in plugin.parameters:
            if param.name not in OWN_FLAGS:
                flag(g, param, f"{param.help}: {param.must()}")


def method_kwargs(args: argparse.Namespace) -> dict:
    """The method and plug-in parameters given on the command line (one a method does not declare is refused
    by ``resolve_params``, naming it)."""
    names = list(parameter_users(REGISTRY.values())) + [n for n in plugin_parameters() if n not in OWN_FLAGS]
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def given(args: argparse.Namespace, names: Iterable[str]) -> dict:
    """The values of flags ``names`` that were given (left-out flags are None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
