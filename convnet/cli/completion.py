"""Shell completion for the `convnet` command: `convnet completion bash|zsh` prints a script generated from
the parser, so a new command or option completes as soon as it is registered.

    eval "$(convnet completion bash)"                 # in ~/.bashrc
    convnet completion zsh > ~/.zfunc/_convnet        # with fpath=(~/.zfunc $fpath) before compinit in ~/.zshrc

What completes: command names; options; option values from their choices (`--augment`, `--precision`,
`--recipe`, `--method`, ...) or from the names in `_internal.names` (`--model` presets, `--dataset`, `--optimizer`,
`--schedule`, `--device`, `--sample`, experiment names); folders for `--out`/`--data-dir`-like options; file
paths for positional file arguments. An option says what its value completes with through `complete_with`
(or TrainConfig's `complete` metadata); without it: its choices, else nothing for an option and file paths
for a positional argument.
"""
from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from convnet._internal.names import NAMES

__all__ = ["complete_with", "script", "SHELLS", "add_commands"]

SHELLS = ("bash", "zsh")
FILE, DIR = "file", "dir"  # kinds of value completed with paths
_HELP_CHARS = 70  # zsh shows each option's help, cut to this length


def complete_with(action: argparse.Action, what: str | Sequence[str] | None) -> argparse.Action:
    """Say what shell completion offers for `action`'s value: "file", "dir", a kind of name from
    `_internal.names.NAMES` ("model", "dataset", ...), the words themselves, or None for nothing. Returns `action`."""
    if isinstance(what, str) and what not in (FILE, DIR) and what not in NAMES:
        raise ValueError(f"complete_with: `what` must be 'file', 'dir', one of {', '.join(NAMES)} or a list of "
                         f"words. Received: {what!r}")
    action.completion = what  # type: ignore[attr-defined]  # argparse keeps any attribute of an action
    return action


@dataclass
class _Value:
    """What an option's value or a positional argument completes with: paths ("file", "dir"), or words."""

    paths: str | None
    words: tuple[str, ...]
    description: str


@dataclass
class _Option:
    names: tuple[str, ...]
    help: str
    value: _Value | None  # None: a flag
    repeats: bool


@dataclass
class _Command:
    name: str
    help: str
    options: list[_Option]
    positionals: list[_Value]
    last_repeats: bool  # the last positional takes any number of words
    optional_from: int  # positionals from this index on may be left out


def _value(action: argparse.Action, positional: bool) -> _Value:
    what = getattr(action, "completion", ...)
    if what is ...:
        what = tuple(map(str, action.choices)) if action.choices else (FILE if positional else None)
    description = (action.metavar if isinstance(action.metavar, str) else None) or action.dest
    if isinstance(what, str) and what in (FILE, DIR):
        return _Value(what, (), description.lower())
    words = NAMES[what] if isinstance(what, str) else tuple(what or ())
    return _Value(None, tuple(words), description.lower())


def _help(action: argparse.Action) -> str:
    text = " ".join((action.help or "").replace("%%", "%").split())
    return text if len(text) <= _HELP_CHARS else text[:_HELP_CHARS - 3].rstrip() + "..."


def _command(name: str, parser: argparse.ArgumentParser, help: str) -> _Command:
    options: list[_Option] = []
    positionals: list[_Value] = []
    last_repeats, optional_from = False, -1
    for action in parser._actions:
        if action.option_strings:
            value = None if action.nargs == 0 else _value(action, positional=False)
            options.append(_Option(tuple(action.option_strings), _help(action), value,
                                   isinstance(action, argparse._AppendAction)))
        else:
            if action.nargs in ("?", "*") and optional_from < 0:
                optional_from = len(positionals)
            positionals.append(_value(action, positional=True))
            last_repeats = action.nargs in ("*", "+")
    return _Command(name, help, options, positionals, last_repeats,
                    len(positionals) if optional_from < 0 else optional_from)


def _commands(parser: argparse.ArgumentParser) -> tuple[_Command, list[_Command]]:
    """The top level (its options) and each sub-command, in the order `convnet --help` lists them."""
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in subparsers._choices_actions}
    top = _command("convnet", parser, "")
    return top, [_command(name, sub, helps.get(name, "")) for name, sub in subparsers.choices.items()]


def _bash_words(value: _Value) -> str:
    return shlex.quote("@" + value.paths if value.paths else " ".join(value.words))


def _bash(parser: argparse.ArgumentParser, version: str) -> str:
    top, commands = _commands(parser)
    top_words = [name for option in top.options for name in option.names] + [c.name for c in commands]
    branches = []
    for command in commands:
        lines = [f"        {command.name})",
                 f"            options={shlex.quote(' '.join(n for o in command.options for n in o.names))}",
                 f"            takes_value={shlex.quote(' '.join(n for o in command.options if o.value for n in o.names))}",
                 f"            positionals=({' '.join(_bash_words(value) for value in command.positionals)})",
                 f"            repeats={'1' if command.last_repeats else ''}",
                 '            case "$prev" in']
        for option in command.options:
            if option.value is not None:
                lines.append(f"                {'|'.join(option.names)}) _convnet_reply {_bash_words(option.value)} "
                             f'"$cur"; return;;')
        lines += ["            esac", "            ;;"]
        branches.append("\n".join(lines))
    return _BASH.format(version=version, top=shlex.quote(" ".join(top_words)), branches="\n".join(branches))


_BASH = """\
# bash completion for convnet {version}, generated from its parser by `convnet completion bash`.
# Install: add   eval "$(convnet completion bash)"   to ~/.bashrc
_convnet_reply() {{  # $1: "@file", "@dir" or the words to offer; $2: the word being completed
    case "$1" in
        @file) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$2"));;
        @dir) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$2"));;
        *) COMPREPLY=($(compgen -W "$1" -- "$2"));;
    esac
}}

_convnet() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="" command="" word i
    COMPREPLY=()
    (( COMP_CWORD > 0 )) && prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    # bash splits --option=value at the "="
    if [[ $cur == "=" ]]; then
        cur=""
    elif [[ $prev == "=" ]] && (( COMP_CWORD > 1 )); then
        prev="${{COMP_WORDS[COMP_CWORD-2]}}"
    fi
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if [[ $word != -* ]]; then command="$word"; break; fi
    done
    if [[ -z $command ]]; then
        _convnet_reply {top} "$cur"
        return
    fi
    local options="" takes_value="" repeats="" positionals=()
    case "$command" in
{branches}
        *) return;;
    esac
    if [[ $cur == -* ]]; then
        _convnet_reply "$options" "$cur"
        return
    fi
    # which positional argument this word is: count the words after the command that are not options or
    # their values
    local count=0 skip=""
    for ((i = i + 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if [[ $word == "=" ]]; then skip=1; continue; fi
        if [[ -n $skip ]]; then skip=""; continue; fi
        if [[ $word == -* ]]; then
            [[ " $takes_value " == *" $word "* ]] && skip=1
            continue
        fi
        count=$((count + 1))
    done
    local total=${{#positionals[@]}}
    if (( count >= total )) && [[ -n $repeats ]]; then count=$((total - 1)); fi
    if (( count < total )); then
        _convnet_reply "${{positionals[count]}}" "$cur"
    else
        _convnet_reply "$options" "$cur"
    fi
}}

complete -F _convnet convnet
"""


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _zsh_escape(text: str, chars: str = "[]") -> str:
    """`text` with backslashes before `chars` (and backslashes): brackets inside an _arguments explanation,
    colons in a message or a `_describe` name."""
    for char in "\\" + chars:
        text = text.replace(char, "\\" + char)
    return text


def _zsh_action(value: _Value) -> str:
    if value.paths == DIR:
        return "_files -/"
    if value.paths == FILE:
        return "_files"
    return f"({' '.join(value.words)})" if value.words else " "


def _zsh_specs(command: _Command) -> list[str]:
    specs = []
    for option in command.options:
        exclusive = f"({' '.join(option.names)})" if len(option.names) > 1 and not option.repeats else ""
        names = "{" + ",".join(option.names) + "}" if len(option.names) > 1 else option.names[0]
        value = "" if option.value is None else (f":{_zsh_escape(option.value.description, ':')}:"
                                                 f"{_zsh_action(option.value)}")
        head = ("*" if option.repeats else "") + exclusive
        specs.append(f"{_zsh_quote(head)}{names}{_zsh_quote(f'[{_zsh_escape(option.help)}]{value}')}"
                     if len(option.names) > 1 else
                     _zsh_quote(f"{head}{names}[{_zsh_escape(option.help)}]{value}"))
    for index, argument in enumerate(command.positionals):
        last = index == len(command.positionals) - 1
        position = "*" if last and command.last_repeats else str(index + 1)
        optional = ":" if index >= command.optional_from and position != "*" else ""
        specs.append(_zsh_quote(f"{position}:{optional}{_zsh_escape(argument.description, ':')}:{_zsh_action(argument)}"))
    return specs


def _zsh(parser: argparse.ArgumentParser, version: str) -> str:
    top, commands = _commands(parser)
    described = "\n".join(f"        {_zsh_quote(_zsh_escape(c.name, ':') + ':' + c.help)}" for c in commands)
    branches = []
    for command in commands:
        specs = " \\\n                ".join(_zsh_specs(command))
        branches.append(f"            {command.name})\n                _arguments -s \\\n                {specs}\n"
                        f"                ;;")
    top_specs = " \\\n        ".join(_zsh_specs(top)[:len(top.options)])
    return _ZSH.format(version=version, top=top_specs, described=described, branches="\n".join(branches))


_ZSH = """\
#compdef convnet
# zsh completion for convnet {version}, generated from its parser by `convnet completion zsh`.
# Install: convnet completion zsh > ~/.zfunc/_convnet   and, in ~/.zshrc before compinit: fpath=(~/.zfunc $fpath)
# (or: eval "$(convnet completion zsh)" after compinit)
_convnet() {{
    local curcontext="$curcontext" state line
    typeset -A opt_args
    _arguments -C \\
        {top} \\
        '1: :->command' \\
        '*:: :->argument' && return
    case $state in
        command)
            local -a commands
            commands=(
{described}
            )
            _describe -t commands 'convnet command' commands
            ;;
        argument)
            case $line[1] in
{branches}
            esac
            ;;
    esac
}}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _convnet "$@"
else
    compdef _convnet convnet
fi
"""


def script(parser: argparse.ArgumentParser, shell: str, version: str = "") -> str:
    """The completion script for `shell` ("bash" or "zsh") of the command line `parser` builds."""
    if shell == "bash":
        return _bash(parser, version)
    if shell == "zsh":
        return _zsh(parser, version)
    raise ValueError(f"`shell` must be one of {', '.join(SHELLS)}. Received: {shell!r}")


def add_commands(commands: argparse._SubParsersAction, parser: argparse.ArgumentParser, version: str) -> None:
    """Register `convnet completion SHELL`, which prints the script for the whole `parser`."""
    completion = commands.add_parser(
        "completion", help="print a shell completion script (bash or zsh)",
        description="Print the completion script for the shell. bash: add `eval \"$(convnet completion bash)\"` to "
                    "~/.bashrc. zsh: `convnet completion zsh > ~/.zfunc/_convnet`, with fpath=(~/.zfunc $fpath) "
                    "before compinit in ~/.zshrc.")
    completion.add_argument("shell", metavar="SHELL", choices=SHELLS, help="bash or zsh")

    def run(args: argparse.Namespace) -> int:
        print(script(parser, args.shell, version), end="")
        return 0

    completion.set_defaults(run=run)
