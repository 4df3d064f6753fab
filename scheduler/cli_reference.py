"""Renders docs/cli.md from the ``coopsched`` parser: ``python -m scheduler.cli_reference > docs/cli.md``."""

from __future__ import annotations

import argparse

from scheduler.cli import build_parser

INTRO = """# `coopsched` command reference

Generated from the parser by `python -m scheduler.cli_reference`; do not edit by hand.

Every command takes `--json` (machine-readable output), and those that talk to a cluster
`--address HOST:PORT` (a Ray cluster other than the local one) and `--key FILE` (the
private key that signs its requests; default `$COOPSCHED_KEY`), before or after its name.
A command with no use for `--address` or `--key` says so below and refuses them (exit 2)
rather than ignore them. Exit codes: 0 ok, 1 error, 2 bad input or usage, 3 refused by
policy, 4 refused by authorization (unsigned, unknown key, forged, expired, replayed or
forbidden). Errors go to stderr and say how to fix them. Against a head in development
mode every command prints `DEVELOPMENT MODE: requests are not signed; ...` on stderr.
"""


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _walk(parser: argparse.ArgumentParser, prefix: str, out: list[str]) -> None:
    sub = _subparsers(parser)
    if sub is None:
        return
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, child in sub.choices.items():
        command = f"{prefix} {name}".strip()
        if _subparsers(child) is None:
            usage = " ".join(child.format_usage().split())
            for noise in ("usage: ", "[-h] ", "[--json] ", "[--address ADDRESS] ", "[--key KEY] ", " [--json]",
                          " [--address ADDRESS]", " [--key KEY]"):
                usage = usage.replace(noise, "")
            out += [f"### `{command}`", "", helps.get(name) or "", "", "```", usage, "```", ""]
            unused = child.get_default("unused")
            if unused is not None:
                out += [f"Takes no {' or '.join(f'`{flag}`' for flag in unused.flags)} (exit 2): {unused.why}.", ""]
                if unused.json is not None:
                    out += [f"Takes no `--json` (exit 2): {unused.json}.", ""]
            options = [a for a in child._actions if a.help not in (None, argparse.SUPPRESS) and a.dest != "help"
                       and a.option_strings and a.dest not in ("json", "address", "key")]
            for a in options:
                out.append(f"- `{', '.join(a.option_strings)}`: {a.help}")
            if options:
                out.append("")
        else:
            out += [f"## `{command}`", "", helps.get(name) or "", ""]
            _walk(child, command, out)


def render() -> str:
    out = [INTRO]
    _walk(build_parser(), "coopsched", out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
