"""The command line: ``python -m tmd_nb convert SRC... -o OUT`` (also installed as ``tmd-nb``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .batch import connect, convert
from .formats import registry

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tmd-nb`` (one sub-command per task)."""
    parser = argparse.ArgumentParser(
        prog="tmd-nb", description="Move surface height maps between NPY, NPZ, TrueMap .tmd and other formats."
    )
    parser.add_argument("--version", action="version", version=f"tmd_nb {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    conv = commands.add_parser(
        "convert",
        help="convert scan files or whole folders, in parallel",
        description=(
            "Convert every scan in SRC (files, folders, glob patterns) to OUT/<stem>.<ext>, sub-folders "
            "mirrored. OUT/tmd_nb-convert.csv, the manifest, records each source and its output; an output "
            "that came from the same unchanged source and is intact is skipped, so an interrupted run is "
            "resumed by running it again. A file at an output name that convert did not write is not replaced "
            "(reported as failed) unless --overwrite is given. Exit status: 0 when no file failed, 1 when some "
            "did, 2 for a usage error (or an output folder that cannot be written), 3 when the --scheduler could "
            "not be reached (no file was tried), 130 when interrupted."
        ),
    )
    conv.add_argument(
        "sources", nargs="+", metavar="SRC", help="a scan file, a folder or a glob pattern ('**' recurses)"
    )
    conv.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder (created if needed)")
    conv.add_argument(
        "--format", default="npz", choices=registry.names(writing=True), help="output format (default: %(default)s)"
    )
    conv.add_argument("--jobs", type=int, metavar="N", help="local worker processes (default: every core)")
    conv.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on this dask.distributed scheduler (tcp://host:8786) instead; workers must see the files",
    )
    conv.add_argument(
        "--overwrite",
        action="store_true",
        help="replace whatever file is at an output name, and convert everything again",
    )
    conv.add_argument(
        "--channel",
        metavar="CHANNEL",
        help="of instruments' files with several channels: the one to read, by name or index (default: the "
        "topography); files of one height map ignore it",
    )
    conv.add_argument("--no-progress", action="store_true", help="no progress bar")
    conv.set_defaults(parser=conv)
    return parser


def channel_arg(text: str | None) -> int | str | None:
    """A ``--channel`` value as ``tmd_nb.load`` takes it: digits are an index, anything else a name."""
    return int(text) if text is not None and text.lstrip("-").isdigit() else text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    parser: argparse.ArgumentParser = args.parser  # the sub-command's, so that errors show its usage
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    client = None
    try:
        if args.scheduler:
            client = connect(args.scheduler)
        report = convert(
            args.sources,
            args.out,
            format=args.format,
            overwrite=args.overwrite,
            jobs=args.jobs,
            client=client,
            progress=not args.no_progress,
            channel=channel_arg(args.channel),
        )
    except (ValueError, FileNotFoundError, ImportError) as exc:
        parser.error(str(exc))
    except ConnectionError as exc:  # only connect() raises it: no file was tried
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:  # the output folder or its manifest cannot be written
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to convert what is missing", file=sys.stderr)
        return 130
    finally:
        if client is not None:
            client.close()
    for source, note in report.notes:
        print(f"note: {source}: {note}", file=sys.stderr)
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
