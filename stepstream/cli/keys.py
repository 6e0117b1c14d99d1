"""`stepstream keys`: rotate, list and revoke an environment's keys from the command line.

The environment is named PROJECT/ENVIRONMENT, PROJECT being the project's
name or its numeric id (needed when several projects share a name), e.g.
`stepstream keys rotate Acme/production`. Output is JSON on stdout; the
keys themselves appear only in the output of `rotate`.
"""

import argparse
import json
import sys

from stepstream.cli.setup import fail, setup


def _run(args) -> int:
    problem = setup()
    if problem:
        return fail(problem)
    from stepstream.errors import StepstreamError
    from stepstream.trust import tenants

    answer: dict | list[dict]
    try:
        environment = tenants.find_environment(args.environment)
        if args.keys_command == "rotate":
            kinds = ["publishable", "secret"] if args.kind == "both" else [args.kind]
            answer = tenants.rotate(environment, kinds)
            old = " ".join(str(pk) for pk in answer["old_key_ids"])
            if old:
                print(
                    "stepstream: the old keys stay valid until you revoke them, once your "
                    f"deployments use the new ones: stepstream keys revoke "
                    f"'{args.environment}' {old}",
                    file=sys.stderr,
                )
        elif args.keys_command == "list":
            answer = tenants.list_keys(environment)
        else:
            answer = [tenants.revoke_key(environment, key_id) for key_id in args.key_ids]
    except StepstreamError as e:
        return fail(" ".join(e.messages))
    print(json.dumps(answer), flush=True)
    return 0


def add_parser(sub) -> None:
    keys = sub.add_parser(
        "keys",
        help="rotate, list or revoke an environment's keys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = keys.add_subparsers(dest="keys_command", required=True)
    name_help = "PROJECT/ENVIRONMENT, PROJECT a project name or id (e.g. Acme/production)"
    rotate = commands.add_parser(
        "rotate",
        help="make new keys and print them (JSON); the old ones stay valid until revoked",
    )
    rotate.add_argument("environment", help=name_help)
    rotate.add_argument(
        "--kind", choices=["both", "publishable", "secret"], default="both", help="default: both"
    )
    listing = commands.add_parser("list", help="list the keys (id, kind, hint, dates; JSON)")
    listing.add_argument("environment", help=name_help)
    revoke = commands.add_parser("revoke", help="revoke keys by id")
    revoke.add_argument("environment", help=name_help)
    revoke.add_argument("key_ids", nargs="+", type=int, metavar="KEY_ID")
    keys.set_defaults(func=_run)
