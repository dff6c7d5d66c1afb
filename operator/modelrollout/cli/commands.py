"""`kubectl modelrollout`: watch and drive ModelDeployment rollouts from the command line.

kubectl finds the `kubectl-modelrollout` executable on PATH and hands it every argument after
the plugin name, so `--kubeconfig`, `--context` and `-n` work before or after the command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from modelrollout.cli import actions, render
from modelrollout.cli.kube import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Kube,
)

# Redraw this often in a terminal so relative times ("3s ago", "2m left") stay current.
REDRAW_SECONDS = 1.0
CLEAR = "\x1b[H\x1b[2J"


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp() -> str:
    return _now().strftime("%Y-%m-%dT%H:%M:%SZ")


def _style(stream: TextIO) -> render.Style:
    tty = stream.isatty()
    color = tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return render.Style(color=color, unicode=encoding == "utf8")


# --- commands ----------------------------------------------------------------------------------


def cmd_status(kube: Kube, args: argparse.Namespace, out: TextIO) -> int:
    style = _style(out)
    obj = kube.get(args.name)
    if not args.watch:
        out.write(render.status_view(obj, _now(), style))
        return EXIT_OK
    return _watch(kube, args.name, obj, style, out)


def _watch(kube: Kube, name: str, obj: dict[str, Any], style: render.Style, out: TextIO) -> int:
    interactive = out.isatty()

    def draw(current: dict[str, Any]) -> None:
        now = _now()
        text = render.status_view(current, now, style)
        if interactive:
            footer = f"\nwatching {name} (updated {now:%H:%M:%S}); Ctrl-C to stop\n"
            out.write(CLEAR + text + style.paint(footer, "dim"))
        else:
            out.write(f"--- {now:%Y-%m-%dT%H:%M:%SZ}\n{text}")
        out.flush()

    draw(obj)
    drawn = time.monotonic()
    version = obj["metadata"].get("resourceVersion")
    stop = threading.Event()
    try:
        for kind, new in kube.watch(name, stop):
            if kind == "DELETED":
                out.write(f"modeldeployment {name!r} was deleted\n")
                return EXIT_OK
            if kind == "TICK":
                if interactive and time.monotonic() - drawn >= REDRAW_SECONDS:
                    draw(obj)
                    drawn = time.monotonic()
                continue
            if new.get("metadata", {}).get("resourceVersion") != version:
                obj, version = new, new["metadata"].get("resourceVersion")
                draw(obj)
                drawn = time.monotonic()
    except KeyboardInterrupt:
        out.write("\n")
    finally:
        stop.set()
    return EXIT_OK


def cmd_list(kube: Kube, args: argparse.Namespace, out: TextIO) -> int:
    objs = kube.list(args.all_namespaces)
    if not objs:
        where = "" if args.all_namespaces else f" in namespace {kube.namespace}"
        print(f"No ModelDeployments found{where}.", file=sys.stderr)
        return EXIT_OK
    out.write(render.list_view(objs, _now(), args.all_namespaces, _style(out)))
    return EXIT_OK


def _apply(kube: Kube, args: argparse.Namespace, out: TextIO, change: actions.Change) -> int:
    if args.dry_run:
        out.write(json.dumps(change.patch, indent=2, sort_keys=True) + "\n")
        return EXIT_OK
    if change.patch:
        kube.merge_patch(args.name, change.patch)
    out.write(change.summary + "\n")
    for note in change.notes:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


def _action(
    build: Callable[[dict[str, Any], argparse.Namespace], actions.Change],
) -> Callable[[Kube, argparse.Namespace, TextIO], int]:
    def run(kube: Kube, args: argparse.Namespace, out: TextIO) -> int:
        obj = kube.get(args.name)
        try:
            change = build(obj, args)
        except actions.ActionError as exc:
            raise CliError(str(exc)) from None
        return _apply(kube, args, out, change)

    return run


cmd_promote = _action(lambda obj, a: actions.promote(obj, _stamp(), a.force))
cmd_abort = _action(lambda obj, a: actions.abort(obj, _stamp(), a.force))
cmd_retry = _action(lambda obj, a: actions.retry(obj, _stamp(), a.force))
cmd_pause = _action(lambda obj, a: actions.pause(obj))
cmd_resume = _action(lambda obj, a: actions.resume(obj, _stamp()))
cmd_undo = _action(lambda obj, a: actions.undo(obj, a.to_revision, _stamp()))


# --- arguments ---------------------------------------------------------------------------------


def _connection_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # On subcommands the defaults are suppressed so a flag given before the command survives.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--kubeconfig", default=default, help="kubeconfig file")
    parser.add_argument("--context", default=default, help="kubeconfig context")
    parser.add_argument(
        "-n", "--namespace", default=default, help="namespace (default: the context's)"
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="kubectl modelrollout",
        description="Watch and drive ModelDeployment rollouts.",
        epilog="Exit codes: 0 done, 1 error or nothing to do, 2 usage, 3 not found, "
        "4 forbidden or unauthorised.",
    )
    _connection_flags(top, suppress=False)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[Kube, argparse.Namespace, TextIO], int], text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        _connection_flags(p, suppress=True)
        p.set_defaults(handler=handler)
        return p

    p = command("status", cmd_status, "show phase, traffic, steps, analysis and history")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-w", "--watch", action="store_true", help="keep the view live until Ctrl-C")

    p = command("list", cmd_list, "list ModelDeployments and where their rollouts stand")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")

    one_shot = {
        "promote": (cmd_promote, "skip the remaining steps and promote the canary now"),
        "abort": (cmd_abort, "roll the canary back now (or end the bake window with a rollback)"),
        "retry": (cmd_retry, "roll out again the revision that was rolled back"),
    }
    for name, (handler, text) in one_shot.items():
        p = command(name, handler, text)
        p.add_argument("name", metavar="NAME")
        p.add_argument(
            "--force", action="store_true", help="set the annotation even if status says no"
        )
        p.add_argument("--dry-run", action="store_true", help="print the patch, change nothing")

    for name, handler, text in (
        ("pause", cmd_pause, "hold the rollout at its current step (spec.paused: true)"),
        ("resume", cmd_resume, "continue a paused rollout or move past a pause step"),
    ):
        p = command(name, handler, text)
        p.add_argument("name", metavar="NAME")
        p.add_argument("--dry-run", action="store_true", help="print the patch, change nothing")

    p = command(
        "undo",
        cmd_undo,
        "point the spec back at an earlier revision: model uri, sha256, version and image",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--to-revision",
        metavar="N",
        help="history entry number from `status`, or a revision hash (default: the previous "
        "promoted revision)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the patch, change nothing")
    return top


def run(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        # argparse exits 0 for --help and 2 for usage errors.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        kube = Kube.connect(args.kubeconfig, args.context, args.namespace)
        code: int = args.handler(kube, args, out)
        return code
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_ERROR
    except BrokenPipeError:
        # `... | head`: the reader left; nothing more to say.
        sys.stderr.close()
        return EXIT_OK


def main() -> None:
    sys.exit(run())
