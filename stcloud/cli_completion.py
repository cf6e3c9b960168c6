"""``stcloud completion bash|zsh|fish``: print click's completion script for the shell.

Install: ``eval "$(stcloud completion bash)"`` in ~/.bashrc (zsh: ~/.zshrc), or
``stcloud completion fish > ~/.config/fish/completions/stcloud.fish``. Job ids complete from
the server (``--server`` / ``STCLOUD_SERVER``)."""
from __future__ import annotations

import click
from click.shell_completion import CompletionItem, get_completion_class

from stcloud.client import ApiError, Client

PROG_NAME = "stcloud"
COMPLETE_VAR = "_STCLOUD_COMPLETE"  # what click's console-script entry point listens to


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_command(shell):
    """Print the shell completion script for SHELL (eval "$(stcloud completion bash)")."""
    root = click.get_current_context().find_root().command
    cls = get_completion_class(shell)
    click.echo(cls(root, {}, PROG_NAME, COMPLETE_VAR).source())


def complete_job_id(ctx, param, incomplete):
    """Shell completion of a job id argument: the newest job ids the server knows, minus those
    already on the line (nothing when the server cannot be reached)."""
    try:
        data = Client(ctx.params.get("server"), ctx.params.get("token"), timeout=3).get(
            "/api/cloud/jobs", params={"limit": 50})
    except ApiError:
        return []
    typed = set(ctx.params.get(param.name) or ()) if param.nargs == -1 else set()
    return [CompletionItem(j["id"], help=f"{j['status']} {j['name']}")
            for j in data.get("jobs", []) if j["id"].startswith(incomplete) and j["id"] not in typed]
