"""The docs match the code: generated pages are current, every command, flag and TOML key
is documented, the README stays short, and every link points at a file that exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import click

from sqlrepl import settings
from sqlrepl.cli import cli

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]


def _docs_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("docs_script", ROOT / "scripts" / "docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_pages_are_current() -> None:
    """docs/cli.md and docs/configuration.md are what scripts/docs.py writes now."""
    assert _docs_script().main(["--check"]) == 0


def test_every_command_and_flag_is_documented_with_help() -> None:
    """Each command has help text and a section in docs/cli.md naming each of its options."""
    reference = (ROOT / "docs" / "cli.md").read_text()
    for ctx in _docs_script()._contexts(click.Context(cli, info_name="sqlrepl")):
        command = ctx.command
        assert command.help, f"{ctx.command_path} has no help"
        section = reference.split(f"## `{ctx.command_path}`\n", 1)
        assert len(section) == 2, f"{ctx.command_path} is not in docs/cli.md"
        body = section[1].split("\n## ", 1)[0]
        for param in command.params:
            for opt in param.opts if isinstance(param, click.Option) else []:
                assert opt in body, f"{ctx.command_path} {opt} is not in docs/cli.md"


def test_every_toml_key_is_documented() -> None:
    """Each key a node's config file takes has a meaning and a row in docs/configuration.md."""
    assert set(settings.HELP) == set(settings.PARSERS)
    page = (ROOT / "docs" / "configuration.md").read_text()
    for key in settings.PARSERS:
        assert f"| `{key}` |" in page, key


def test_readme_is_short_and_links_resolve() -> None:
    """The README is at most 150 lines; every relative link in the docs names a file."""
    assert (ROOT / "README.md").read_text().count("\n") <= 150
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_every_test_file_the_docs_name_exists() -> None:
    """A doc that cites a test as its evidence names a file that is there."""
    for page in [*PAGES, *sorted((ROOT / "sqlrepl").rglob("*.py"))]:
        for cited in re.findall(r"tests/[a-z0-9_/]*test_[a-z0-9_]+\.py", page.read_text()):
            assert (ROOT / cited).exists(), f"{page.name} cites missing {cited}"
