"""Options are declared once, on their dataclass field: the typer parameters, clipsharp.toml
and --show-config all follow from that declaration."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from clipsharp.cli import app, handle_errors
from clipsharp.cli.params import Offer, leaves, offer
from clipsharp.errors import ConfigError
from clipsharp.options import (
    DataOptions,
    EvalOptions,
    InputOptions,
    PathOptions,
    RunOptions,
    SharpnessOptions,
    flag_of,
    option,
    parse_alphas,
)

runner = CliRunner()


@dataclass(frozen=True)
class Smoothing:
    """An option added the way the docs say: one field, nothing else."""

    window: int = option(3, "Points averaged on each side.", metavar="N")
    alphas: tuple[float, ...] = option("0:1:0.5", "Where to smooth.", parse=parse_alphas)
    names: tuple[str, ...] = option((), "Names; repeat for several.", metavar="NAME")

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ConfigError(f"--window must be at least 1, got {self.window}")


def toy_app() -> typer.Typer:
    """A one-command app whose command takes the dataclass above and echoes what it got."""
    toy = typer.Typer()

    @toy.callback()
    def root() -> None:
        """Toy."""

    def smooth(*, smoothing: Smoothing) -> None:
        typer.echo(json.dumps({"window": smoothing.window, "alphas": smoothing.alphas,
                               "names": smoothing.names}))  # fmt: skip

    toy.command("smooth")(handle_errors(smooth))
    return toy


def test_one_field_is_a_flag_with_its_default_parsed_and_checked():
    toy = toy_app()
    default = json.loads(runner.invoke(toy, ["smooth"]).stdout)
    assert default == {"window": 3, "alphas": [0.0, 0.5, 1.0], "names": []}
    given = runner.invoke(toy, ["smooth", "--window", "5", "--alphas", "0,0.25", "--names", "a",
                                "--names", "b"])  # fmt: skip
    assert json.loads(given.stdout) == {"window": 5, "alphas": [0.0, 0.25], "names": ["a", "b"]}
    refused = runner.invoke(toy, ["smooth", "--window", "0"])
    assert refused.exit_code == 2 and "--window must be at least 1, got 0" in refused.stderr
    shown = runner.invoke(toy, ["smooth", "--help"], env={"COLUMNS": "200"}).stdout
    assert "Points averaged on each side." in shown and "[default: 0:1:0.5]" in shown


Files = Annotated[list[Path], option(..., "Files to smooth.", metavar="FILE", argument=True)]
Label = Annotated[str | None, option(None, "A label for the output.", metavar="TEXT", short="-l")]


def test_a_command_s_own_argument_and_option_are_declared_and_reworded_the_same_way():
    """A command's own parameters are option() declarations too, and @offer rewords any of
    them by its dotted path: the parameter, then the field."""
    toy = typer.Typer()

    @toy.callback()
    def root() -> None:
        """Toy."""

    @offer(helps={"label": "The label, here.", "smoothing.window": "Points each side, here."})
    def smooth(files: Files, *, label: Label, smoothing: Smoothing) -> None:
        typer.echo(json.dumps({"files": [str(f) for f in files], "label": label,
                               "window": smoothing.window}))  # fmt: skip

    toy.command("smooth")(handle_errors(smooth))
    given = runner.invoke(toy, ["smooth", "a", "b", "-l", "x", "--window", "2"])
    assert json.loads(given.stdout) == {"files": ["a", "b"], "label": "x", "window": 2}
    assert json.loads(runner.invoke(toy, ["smooth", "a"]).stdout)["label"] is None
    missing = runner.invoke(toy, ["smooth"])
    assert missing.exit_code == 2 and "Missing argument 'FILE" in missing.output
    shown = runner.invoke(toy, ["smooth", "--help"], env={"COLUMNS": "200"}).stdout
    assert "The label, here." in shown and "Points each side, here." in shown
    assert "A label for the output." not in shown and "--label" in shown and " -l " in shown


def test_a_parameter_not_declared_with_option_is_refused_when_the_command_is_made():
    """One way to declare: a typer parameter written by the command itself is a bug."""

    def other(force: Annotated[bool, typer.Option("--force")] = False) -> None: ...

    with pytest.raises(TypeError, match="'force' is not declared with option()"):
        handle_errors(other)


def test_every_shared_option_is_offered_with_its_declared_help_and_default():
    """interpolate takes InputOptions and RunOptions: each of their fields is a flag whose
    default is the field's default (or its text, for a parsed field)."""
    from clipsharp.cli import interpolate

    offered = {
        leaf.path[1:]: leaf.parameter
        for leaf in leaves(interpolate.command)
        if leaf.path[0] in ("inputs", "run")
    }
    declared = [((f.name,), f) for f in fields(InputOptions)] + [
        ((group.name, f.name), f)
        for group in fields(RunOptions)
        for f in fields({"data": DataOptions, "eval": EvalOptions, "path": PathOptions}[group.name])
    ]
    assert set(offered) == {path for path, _ in declared}
    for path, f in declared:
        flag = flag_of(f)
        default = offered[path].default
        assert default == (flag.text if flag.parse else (None if f.default == () else f.default))
        info = offered[path].annotation.__metadata__[0]
        assert info.help == flag.help or path == ("ood",)  # interpolate words --ood its own way
        assert info.metavar == flag.metavar and info.rich_help_panel == flag.panel


def test_a_command_default_and_help_override_only_that_command():
    from clipsharp.cli import interpolate, sharpness

    limits = {
        name: next(leaf for leaf in leaves(command) if leaf.param == "limit").parameter.default
        for name, command in (
            ("sharpness", sharpness.command),
            ("interpolate", interpolate.command),
        )
    }
    assert limits == {"sharpness": 1024, "interpolate": None}
    assert "exclude" in {
        leaf.path[-1] for leaf in leaves(sharpness.command) if leaf.path[0] == "sharpness"
    }
    assert ("run", "path", "exclude") not in {leaf.path for leaf in leaves(sharpness.command)}


def test_two_fields_under_one_flag_are_refused_when_the_command_is_made():
    def clash(*, run: RunOptions, sharpness: SharpnessOptions) -> None: ...

    with pytest.raises(TypeError, match="--exclude is offered by sharpness.exclude and run.path"):
        leaves(clash)
    clash.offer = Offer(omit=("run.path.exclude",))
    assert "exclude" in {leaf.param for leaf in leaves(clash)}


def test_config_file_and_show_config_follow_the_declaration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clipsharp.toml").write_text('rho = "0.1,0.5"\n[sharpness]\niterations = 3\n')
    result = runner.invoke(app, ["sharpness", "a.safetensors", "--show-config", "--kind", "worst"])
    shown = json.loads(result.stdout)["options"]
    assert shown["rho"] == {"value": "0.1,0.5", "from": "config file"}
    assert shown["iterations"] == {"value": 3, "from": "config file"}
    assert shown["kind"] == {"value": "worst", "from": "flag"}
    assert shown["limit"] == {"value": 1024, "from": "default"}


def test_offer_records_without_touching_the_signature():
    def command(*, run: RunOptions) -> None: ...

    recorded = offer("run.path.exclude", defaults={"run.data.limit": 8})(command)
    assert recorded is command and command.offer.defaults == {"run.data.limit": 8}
    assert not hasattr(command, "__signature__")


def test_every_option_that_takes_a_value_says_what_to_type():
    """A metavar (N, FILE, REPORT, A,B,C|START:STOP:STEP, ...) on every valued option of every
    command, declared on a dataclass or by the command itself."""
    import typer.main

    commands = typer.main.get_command(app).commands
    untyped = {
        f"{name} {param.opts[-1]}"
        for name, command in commands.items()
        for param in command.params
        if param.param_type_name == "option" and not param.is_flag and not param.metavar
    }
    assert untyped == set()


def test_a_field_whose_flag_is_a_python_keyword_is_named_after_the_field(tmp_path, monkeypatch):
    """--from (PruneOptions.from_report, MergeOptions.from_report) cannot name a Python
    parameter: the field's name does, in clipsharp.toml and --show-config too."""
    import typer.main

    commands = typer.main.get_command(app).commands
    for name in ("merge", "prune"):
        found = [p for p in commands[name].params if p.name == "from_report"]
        assert [p.opts for p in found] == [["--from"]]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clipsharp.toml").write_text('[prune]\nfrom-report = "s.json"\n')
    result = runner.invoke(app, ["prune", "ft.safetensors", "-o", "p.safetensors", "--show-config"])
    shown = json.loads(result.stdout)["options"]
    assert shown["from-report"] == {"value": "s.json", "from": "config file"}
    result = runner.invoke(
        app, ["merge", "a", "b", "--alpha", "best", "--from", "r.json", "-o", "m", "--show-config"]
    )
    assert json.loads(result.stdout)["options"]["from-report"]["value"] == "r.json"
