"""``stcloud completion bash|zsh|fish``: print click's completion script for the shell.

Install: ``eval "$(stcloud completion bash)"`` in ~/.bashrc (zsh: ~/.zshrc), or
``stcloud completion fish > ~/.config/fish/completions/stcloud.fish``. Job ids complete from
the server (``--server`` / ``STCLOUD_SERVER``)."""
from __future__ import annotations

import click
from click.shell_completion import get_completion_class

PROG_NAME = "stcloud"
COMPLETE_VAR = "_STCLOUD_COMPLETE"  # what click's console-script entry point listens to


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_command(shell):
    """Print the shell completion script for SHELL (eval "$(stcloud completion bash)")."""
    root = click.get_current_context().find_root().command
    cls = get_completion_class(shell)
    click.echo(cls(root, {}, PROG_NAME, COMPLETE_VAR).source())
