"""``muxlab load``'s command line and :class:`~loadgen.config.LoadConfig`, both ways.

:func:`config_from_args` reads the options ``loadgen.cli`` declares; :func:`config_to_argv`
writes them for a program that runs ``muxlab load`` as a child (``loadgen.child``). They
live together, apart from the parser (which needs muxlab's help formatter), so that the
option names are spelled in one place for each direction and a test can check that one
undoes the other.
"""

from __future__ import annotations

import argparse

from loadgen.config import LoadConfig, parse_address_list, parse_cpu_list, parse_header


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    return LoadConfig(
        host=args.host,
        port=args.port,
        protocol=args.protocol,
        connections=args.connections,
        idle=args.idle,
        processes=args.processes,
        cpus=parse_cpu_list(args.cpus) if args.cpus else (),
        server_cpus=parse_cpu_list(args.server_cpu) if args.server_cpu else (),
        duration_s=args.duration,
        warmup_s=args.warmup,
        size_bytes=args.size,
        pipeline=args.pipeline,
        rate_rps=args.rate,
        connect_rate_cps=args.connect_rate,
        timeout_s=args.timeout,
        method=args.method,
        path=args.path,
        headers=tuple(parse_header(h) for h in args.header),
        allow_shared_cpus=args.force,
        source_addresses=(
            parse_address_list(args.source_addresses) if args.source_addresses else None
        ),
    )


def config_to_argv(config: LoadConfig) -> list[str]:
    """The options that make :func:`config_from_args` build ``config`` again."""
    options: dict[str, object] = {
        "--host": config.host,
        "--port": config.port,
        "--protocol": config.protocol,
        "--method": config.method,
        "--path": config.path,
        "--connections": config.connections,
        "--idle": config.idle,
        "--duration": repr(config.duration_s),
        "--warmup": repr(config.warmup_s),
        "--size": config.size_bytes,
        "--pipeline": config.pipeline,
        "--connect-rate": repr(config.connect_rate_cps),
        "--timeout": repr(config.timeout_s),
    }
    if config.processes is not None:
        options["--processes"] = config.processes
    if config.cpus:
        options["--cpus"] = ",".join(map(str, config.cpus))
    if config.server_cpus:
        options["--server-cpus"] = ",".join(map(str, config.server_cpus))
    if config.rate_rps is not None:
        options["--rate"] = repr(config.rate_rps)
    if config.source_addresses is not None:
        options["--source-addresses"] = ",".join(config.source_addresses)
    argv = [text for option, value in options.items() for text in (option, str(value))]
    for name, value in config.headers:
        argv += ["--header", f"{name}: {value}"]
    if config.allow_shared_cpus:
        argv.append("--force")
    return argv
