"""One separate process of the OAuth tests: a worker task, or a trigger, using one connection.

Run as ``python -m tests.shoplazza.oauth_process CONN_ID [--wait] [--poll QUERY_ID]``
with the test's ``AIRFLOW_HOME``/DB and ``AIRFLOW_CONN_*`` in the environment. Without
``--poll`` it submits a data task (sync hook, as a worker task does) and prints its id as JSON;
with ``--poll`` it reads that task's status through the async hook methods (as a trigger does).
Exit status 1 and the error on stderr when the call fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

DAY = ("2026-11-20T00:00:00", "2026-11-21T00:00:00")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("conn_id")
    parser.add_argument("--wait", action="store_true", help='print "ready", call after a stdin line')
    parser.add_argument("--poll", default=None, help="poll this task with the async hook")
    args = parser.parse_args()

    from airflow_provider_querytasks.common.transport import RetryPolicy, close_shared_client_session
    from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook

    hook = ShoplazzaHook(args.conn_id, retry=RetryPolicy(attempts=2, initial=0.01, maximum=0.1, jitter=0.0))
    if args.wait:  # lets the test start two processes' calls at the same moment
        print("ready", flush=True)
        sys.stdin.readline()
    try:
        if args.poll:

            async def poll() -> str:
                try:
                    return (await hook.aget_status(args.poll)).state.value
                finally:
                    await close_shared_client_session()

            print(json.dumps({"state": asyncio.run(poll())}))
        else:
            print(json.dumps({"query_id": hook.create_task("pageview", *DAY)}))
    except Exception as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
