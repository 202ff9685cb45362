"""``python -m airflow_provider_querytasks.testing serve [NAME ...]``: run emulators until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import threading

from airflow_provider_querytasks.testing import EMULATORS, emulator_class


def main(argv: list[str] | None = None) -> int:
    """``serve [NAMES]``: run the emulators on 127.0.0.1 and print the matching ``AIRFLOW_CONN_*`` exports."""
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_querytasks.testing")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve emulators on 127.0.0.1 until interrupted")
    serve.add_argument("names", nargs="*", help="emulators (default: all)")
    serve.add_argument("--env-file", help="also write the AIRFLOW_CONN_* lines to this file")
    serve.add_argument(
        "--no-postgres",
        action="store_true",
        help="serve Adobe without its PostgreSQL interface (by default a throwaway PostgreSQL server "
        "is started for it when PostgreSQL binaries and psycopg2 are at hand)",
    )
    args = parser.parse_args(argv)

    servers = [emulator_class(name)().start() for name in (args.names or list(EMULATORS))]
    postgres = None
    adobe = next((server for server in servers if server.name == "adobe"), None)
    if adobe is not None and not args.no_postgres:
        from airflow_provider_querytasks.testing.postgres import LocalPostgres

        try:
            postgres = LocalPostgres().start()
            adobe.attach_postgres(postgres)  # type: ignore[attr-defined]
            wire = adobe.wire  # type: ignore[attr-defined]
            print(
                f"adobe        postgres   127.0.0.1:{wire.port} (the PostgreSQL interface: Query Service's "
                f"limits, TLS; the server itself on 127.0.0.1:{postgres.port})"
            )
        except (RuntimeError, ImportError) as exc:
            print(f"(Adobe's PostgreSQL interface is not served: {exc})")
    lines: list[str] = []
    for server in servers:
        for site, url in server.urls.items():
            print(f"{server.name:<12} {site:<10} {url}")
        lines.extend(f"{name}='{value}'" for name, value in server.environment().items())
    print("\n# connections (and queues) pointing at the emulators:")
    for line in lines:
        print(f"export {line}")
    if args.env_file:
        with open(args.env_file, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    print("\nserving; Ctrl-C to stop", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    for server in servers:
        server.stop()
    if postgres is not None:
        postgres.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
