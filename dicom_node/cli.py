"""``medws node ...`` and ``medws demo`` commands (thin: parse, call, print).

Exit status: 0 success, 1 a node error (message on stderr), 2 usage error.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable


def _root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=None, help="archive root (default: $MEDWS_ROOT or ./medws-data)")


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from dicom_node.errors import NodeError

        try:
            return fn(args)
        except NodeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    return run


def _services(args: argparse.Namespace, **overrides: Any) -> tuple[Any, Any]:
    from dicom_node.config import load_config
    from dicom_node.db import Database

    config = load_config(args.root, overrides=overrides)
    db = Database(config.database_url, root=config.root)
    db.init_schema()
    return config, db


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# ------------------------------------------------------------------ handlers
def cmd_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dicom_node.config import default_root, write_default_config
    from dicom_node.db import redact_url

    root = Path(args.root) if args.root else default_root()
    root.mkdir(parents=True, exist_ok=True)
    cfg = write_default_config(root, ae_title=args.ae_title, host=args.host, port=args.port)
    config, db = _services(argparse.Namespace(root=str(root)))
    config.dicom_dir.mkdir(parents=True, exist_ok=True)
    db.close()
    print(f"initialised {root} (settings: {cfg}, index: {redact_url(config.database_url)})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from dicom_node.config import load_config
    from dicom_node.hooks import stable_hooks

    config = load_config(args.root, overrides={
        "host": args.host, "port": args.port, "ae_title": args.ae_title, "workers": args.workers,
        "quiet_period_s": args.quiet_period, "require_registered": args.require_registered,
        "monitor_port": args.monitor_port,
    })
    from dicom_node.analysis import serve_with_analysis  # node + analysis workers + outbox delivery

    return serve_with_analysis(config, hooks=stable_hooks(config))


def cmd_worker(args: argparse.Namespace) -> int:
    from dicom_node.analysis import work
    from dicom_node.config import load_config

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else None
    return work(load_config(args.root), tasks=tasks, workers=args.workers)


def cmd_purge(args: argparse.Namespace) -> int:
    from dicom_node.retention import RetentionPolicy, apply_policy, purge_study

    config, db = _services(args)
    try:
        policy = RetentionPolicy.from_config(config)
        policy = RetentionPolicy(args.days if args.days is not None else policy.retention_days,
                                 int(args.max_gb * 1024 ** 3) if args.max_gb is not None else policy.max_archive_bytes,
                                 policy.keep_unsigned and not args.include_unsigned)
        if args.study:
            done = None if args.dry_run else purge_study(config, db, args.study, "by hand", policy.keep_unsigned)
            out = {"purged": int(done is not None), "study": done}
        elif not policy.active:
            print("no retention policy: give --days and/or --max-gb (or set retention_days / max_archive_gb)",
                  file=sys.stderr)
            return 2
        else:
            out = apply_policy(config, db, policy, dry_run=args.dry_run).to_json()
        out["dry_run"] = bool(args.dry_run)
        _print(out) if args.json else print(", ".join(f"{k}: {v}" for k, v in out.items()))
        return 0
    finally:
        db.close()


def cmd_status(args: argparse.Namespace) -> int:
    from dicom_node.scp import node_status

    _config, db = _services(args)
    status = node_status(db)
    if args.json:
        print(json.dumps(status, sort_keys=True))
    else:
        for key in ("patients", "studies", "series", "instances"):
            print(f"{key:10s} {status[key]}")
        print("jobs       " + ", ".join(f"{k}={v}" for k, v in status["jobs"].items()))
        print("outbox     " + ", ".join(f"{k}={v}" for k, v in status["outbox"].items()))
    return 0


def cmd_peers_add(args: argparse.Namespace) -> int:
    from dicom_node.peers import PeerRegistry

    _config, db = _services(args)
    peer = PeerRegistry(db).add(args.name, args.ae_title, args.host, args.port, tls=args.tls)
    print(f"added peer {peer.name}: {peer.ae_title}@{peer.host}:{peer.port}")
    return 0


def cmd_peers_list(args: argparse.Namespace) -> int:
    from dicom_node.peers import PeerRegistry

    _config, db = _services(args)
    peers = PeerRegistry(db).list()
    if args.json:
        print(json.dumps([p.as_dict() for p in peers]))
    else:
        for p in peers:
            print(f"{p.name:20s} {p.ae_title:16s} {p.host}:{p.port}")
    return 0


def cmd_peers_remove(args: argparse.Namespace) -> int:
    from dicom_node.peers import PeerRegistry

    _config, db = _services(args)
    PeerRegistry(db).remove(args.name)
    print(f"removed peer {args.name}")
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    from dicom_node import scu
    from dicom_node.peers import PeerRegistry

    config, db = _services(args)
    peer = PeerRegistry(db).get(args.name)
    status = scu.echo(peer, config.ae_title)
    print(f"C-ECHO {peer.name}: status 0x{status:04X}")
    return 0 if status == 0 else 1


_QUERY_OPTIONS = {
    "patient_id": "PatientID", "patient_name": "PatientName", "study_date": "StudyDate",
    "accession": "AccessionNumber", "study_uid": "StudyInstanceUID", "series_uid": "SeriesInstanceUID",
    "description": "StudyDescription",
}


def cmd_query(args: argparse.Namespace) -> int:
    from dicom_node import scu
    from dicom_node.errors import NodeError
    from dicom_node.peers import PeerRegistry

    config, db = _services(args)
    peer = PeerRegistry(db).get(args.peer)
    filters: dict[str, str] = {}
    for opt, keyword in _QUERY_OPTIONS.items():
        if getattr(args, opt):
            filters[keyword] = getattr(args, opt)
    if args.modality:
        filters["ModalitiesInStudy" if args.level.upper() == "STUDY" else "Modality"] = args.modality
    for item in args.filters + (args.key or []):
        if "=" not in item:
            raise NodeError(f"filter {item!r} must be KEYWORD=VALUE (e.g. PatientID=123)")
        k, v = item.split("=", 1)
        filters[k] = v
    matches = scu.find(peer, config.ae_title, args.level, filters)
    if args.json:
        print(json.dumps(matches, sort_keys=True))
    else:
        for m in matches:
            print("  ".join(f"{k}={v}" for k, v in m.items() if k != "QueryRetrieveLevel"))
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    from dicom_node import scu
    from dicom_node.peers import PeerRegistry
    from dicom_node.scp import Node, read_run_file

    config, db = _services(args)
    peer = PeerRegistry(db).get(args.peer)
    running = read_run_file(config.root)
    temp = None
    if running is None:
        # no node serving this root: receive with a temporary acceptor on the configured port
        temp = Node(config, run_stability=False)
        temp.start(reconcile=False)
    try:
        result = scu.move(peer, config.ae_title, config.ae_title, args.study, args.series)
    finally:
        if temp is not None:
            temp.stop()
    print(json.dumps(result))
    return 0 if result["failed"] == 0 else 1


def cmd_send(args: argparse.Namespace) -> int:
    from dicom_node import scu
    from dicom_node.archive import Archive
    from dicom_node.errors import NodeError
    from dicom_node.peers import PeerRegistry

    config, db = _services(args)
    peer = PeerRegistry(db).get(args.peer)
    if args.study:
        files = Archive(config, db).study_paths(args.study)
        if not files:
            raise NodeError(f"no instances of study {args.study} in the archive")
    elif args.paths:
        files = scu.dicom_files(args.paths)
    else:
        raise NodeError("give PATH(s) or --study UID")
    result = scu.send(peer, config.ae_title, files)
    print(json.dumps({"sent": result.sent, "failed": result.failed}))
    return 0 if result.failed == 0 else 1


def cmd_demo(args: argparse.Namespace) -> int:
    import threading
    from pathlib import Path

    from dicom_node.config import default_root
    from dicom_node.demo import run_demo

    root = Path(args.root) if args.root else default_root()
    stop = None
    if args.serve:
        import signal

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    from dicom_node.pipeline.demo import DemoAnalysis  # analyses the samples, prints the results

    analysis = DemoAnalysis(root)
    try:
        run_demo(root, quiet_period_s=args.quiet_period,
                 on_status=lambda s: (print(json.dumps(s, sort_keys=True), flush=True), analysis.run_and_print()),
                 serve_until=stop)
    finally:
        analysis.stop()
    return 0


# ------------------------------------------------------------------ parser
def register(commands: Any) -> None:
    """Add ``medws node ...`` and ``medws demo``."""
    node = commands.group("node", "the DICOM node: archive, peers, networking")

    p = node.add_parser("init", help="create an archive root (folders, index, medws.toml)")
    _root_arg(p)
    p.add_argument("--ae-title", default="MEDWS")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=11112)
    p.set_defaults(func=_guard(cmd_init))

    p = node.add_parser("serve", help="run the node in the foreground (SIGTERM/SIGINT stop it cleanly)")
    _root_arg(p)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--ae-title", default=None)
    p.add_argument("--workers", type=int, default=None, help="acceptor processes sharing the port")
    p.add_argument("--quiet-period", type=float, default=None, help="seconds without new instances before a study is stable")
    p.add_argument("--require-registered", dest="require_registered", action="store_true", default=None,
                   help="accept only registered calling AE titles from their registered host (default)")
    p.add_argument("--no-require-registered", dest="require_registered", action="store_false")
    p.add_argument("--monitor-port", type=int, default=None,
                   help="HTTP monitoring endpoint (/health, /status, /metrics) on monitor_host (default 127.0.0.1); 0: off")
    p.set_defaults(func=_guard(cmd_serve))

    p = node.add_parser("worker", help="analysis workers only, on this node's archive and index (more workers, "
                                       "or GPU machines sharing a PostgreSQL index and the archive folder)")
    _root_arg(p)
    p.add_argument("--workers", type=int, default=None, help="worker threads (default: [analysis] workers)")
    p.add_argument("--tasks", default=None, help="comma-separated task names to take (default: all)")
    p.set_defaults(func=_guard(cmd_worker))

    p = node.add_parser("purge", help="delete old studies by the retention policy (or one study); --dry-run lists")
    _root_arg(p)
    p.add_argument("--days", type=float, default=None, help="delete studies last received more than DAYS ago")
    p.add_argument("--max-gb", type=float, default=None, help="keep the stored files under GB (least recent first)")
    p.add_argument("--include-unsigned", action="store_true", help="also studies without a signed report")
    p.add_argument("--study", default=None, help="delete this study (protection rules still apply)")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_purge))

    p = node.add_parser("status", help="counts of the archive, jobs and outbox")
    _root_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_status))

    peers = node.add_parser("peers", help="registered DICOM peers").add_subparsers(dest="peers_command", metavar="SUBCOMMAND")
    p = peers.add_parser("add", help="register a peer")
    p.add_argument("name")
    p.add_argument("--ae-title", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", action="store_true", help="associate with it over TLS (its certificate checked "
                                                      "against tls_ca; ours from tls_cert/tls_key)")
    _root_arg(p)
    p.set_defaults(func=_guard(cmd_peers_add))
    p = peers.add_parser("list", help="list peers")
    _root_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_peers_list))
    p = peers.add_parser("remove", help="unregister a peer")
    p.add_argument("name")
    _root_arg(p)
    p.set_defaults(func=_guard(cmd_peers_remove))

    p = node.add_parser("echo", help="C-ECHO a peer")
    p.add_argument("name")
    _root_arg(p)
    p.set_defaults(func=_guard(cmd_echo))

    p = node.add_parser("query", help="C-FIND a peer (Study Root)")
    p.add_argument("peer")
    p.add_argument("filters", nargs="*", help="KEYWORD=VALUE filters, e.g. PatientID=123 StudyDate=20240101-")
    p.add_argument("-k", "--key", action="append", help="KEYWORD=VALUE (repeatable)")
    p.add_argument("--level", default="STUDY", choices=["STUDY", "SERIES", "IMAGE", "study", "series", "image"])
    for opt in _QUERY_OPTIONS:
        p.add_argument("--" + opt.replace("_", "-"), dest=opt, default=None)
    p.add_argument("--modality", default=None)
    p.add_argument("--json", action="store_true")
    _root_arg(p)
    p.set_defaults(func=_guard(cmd_query))

    p = node.add_parser("retrieve", help="C-MOVE a study from a peer into this node")
    p.add_argument("peer")
    p.add_argument("--study", required=True)
    p.add_argument("--series", default=None)
    _root_arg(p)
    p.set_defaults(func=_guard(cmd_retrieve))

    p = node.add_parser("send", help="C-STORE files or an archived study to a peer")
    p.add_argument("peer")
    p.add_argument("paths", nargs="*")
    p.add_argument("--study", default=None)
    _root_arg(p)
    p.set_defaults(func=_guard(cmd_send))

    p = commands.command("demo", "run the node end to end on sample studies and print its status")
    _root_arg(p)
    p.add_argument("--serve", action="store_true", help="keep the node running afterwards")
    p.add_argument("--quiet-period", type=float, default=1.0)
    p.set_defaults(func=_guard(cmd_demo))
