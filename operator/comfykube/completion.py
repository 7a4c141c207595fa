"""Shell completion scripts for `comfykube`, generated from its own argument parser.

`comfykube completion bash|zsh|fish` prints a script; nothing is installed and no extra
dependency is needed. The scripts complete subcommands and each subcommand's flags; since they
are made from the parser, a new flag is completed without touching this module.
"""

from __future__ import annotations

import argparse
import shlex

SHELLS = ("bash", "zsh", "fish")


def commands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """`{subcommand: (help, [(flag, help), ...])}`; the key "" holds the top-level flags."""
    found: dict[str, tuple[str, list[tuple[str, str]]]] = {"": ("", _flags(parser))}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found[name] = (helps.get(name, ""), _flags(sub))
    return found


def _flags(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    return [
        (option, (action.help or "").replace("%(default)s", str(action.default)).split("(")[0].strip())
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--")
    ]


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for `shell` (one of SHELLS)."""
    if shell == "fish":
        return _fish(parser)
    body = _bash(parser)
    if shell == "zsh":
        # zsh runs bash completion functions through bashcompinit, a part of zsh itself.
        return "autoload -U +X bashcompinit && bashcompinit\n" + body
    return body


def _bash(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    table = commands(parser)
    subs = " ".join(name for name in table if name)
    cases = "\n".join(
        f"        {shlex.quote(name)}) opts={shlex.quote(' '.join(flag for flag, _ in flags))} ;;"
        for name, (_, flags) in table.items()
        if name
    )
    top = " ".join(flag for flag, _ in table[""][1])
    func = f"_{prog.replace('-', '_')}_complete"
    return f"""# {prog} completion for bash: source <({prog} completion bash)
{func}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" sub="" opts="" word
    for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        case "$word" in -*) ;; *) sub="$word"; break ;; esac
    done
    if [[ -z "$sub" ]]; then
        if [[ "$cur" == -* ]]; then opts={shlex.quote(top)}; else opts={shlex.quote(subs)}; fi
    else
        case "$sub" in
{cases}
        esac
    fi
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}}
complete -o default -F {func} {prog}
"""


def _fish(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    table = commands(parser)
    subs = " ".join(name for name in table if name)
    lines = [f"# {prog} completion for fish: {prog} completion fish | source"]
    for name, (help_text, flags) in table.items():
        if not name:
            condition = "__fish_use_subcommand"
        else:
            condition = f"__fish_seen_subcommand_from {name}"
            lines.append(
                f"complete -c {prog} -f -n '__fish_use_subcommand' -a {name} -d {shlex.quote(help_text)}"
            )
        for flag, flag_help in flags:
            lines.append(f"complete -c {prog} -n '{condition}' -l {flag[2:]} -d {shlex.quote(flag_help)}")
    lines.append(f"# subcommands: {subs}")
    return "\n".join(lines) + "\n"
