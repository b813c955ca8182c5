"""`zbrain completion bash|zsh|fish`: shell completion scripts made from the
parser itself, so they never fall behind the commands."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

Path = tuple[str, ...]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and action.help is not argparse.SUPPRESS
    )


def _walk(
    parser: argparse.ArgumentParser, path: Path = ()
) -> Iterator[tuple[Path, argparse.ArgumentParser]]:
    yield path, parser
    for name, sub in _subcommands(parser).items():
        yield from _walk(sub, (*path, name))


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` (bash, zsh or fish)."""
    if shell == "fish":
        return _fish(parser)
    bash = _bash(parser)
    if shell == "zsh":
        # zsh runs bash completion functions through bashcompinit.
        return "autoload -U +X bashcompinit && bashcompinit\n" + bash
    return bash


def _bash(parser: argparse.ArgumentParser) -> str:
    cases = []
    paths = []
    for path, sub in _walk(parser):
        words = [*_subcommands(sub), *_options(sub)]
        key = " ".join(path)
        cases.append(f'    "{key}") words="{" ".join(words)}" ;;')
        if path:
            paths.append(f'"{key}"')
    return f"""# zbrain completion for bash: source <(zbrain completion bash)
_zbrain_complete() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" path="" word words
  for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
    [[ $word == -* ]] && continue
    case "${{path:+$path }}$word" in
      {"|".join(paths)}) path="${{path:+$path }}$word" ;;
    esac
  done
  case "$path" in
{chr(10).join(cases)}
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F _zbrain_complete zbrain
"""


def _fish(parser: argparse.ArgumentParser) -> str:
    lines = ["# zbrain completion for fish: zbrain completion fish | source"]
    for path, sub in _walk(parser):
        condition = f"__fish_seen_subcommand_from {path[-1]}" if path else "__fish_use_subcommand"
        for name, child in _subcommands(sub).items():
            description = (child.description or "").split(":")[0].replace("'", "")
            lines.append(f"complete -c zbrain -f -n '{condition}' -a {name} -d '{description}'")
        for option in _options(sub):
            lines.append(f"complete -c zbrain -n '{condition}' -l {option[2:]}")
    return "\n".join(lines) + "\n"
