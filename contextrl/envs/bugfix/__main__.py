"""Command line for BugFix-v0 sources and manifests (the same as `contextrl tasks ...`).

    python -m contextrl.envs.bugfix fetch [--cache-dir DIR]
    python -m contextrl.envs.bugfix generate [--project DIR|NAME==VERSION] [--out PATH]
                                             [--sandbox auto|docker|local] [--max-mutants N] [--seed S]

Without `--project`, `generate` regenerates the shipped manifests from `build.PROJECTS`.
With `--sandbox docker` (the default when a daemon answers) the tests run in the default
contextrl image, exactly as episodes score them.
"""

from __future__ import annotations

import argparse
import sys

from contextrl.envs.bugfix.catalog import default_cache_dir, fetch_sources


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m contextrl.envs.bugfix", description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=("fetch", "generate"))
    ap.add_argument("--cache-dir", default=None, help=f"default: $CONTEXTRL_CACHE or {default_cache_dir()}")
    ap.add_argument("--project", default=None, help="generate: project directory or NAME==VERSION on PyPI")
    ap.add_argument("--out", default=None, help="generate: manifest (or tasks .jsonl) output path")
    ap.add_argument("--sandbox", choices=("auto", "docker", "local"), default="auto")
    ap.add_argument("--max-mutants", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.action == "fetch":
        for path in fetch_sources(args.cache_dir):
            print(path)
        return 0
    from contextrl.envs.bugfix.build import cli_generate

    return cli_generate(args)


if __name__ == "__main__":
    sys.exit(main())
